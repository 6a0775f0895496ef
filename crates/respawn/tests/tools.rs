//! `respawn bench tick`, `respawn bench pipeline` and `respawn loadgen` run
//! and report their figures (what they measure is recorded in BENCHMARKS.md,
//! not asserted here).

mod support;

use std::process::Command;

use anyhow::{bail, Result};
use serde_json::Value;
use support::{ZoneProcess, TEST_CONFIG, TOKEN_KEY};

fn run_json(args: &[&str]) -> Result<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_respawn")).args(args).env("RESPAWN_TOKEN_KEY", TOKEN_KEY).output()?;
    if !out.status.success() {
        bail!("respawn {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn bench_tick_reports_percentiles_as_json() -> Result<()> {
    let r = run_json(&["bench", "tick", "--players", "300", "--seconds", "1", "--json"])?;
    assert_eq!(r["players"], 300);
    assert!(r["ticks"].as_u64().unwrap_or(0) > 0);
    let (p50, p99, max) = (r["p50_ms"].as_f64(), r["p99_ms"].as_f64(), r["max_ms"].as_f64());
    let (Some(p50), Some(p99), Some(max)) = (p50, p99, max) else { bail!("missing percentiles in {r}") };
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");
    assert!(r["update_bytes_per_client_per_tick"].as_f64().unwrap_or(0.0) > 0.0, "clients got updates: {r}");
    Ok(())
}

#[test]
fn bench_pipeline_pushes_events_through_a_real_broker_and_mariadb() -> Result<()> {
    // Against the servers scripts/services started; their topic may hold other tests' events
    // too, so only the shape of the report is checked here.
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let mysql = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
    let r = run_json(&[
        "bench",
        "pipeline",
        "--events",
        "3000",
        "--kafka-brokers",
        &brokers,
        "--mysql-url",
        &mysql,
        "--json",
    ])?;
    assert_eq!(r["events"], 3000);
    for field in ["produced_per_s", "persisted_per_s", "batch_p50_ms"] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {r}");
    }
    assert!(r["batches"].as_u64().is_some_and(|n| n >= 1), "{r}");
    for stage in ["produce_cpu", "persist_cpu"] {
        let cpu = &r[stage];
        assert!(cpu["respawn_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{stage} in {r}");
        assert!(cpu["respawn_events_per_core_s"].as_f64().is_some_and(|v| v > 0.0), "{stage} in {r}");
        assert!(cpu["broker_seconds"].is_null(), "an external broker's CPU is not known: {r}");
    }
    Ok(())
}

#[test]
fn bench_pipeline_on_its_own_broker_and_mariadb_reports_each_process_cpu() -> Result<()> {
    let r = run_json(&["bench", "pipeline", "--events", "20000", "--json"])?;
    assert!(r["broker"].as_str().is_some_and(|b| b.contains("started here")), "{r}");
    let cpu = |stage: &str, process: &str| r[stage][process].as_f64().unwrap_or(-1.0);
    assert!(cpu("produce_cpu", "respawn_seconds") > 0.0, "the publisher's work shows: {r}");
    assert!(cpu("produce_cpu", "broker_seconds") > 0.0, "the broker took the events: {r}");
    assert!(cpu("persist_cpu", "database_seconds") > 0.0, "MariaDB stored them: {r}");
    assert!(r["persisted_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    Ok(())
}

#[test]
fn bench_tick_refuses_bad_arguments() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_respawn")).args(["bench", "tick", "--players", "0"]).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--players must be"));
    Ok(())
}

#[test]
fn loadgen_plays_against_a_real_zone_server_and_reports() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let addr = zone.addr.to_string();
    let r = run_json(&[
        "loadgen",
        "--addr",
        &addr,
        "--clients",
        "20",
        "--ramp-secs",
        "1",
        "--hold-secs",
        "2",
        "--zone",
        "meadow",
        "--zone",
        "caverns",
        "--json",
    ])?;
    assert_eq!(r["clients"], 20);
    assert_eq!(r["connected"], 20, "{r}");
    assert_eq!(r["connect_success_rate"], 1.0);
    assert!(r["updates_per_client_per_s_mean"].as_f64().unwrap_or(0.0) > 5.0, "{r}");
    assert!(r["rtt_p99_ms"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert!(r["server_ticks"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert!(r["server_tick_p99_ms"].as_f64().is_some(), "{r}");
    // Two zones' schedules, read from the server: a tick is never due before it starts.
    assert!(r["server_tick_lateness_p99_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{r}");
    assert!(r["commands_sent"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r.get("soak").is_none(), "no soak without --soak: {r}");
    // The server's CPU over the hold, from its own metrics.
    assert!(r["updates_received_in_hold"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r["server_cpu_us_per_update"].as_f64().is_some_and(|us| us > 0.0), "{r}");
    assert!(r["server_cores_per_1000_clients"].as_f64().is_some_and(|c| c > 0.0), "{r}");
    Ok(())
}

/// Every loadgen client comes from this machine's address: past the zone
/// server's per-address cap loadgen says what happened and how to lift it,
/// and `--source-addrs` spreads the clients over loopback addresses.
#[test]
fn loadgen_explains_the_per_address_cap_and_spreads_clients_over_loopback_addresses() -> Result<()> {
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--connections-per-ip", "4"])?;
    let addr = zone.addr.to_string();
    let loadgen = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_respawn"))
            .args(["loadgen", "--addr", &addr, "--clients", "8", "--ramp-secs", "1", "--hold-secs", "1", "--json"])
            .args(extra)
            .env("RESPAWN_TOKEN_KEY", TOKEN_KEY)
            .output()
    };
    let capped = loadgen(&[])?;
    let said = String::from_utf8_lossy(&capped.stderr);
    assert!(!capped.status.success(), "{said}");
    assert!(said.contains("refused") && said.contains("with 429"), "{said}");
    assert!(said.contains("--connections-per-ip 0") && said.contains("--source-addrs"), "{said}");
    assert!(!said.contains("panicked"), "{said}");

    let spread = loadgen(&["--source-addrs", "4"])?;
    assert!(spread.status.success(), "{}", String::from_utf8_lossy(&spread.stderr));
    let r: Value = serde_json::from_slice(&spread.stdout)?;
    assert_eq!(r["connected"], 8, "two clients from each of four addresses: {r}");

    let remote = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["loadgen", "--addr", "192.0.2.1:7350", "--source-addrs", "4"])
        .env("RESPAWN_TOKEN_KEY", TOKEN_KEY)
        .output()?;
    assert!(String::from_utf8_lossy(&remote.stderr).contains("not a loopback address"));
    Ok(())
}

/// A short soak: players replaced as it goes, the server looked at ten times.
/// Its verdict (memory growth, tick p99 trend) belongs to a real soak's
/// length; here what matters is that it measures, so the exit status is not asserted.
#[test]
fn loadgen_soak_reports_memory_and_the_tick_p99_trend() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let addr = zone.addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["loadgen", "--addr", &addr, "--clients", "10", "--ramp-secs", "1", "--soak", "10s"])
        .args(["--churn-secs", "0.5", "--json"])
        .env("RESPAWN_TOKEN_KEY", TOKEN_KEY)
        .output()?;
    let r: Value = serde_json::from_slice(&out.stdout)?;
    let soak = &r["soak"];
    let windows = soak["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 10, "a look every tenth of the soak: {soak}");
    assert!(windows.iter().all(|w| w["resident_mb"].as_f64().is_some_and(|mb| mb > 1.0)), "{soak}");
    assert!(windows.iter().all(|w| w["players"].as_f64().is_some_and(|p| p >= 8.0)), "{soak}");
    assert!(windows.iter().filter(|w| w["tick_p99_ms"].is_number()).count() >= 9, "{soak}");
    assert!(soak["churned"].as_u64().is_some_and(|n| n >= 15), "a player replaced every 0.5 s: {soak}");
    assert!(soak["tick_p99_trend_ms_per_min"].is_number(), "{soak}");
    let steady = soak["verdict"] == "steady";
    assert_eq!(out.status.success(), steady, "the exit status follows the verdict: {soak}");
    assert_eq!(steady, soak["problems"].as_array().is_some_and(|p| p.is_empty()), "{soak}");

    let bad = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["loadgen", "--addr", &addr, "--soak", "10x"])
        .env("RESPAWN_TOKEN_KEY", TOKEN_KEY)
        .output()?;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the unit must be s, m or h"));
    Ok(())
}

#[test]
fn loadgen_says_clearly_when_no_server_answers() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["loadgen", "--addr", "127.0.0.1:1", "--clients", "1"])
        .env("RESPAWN_TOKEN_KEY", TOKEN_KEY)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the zone server's metrics"));
    Ok(())
}

/// Through the platform server: the clients sign in as guests kept in a
/// pool file, and a second run plays the same accounts (their characters,
/// stored through Kafka and MariaDB as they left, are handed out again).
#[tokio::test]
async fn loadgen_signs_in_through_the_platform_and_reuses_its_account_pool() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let db = support::Database::create("loadgen").await?;
    let extra = ["--server-key", support::SERVER_KEY, "--token-key", TOKEN_KEY];
    let platform =
        support::Platform::start_with(&brokers, &db.url(), &format!("loadgen-{}", std::process::id()), &extra)?;
    platform.wait_healthy().await?;
    platform.wait_ready().await?;
    let platform_addr = platform.addr.to_string();
    let zone = ZoneProcess::start_with_args(
        support::TEST_CONFIG,
        &[
            "--platform",
            &platform_addr,
            "--server-token",
            &support::credential("loadgen-zone"),
            "--kafka-brokers",
            &brokers,
        ],
    )?;
    let dir = respawn_harness::TempDir::new("loadgen-pool")?;
    let pool = dir.path().join("accounts.txt");
    let pool_arg = pool.to_string_lossy().into_owned();
    let addr = zone.addr.to_string();
    let args = [
        "loadgen",
        "--addr",
        &addr,
        "--platform",
        &platform_addr,
        "--accounts",
        &pool_arg,
        "--clients",
        "3",
        "--ramp-secs",
        "1",
        "--hold-secs",
        "2",
        "--json",
    ];
    // Once the zone server is in the registry (its first heartbeat).
    support::wait_registered(&platform_addr, 1).await?;
    let first = run_json(&args)?;
    assert_eq!(first["connected"], 3, "{first}");
    let made = std::fs::read_to_string(&pool)?;
    assert_eq!(made.lines().count(), 3, "three guest accounts kept: {made}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pool)?.permissions().mode() & 0o077, 0, "the pool is its owner's only");
    let second = run_json(&args)?;
    assert_eq!(second["connected"], 3, "{second}");
    assert_eq!(std::fs::read_to_string(&pool)?, made, "the same accounts played again");
    Ok(())
}

/// `scripts/bench compare` builds two commits in release, too slow for the
/// suite; what it refuses before building anything is checked here.
#[test]
fn bench_compare_refuses_bad_arguments_before_building() -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench");
    for (args, said) in [
        (&["compare"][..], "Compares two builds"),
        (&["compare", "no-such-revision-anywhere"][..], "no revision no-such-revision-anywhere"),
        (&["compare", "HEAD", "HEAD"][..], "are the same commit"),
        (&["compare", "HEAD~1", "--runs"][..], "--runs needs a value"),
        (&["compare", "HEAD~1", "--players", "1000,,5000"][..], "--players is a comma-separated list"),
        (&["compare", "HEAD~1", "--runs", "0"][..], "--runs must be at least 1"),
    ] {
        let out = Command::new("bash").arg(script).args(args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    Ok(())
}
