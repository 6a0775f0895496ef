//! The event-pipeline drills, run for real against a Tansu broker, MariaDB and
//! the platform server, each a process the drill starts, with bots playing:
//! (b) the broker unreachable for 60 s, (c) MariaDB killed for 60 s, (d) the
//! platform server killed with `kill -9` mid-batch; and on the embedded
//! ledger, which refuses writes for a while. In each, every event the zone
//! server generated must be stored exactly once, counts and ids compared
//! (ids against the topic where there is one), with the player records in
//! agreement.

mod support;

use anyhow::Result;
use respawn_drill::{PipelineReport, Verdict};
use support::drill;

/// One drill at a time: each is a whole deployment, and the tick budget is checked.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn drill_alone(args: &[&str]) -> Result<PipelineReport> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    drill(args)
}

fn check_exactly_once(r: &PipelineReport) {
    assert_eq!(r.findings.verdict, Verdict::Pass, "{r:?}");
    assert!(r.events_generated > 0, "{r:?}");
    assert_eq!(r.events_persisted, r.events_generated, "every event stored: {r:?}");
    assert_eq!((r.events_lost, r.events_duplicated), (0, 0), "{r:?}");
    assert!(r.records_consistent, "{r:?}");
    assert!(r.backlog_peak > 0, "the fault held events back: {r:?}");
    assert!(r.catch_up_ms >= 0.0, "caught up: {r:?}");
    assert_eq!(r.players_min_during_fault, r.players_before, "gameplay unaffected: {r:?}");
}

/// Whether a line of the drill's timeline mentions `what`.
fn timeline_says(r: &PipelineReport, what: &str) -> bool {
    r.findings.timeline.iter().any(|line| line.contains(what))
}

#[test]
fn kafka_down_for_60_s_loses_and_duplicates_nothing() -> Result<()> {
    let r = drill_alone(&["kafka-down", "--real", "--bots", "24", "--outage-secs", "60"])?;
    check_exactly_once(&r);
    assert!(timeline_says(&r, "waiting in outboxes"), "{r:?}");
    Ok(())
}

#[test]
fn mysql_down_for_60_s_loses_and_duplicates_nothing() -> Result<()> {
    let r = drill_alone(&["mysql-down", "--real", "--bots", "24", "--outage-secs", "60"])?;
    check_exactly_once(&r);
    Ok(())
}

#[test]
fn platform_killed_mid_batch_loses_and_duplicates_nothing() -> Result<()> {
    let r = drill_alone(&["platform-down", "--real", "--bots", "24", "--outage-secs", "15"])?;
    check_exactly_once(&r);
    assert!(timeline_says(&r, "mid-batch"), "killed while holding a batch: {r:?}");
    Ok(())
}

#[test]
fn the_embedded_ledger_refusing_writes_loses_and_duplicates_nothing() -> Result<()> {
    for scenario in ["kafka-down", "mysql-down"] {
        let r = drill_alone(&[scenario, "--bots", "12", "--outage-secs", "20"])?;
        check_exactly_once(&r);
        assert!(!r.real_services, "{r:?}");
        assert!(timeline_says(&r, "write lock"), "{r:?}");
    }
    Ok(())
}

#[test]
fn platform_down_without_real_services_is_refused_with_a_reason() -> Result<()> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_respawn")).args(["drill", "platform-down"]).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("platform-down needs --real"), "{stderr}");
    Ok(())
}
