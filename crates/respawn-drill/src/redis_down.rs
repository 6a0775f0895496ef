//! `redis-down`: Redis dies while bots play; the zone server crashes during
//! the outage; Redis returns empty. The zones' leases live in Redis, and no
//! server takes a lease while Redis is out of its reach (the price of
//! fencing): the restarted server waits for Redis, then restores from MongoDB.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use respawn_api::admin::RestoreSource;
use respawn_api::prom;

use crate::deployment::{hot_snapshots, max_bucket_ms, source_name, warm_up, Deployment};
use crate::findings::{Problem, ProblemKind};
use crate::recovery::DrillReport;
use crate::{Scenario, TICK_BUDGET_MS};

pub(crate) async fn redis_down(d: &mut Deployment) -> Result<DrillReport> {
    warm_up(d).await?;
    let before = d.tick_histogram().await.ok_or_else(|| anyhow!("no tick histogram"))?;
    // Cold snapshots written so far, per zone: every zone must write one during the outage.
    let cold_ok = |s: &[prom::Sample], zone: &str| {
        prom::sum(s, "respawn_zone_snapshots_total", &[("zone", zone), ("store", "cold"), ("result", "ok")])
    };
    let samples = d.samples().await?;
    let cold_before: Vec<f64> = d.zones().iter().map(|z| cold_ok(&samples, z)).collect();
    if let Some(redis) = d.backing.redis.as_mut() {
        redis.kill().await;
    }
    d.note("Redis killed");
    d.note("decision: keep Redis down and crash the zone server during the outage, to prove the restore from MongoDB; bring Redis back empty while the restarted server waits for it to take the zones' leases");
    // Past one hot-snapshot period: hot snapshots fail, cold ones take over.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut problems = Vec::new();
    loop {
        let s = d.samples().await?;
        if d.zones().iter().zip(&cold_before).all(|(z, before)| cold_ok(&s, z) > *before) {
            d.note("hot snapshots failing; every zone wrote a cold snapshot to MongoDB instead");
            break;
        }
        if Instant::now() > deadline {
            problems.push(Problem::new(
                ProblemKind::Snapshots,
                "not every zone wrote a cold snapshot during the Redis outage",
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = d.tick_histogram().await.map(|h| h.since(&before));
    let max_tick_ms = during.as_ref().map_or(0.0, max_bucket_ms);
    d.note(format!("ticks during the outage: max <= {max_tick_ms} ms"));
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(Problem::new(
            ProblemKind::TickOverBudget,
            format!("a tick took up to {max_tick_ms:.0} ms during the outage"),
        ));
    }
    // Redis comes back empty (no persistence).
    let kill = d.crash_while_down(|b| b.redis.as_mut()).await?;
    if kill.restore_source != Some(RestoreSource::Cold) {
        problems.push(Problem::new(
            ProblemKind::RestoreSource,
            format!("restored from {} instead of the cold snapshot", source_name(kill.restore_source)),
        ));
    }
    if kill.players_resumed < kill.players_before {
        problems.push(Problem::new(
            ProblemKind::PlayersNotBack,
            format!("only {} of {} players resumed", kill.players_resumed, kill.players_before),
        ));
    }
    let hot_before = hot_snapshots(&d.samples().await?);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if hot_snapshots(&d.samples().await?) > hot_before {
            d.note("hot snapshots and the journal resumed by themselves");
            break;
        }
        if Instant::now() > deadline {
            problems.push(Problem::new(
                ProblemKind::Snapshots,
                "hot snapshots did not resume within 15 s of Redis returning",
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = d.tally_events().await?;
    Ok(DrillReport::one_kill(Scenario::RedisDown, kill, max_tick_ms, events, problems))
}
