//! A zone's history, kept for replay (`respawn replay`): the command batch
//! of every tick of a stretch, the state hashes taken along it, and when.
//! Segments are archived in a [`crate::ColdSnapshots`] store of their own
//! (fenced and insert-only like the cold snapshots, each indexed by its
//! last tick), beside the cold snapshots a replay starts from.
//!
//! Layout: `b"RSPH"`, format version (u16 LE), reserved (u16), then the
//! zone's epoch, the first tick, the first and last ticks' wall-clock times
//! (u64 LE each), the entries (a u32 count, then each tick (u64) and batch
//! (u32 length, bytes)), the hashes (a u32 count, then each tick (u64) and
//! hash (u32)), and a CRC-32 of everything before it (u32 LE).

use crate::JournalEntry;

pub const MAGIC: [u8; 4] = *b"RSPH";
pub const FORMAT_VERSION: u16 = 1;
/// Largest segment a decoder accepts (a replay reads untrusted files too).
pub const MAX_SEGMENT_BYTES: usize = 256 * 1024 * 1024;

/// The state of a zone after a tick, as the CRC-32 of its snapshot's
/// payload (the one its snapshot header carries): equal zones, equal hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateHash {
    pub tick: u64,
    pub crc: u32,
}

impl StateHash {
    /// The hash a snapshot's header carries, if `snapshot` has one.
    pub fn of_snapshot(tick: u64, snapshot: &[u8]) -> Option<Self> {
        let crc = snapshot.get(12..16)?;
        Some(Self { tick, crc: u32::from_le_bytes(crc.try_into().ok()?) })
    }
}

/// A stretch of one zone's history: consecutive ticks of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySegment {
    /// The zone's timeline (its event ids' epoch) during these ticks.
    pub epoch: u64,
    /// Wall-clock times (Unix ms) of the first and last ticks.
    pub first_at_ms: u64,
    pub last_at_ms: u64,
    /// Consecutive ticks, oldest first; never empty.
    pub entries: Vec<JournalEntry>,
    /// Hashes of the state after some of those ticks, oldest first.
    pub hashes: Vec<StateHash>,
}

/// Why bytes are not a history segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a history segment (no RSPH header)")]
    NotASegment,
    #[error("history segment format {0}; this build reads format {FORMAT_VERSION}")]
    Format(u16),
    #[error("history segment truncated: {0}")]
    Truncated(&'static str),
    #[error("history segment corrupt: its checksum does not match")]
    Checksum,
    #[error("history segment invalid: {0}")]
    Invalid(String),
}

impl HistorySegment {
    pub fn first_tick(&self) -> u64 {
        self.entries.first().map_or(0, |e| e.tick)
    }

    pub fn last_tick(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.tick)
    }

    /// The tick at (or just after) wall-clock `at_ms`, reckoned from the
    /// segment's first and last ticks' times; `None` if outside it.
    pub fn tick_at(&self, at_ms: u64) -> Option<u64> {
        if at_ms < self.first_at_ms || at_ms > self.last_at_ms {
            return None;
        }
        let (span_ms, span_ticks) = (self.last_at_ms - self.first_at_ms, self.last_tick() - self.first_tick());
        let offset = match span_ms {
            0 => 0,
            _ => ((at_ms - self.first_at_ms) as u128 * span_ticks as u128).div_ceil(span_ms as u128) as u64,
        };
        Some(self.first_tick() + offset)
    }

    pub fn encode(&self) -> Vec<u8> {
        let size = 48 + self.entries.iter().map(|e| 12 + e.batch.len()).sum::<usize>() + self.hashes.len() * 12;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        for n in [self.epoch, self.first_tick(), self.first_at_ms, self.last_at_ms] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.tick.to_le_bytes());
            out.extend_from_slice(&(entry.batch.len() as u32).to_le_bytes());
            out.extend_from_slice(&entry.batch);
        }
        out.extend_from_slice(&(self.hashes.len() as u32).to_le_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(&hash.tick.to_le_bytes());
            out.extend_from_slice(&hash.crc.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a segment: its header, checksum, consecutive
    /// ticks and hashes within them.
    pub fn decode(bytes: &[u8]) -> Result<Self, SegmentError> {
        if bytes.len() < 4 || bytes[..4] != MAGIC {
            return Err(SegmentError::NotASegment);
        }
        if bytes.len() > MAX_SEGMENT_BYTES {
            return Err(SegmentError::Invalid(format!("{} bytes, more than a segment may hold", bytes.len())));
        }
        let mut r = ByteReader::new(bytes, 4);
        let version = r.u16("header")?;
        if version != FORMAT_VERSION {
            return Err(SegmentError::Format(version));
        }
        r.u16("header")?;
        let (epoch, first_tick, first_at_ms, last_at_ms) =
            (r.u64("header")?, r.u64("header")?, r.u64("header")?, r.u64("header")?);
        let count = r.u32("entries")? as usize;
        let mut entries = Vec::with_capacity(count.min(bytes.len() / 12));
        for i in 0..count {
            let tick = r.u64("entries")?;
            if tick != first_tick + i as u64 {
                return Err(SegmentError::Invalid(format!("tick {tick} where {} was due", first_tick + i as u64)));
            }
            let len = r.u32("entries")? as usize;
            entries.push(JournalEntry { tick, batch: r.take(len, "entries")?.to_vec() });
        }
        let count = r.u32("hashes")? as usize;
        let mut hashes = Vec::with_capacity(count.min(bytes.len() / 12));
        for _ in 0..count {
            hashes.push(StateHash { tick: r.u64("hashes")?, crc: r.u32("hashes")? });
        }
        let body = r.at();
        let crc = r.u32("checksum")?;
        if r.at() != bytes.len() {
            return Err(SegmentError::Invalid(format!("{} bytes after the checksum", bytes.len() - r.at())));
        }
        if crc32fast::hash(&bytes[..body]) != crc {
            return Err(SegmentError::Checksum);
        }
        let segment = Self { epoch, first_at_ms, last_at_ms, entries, hashes };
        if segment.entries.is_empty() {
            return Err(SegmentError::Invalid("no tick".into()));
        }
        if first_at_ms > last_at_ms {
            return Err(SegmentError::Invalid("its last tick is older than its first".into()));
        }
        let within = |h: &StateHash| (segment.first_tick()..=segment.last_tick()).contains(&h.tick);
        if !segment.hashes.iter().all(within) || !segment.hashes.is_sorted_by_key(|h| h.tick) {
            return Err(SegmentError::Invalid("a state hash outside its ticks, or out of order".into()));
        }
        Ok(segment)
    }
}

/// What a [`ByteReader`] ran out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated(pub &'static str);

impl From<Truncated> for SegmentError {
    fn from(Truncated(what): Truncated) -> Self {
        SegmentError::Truncated(what)
    }
}

/// Little-endian fields off untrusted bytes, each read checked against
/// their end (the history's segments, the incident bundles).
#[derive(Debug)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> ByteReader<'a> {
    /// Reads `bytes` from `at` on.
    pub fn new(bytes: &'a [u8], at: usize) -> Self {
        Self { bytes, at }
    }

    /// Where the next read starts.
    pub fn at(&self) -> usize {
        self.at
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or(Truncated(what))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Truncated> {
        self.take(N, what)?.try_into().map_err(|_| Truncated(what))
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> HistorySegment {
        HistorySegment {
            epoch: 7,
            first_at_ms: 1_000,
            last_at_ms: 1_100,
            entries: (41..=43).map(|tick| JournalEntry { tick, batch: vec![tick as u8; tick as usize % 5] }).collect(),
            hashes: vec![StateHash { tick: 42, crc: 0xDEAD_BEEF }],
        }
    }

    #[test]
    fn a_segment_decodes_to_what_was_encoded() {
        let s = segment();
        assert_eq!(HistorySegment::decode(&s.encode()), Ok(s.clone()));
        assert_eq!((s.first_tick(), s.last_tick()), (41, 43));
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused_with_a_reason() {
        let bytes = segment().encode();
        for len in 0..bytes.len() {
            assert!(HistorySegment::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert!(HistorySegment::decode(&flipped).is_err(), "byte {i} flipped");
        }
        assert_eq!(HistorySegment::decode(b"RSPN...."), Err(SegmentError::NotASegment));
    }

    #[test]
    fn ticks_are_found_by_time_within_the_segment() {
        let s = segment();
        assert_eq!(s.tick_at(1_000), Some(41));
        assert_eq!(s.tick_at(1_050), Some(42));
        assert_eq!(s.tick_at(1_051), Some(43));
        assert_eq!(s.tick_at(1_100), Some(43));
        assert_eq!((s.tick_at(999), s.tick_at(1_101)), (None, None));
    }

    #[test]
    fn the_hash_of_a_snapshot_is_the_one_its_header_carries() {
        let snapshot = [b"RSPN".as_slice(), &[3, 0, 0, 0], &[1, 0, 0, 0], &0x0102_0304u32.to_le_bytes(), &[9]].concat();
        assert_eq!(StateHash::of_snapshot(5, &snapshot), Some(StateHash { tick: 5, crc: 0x0102_0304 }));
        assert_eq!(StateHash::of_snapshot(5, b"short"), None);
    }
}
