//! `mongo-down`: MongoDB dies while bots play (cold snapshots fail, play
//! goes on); the zone server crashes during the outage. A zone starts only
//! once every store that can make its ticks durable is fenced with its new
//! lease, MongoDB among them: the restarted server waits for it.

use std::time::Duration;

use anyhow::{anyhow, Result};
use respawn_api::admin::RestoreSource;

use crate::deployment::{cold_snapshots, hot_snapshots, max_bucket_ms, source_name, wait_metrics, warm_up, Deployment};
use crate::findings::{Problem, ProblemKind};
use crate::recovery::{crash_problems, DrillReport};
use crate::{Scenario, TICK_BUDGET_MS};

/// The mongo-down drill's cold snapshot period: several attempts fit in its outage.
pub(crate) const MONGO_DRILL_COLD_SECS: u64 = 2;

pub(crate) async fn mongo_down(d: &mut Deployment) -> Result<DrillReport> {
    warm_up(d).await?;
    let mut problems = Vec::new();
    let stored_before = cold_snapshots(&d.samples().await?, "ok");
    let wait = Duration::from_secs(MONGO_DRILL_COLD_SECS * 3);
    if !wait_metrics(d, wait, |s| cold_snapshots(s, "ok") > stored_before).await? {
        problems.push(Problem::new(ProblemKind::Snapshots, "no cold snapshot was stored before the outage"));
    }
    let samples = d.samples().await?;
    let failed_before = cold_snapshots(&samples, "failed");
    let hot_before = hot_snapshots(&samples);
    let players_before = d.players().await;
    let ticks_before = d.tick_histogram().await.ok_or_else(|| anyhow!("no tick histogram"))?;
    if let Some(mongo) = d.backing.mongo.as_mut() {
        mongo.kill().await;
    }
    d.note("MongoDB killed");
    d.note("decision: keep MongoDB down and crash the zone server during the outage; bring MongoDB back on its data while the restarted server waits for it");
    if wait_metrics(d, wait, |s| cold_snapshots(s, "failed") > failed_before).await? {
        d.note("cold snapshots failing (counted); play goes on");
    } else {
        problems.push(Problem::new(ProblemKind::Snapshots, "no cold snapshot was attempted during the outage"));
    }
    // One hot snapshot period and a little: Redis keeps taking them.
    let hot_period = respawn_zone::ServerConfig::defaults().persist.hot_every + Duration::from_secs(2);
    if !wait_metrics(d, hot_period, |s| hot_snapshots(s) > hot_before).await? {
        problems.push(Problem::new(ProblemKind::Snapshots, "hot snapshots stopped during the MongoDB outage"));
    }
    let players_during = d.players().await;
    if players_during < players_before {
        problems.push(Problem::new(
            ProblemKind::PlayersNotBack,
            format!("players fell from {players_before} to {players_during} during the outage"),
        ));
    }
    let max_tick_ms = d.tick_histogram().await.map(|h| max_bucket_ms(&h.since(&ticks_before))).unwrap_or(0.0);
    d.note(format!(
        "{players_during} of {players_before} players still playing; ticks during the outage: max <= {max_tick_ms} ms"
    ));
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(Problem::new(
            ProblemKind::TickOverBudget,
            format!("a tick took up to {max_tick_ms:.0} ms during the outage"),
        ));
    }
    let kill = d.crash_while_down(|b| b.mongo.as_mut()).await?;
    if kill.restore_source != Some(RestoreSource::Hot) {
        problems.push(Problem::new(
            ProblemKind::RestoreSource,
            format!("restored from {} instead of the Redis hot snapshot", source_name(kill.restore_source)),
        ));
    }
    if kill.players_resumed < kill.players_before {
        problems.push(Problem::new(
            ProblemKind::PlayersNotBack,
            format!("only {} of {} players resumed", kill.players_resumed, kill.players_before),
        ));
    }
    let stored_before = cold_snapshots(&d.samples().await?, "ok");
    if wait_metrics(d, Duration::from_secs(15), |s| cold_snapshots(s, "ok") > stored_before).await? {
        d.note("cold snapshots stored again");
    } else {
        problems.push(Problem::new(
            ProblemKind::Snapshots,
            "cold snapshots did not resume within 15 s of MongoDB returning",
        ));
    }
    // The RTO is the outage's rest: not judged.
    problems.extend(crash_problems(kill.rto_ms, f64::INFINITY, kill.rpo_ticks, kill.commands_lost));
    let events = d.tally_events().await?;
    Ok(DrillReport::one_kill(Scenario::MongoDown, kill, max_tick_ms, events, problems))
}
