//! The durable outbox: an ordered queue of records on local disk that a
//! publisher drains (to Kafka) and acknowledges. Records survive a crash of
//! the process; only what was acknowledged is deleted. The queue is bounded
//! by a byte quota: past it the oldest segments are dropped, and every
//! dropped record is counted and logged as an error.
//!
//! Layout: segment files `<first seq>.seg` of records `len u32 | crc32 u32 |
//! bytes` (little-endian), and `acked`, the next unacknowledged sequence
//! number (8 bytes, written atomically). `acked` is written at most once
//! per [`ACK_WRITTEN_EVERY`] (and by [`Outbox::write_ack`]): after a crash,
//! up to that much of what was published is published again, which the
//! event log's consumers take once (events carry their ids), instead of two
//! fsyncs for every batch published. An append is all or nothing: a
//! write that fails (a full disk) is cut back off before the error returns,
//! so a retried append follows whole records. A torn record at the end of
//! the last segment (a crash mid-write) is cut off when the outbox is
//! opened; reads check every record's bounds and CRC and refuse a bad one
//! with an error. New files' directory entries are fsynced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

const HEADER: usize = 8;
/// How often, at most, an acknowledgement is written to disk by [`Outbox::ack`].
pub const ACK_WRITTEN_EVERY: Duration = Duration::from_secs(1);

/// The record at `at` in a segment's bytes, its length and body, if it is
/// whole and its CRC holds.
fn record_at(bytes: &[u8], at: usize) -> Option<(usize, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let body = bytes.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some((len, body))
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    records: u64,
    bytes: u64,
    /// When its first record was written (Unix ms; the file's mtime after a restart).
    created_ms: u64,
}

#[derive(Debug)]
struct Inner {
    /// By first sequence number.
    segments: BTreeMap<u64, Segment>,
    next_seq: u64,
    /// Next sequence number not yet acknowledged.
    acked: u64,
    /// What the `acked` file holds, and when it was written (never: `None`).
    ack_written: (u64, Option<Instant>),
    /// Where the last read stopped: records there are read from that byte
    /// on, not from the start of their segment again.
    cursor: Option<Cursor>,
    writer: Option<File>,
    total_bytes: u64,
    dropped: u64,
}

/// Figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    pub bytes: u64,
    pub pending: u64,
    /// Age of the oldest pending record's segment, 0 when empty.
    pub oldest_age_ms: u64,
    pub dropped: u64,
    pub next_seq: u64,
}

/// Record `seq` starts at byte `offset` of the segment whose first record is `segment`.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    quota_bytes: u64,
    segment_bytes: u64,
    ack_written_every: Duration,
    inner: Mutex<Inner>,
}

fn lock_err() -> std::io::Error {
    std::io::Error::other("outbox lock poisoned")
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`.
    pub fn open(dir: &Path, quota_bytes: u64, segment_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let acked = match std::fs::read(dir.join("acked")) {
            Ok(b) if b.len() == 8 => u64::from_le_bytes(b.try_into().unwrap_or_default()),
            Ok(_) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut next_seq = acked;
        let last = firsts.last().copied();
        for first in firsts {
            let path = dir.join(format!("{first:020}.seg"));
            let (records, good_len) = Self::scan(&path)?;
            let meta = std::fs::metadata(&path)?;
            if good_len < meta.len() {
                if Some(first) == last {
                    tracing::warn!(segment = first, "outbox segment ends with a torn record; cutting it off");
                    OpenOptions::new().write(true).open(&path)?.set_len(good_len)?;
                } else {
                    tracing::error!(
                        segment = first,
                        "outbox segment is corrupt in the middle; records after it are lost"
                    );
                }
            }
            let created_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            segments.insert(first, Segment { records, bytes: good_len, created_ms });
            next_seq = next_seq.max(first + records);
        }
        // Segments wholly acknowledged before a crash are deleted now.
        let done: Vec<u64> = segments.iter().filter(|(f, s)| **f + s.records <= acked).map(|(f, _)| *f).collect();
        for first in done {
            segments.remove(&first);
            std::fs::remove_file(dir.join(format!("{first:020}.seg")))?;
        }
        let total_bytes = segments.values().map(|s| s.bytes).sum();
        let inner = Inner {
            segments,
            next_seq,
            acked,
            ack_written: (acked, None),
            cursor: None,
            writer: None,
            total_bytes,
            dropped: 0,
        };
        Ok(Self {
            dir: dir.to_owned(),
            quota_bytes,
            segment_bytes: segment_bytes.max(1),
            ack_written_every: ACK_WRITTEN_EVERY,
            inner: Mutex::new(inner),
        })
    }

    /// Writes acknowledgements to disk at most once per `every` instead of
    /// [`ACK_WRITTEN_EVERY`].
    pub fn ack_written_every(mut self, every: Duration) -> Self {
        self.ack_written_every = every;
        self
    }

    fn seg_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.seg"))
    }

    /// Counts the valid records of a segment and the length they span.
    fn scan(path: &Path) -> std::io::Result<(u64, u64)> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let (mut at, mut records) = (0usize, 0u64);
        while let Some((len, _)) = record_at(&bytes, at) {
            at += HEADER + len;
            records += 1;
        }
        Ok((records, at as u64))
    }

    /// Appends records durably (fsync) and returns how many old records the
    /// quota forced out.
    pub fn append(&self, records: &[Vec<u8>]) -> std::io::Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut inner = self.inner.lock().map_err(|_| lock_err())?;
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
        }
        let current = inner.segments.iter().next_back().map(|(f, s)| (*f, *s));
        let first = match current {
            Some((first, seg)) if seg.bytes < self.segment_bytes && inner.writer.is_some() => first,
            Some((first, seg)) if seg.bytes < self.segment_bytes => {
                let file = OpenOptions::new().append(true).open(self.seg_path(first))?;
                // A fragment a failed append could not cut off then goes now.
                if file.metadata()?.len() > seg.bytes {
                    file.set_len(seg.bytes)?;
                }
                inner.writer = Some(file);
                first
            }
            _ => {
                let first = inner.next_seq;
                inner.writer = Some(OpenOptions::new().create(true).append(true).open(self.seg_path(first))?);
                inner.segments.insert(first, Segment { records: 0, bytes: 0, created_ms: crate::unix_ms() });
                crate::file::sync_dir(&self.dir)?;
                first
            }
        };
        let before = inner.segments.get(&first).map_or(0, |s| s.bytes);
        let writer = inner.writer.as_mut().ok_or_else(|| std::io::Error::other("no outbox writer"))?;
        if let Err(e) = writer.write_all(&buf).and_then(|()| writer.sync_data()) {
            // All or nothing: the segment ends at its last whole record
            // again, so the records retried later follow it and not a fragment.
            if let Err(cut) = writer.set_len(before) {
                tracing::error!(error = %cut, segment = first, "cannot cut a failed outbox append off yet");
            }
            inner.writer = None;
            return Err(e);
        }
        if let Some(seg) = inner.segments.get_mut(&first) {
            seg.records += records.len() as u64;
            seg.bytes += buf.len() as u64;
        }
        inner.next_seq += records.len() as u64;
        inner.total_bytes += buf.len() as u64;
        let mut dropped = 0;
        while inner.total_bytes > self.quota_bytes && inner.segments.len() > 1 {
            let Some((oldest, seg)) = inner.segments.pop_first() else { break };
            std::fs::remove_file(self.seg_path(oldest))?;
            inner.total_bytes -= seg.bytes;
            let unacked = (oldest + seg.records).saturating_sub(inner.acked.max(oldest));
            dropped += unacked;
            inner.acked = inner.acked.max(oldest + seg.records);
        }
        if dropped > 0 {
            inner.dropped += dropped;
            tracing::error!(dropped, quota_bytes = self.quota_bytes, "outbox over its quota: oldest events dropped");
        }
        Ok(dropped)
    }

    /// Up to `max` records from sequence `from` on (or the oldest kept, if
    /// later), in order. A read that goes on from where the last one stopped
    /// reads only the bytes after it.
    pub fn read(&self, from: u64, max: usize) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let (segments, cursor): (Vec<(u64, Segment)>, _) = {
            let inner = self.inner.lock().map_err(|_| lock_err())?;
            (inner.segments.iter().map(|(f, s)| (*f, *s)).collect(), inner.cursor)
        };
        let mut out = Vec::new();
        let mut stopped = None;
        for (first, seg) in segments {
            if first + seg.records <= from || out.len() >= max {
                continue;
            }
            let (mut seq, start) = match cursor {
                Some(c) if c.segment == first && c.seq <= from.max(first) => (c.seq, c.offset),
                _ => (first, 0),
            };
            let mut file = File::open(self.seg_path(first))?;
            let mut bytes = vec![0u8; seg.bytes.saturating_sub(start) as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut bytes)?;
            let mut at = 0usize;
            while seq < first + seg.records && out.len() < max {
                let (len, body) = record_at(&bytes, at).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("outbox segment {first}: record {seq} is torn or corrupt"),
                    )
                })?;
                if seq >= from {
                    out.push((seq, body.to_vec()));
                }
                at += HEADER + len;
                seq += 1;
            }
            stopped = Some(Cursor { seq, segment: first, offset: start + at as u64 });
        }
        if let Some(stopped) = stopped {
            self.inner.lock().map_err(|_| lock_err())?.cursor = Some(stopped);
        }
        Ok(out)
    }

    /// The next sequence number not yet acknowledged.
    pub fn acked(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.acked)
    }

    /// How many records are not acknowledged yet (without touching the disk).
    pub fn pending(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.next_seq.saturating_sub(i.acked))
    }

    /// Everything up to and including `seq` reached its destination: it may
    /// go. Written to disk if the last write is [`ACK_WRITTEN_EVERY`] old.
    pub fn ack(&self, seq: u64) -> std::io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| lock_err())?;
        let next = (seq + 1).min(inner.next_seq);
        if next <= inner.acked {
            return Ok(());
        }
        inner.acked = next;
        if inner.ack_written.1.is_none_or(|at| at.elapsed() >= self.ack_written_every) {
            self.write_ack_locked(&mut inner)?;
        }
        let current = inner.segments.keys().next_back().copied();
        let done: Vec<u64> = inner
            .segments
            .iter()
            .filter(|(f, s)| **f + s.records <= next && Some(**f) != current)
            .map(|(f, _)| *f)
            .collect();
        for first in done {
            if let Some(seg) = inner.segments.remove(&first) {
                inner.total_bytes -= seg.bytes;
            }
            std::fs::remove_file(self.seg_path(first))?;
        }
        Ok(())
    }

    /// Writes the acknowledgements made since the last write to disk (when
    /// the publisher stops).
    pub fn write_ack(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| lock_err())?;
        self.write_ack_locked(&mut inner)
    }

    fn write_ack_locked(&self, inner: &mut Inner) -> std::io::Result<()> {
        if inner.ack_written.0 == inner.acked {
            return Ok(());
        }
        crate::file::write_atomic_io(&self.dir.join("acked"), &inner.acked.to_le_bytes())?;
        inner.ack_written = (inner.acked, Some(Instant::now()));
        Ok(())
    }

    pub fn stats(&self) -> OutboxStats {
        let Ok(inner) = self.inner.lock() else {
            return OutboxStats { bytes: 0, pending: 0, oldest_age_ms: 0, dropped: 0, next_seq: 0 };
        };
        let pending = inner.next_seq.saturating_sub(inner.acked);
        let oldest = inner
            .segments
            .iter()
            .find(|(f, s)| **f + s.records > inner.acked)
            .map_or(0, |(_, s)| crate::unix_ms().saturating_sub(s.created_ms));
        OutboxStats {
            bytes: inner.total_bytes,
            pending,
            oldest_age_ms: if pending == 0 { 0 } else { oldest },
            dropped: inner.dropped,
            next_seq: inner.next_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("respawn-outbox-{tag}-{}", respawn_harness::unique_suffix()))
    }

    fn recs(from: u8, n: u8) -> Vec<Vec<u8>> {
        (from..from + n).map(|i| vec![i; 10]).collect()
    }

    /// The first segment's path and bytes, for a test to spoil them.
    fn first_segment(d: &Path) -> (PathBuf, Vec<u8>) {
        let seg = d.join(format!("{:020}.seg", 0));
        let bytes = std::fs::read(&seg).expect("segment");
        (seg, bytes)
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let d = dir("order");
        let ob = Outbox::open(&d, 1 << 30, 64).expect("open");
        ob.append(&recs(0, 5)).expect("append");
        ob.append(&recs(5, 5)).expect("append");
        let read = ob.read(0, 100).expect("read");
        assert_eq!(read.len(), 10);
        assert!(read.iter().enumerate().all(|(i, (seq, r))| *seq == i as u64 && r[0] == i as u8));
        ob.ack(3).expect("ack");
        drop(ob);
        let ob = Outbox::open(&d, 1 << 30, 64).expect("reopen");
        assert_eq!(ob.acked(), 4);
        let rest = ob.read(ob.acked(), 100).expect("read");
        assert_eq!(rest.first().map(|r| r.0), Some(4));
        assert_eq!(rest.len(), 6);
        ob.append(&recs(10, 1)).expect("append");
        assert_eq!(ob.read(10, 10).expect("read"), vec![(10, vec![10; 10])]);
        assert_eq!(ob.stats().pending, 7);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn acknowledgements_reach_the_disk_at_most_once_per_interval_and_when_written() {
        let d = dir("ack-written");
        let ob = Outbox::open(&d, 1 << 30, 1 << 20).expect("open").ack_written_every(Duration::from_secs(3600));
        ob.append(&recs(0, 6)).expect("append");
        let on_disk = || Outbox::open(&d, 1 << 30, 1 << 20).expect("reopen").acked();
        ob.ack(1).expect("ack");
        assert_eq!(on_disk(), 2, "the first acknowledgement is written at once");
        ob.ack(3).expect("ack");
        assert_eq!((ob.acked(), ob.pending(), on_disk()), (4, 2, 2), "the next one waits for the interval");
        ob.write_ack().expect("write");
        assert_eq!(on_disk(), 4);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_read_goes_on_where_the_last_one_stopped_without_reading_the_segment_again() {
        let d = dir("cursor");
        let ob = Outbox::open(&d, 1 << 30, 1 << 20).expect("open");
        ob.append(&recs(0, 4)).expect("append");
        let seqs = |read: Vec<(u64, Vec<u8>)>| read.into_iter().map(|(seq, _)| seq).collect::<Vec<_>>();
        assert_eq!(seqs(ob.read(0, 2).expect("read")), [0, 1]);
        // Record 0 is spoiled on disk: reads from where the last one stopped never look at it again.
        let (seg, mut bytes) = first_segment(&d);
        bytes[HEADER] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        ob.append(&recs(4, 1)).expect("append");
        assert_eq!(seqs(ob.read(2, 2).expect("read")), [2, 3]);
        assert_eq!(seqs(ob.read(4, 10).expect("read")), [4]);
        // A read from before that (a publish that failed) starts at the segment's beginning.
        assert!(ob.read(0, 10).is_err(), "record 0 is read again, and found spoiled");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn acknowledged_segments_are_deleted() {
        let d = dir("ack");
        let ob = Outbox::open(&d, 1 << 30, 40).expect("open");
        for i in 0..6 {
            ob.append(&recs(i, 1)).expect("append");
        }
        let before = ob.stats().bytes;
        ob.ack(5).expect("ack");
        let s = ob.stats();
        assert!(s.bytes < before, "{s:?}");
        assert_eq!((s.pending, s.oldest_age_ms), (0, 0));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn over_quota_the_oldest_are_dropped_and_counted() {
        let d = dir("quota");
        let ob = Outbox::open(&d, 100, 36).expect("open");
        let mut dropped = 0;
        for i in 0..20 {
            dropped += ob.append(&recs(i, 1)).expect("append");
        }
        let s = ob.stats();
        assert!(dropped > 0 && s.dropped == dropped, "{s:?}");
        assert!(s.bytes <= 100 + 36, "{s:?}");
        let kept = ob.read(0, 100).expect("read");
        assert_eq!(kept.len() as u64 + dropped, 20, "every record is either kept or counted");
        assert_eq!(kept.last().map(|r| r.0), Some(19));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_corrupt_record_is_refused_with_an_error_not_a_panic() {
        let d = dir("corrupt");
        let ob = Outbox::open(&d, 1 << 30, 1 << 20).expect("open");
        ob.append(&recs(0, 3)).expect("append");
        let (seg, mut bytes) = first_segment(&d);
        // The second record's length now points past the end of the file.
        let second = HEADER + 10;
        bytes[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&seg, &bytes).expect("write");
        let error = ob.read(0, 10).expect_err("a bad record");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("record 1 is torn or corrupt"), "{error}");
        // And a flipped byte of a body fails its CRC.
        bytes[second..second + 4].copy_from_slice(&1u32.to_le_bytes());
        bytes[second + HEADER] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        assert!(ob.read(0, 10).is_err());
        // A segment shorter than what was written is an error too.
        std::fs::write(&seg, &bytes[..5]).expect("write");
        assert!(ob.read(0, 10).is_err());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_open() {
        let d = dir("torn");
        let ob = Outbox::open(&d, 1 << 30, 1 << 20).expect("open");
        ob.append(&recs(0, 3)).expect("append");
        drop(ob);
        let seg = d.join(format!("{:020}.seg", 0));
        let mut f = OpenOptions::new().append(true).open(&seg).expect("segment");
        f.write_all(&[9, 0, 0, 0, 1, 2]).expect("write");
        drop(f);
        let ob = Outbox::open(&d, 1 << 30, 1 << 20).expect("reopen");
        assert_eq!(ob.read(0, 10).expect("read").len(), 3);
        ob.append(&recs(3, 1)).expect("append");
        assert_eq!(ob.read(0, 10).expect("read").len(), 4, "appends continue after the cut");
        let _ = std::fs::remove_dir_all(d);
    }
}
