//! docs/runbook.md, run. Every command in it (a code span starting with
//! `respawn `, `curl `, `redis-cli `, or MySQL's `SHOW PROCESSLIST`) is read
//! from the file and exercised here against a live deployment: a platform
//! server on Redis, the Kafka-compatible broker and MariaDB of
//! `scripts/services`, and a zone server heartbeating into it. Placeholders
//! (`SERVER`, `Z`, `N`, `<tick or UTC time>`) become real values; a command
//! this test does not know fails it, so a new runbook command cannot go
//! untested. The drills each run in a test of their own (`tests/drills.rs`
//! and others); here each drill command line is checked to parse.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use support::{Platform, ZoneProcess, TEST_CONFIG, TOKEN_KEY};

const OPERATOR: &str = "runbook-operator-token-0123456789";

/// The runbook's commands, in order, each once, whitespace collapsed.
fn runbook_commands() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbook.md"))?;
    let mut commands = Vec::new();
    // Code spans are the odd pieces between backticks; they may wrap lines.
    for span in text.split('`').skip(1).step_by(2) {
        let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
        let command =
            ["respawn ", "curl ", "redis-cli "].iter().any(|p| span.starts_with(p)) || span == "SHOW PROCESSLIST";
        if command && !commands.contains(&span) {
            commands.push(span);
        }
    }
    Ok(commands)
}

/// Runs `command` in a shell with the runbook's environment; (success, stdout, stderr).
fn shell(command: &str, env: &[(&str, &str)]) -> Result<(bool, String, String)> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_respawn")).parent().context("binary directory")?;
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("sh").args(["-c", command]).env("PATH", path).envs(env.iter().copied()).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runbook_command_works_against_a_live_deployment() -> Result<()> {
    let commands = runbook_commands()?;
    assert!(commands.len() >= 20, "the runbook's commands were found: {commands:?}");
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").context("run through scripts/test")?;
    let redis = std::env::var("RESPAWN_TEST_REDIS_URL").context("run through scripts/test")?;
    let db = support::Database::create("runbook").await?;
    let prefix = format!("runbook{}", std::process::id());
    let platform = Platform::start_with(
        &brokers,
        &db.url(),
        &format!("runbook-{}", std::process::id()),
        &[
            "--redis-url",
            &redis,
            "--redis-prefix",
            &prefix,
            "--server-key",
            support::SERVER_KEY,
            "--token-key",
            TOKEN_KEY,
            "--admin-token",
            OPERATOR,
        ],
    )?;
    platform.wait_healthy().await?;
    let dir = support::TempDir::new("runbook")?;
    let data = dir.path().join("data");
    // Cold snapshots every second: the restore below has one to go back to,
    // and the replay a start with history archived after it.
    let config =
        format!("{TEST_CONFIG}\n[persistence]\ncold_snapshot_secs = 1\nkeep_cold = 10\nhistory_segment_secs = 1\n");
    let config_path = dir.path().join("zone.toml");
    std::fs::write(&config_path, &config)?;
    let zone = ZoneProcess::start_full_with(
        &config,
        &data,
        &[
            "--kafka-brokers",
            &brokers,
            "--platform",
            &platform.addr.to_string(),
            "--server-token",
            &support::credential("runbook-zone"),
        ],
    )?;
    let endpoint = format!("http://{}", platform.addr);
    let ctl_env = [
        ("RESPAWN_PLATFORM_URL", endpoint.as_str()),
        ("RESPAWN_OPERATOR_TOKEN", OPERATOR),
        ("PLATFORM", endpoint.as_str()),
        ("RESPAWN_REDIS_URL", redis.as_str()),
        ("RESPAWN_TOKEN_KEY", TOKEN_KEY),
    ];
    // The server in the registry, and a cold snapshot to restore from.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let server = loop {
        let (ok, out, _) = shell("respawn ctl servers --json", &ctl_env)?;
        let servers: Value = if ok { serde_json::from_str(&out)? } else { Value::Null };
        if let Some(id) = servers[0]["id"].as_str() {
            break id.to_owned();
        }
        if std::time::Instant::now() > deadline {
            bail!("the zone server did not register: {out}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cold = "respawn_zone_snapshots_total{result=\"ok\",store=\"cold\",zone=\"meadow\"}";
    while !support::metric(&support::scrape(zone.addr).await?, cold).is_some_and(|n| n >= 1.0) {
        if std::time::Instant::now() > deadline + Duration::from_secs(10) {
            bail!("no cold snapshot of meadow within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = support::metric(&support::scrape(zone.addr).await?, "respawn_zone_tick{zone=\"meadow\"}")
        .context("the zone's tick")?
        .to_string();

    let mut drained = false;
    for command in &commands {
        // The drain stops the zone server: it goes last.
        if command.starts_with("respawn ctl drain") {
            continue;
        }
        exercise(command, &ctl_env, &server, &now, &data, &config_path, &db).await?;
    }
    for command in commands.iter().filter(|c| c.starts_with("respawn ctl drain")) {
        exercise(command, &ctl_env, &server, &now, &data, &config_path, &db).await?;
        drained = true;
    }
    assert!(drained, "the runbook drains a server");
    let (status, _) = zone.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "the drained zone server exited cleanly");
    Ok(())
}

/// Runs one runbook command the way an operator would, with real values in
/// its placeholders, and checks what it answered.
#[allow(clippy::too_many_arguments)]
async fn exercise(
    command: &str,
    env: &[(&str, &str)],
    server: &str,
    now: &str,
    data: &Path,
    config: &Path,
    db: &support::Database,
) -> Result<()> {
    let filled = command
        .replace("SERVER", server)
        .replace("--zone Z", "--zone meadow")
        .replace("<tick or UTC time>", now)
        .replace("--players N", "--players 200")
        .replace("[--real]", "--real");
    let words: Vec<&str> = filled.split_whitespace().collect();
    match words.as_slice() {
        ["SHOW", "PROCESSLIST"] => {
            let pool = sqlx::mysql::MySqlPool::connect(&db.url()).await?;
            let rows = sqlx::query("SHOW PROCESSLIST").fetch_all(&pool).await?;
            assert!(!rows.is_empty(), "MariaDB lists its connections");
        }
        ["respawn", "drill", ..] => {
            // Parsed here, each drill run by a test of its own:
            // an invalid bot count is refused only after the command line parsed.
            let (ok, _, err) = shell(&format!("{filled} --bots 0"), env)?;
            assert!(!ok && err.contains("--bots"), "`{filled}` parses: {err}");
        }
        ["respawn", "bench", "tick", ..] => {
            let (ok, out, err) = shell(&format!("{filled} --seconds 1"), env)?;
            assert!(ok && out.contains("p99"), "`{filled}`: {out}{err}");
        }
        ["respawn", "bench", "pipeline"] => {
            let (ok, out, err) = shell(&format!("{filled} --events 2000"), env)?;
            assert!(ok && out.contains("events/s"), "`{filled}`: {out}{err}");
        }
        ["respawn", "replay", ..] => {
            let (data, config) = (data.to_string_lossy(), config.to_string_lossy());
            let env = [env, &[("RESPAWN_DATA_DIR", &*data), ("RESPAWN_ZONE_CONFIG", &*config)]].concat();
            let (ok, out, err) = shell(&filled, &env)?;
            assert!(ok && out.contains("every one matches"), "`{filled}` replays the zone's history: {out}{err}");
        }
        ["respawn", "ctl", "restore", ..] => {
            let (data, config) = (data.to_string_lossy(), config.to_string_lossy());
            let env = [env, &[("RESPAWN_DATA_DIR", &*data), ("RESPAWN_ZONE_CONFIG", &*config)]].concat();
            let (ok, out, err) = shell(&filled, &env)?;
            assert!(ok && out.contains("dry run"), "`{filled}` says what it would restore: {out}{err}");
        }
        ["respawn", "ctl", "rollback"] => {
            // Nothing to return to without a rollout (tests/rollout.rs rolls one back).
            let (ok, out, err) = shell(&filled, env)?;
            assert!(!ok && err.contains("rollout"), "`{filled}` says why not: {out}{err}");
        }
        ["respawn", "ctl", ..] => {
            let (ok, out, err) = shell(&filled, env)?;
            assert!(ok && !out.trim().is_empty(), "`{filled}`: {out}{err}");
        }
        ["curl", ..] if filled.contains("/v1/accounts/guest") => {
            let (ok, out, err) = shell(&format!("{filled} --silent --show-error --fail"), env)?;
            assert!(ok && out.contains("\"session_token\""), "`{filled}` signs a guest in: {out}{err}");
        }
        ["curl", ..] => {
            // Where the runbook says <session_token>: a new guest's.
            let filled = if filled.contains("<session_token>") {
                let guest = "curl -XPOST $PLATFORM/v1/accounts/guest -d '{}' --silent --show-error --fail";
                let (_, out, err) = shell(guest, env)?;
                let signed_in: Value = serde_json::from_str(&out).with_context(|| format!("a guest: {err}"))?;
                filled.replace("<session_token>", signed_in["session_token"].as_str().unwrap_or_default())
            } else {
                filled
            };
            let (ok, out, err) = shell(&format!("{filled} --silent --show-error --fail"), env)?;
            assert!(ok && out.contains("\"address\""), "`{filled}` joins: {out}{err}");
        }
        ["redis-cli", ..] => {
            let (ok, out, err) = shell(&filled, env)?;
            assert!(ok && out.trim() == "PONG", "`{filled}`: {out}{err}");
        }
        _ => bail!("the runbook has a command this test does not exercise yet: `{command}`"),
    }
    Ok(())
}
