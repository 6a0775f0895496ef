//! The zone's history as its persister keeps it for replay: each tick's
//! command batch and the state hash of each snapshot (the CRC-32 its header
//! carries already: nothing more is computed on the tick thread), cut every
//! `history_segment` into a segment of durable ticks and archived in the
//! history store ([`respawn_store::history`]), where the newest
//! `history_window`'s worth (and at most `history_max_bytes`) are kept.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use respawn_store::history::{HistorySegment, StateHash};
use respawn_store::JournalEntry;

/// How a zone keeps its history (`[persistence] history_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    /// How far back history is kept; zero keeps none.
    pub window: Duration,
    /// How often the ticks so far are cut into a segment and stored.
    pub segment: Duration,
    /// The most a zone's kept segments may take.
    pub max_bytes: u64,
}

impl Default for HistorySettings {
    /// The window of the default cold snapshots (3 kept, 5 min apart).
    fn default() -> Self {
        Self { window: Duration::from_secs(900), segment: Duration::from_secs(30), max_bytes: 256 << 20 }
    }
}

impl HistorySettings {
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// Segments kept for the window (one more: the oldest is partly outside).
    pub fn keep(&self) -> usize {
        (self.window.as_millis().div_ceil(self.segment.as_millis().max(1)) as usize).saturating_add(1)
    }
}

/// The ticks and hashes not archived yet.
#[derive(Debug)]
pub struct HistoryBuffer {
    epoch: u64,
    /// Each tick's entry and its wall-clock time (Unix ms).
    ticks: VecDeque<(JournalEntry, u64)>,
    hashes: VecDeque<StateHash>,
    bytes: usize,
    last_cut: Instant,
    /// Most ticks held (the archive unreachable meanwhile); older ones are dropped.
    max_ticks: usize,
}

impl HistoryBuffer {
    pub fn new(epoch: u64, max_ticks: usize) -> Self {
        Self { epoch, ticks: VecDeque::new(), hashes: VecDeque::new(), bytes: 0, last_cut: Instant::now(), max_ticks }
    }

    /// Adds a tick; how many old ticks it pushed out (a gap in the history).
    pub fn tick(&mut self, entry: &JournalEntry, at_ms: u64) -> u64 {
        self.bytes += entry.batch.len();
        self.ticks.push_back((entry.clone(), at_ms));
        let mut dropped = 0;
        while self.ticks.len() > self.max_ticks {
            if let Some((old, _)) = self.ticks.pop_front() {
                self.bytes -= old.batch.len();
                dropped += 1;
            }
        }
        if dropped > 0 {
            let first = self.ticks.front().map_or(0, |(e, _)| e.tick);
            self.hashes.retain(|h| h.tick >= first);
        }
        dropped
    }

    pub fn hash(&mut self, hash: StateHash) {
        self.hashes.push_back(hash);
    }

    /// Whether a segment is due: `every` since the last cut, or a lot held.
    pub fn due(&self, every: Duration) -> bool {
        !self.ticks.is_empty() && (self.last_cut.elapsed() >= every || self.bytes >= 8 << 20)
    }

    /// The consecutive ticks held through `durable` as a segment (each
    /// segment has one run of ticks: a gap cuts it short).
    pub fn cut(&mut self, durable: u64) -> Option<HistorySegment> {
        self.last_cut = Instant::now();
        let mut entries = Vec::new();
        let (mut first_at_ms, mut last_at_ms) = (0, 0);
        while let Some((entry, at_ms)) = self.ticks.front() {
            let next = entries.last().map(|e: &JournalEntry| e.tick + 1);
            if entry.tick > durable || next.is_some_and(|n| n != entry.tick) {
                break;
            }
            if entries.is_empty() {
                first_at_ms = *at_ms;
            }
            last_at_ms = *at_ms;
            let Some((entry, _)) = self.ticks.pop_front() else { break };
            self.bytes -= entry.batch.len();
            entries.push(entry);
        }
        let (first, last) = (entries.first()?.tick, entries.last()?.tick);
        let mut hashes = Vec::new();
        while let Some(hash) = self.hashes.front().copied() {
            if hash.tick > last {
                break;
            }
            self.hashes.pop_front();
            if hash.tick >= first {
                hashes.push(hash);
            }
        }
        Some(HistorySegment { epoch: self.epoch, first_at_ms, last_at_ms, entries, hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tick: u64) -> JournalEntry {
        JournalEntry { tick, batch: vec![1; 10] }
    }

    #[test]
    fn a_segment_holds_the_durable_ticks_and_their_hashes() {
        let mut h = HistoryBuffer::new(9, 100);
        for tick in 1..=10 {
            h.tick(&entry(tick), 1_000 + tick * 50);
        }
        h.hash(StateHash { tick: 5, crc: 55 });
        h.hash(StateHash { tick: 9, crc: 99 });
        let s = h.cut(7).expect("a segment");
        assert_eq!((s.epoch, s.first_tick(), s.last_tick()), (9, 1, 7));
        assert_eq!((s.first_at_ms, s.last_at_ms), (1_050, 1_350));
        assert_eq!(s.hashes, [StateHash { tick: 5, crc: 55 }]);
        let s = h.cut(10).expect("the rest");
        assert_eq!((s.first_tick(), s.last_tick(), s.hashes.len()), (8, 10, 1));
        assert!(h.cut(10).is_none(), "nothing left");
    }

    #[test]
    fn a_buffer_full_while_the_archive_is_down_drops_its_oldest_ticks() {
        let mut h = HistoryBuffer::new(1, 5);
        h.hash(StateHash { tick: 2, crc: 2 });
        let dropped: u64 = (1..=8).map(|tick| h.tick(&entry(tick), tick)).sum();
        assert_eq!(dropped, 3);
        let s = h.cut(8).expect("a segment");
        assert_eq!((s.first_tick(), s.last_tick()), (4, 8));
        assert!(s.hashes.is_empty(), "the dropped tick's hash went with it");
    }

    #[test]
    fn the_window_is_kept_in_whole_segments() {
        let s = HistorySettings { window: Duration::from_secs(900), segment: Duration::from_secs(30), max_bytes: 1 };
        assert_eq!(s.keep(), 31);
        assert!(!HistorySettings { window: Duration::ZERO, ..s }.enabled());
    }
}
