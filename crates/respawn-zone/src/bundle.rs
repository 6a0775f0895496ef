//! Incident bundles: one self-contained file with what a replay of a window
//! of a zone's history needs (`respawn ctl incident export`, `respawn
//! replay --bundle`): the starting snapshot (which carries the zone's
//! configuration), the history segments through the end (which carry the
//! recorded state hashes), the window asked for, and which build exported
//! it. Replayed anywhere, offline, with no store.
//!
//! Layout: `b"RSPB"`, format version (u16 LE), reserved (u16), the
//! exporting build's version, the zone's name (each a u16 length and UTF-8),
//! the zone's id and tick rate (u32 LE each), the first and last ticks of
//! the window (u64 LE each), the snapshot (u32 length, bytes), the segments
//! (a u32 count, then each a u32 length and bytes), and a CRC-32 of
//! everything before it (u32 LE).

use respawn_sim::Zone;
use respawn_store::history::{ByteReader, HistorySegment, Truncated};

use crate::replay::History;

pub const MAGIC: [u8; 4] = *b"RSPB";
pub const FORMAT_VERSION: u16 = 1;
/// Largest bundle read (an untrusted file).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;

/// What a bundle holds besides the history itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// The version of the build that exported it.
    pub build: String,
    pub zone: String,
    pub tick_hz: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not an incident bundle (no RSPB header)")]
    NotABundle,
    #[error("incident bundle format {0}; this build reads format {FORMAT_VERSION}")]
    Format(u16),
    #[error("incident bundle truncated ({0} missing)")]
    Truncated(&'static str),
    #[error("incident bundle corrupt: its checksum does not match")]
    Checksum,
    #[error("incident bundle invalid: {0}")]
    Invalid(String),
}

/// The bundle of `history` (as [`crate::replay::load`] found it).
pub fn encode(history: &History, info: &BundleInfo) -> Vec<u8> {
    let snapshot = history.start.encode_snapshot();
    let segments: Vec<Vec<u8>> = history.segments.iter().map(HistorySegment::encode).collect();
    let mut out = Vec::with_capacity(64 + snapshot.len() + segments.iter().map(|s| s.len() + 4).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    for text in [&info.build, &info.zone] {
        out.extend_from_slice(&(text.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&text.as_bytes()[..text.len().min(u16::MAX as usize)]);
    }
    out.extend_from_slice(&history.zone_id.to_le_bytes());
    out.extend_from_slice(&info.tick_hz.to_le_bytes());
    out.extend_from_slice(&history.from.to_le_bytes());
    out.extend_from_slice(&history.to.to_le_bytes());
    out.extend_from_slice(&(snapshot.len() as u32).to_le_bytes());
    out.extend_from_slice(&snapshot);
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for segment in &segments {
        out.extend_from_slice(&(segment.len() as u32).to_le_bytes());
        out.extend_from_slice(segment);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a bundle, checking its header, checksum, snapshot and segments.
pub fn decode(bytes: &[u8]) -> Result<(History, BundleInfo), BundleError> {
    if bytes.len() < 4 || bytes[..4] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::Invalid(format!("{} bytes, more than a bundle may hold", bytes.len())));
    }
    let mut r = ByteReader::new(bytes, 4);
    let version = r.u16("header")?;
    if version != FORMAT_VERSION {
        return Err(BundleError::Format(version));
    }
    r.u16("header")?;
    let build = text(&mut r, "build")?;
    let zone = text(&mut r, "zone name")?;
    let (zone_id, tick_hz) = (r.u32("zone id")?, r.u32("tick rate")?);
    let (from, to) = (r.u64("window")?, r.u64("window")?);
    let snapshot_len = r.u32("snapshot")? as usize;
    let snapshot = r.take(snapshot_len, "snapshot")?;
    let count = r.u32("segments")? as usize;
    let mut raw_segments = Vec::with_capacity(count.min(bytes.len() / 4));
    for _ in 0..count {
        let len = r.u32("segments")? as usize;
        raw_segments.push(r.take(len, "segments")?);
    }
    let body = r.at();
    let crc = r.u32("checksum")?;
    if r.at() != bytes.len() {
        return Err(BundleError::Invalid(format!("{} bytes after the checksum", bytes.len() - r.at())));
    }
    if crc32fast::hash(&bytes[..body]) != crc {
        return Err(BundleError::Checksum);
    }
    let start = Zone::decode_snapshot(snapshot).map_err(|e| BundleError::Invalid(format!("its snapshot: {e}")))?;
    if start.config().zone_id != zone_id {
        return Err(BundleError::Invalid(format!("its snapshot is of zone {}, not {zone_id}", start.config().zone_id)));
    }
    let segments = raw_segments
        .into_iter()
        .map(|raw| HistorySegment::decode(raw).map_err(|e| BundleError::Invalid(format!("a segment: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut next = start.tick_number() + 1;
    for segment in &segments {
        if segment.first_tick() > next {
            return Err(BundleError::Invalid(format!("a gap after tick {}", next - 1)));
        }
        next = next.max(segment.last_tick() + 1);
    }
    if from <= start.tick_number() || from > to || to >= next {
        return Err(BundleError::Invalid(format!(
            "its window, ticks {from} to {to}, is not within its snapshot (tick {}) and history (through {})",
            start.tick_number(),
            next - 1
        )));
    }
    Ok((History { zone_id, start, segments, from, to }, BundleInfo { build, zone, tick_hz }))
}

/// A UTF-8 text behind its u16 length.
fn text(r: &mut ByteReader<'_>, what: &'static str) -> Result<String, BundleError> {
    let len = r.u16(what)? as usize;
    String::from_utf8(r.take(len, what)?.to_vec()).map_err(|_| BundleError::Invalid(format!("its {what} is not UTF-8")))
}

impl From<Truncated> for BundleError {
    fn from(Truncated(what): Truncated) -> Self {
        BundleError::Truncated(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_store::JournalEntry;

    fn history() -> History {
        let mut zone = Zone::new(respawn_sim::ZoneConfig::standard(3, "bundled", 7)).expect("zone");
        zone.tick(&[]);
        let start = zone.clone();
        let batch = respawn_sim::command::encode_batch(&[]);
        let entries = (2..=6).map(|tick| JournalEntry { tick, batch: batch.clone() }).collect();
        let segment =
            HistorySegment { epoch: zone.epoch(), first_at_ms: 1, last_at_ms: 2, entries, hashes: Vec::new() };
        History { zone_id: 3, start, segments: vec![segment], from: 3, to: 5 }
    }

    fn info() -> BundleInfo {
        BundleInfo { build: "0.1.0".into(), zone: "bundled".into(), tick_hz: 20 }
    }

    #[test]
    fn a_bundle_reads_back_as_exported() {
        let bytes = encode(&history(), &info());
        let (read, read_info) = decode(&bytes).expect("a bundle");
        assert_eq!(read_info, info());
        let h = history();
        assert_eq!((read.zone_id, read.from, read.to), (h.zone_id, h.from, h.to));
        assert_eq!(read.segments, h.segments);
        assert!(read.start.encode_snapshot() == h.start.encode_snapshot());
    }

    #[test]
    fn a_cut_or_altered_bundle_is_refused_with_a_reason() {
        let bytes = encode(&history(), &info());
        for len in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut altered = bytes.clone();
            altered[i] ^= 0x21;
            assert!(decode(&altered).is_err(), "byte {i} altered");
        }
        assert!(matches!(decode(b"RSPN"), Err(BundleError::NotABundle)));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(BundleError::Invalid(_))));
    }
}
