//! Point-in-time restore: a zone's stores rolled back to its newest cold
//! snapshot at or before a tick or a time (`respawn ctl restore`). Newer
//! cold snapshots and history segments are deleted, the hot snapshot becomes the chosen one in a
//! new epoch and the journal is emptied; the zone server, started next,
//! resumes from there. It holds the zone's lease meanwhile, so a zone a
//! server runs is refused: stop the server (or hand the zone off) first.

use respawn_sim::Zone;
use std::time::Duration;

use respawn_store::{Fence, SnapshotMeta, StoreError, StoredSnapshot};

use crate::persist::Stores;

/// Where to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    Tick(u64),
    /// Unix milliseconds.
    Time(u64),
}

impl std::str::FromStr for RestorePoint {
    type Err = String;

    /// A tick number, or a UTC time like `2026-11-26T10:00:00Z`.
    fn from_str(at: &str) -> Result<Self, String> {
        if let Ok(tick) = at.parse::<u64>() {
            return Ok(RestorePoint::Tick(tick));
        }
        parse_utc(at)
            .map(RestorePoint::Time)
            .ok_or_else(|| format!("{at:?} is neither a tick nor a UTC time like 2026-11-26T10:00:00Z"))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix milliseconds.
pub fn parse_utc(s: &str) -> Option<u64> {
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

fn pick(metas: &[SnapshotMeta], at: RestorePoint) -> Option<SnapshotMeta> {
    metas
        .iter()
        .filter(|m| match at {
            RestorePoint::Tick(t) => m.tick <= t,
            RestorePoint::Time(ms) => m.taken_at_ms <= ms,
        })
        .max_by_key(|m| (m.tick, m.taken_at_ms))
        .copied()
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no cold snapshot of zone {zone} at or before that point; there are {stored} in all")]
    NoSnapshot { zone: u32, stored: usize },
    #[error("the cold snapshot at tick {0} vanished")]
    Vanished(u64),
    #[error("zone {zone} is hosted by server {owner:?}: stop it, or hand the zone off, before restoring it")]
    Hosted { zone: u32, owner: String },
    #[error("that snapshot is unusable: {0}")]
    Unusable(String),
    #[error("{what}: {source}")]
    Store { what: &'static str, source: StoreError },
}

fn store(what: &'static str) -> impl FnOnce(StoreError) -> RollbackError {
    move |source| RollbackError::Store { what, source }
}

/// What a rollback would do, found without changing anything.
#[derive(Debug)]
pub struct RollbackPlan {
    pub zone_id: u32,
    /// The cold snapshot rolled back to.
    pub target: SnapshotMeta,
    /// Players in it.
    pub players: usize,
    /// Newer cold snapshots, deleted by the rollback.
    pub newer: usize,
    zone: Zone,
}

/// The rollback of `zone_id` to `at`.
pub async fn plan(stores: &Stores, zone_id: u32, at: RestorePoint) -> Result<RollbackPlan, RollbackError> {
    let metas = stores.cold.list(zone_id).await.map_err(store("cannot list cold snapshots"))?;
    let target = pick(&metas, at).ok_or(RollbackError::NoSnapshot { zone: zone_id, stored: metas.len() })?;
    let snapshot = stores
        .cold
        .get(zone_id, target.tick)
        .await
        .map_err(store("cannot read the cold snapshot"))?
        .ok_or(RollbackError::Vanished(target.tick))?;
    let zone = Zone::decode_snapshot(&snapshot.bytes).map_err(|e| RollbackError::Unusable(e.to_string()))?;
    let newer = metas.iter().filter(|m| m.tick > target.tick).count();
    Ok(RollbackPlan { zone_id, target, players: zone.players().len(), newer, zone })
}

/// Carries `plan` out; how many newer cold snapshots were deleted.
/// Who holds a zone's lease while it is rolled back.
const ROLLBACK_OWNER: &str = "ctl-restore";

pub async fn apply(stores: &Stores, plan: RollbackPlan) -> Result<usize, RollbackError> {
    // The zone's lease, so that no server runs it meanwhile (one that does
    // holds the lease: refused), and so that a server that lost it cannot
    // write over the restored state.
    let lease = stores
        .leases
        .acquire(plan.zone_id, ROLLBACK_OWNER, Duration::from_secs(60))
        .await
        .map_err(store("cannot take the zone's lease"))?;
    let Some(lease) = lease else {
        let (owner, _) = crate::lease::holder_of(stores.leases.as_ref(), plan.zone_id).await;
        return Err(RollbackError::Hosted { zone: plan.zone_id, owner });
    };
    let result = rewind(stores, plan, lease.fence()).await;
    if let Err(e) = stores.leases.release(&lease).await {
        tracing::warn!(zone = lease.zone, error = %e, "the restore's lease was not released; it runs out within a minute");
    }
    result
}

async fn rewind(stores: &Stores, plan: RollbackPlan, fence: Fence) -> Result<usize, RollbackError> {
    let RollbackPlan { zone_id, target, mut zone, .. } = plan;
    let deleted =
        stores.cold.delete_after(zone_id, target.tick).await.map_err(store("cannot delete newer cold snapshots"))?;
    // The abandoned timeline's history goes with it (a segment reaching past the point too).
    stores.history.delete_after(zone_id, target.tick).await.map_err(store("cannot delete the newer history"))?;
    stores.hot.clear(zone_id).await.map_err(store("cannot clear hot snapshots"))?;
    // Continuing from an older point forks the zone's history: a new epoch
    // keeps the new timeline's event ids apart from the abandoned one's.
    zone.set_epoch(crate::persist::new_epoch());
    let bytes = zone.encode_snapshot();
    stores
        .hot
        .put(StoredSnapshot { meta: target, bytes }, fence)
        .await
        .map_err(store("cannot write the hot snapshot"))?;
    stores.journal.reset(zone_id, fence).await.map_err(store("cannot reset the journal"))?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_as_ticks_or_utc_times() {
        assert_eq!("1200".parse(), Ok(RestorePoint::Tick(1200)));
        assert_eq!("1970-01-01T00:00:01Z".parse(), Ok(RestorePoint::Time(1_000)));
        assert_eq!("2026-11-26T10:00:00Z".parse(), Ok(RestorePoint::Time(1_795_687_200_000)));
        assert!("yesterday".parse::<RestorePoint>().is_err());
        assert!("2026-13-01T00:00:00Z".parse::<RestorePoint>().is_err());
    }

    #[test]
    fn pick_takes_the_newest_at_or_before() {
        let m = |tick, ms| SnapshotMeta { zone: 1, tick, taken_at_ms: ms };
        let metas = [m(100, 10), m(300, 30), m(200, 20)];
        assert_eq!(pick(&metas, RestorePoint::Tick(250)), Some(m(200, 20)));
        assert_eq!(pick(&metas, RestorePoint::Time(30)), Some(m(300, 30)));
        assert_eq!(pick(&metas, RestorePoint::Tick(99)), None);
    }
}
