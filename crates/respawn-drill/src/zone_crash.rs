//! `zone-crash`: `kill -9` of the zone server while bots play, as many times
//! as asked, each restart measured.

use std::time::Duration;

use anyhow::Result;

use crate::deployment::KillResult;
use crate::deployment::{max_bucket_ms, warm_up, Deployment};
use crate::findings::{Findings, Problem, ProblemKind};
use crate::recovery::{crash_problems, DrillReport};
use crate::{Scenario, RTO_TARGET_MS, TICK_BUDGET_MS};

pub(crate) async fn zone_crash(d: &mut Deployment, kills: u32) -> Result<DrillReport> {
    warm_up(d).await?;
    d.note("decision: no operator action; the supervisor restarts the zone server at once and its zones restore from the newest snapshot and the journal");
    let mut results = Vec::new();
    let mut max_tick_ms: f64 = 0.0;
    for i in 0..kills {
        let r = d.crash_zone().await?;
        results.push(r);
        // Let the restored zones play a moment, then read their tick times.
        tokio::time::sleep(Duration::from_millis(if i + 1 == kills { 1_000 } else { 1_500 })).await;
        if let Some(h) = d.tick_histogram().await {
            max_tick_ms = max_tick_ms.max(max_bucket_ms(&h));
        }
    }
    let worst = |f: fn(&KillResult) -> f64| results.iter().map(f).fold(0.0, f64::max);
    let rto_ms = worst(|r| r.rto_ms);
    let rpo_ticks = results.iter().map(|r| r.rpo_ticks).max().unwrap_or(0);
    let commands_lost = results.iter().map(|r| r.commands_lost).sum();
    let players_before = results.iter().map(|r| r.players_before).min().unwrap_or(0);
    let players_resumed = results.iter().map(|r| r.players_resumed).min().unwrap_or(0);
    let mut problems = crash_problems(rto_ms, RTO_TARGET_MS, rpo_ticks, commands_lost);
    if let Some(r) = results.iter().find(|r| r.players_resumed < r.players_before) {
        problems.push(Problem::new(
            ProblemKind::PlayersNotBack,
            format!("only {} of {} players resumed after a kill", r.players_resumed, r.players_before),
        ));
    }
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(Problem::new(
            ProblemKind::TickOverBudget,
            format!("a tick took up to {max_tick_ms:.0} ms (budget {TICK_BUDGET_MS:.0} ms)"),
        ));
    }
    let events = d.tally_events().await?;
    problems.extend(events.problems());
    Ok(DrillReport {
        scenario: Scenario::ZoneCrash,
        real_services: false,
        rto_ms,
        rpo_ticks,
        commands_lost,
        players_before,
        players_resumed,
        players_back_ms: worst(|r| r.resume_gap_max_ms),
        max_tick_ms,
        kills: results,
        events,
        findings: Findings::judge(problems),
    })
}
