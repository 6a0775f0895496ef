//! `respawn ctl restore`: rolls a zone back to a cold snapshot
//! (point-in-time restore), working on the stores directly.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use respawn_harness::zone::StoreFlags;
use respawn_sim::Zone;
use respawn_store::{SnapshotMeta, StoredSnapshot};
use respawn_zone::ServerConfig;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Zone name (or numeric id).
    #[arg(long)]
    zone: String,
    /// A tick number, or a UTC time like 2026-11-26T10:00:00Z.
    #[arg(long)]
    at: String,
    /// Do it; without this flag only say what would be done.
    #[arg(long)]
    yes: bool,
    /// The zone server's configuration file (to find the zone's id).
    #[arg(long, env = "RESPAWN_ZONE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    stores: StoreFlags,
}

/// Where to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Tick(u64),
    /// Unix milliseconds.
    Time(u64),
}

fn parse_point(at: &str) -> Result<Point> {
    if let Ok(tick) = at.parse::<u64>() {
        return Ok(Point::Tick(tick));
    }
    parse_utc(at)
        .map(Point::Time)
        .ok_or_else(|| anyhow!("--at {at:?} is neither a tick nor a UTC time like 2026-11-26T10:00:00Z"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix milliseconds.
pub(crate) fn parse_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else { return None };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *hh > 23 || *mm > 59 || *ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 86_400 + hh * 3_600 + mm * 60 + ss) * 1_000).max(0)).ok()
}

fn pick(metas: &[SnapshotMeta], at: Point) -> Option<SnapshotMeta> {
    metas
        .iter()
        .filter(|m| match at {
            Point::Tick(t) => m.tick <= t,
            Point::Time(ms) => m.taken_at_ms <= ms,
        })
        .max_by_key(|m| (m.tick, m.taken_at_ms))
        .copied()
}

pub async fn run(args: RestoreArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::defaults(),
    };
    let zone = config
        .zones
        .iter()
        .find(|z| z.name == args.zone || z.zone_id.to_string() == args.zone)
        .ok_or_else(|| anyhow!("no zone {:?} in the configuration", args.zone))?;
    let at = parse_point(&args.at)?;
    let stores = crate::build_stores(&args.stores).await?;
    let metas = stores.cold.list(zone.zone_id).await.context("cannot list cold snapshots")?;
    let target = pick(&metas, at).ok_or_else(|| {
        anyhow!("no cold snapshot of {} at or before {}; there are {} in all", zone.name, args.at, metas.len())
    })?;
    let snapshot = stores
        .cold
        .get(zone.zone_id, target.tick)
        .await?
        .ok_or_else(|| anyhow!("cold snapshot at tick {} vanished", target.tick))?;
    let mut decoded = Zone::decode_snapshot(&snapshot.bytes).map_err(|e| anyhow!("that snapshot is unusable: {e}"))?;
    let newer = metas.iter().filter(|m| m.tick > target.tick).count();
    println!(
        "zone {} (id {}): cold snapshot at tick {} taken at {} ms, {} players; {} newer cold snapshots would be deleted",
        zone.name,
        zone.zone_id,
        target.tick,
        target.taken_at_ms,
        decoded.players().len(),
        newer
    );
    if !args.yes {
        println!("dry run: rerun with --yes to restore (stop the zone server first)");
        return Ok(());
    }
    let deleted = stores.cold.delete_after(zone.zone_id, target.tick).await?;
    stores.hot.clear(zone.zone_id).await.context("cannot clear hot snapshots")?;
    // Continuing from an older point forks the zone's history: a new epoch
    // keeps the new timeline's event ids apart from the abandoned one's.
    decoded.set_epoch(respawn_zone::persist::new_epoch());
    let bytes = decoded.encode_snapshot();
    stores.hot.put(StoredSnapshot { meta: target, bytes }).await.context("cannot write the hot snapshot")?;
    stores.journal.reset(zone.zone_id).await.context("cannot reset the journal")?;
    println!("restored: {deleted} newer cold snapshots deleted, hot snapshot and journal reset; start the zone server");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_as_ticks_or_utc_times() {
        assert_eq!(parse_point("1200").ok(), Some(Point::Tick(1200)));
        assert_eq!(parse_point("1970-01-01T00:00:01Z").ok(), Some(Point::Time(1_000)));
        assert_eq!(parse_point("2026-11-26T10:00:00Z").ok(), Some(Point::Time(1_795_687_200_000)));
        assert!(parse_point("yesterday").is_err());
        assert!(parse_point("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn pick_takes_the_newest_at_or_before() {
        let m = |tick, ms| SnapshotMeta { zone: 1, tick, taken_at_ms: ms };
        let metas = [m(100, 10), m(300, 30), m(200, 20)];
        assert_eq!(pick(&metas, Point::Tick(250)), Some(m(200, 20)));
        assert_eq!(pick(&metas, Point::Time(30)), Some(m(300, 30)));
        assert_eq!(pick(&metas, Point::Tick(99)), None);
    }
}
