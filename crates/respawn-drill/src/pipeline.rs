//! The event-pipeline drills: `kafka-down`, `mysql-down`, `platform-down`.
//! With `--real` the deployment adds a Kafka-compatible broker (Tansu),
//! MariaDB and the platform server, each a process of its own on free ports.
//! Embedded, the zone server publishes into its SQLite ledger, and the fault
//! is that ledger refusing writes (another process holds its write lock):
//! the event log and the database are one there. The check at the end is the
//! one Kafka's system tests use: every event the zone server generated is
//! stored exactly once, counts and ids compared (ids against the ones in the
//! topic, where there is one).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use respawn_api::{http, prom};
use serde::{Deserialize, Serialize};
use sqlx::Connection;

use crate::deployment::{max_bucket_ms, warm_up, Deployment};
use crate::findings::{Findings, Problem, ProblemKind};
use crate::ledger::{settle, EventCounts};
use crate::{Scenario, TICK_BUDGET_MS};

/// How long the pipeline may take to store what was generated before the heal.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
pub struct PipelineReport {
    pub scenario: Scenario,
    pub real_services: bool,
    pub outage_ms: f64,
    /// From the healed service answering to every event generated before then being in MySQL.
    pub catch_up_ms: f64,
    pub events_generated: u64,
    pub events_persisted: u64,
    pub events_lost: u64,
    pub events_duplicated: u64,
    /// Records the broker holds more than once (publisher retries), absorbed by the event ids.
    pub redelivered_absorbed: u64,
    /// Most events generated but not yet in MySQL during the fault.
    pub backlog_peak: u64,
    /// `SUM(players.events)` equals the stored events about players.
    pub records_consistent: bool,
    pub players_before: u64,
    pub players_min_during_fault: u64,
    pub players_after: u64,
    pub max_tick_ms: f64,
    #[serde(flatten)]
    pub findings: Findings,
}

/// Waits (10 s at most) until the platform server holds a batch it
/// received but has not stored yet; `false` if none was seen.
async fn wait_mid_batch(platform: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(text) = http::scrape(platform).await {
            let s = prom::parse(&text);
            let consumed = prom::sum(&s, "respawn_platform_records_consumed_total", &[]);
            let done = prom::sum(&s, "respawn_platform_events_stored_total", &[])
                + prom::sum(&s, "respawn_platform_events_duplicate_total", &[])
                + prom::sum(&s, "respawn_platform_errors_total", &[("kind", "malformed")]);
            if consumed > done {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

pub(crate) async fn run(d: &mut Deployment, scenario: Scenario, outage: Duration) -> Result<PipelineReport> {
    let real = d.backing.pipeline.is_some();
    let db = d.ledger()?;
    d.note(match &d.backing.pipeline {
        Some(p) => p.describe(),
        None => format!("embedded ledger {}", d.backing.stores.events_db().display()),
    });
    warm_up(d).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count().await.unwrap_or(0) == 0 {
        if Instant::now() > deadline {
            bail!("no event reached the ledger within 30 s of the bots playing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.note(format!("events flowing: {} stored", db.count().await.unwrap_or(0)));

    let mut problems = Vec::new();
    let ticks_before = d.tick_histogram().await.ok_or_else(|| anyhow!("no tick histogram"))?;
    let players_before = d.players().await;
    let mid_batch = match &d.backing.pipeline {
        Some(p) if scenario == Scenario::PlatformDown => wait_mid_batch(&p.platform_addr).await,
        _ => false,
    };
    let mut lock = None;
    let fault = match (scenario, d.backing.pipeline.as_mut()) {
        (Scenario::KafkaDown, Some(p)) => {
            p.broker_gate.cut();
            "broker unreachable (every connection cut, new ones refused)"
        }
        (Scenario::MysqlDown, Some(p)) => {
            p.mysql.kill().await;
            "MariaDB killed (kill -9)"
        }
        (_, Some(p)) => {
            p.platform.kill().await;
            if mid_batch {
                "platform server killed (kill -9) mid-batch: events received, not yet committed"
            } else {
                "platform server killed (kill -9); no batch was caught in flight within 10 s"
            }
        }
        (_, None) => {
            lock = Some(db.lock().await?);
            "embedded ledger unwritable (another process holds its write lock; every write waits, then fails)"
        }
    };
    let t_fault = Instant::now();
    d.note(format!("{fault}; outage of {} s under load", outage.as_secs()));
    d.note("decision: no operator action during the outage; heal it at the end and let the backlog drain by itself");

    let (mut backlog_peak, mut players_min) = (0u64, players_before);
    while t_fault.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let generated = d.generated().await?;
        let stored = db.count().await.unwrap_or(0);
        backlog_peak = backlog_peak.max(generated.saturating_sub(stored));
        // A player walking into another zone is in neither for a moment: one
        // missing from two looks 250 ms apart has dropped.
        let mut online = d.players().await;
        if online < players_before {
            tokio::time::sleep(Duration::from_millis(250)).await;
            online = online.max(d.players().await);
        }
        players_min = players_min.min(online);
    }
    let outbox_at_end = d.outbox_pending().await?;
    d.note(format!(
        "end of the outage: {backlog_peak} events generated but not stored at most, {outbox_at_end} waiting in outboxes, \
         {players_min} of {players_before} players online at least"
    ));

    match (scenario, d.backing.pipeline.as_mut()) {
        (Scenario::KafkaDown, Some(p)) => p.broker_gate.reopen().await?,
        (Scenario::MysqlDown, Some(p)) => p.mysql.start().await?,
        (_, Some(p)) => p.platform.start().await?,
        (_, None) => {
            if let Some(lock) = lock.take() {
                lock.close().await?;
            }
        }
    }
    let t_heal = Instant::now();
    let outage_ms = t_fault.elapsed().as_secs_f64() * 1e3;
    let generated_at_heal = d.generated().await?;
    let healed = match (real, scenario) {
        (false, _) => "the ledger's write lock released",
        (true, Scenario::KafkaDown) => "the broker reachable again",
        (true, Scenario::MysqlDown) => "MariaDB restarted",
        (true, _) => "the platform server restarted",
    };
    d.note(format!("healed: {healed}; {generated_at_heal} events generated so far"));
    let catch_up_ms = loop {
        if db.count().await.unwrap_or(0) >= generated_at_heal {
            break t_heal.elapsed().as_secs_f64() * 1e3;
        }
        if t_heal.elapsed() > CATCH_UP_LIMIT {
            problems.push(Problem::new(
                ProblemKind::Rto,
                format!("the backlog was not stored within {} s of the heal", CATCH_UP_LIMIT.as_secs()),
            ));
            break f64::NAN;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    d.note(format!("caught up after {catch_up_ms:.0} ms"));
    let max_tick_ms = d.tick_histogram().await.map_or(0.0, |h| max_bucket_ms(&h.since(&ticks_before)));
    let players_after = d.players().await;

    // Stop the load, let the pipeline settle (the bots' leave events too), then compare everything.
    d.halt_bots().await;
    let (generated, stored, check) = settle(d, &db, d.backing.pipeline.as_ref().map(|p| p.brokers.as_str()), 0).await?;
    d.note(format!("bots stopped; settled with {stored} of {generated} events stored"));
    d.note(match &check.topic {
        Some(t) => format!(
            "compared: {} ids in the topic ({} records), {} rows stored, {} topic ids missing from the ledger",
            t.ids, t.records, check.rows, t.missing_from_ledger
        ),
        None => format!("compared: {} rows stored, {} distinct ids", check.rows, check.distinct_rows),
    });

    let mut events_lost = generated.saturating_sub(stored);
    if let Some(t) = &check.topic {
        events_lost = events_lost.max(t.missing_from_ledger).max(generated.saturating_sub(t.ids));
        if t.extra_in_ledger > 0 {
            problems.push(Problem::new(
                ProblemKind::EventsDuplicated,
                format!("{} events stored that the topic never held", t.extra_in_ledger),
            ));
        }
    }
    let events_duplicated = check.rows - check.distinct_rows;
    if events_lost > 0 {
        problems.push(Problem::new(
            ProblemKind::EventsLost,
            format!("{events_lost} events generated but not stored at the end"),
        ));
    }
    if events_duplicated > 0 {
        problems.push(Problem::new(ProblemKind::EventsDuplicated, format!("{events_duplicated} events stored twice")));
    }
    if !check.records_consistent {
        problems.push(Problem::new(ProblemKind::RecordsInconsistent, "player records disagree with the events stored"));
    }
    if backlog_peak == 0 {
        problems.push(Problem::new(
            ProblemKind::NothingTested,
            "the fault held nothing back: the drill did not test anything",
        ));
    }
    if players_min < players_before || players_after < players_before {
        problems.push(Problem::new(ProblemKind::PlayersNotBack, format!(
            "players dropped during the fault: {players_before} before, {players_min} at least during, {players_after} after"
        )));
    }
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(Problem::new(
            ProblemKind::TickOverBudget,
            format!("a tick took up to {max_tick_ms:.0} ms (budget {TICK_BUDGET_MS:.0} ms)"),
        ));
    }
    Ok(PipelineReport {
        scenario,
        real_services: real,
        outage_ms,
        catch_up_ms,
        events_generated: generated,
        events_persisted: stored,
        events_lost,
        events_duplicated,
        redelivered_absorbed: check.topic.as_ref().map_or(0, |t| t.records - t.ids),
        backlog_peak,
        records_consistent: check.records_consistent,
        players_before,
        players_min_during_fault: players_min,
        players_after,
        max_tick_ms,
        findings: Findings::judge(problems),
    })
}

pub(crate) fn print_report(r: &PipelineReport) {
    let deployment = if r.real_services {
        "Tansu broker, MariaDB, platform server; real processes"
    } else {
        "embedded ledger (SQLite) in the zone server"
    };
    println!("Drill {} ({deployment})", r.scenario.name());
    println!();
    r.findings.print_timeline();
    println!("Figures                                                      target");
    println!("  outage               {:>9.0} ms", r.outage_ms);
    println!("  catch-up             {:>9.0} ms (healed service to backlog stored)", r.catch_up_ms);
    println!("  events generated     {:>9}", r.events_generated);
    println!("  events persisted     {:>9}                               = generated", r.events_persisted);
    println!("  events lost          {:>9}                               0", r.events_lost);
    println!("  events duplicated    {:>9}                               0", r.events_duplicated);
    println!("  redeliveries absorbed{:>9}", r.redelivered_absorbed);
    println!("  backlog peak         {:>9} events", r.backlog_peak);
    println!("  player records       {:>9}                               consistent", consistent(r.records_consistent));
    println!(
        "  players              {:>3} before, {:>3} at least during, {:>3} after   unchanged",
        r.players_before, r.players_min_during_fault, r.players_after
    );
    println!("  max tick             {:>9} ms                            < 50 ms", r.max_tick_ms);
    r.findings.print_verdict();
}

fn consistent(ok: bool) -> &'static str {
    if ok {
        "consistent"
    } else {
        "DIFFER"
    }
}
