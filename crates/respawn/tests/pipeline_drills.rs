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
use serde_json::Value;
use support::drill;

/// One drill at a time: each is a whole deployment, and the tick budget is checked.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn drill_alone(args: &[&str]) -> Result<Value> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    drill(args)
}

fn check_exactly_once(r: &Value) {
    for field in ["scenario", "catch_up_ms", "events_generated", "events_persisted", "events_lost", "events_duplicated"]
    {
        assert!(r.get(field).is_some(), "report has {field}: {r}");
    }
    assert_eq!(r["verdict"], "pass", "{r}");
    assert!(r["events_generated"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_eq!(r["events_persisted"], r["events_generated"], "every event stored: {r}");
    assert_eq!((&r["events_lost"], &r["events_duplicated"]), (&Value::from(0), &Value::from(0)), "{r}");
    assert_eq!(r["records_consistent"], true, "{r}");
    assert!(r["backlog_peak"].as_u64().is_some_and(|n| n > 0), "the fault held events back: {r}");
    assert!(r["catch_up_ms"].as_f64().is_some(), "caught up: {r}");
    assert_eq!(r["players_min_during_fault"], r["players_before"], "gameplay unaffected: {r}");
}

#[test]
fn kafka_down_for_60_s_loses_and_duplicates_nothing() -> Result<()> {
    let r = drill_alone(&["kafka-down", "--real", "--bots", "24", "--outage-secs", "60"])?;
    check_exactly_once(&r);
    assert!(r["timeline"].to_string().contains("waiting in outboxes"), "{r}");
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
    assert!(r["timeline"].to_string().contains("mid-batch"), "killed while holding a batch: {r}");
    Ok(())
}

#[test]
fn the_embedded_ledger_refusing_writes_loses_and_duplicates_nothing() -> Result<()> {
    for scenario in ["kafka-down", "mysql-down"] {
        let r = drill_alone(&[scenario, "--bots", "12", "--outage-secs", "20"])?;
        check_exactly_once(&r);
        assert_eq!(r["real_services"], false, "{r}");
        assert!(r["timeline"].to_string().contains("write lock"), "{r}");
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
