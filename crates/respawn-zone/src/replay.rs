//! Replay of a zone's history (`respawn replay`): the newest cold snapshot
//! before the start, then the archived history's command batches
//! ([`crate::history`]) tick by tick, every state hash recorded along the
//! way checked against the replayed state. The simulation is deterministic,
//! so a replay on the build that ran the zone matches every hash; the first
//! that does not is where the outcome changed.

use std::time::Instant;

use respawn_sim::command::decode_batch;
use respawn_sim::zone::TickOutput;
use respawn_sim::{Zone, ZoneConfig};
use respawn_store::history::{HistorySegment, StateHash};
use respawn_store::{SnapshotMeta, StoreError};
use serde::Serialize;

use crate::persist::Stores;
use crate::rollback::RestorePoint;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("zone {zone} has no history kept{why}")]
    NoHistory { zone: u32, why: String },
    #[error("{point} is outside the zone's kept history (ticks {first} to {last})")]
    Outside { point: String, first: u64, last: u64 },
    #[error("--from {from} is after --to {to}")]
    Backwards { from: u64, to: u64 },
    #[error(
        "nothing to start a replay of zone {zone} at tick {tick} from: no cold snapshot before it ({oldest}), and the \
         kept history does not reach back to the zone's first tick"
    )]
    NoSnapshot { zone: u32, tick: u64, oldest: String },
    #[error("the history has a gap: after tick {after} the next kept is tick {next}")]
    Gap { after: u64, next: u64 },
    #[error("{what} is unusable: {why}")]
    Unusable { what: String, why: String },
    /// Pruned between its listing and its reading (the zone runs on).
    #[error("{0} was pruned while it was being read; run the replay again")]
    Vanished(String),
    #[error("{what}: {source}")]
    Store { what: &'static str, source: StoreError },
    #[error(
        "ticks {from} to {to} of a zone of {entities} entities are more than a film holds ({most} positions): \
         ask for {fits} ticks at most"
    )]
    FilmTooLarge { from: u64, to: u64, entities: usize, most: usize, fits: usize },
}

fn store(what: &'static str) -> impl FnOnce(StoreError) -> ReplayError {
    move |source| ReplayError::Store { what, source }
}

/// What a replay runs: a starting state and the segments after it.
#[derive(Debug)]
pub struct History {
    pub zone_id: u32,
    /// The state the replay starts from (a cold snapshot's).
    pub start: Zone,
    /// The segments covering the ticks after the start through the end, in order.
    pub segments: Vec<HistorySegment>,
    /// The ticks asked for, resolved.
    pub from: u64,
    pub to: u64,
}

/// Finds in `stores` what replaying `zone` from `from` to `to` needs: the
/// newest cold snapshot before `from`, or, when the kept history begins at
/// the zone's first tick, the zone as its configuration makes it (the
/// recorded hashes tell if the configuration changed since). Without
/// `from`, from the first tick that can be reached; without `to`, through
/// the newest tick kept.
pub async fn load(
    stores: &Stores,
    zone: &ZoneConfig,
    from: Option<RestorePoint>,
    to: Option<RestorePoint>,
) -> Result<History, ReplayError> {
    // A zone that runs on prunes its oldest snapshot and segment as it goes:
    // what vanished between a listing and a reading is looked for anew.
    let mut attempts = 0;
    loop {
        match load_once(stores, zone, from, to).await {
            Err(ReplayError::Vanished(_)) if attempts < 3 => attempts += 1,
            loaded => return loaded,
        }
    }
}

async fn load_once(
    stores: &Stores,
    zone: &ZoneConfig,
    from: Option<RestorePoint>,
    to: Option<RestorePoint>,
) -> Result<History, ReplayError> {
    let zone_id = zone.zone_id;
    let mut metas = stores.history.list(zone_id).await.map_err(store("cannot list the history"))?;
    metas.sort_by_key(|m| m.tick);
    let colds = stores.cold.list(zone_id).await.map_err(store("cannot list the cold snapshots"))?;
    let mut cache: Vec<HistorySegment> = Vec::new();
    let from = match from {
        Some(point) => resolve(stores, zone_id, &metas, point, &mut cache).await?,
        None => {
            let Some(first_meta) = metas.first() else {
                return Err(ReplayError::NoHistory { zone: zone_id, why: String::new() });
            };
            let first = segment(stores, zone_id, first_meta, &mut cache).await?.first_tick();
            let after_oldest_cold = colds.iter().map(|m| m.tick + 1).min().unwrap_or(first);
            // From the zone's start only while no cold snapshot is kept (it needs the configuration it ran with).
            if first == 1 && colds.is_empty() {
                1
            } else {
                first.max(after_oldest_cold)
            }
        }
    };
    let to = match to {
        Some(point) => resolve(stores, zone_id, &metas, point, &mut cache).await?,
        None => metas.last().map_or(from, |m| m.tick),
    };
    if from > to {
        return Err(ReplayError::Backwards { from, to });
    }
    let start_zone = match colds.iter().filter(|m| m.tick < from).max_by_key(|m| m.tick) {
        Some(start) => {
            let snapshot = stores
                .cold
                .get(zone_id, start.tick)
                .await
                .map_err(store("cannot read the cold snapshot"))?
                .ok_or_else(|| ReplayError::Vanished(format!("the cold snapshot at tick {}", start.tick)))?;
            Zone::decode_snapshot(&snapshot.bytes)
                .map_err(|e| unusable(format!("cold snapshot at tick {}", start.tick), e))?
        }
        None => {
            let first = match metas.first() {
                Some(meta) => Some(segment(stores, zone_id, meta, &mut cache).await?),
                None => None,
            };
            let Some(first) = first.filter(|s| s.first_tick() == 1) else {
                let oldest = colds.iter().map(|m| m.tick).min();
                return Err(ReplayError::NoSnapshot {
                    zone: zone_id,
                    tick: from,
                    oldest: oldest.map_or("none kept yet".into(), |t| format!("the oldest kept is at tick {t}")),
                });
            };
            let mut fresh =
                Zone::new(zone.clone()).map_err(|e| unusable(format!("zone {}'s configuration", zone.name), e))?;
            fresh.set_epoch(first.epoch);
            fresh
        }
    };
    // Every segment with a tick after the start, through the end.
    let mut segments = Vec::new();
    let mut next = start_zone.tick_number() + 1;
    for meta in &metas {
        if meta.tick < next {
            continue;
        }
        if next > to {
            break;
        }
        let segment = segment(stores, zone_id, meta, &mut cache).await?;
        if segment.first_tick() > next {
            return Err(ReplayError::Gap { after: next - 1, next: segment.first_tick() });
        }
        next = segment.last_tick() + 1;
        segments.push(segment);
    }
    if next <= to {
        return Err(ReplayError::Gap { after: next - 1, next: to });
    }
    Ok(History { zone_id, start: start_zone, segments, from, to })
}

fn unusable(what: String, why: impl std::fmt::Display) -> ReplayError {
    ReplayError::Unusable { what, why: why.to_string() }
}

async fn segment(
    stores: &Stores,
    zone_id: u32,
    meta: &SnapshotMeta,
    cache: &mut Vec<HistorySegment>,
) -> Result<HistorySegment, ReplayError> {
    if let Some(found) = cache.iter().find(|s| s.last_tick() == meta.tick) {
        return Ok(found.clone());
    }
    let what = || format!("history segment through tick {}", meta.tick);
    let stored = stores
        .history
        .get(zone_id, meta.tick)
        .await
        .map_err(store("cannot read the history"))?
        .ok_or_else(|| ReplayError::Vanished(what()))?;
    let segment = HistorySegment::decode(&stored.bytes).map_err(|e| unusable(what(), e))?;
    cache.push(segment.clone());
    Ok(segment)
}

/// A tick, or the tick at a time, within the kept history.
async fn resolve(
    stores: &Stores,
    zone_id: u32,
    metas: &[SnapshotMeta],
    point: RestorePoint,
    cache: &mut Vec<HistorySegment>,
) -> Result<u64, ReplayError> {
    let (Some(first_meta), Some(last_meta)) = (metas.first(), metas.last()) else {
        return Err(ReplayError::NoHistory { zone: zone_id, why: String::new() });
    };
    let first = segment(stores, zone_id, first_meta, cache).await?.first_tick();
    let last = last_meta.tick;
    let outside = |point: String| ReplayError::Outside { point, first, last };
    match point {
        RestorePoint::Tick(tick) if (first..=last).contains(&tick) => Ok(tick),
        RestorePoint::Tick(tick) => Err(outside(format!("tick {tick}"))),
        RestorePoint::Time(ms) => {
            // The segment whose first tick is the newest at or before that time (taken_at_ms is its first tick's).
            let meta = metas.iter().filter(|m| m.taken_at_ms <= ms).max_by_key(|m| m.taken_at_ms);
            let Some(meta) = meta else { return Err(outside(format!("{ms} ms (Unix)"))) };
            let segment = segment(stores, zone_id, meta, cache).await?;
            match segment.tick_at(ms) {
                Some(tick) => Ok(tick),
                // Between two segments' ticks, or after the last: the next one kept.
                None if meta.tick < last => Ok(meta.tick + 1),
                None => Err(outside(format!("{ms} ms (Unix)"))),
            }
        }
    }
}

/// What a replay found and how fast it ran.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub zone: u32,
    pub from_tick: u64,
    pub to_tick: u64,
    /// The cold snapshot it started from.
    pub snapshot_tick: u64,
    /// Every tick run, from the snapshot's on.
    pub ticks: u64,
    pub hashes_checked: u64,
    /// Ticks whose replayed state differs from the recorded hash (at most the first 100).
    pub mismatches: Vec<u64>,
    pub seconds: f64,
    pub ticks_per_second: f64,
    /// How much faster than the zone ran them (at `tick_hz`).
    pub real_time_factor: f64,
}

impl ReplayReport {
    pub fn first_mismatch(&self) -> Option<u64> {
        self.mismatches.first().copied()
    }
}

/// Runs `history`, calling `each` with the zone and what each tick from
/// `from` through `to` produced; the ticks before `from` run unseen.
pub fn run(
    history: History,
    tick_hz: u32,
    mut each: impl FnMut(&Zone, &TickOutput),
) -> Result<ReplayReport, ReplayError> {
    let History { zone_id, start, segments, from, to } = history;
    let snapshot_tick = start.tick_number();
    let mut zone = start;
    let (mut ticks, mut hashes_checked, mut mismatches) = (0u64, 0u64, Vec::new());
    let started = Instant::now();
    'segments: for segment in &segments {
        if zone.epoch() != segment.epoch {
            // The zone restarted on a new timeline (its event ids'): the state goes on the same.
            zone.set_epoch(segment.epoch);
        }
        let mut hashes = segment.hashes.iter().peekable();
        for entry in &segment.entries {
            if entry.tick <= zone.tick_number() {
                continue;
            }
            if entry.tick > to {
                break 'segments;
            }
            let batch =
                decode_batch(&entry.batch).map_err(|e| unusable(format!("tick {}'s commands", entry.tick), e))?;
            let out = zone.tick(&batch);
            ticks += 1;
            if entry.tick >= from {
                each(&zone, &out);
            }
            while hashes.next_if(|h| h.tick < entry.tick).is_some() {}
            if let Some(recorded) = hashes.next_if(|h| h.tick == entry.tick) {
                hashes_checked += 1;
                if StateHash::of_snapshot(entry.tick, &zone.encode_snapshot()) != Some(*recorded)
                    && mismatches.len() < 100
                {
                    mismatches.push(entry.tick);
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let ticks_per_second = if seconds > 0.0 { ticks as f64 / seconds } else { 0.0 };
    Ok(ReplayReport {
        zone: zone_id,
        from_tick: from,
        to_tick: to,
        snapshot_tick,
        ticks,
        hashes_checked,
        mismatches,
        seconds,
        ticks_per_second,
        real_time_factor: ticks_per_second / f64::from(tick_hz.max(1)),
    })
}
