//! `respawn replay`: a zone server played by bots keeps its history; the
//! replay runs it again from a cold snapshot, every recorded state hash
//! matching, with each tick's events and a player's state; a corrupt
//! segment is refused with the reason.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use support::{TempDir, ZoneProcess, ADMIN_TOKEN, TEST_CONFIG, TOKEN_KEY};

/// `respawn ARGS`: whether it succeeded, its output.
fn respawn(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_respawn")).args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

/// `respawn replay --zone meadow --data-dir DATA ARGS`.
fn replay(data: &Path, args: &[&str]) -> Result<(bool, String)> {
    let data = data.to_str().context("a UTF-8 path")?;
    respawn(&[&["replay", "--zone", "meadow", "--data-dir", data], args].concat())
}

/// The JSON lines of a `--json` replay: the shown ticks, then the report.
fn json_lines(text: &str) -> Result<(Vec<Value>, Value)> {
    let mut lines: Vec<Value> =
        text.lines().filter(|l| l.starts_with('{')).map(serde_json::from_str).collect::<Result<_, _>>()?;
    let report = lines.pop().context("a report")?;
    Ok((lines, report))
}

/// A zone server with `persistence` (a `[persistence]` section) on `data`,
/// played by `bots` in meadow for `secs`, then drained.
async fn play(persistence: &str, data: &Path, bots: u32, secs: u64) -> Result<()> {
    let config = TEST_CONFIG.replace("[limits]", &format!("{persistence}\n[limits]"));
    let zone = ZoneProcess::start_in(&config, TempDir::new("zone")?, data)?;
    let access = respawn_client::Access::Direct {
        url: zone.ws_url(),
        tokens: respawn_client::signed_tokens(
            respawn_token::TokenKey::new(TOKEN_KEY.as_bytes())?,
            Duration::from_secs(600),
        ),
    };
    let fleet = respawn_client::Fleet::spawn(access, &["meadow".to_owned()], bots, "replayed");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    fleet.stop().await;
    support::http(zone.addr, "POST", "/admin/drain", Some(ADMIN_TOKEN)).await?;
    let (status, _) = zone.wait_exit(Duration::from_secs(15))?;
    ensure!(status.success());
    Ok(())
}

/// A zone played by 4 bots for 6 s, a cold snapshot and a history segment
/// kept every second: its directory (kept until dropped) and data.
async fn played_with_cold_snapshots(tag: &str) -> Result<(TempDir, std::path::PathBuf)> {
    let persistence =
        "[persistence]\nhot_snapshot_secs = 1\ncold_snapshot_secs = 1\nkeep_cold = 30\nhistory_segment_secs = 1\n";
    let keep = TempDir::new(tag)?;
    let data = keep.path().join("data");
    play(persistence, &data, 4, 6).await?;
    Ok((keep, data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_played_zone_replays_from_its_history_with_every_hash_matching() -> Result<()> {
    let (keep, data) = played_with_cold_snapshots("replay").await?;

    // Everything kept, with the events.
    let (ok, text) = replay(&data, &["--events", "--json"])?;
    ensure!(ok, "replay failed: {text}");
    let (ticks, report) = json_lines(&text)?;
    println!("replay report: {report}");
    let checked = report["hashes_checked"].as_u64().unwrap_or(0);
    ensure!(checked >= 3, "a hash a second was recorded and checked: {report}");
    ensure!(report["mismatches"].as_array().is_some_and(Vec::is_empty), "every hash matches: {report}");
    ensure!(report["real_time_factor"].as_f64().unwrap_or(0.0) > 1.0, "faster than real time: {report}");
    let events: Vec<&Value> = ticks.iter().flat_map(|t| t["events"].as_array().into_iter().flatten()).collect();
    ensure!(events.iter().any(|e| e["kind"] == "gold_changed"), "the bots' play is in it: {text}");
    let player = events.iter().filter_map(|e| e["player"].as_u64()).find(|p| *p > 0).context("a player's event")?;

    // One player's state through a window of ticks.
    let (from, to) = (report["from_tick"].as_u64().unwrap_or(0) + 20, report["from_tick"].as_u64().unwrap_or(0) + 40);
    let (ok, text) = replay(
        &data,
        &["--from", &from.to_string(), "--to", &to.to_string(), "--player", &player.to_string(), "--json"],
    )?;
    ensure!(ok, "replay failed: {text}");
    let (ticks, report) = json_lines(&text)?;
    ensure!(report["from_tick"] == from && report["to_tick"] == to, "{report}");
    let shown: Vec<u64> = ticks.iter().filter_map(|t| t["tick"].as_u64()).collect();
    ensure!(shown == (from..=to).collect::<Vec<_>>(), "each tick of the window once: {shown:?}");
    ensure!(ticks.iter().all(|t| t["players"][0]["player"] == player), "the player's state every tick: {text}");

    // The same window as an incident bundle, replayed with no store at all: the same ticks.
    let bundle = keep.path().join("incident.bundle");
    let (bundle, data_dir) = (bundle.to_str().context("a UTF-8 path")?, data.to_str().context("a UTF-8 path")?);
    let window = ["--from", &from.to_string(), "--to", &to.to_string()].map(str::to_owned);
    let export = [
        &["ctl", "incident", "export", "--zone", "meadow", "--out", bundle, "--data-dir", data_dir][..],
        &window.each_ref().map(String::as_str),
    ]
    .concat();
    let (ok, text) = respawn(&export)?;
    ensure!(ok && text.contains("written to"), "{text}");
    let (ok, from_bundle) = respawn(&["replay", "--bundle", bundle, "--player", &player.to_string(), "--json"])?;
    ensure!(ok, "replay --bundle failed: {from_bundle}");
    let (bundled_ticks, bundled_report) = json_lines(&from_bundle)?;
    ensure!(bundled_ticks == ticks, "the bundle replays the same ticks as the stores");
    ensure!(bundled_report["hashes_checked"] == report["hashes_checked"], "{bundled_report} vs {report}");
    let bytes = std::fs::read(bundle)?;
    let damaged = |name: &str, bytes: &[u8]| -> Result<String> {
        let path = keep.path().join(name);
        std::fs::write(&path, bytes)?;
        let (ok, text) = respawn(&["replay", "--bundle", path.to_str().context("a UTF-8 path")?])?;
        ensure!(!ok, "a damaged bundle is refused: {text}");
        Ok(text)
    };
    ensure!(damaged("cut", &bytes[..bytes.len() - 9])?.contains("truncated"));
    let mut flipped = bytes.clone();
    // The last byte before the checksum: the history's own last byte.
    flipped[bytes.len() - 5] ^= 0x10;
    ensure!(damaged("flipped", &flipped)?.contains("checksum does not match"));
    ensure!(damaged("other", b"not a bundle at all")?.contains("not an incident bundle"));

    // Outside what is kept, or backwards: said plainly.
    let (ok, text) = replay(&data, &["--from", "999999999"])?;
    ensure!(!ok && text.contains("outside the zone's kept history"), "{text}");
    let (ok, text) = replay(&data, &["--from", &to.to_string(), "--to", &from.to_string()])?;
    ensure!(!ok && text.contains("is after --to"), "{text}");

    // A segment damaged on disk: the replay names it and why.
    let segments = std::fs::read_dir(data.join("history/zone-1"))?.collect::<Result<Vec<_>, _>>()?;
    let damaged = segments.iter().map(|e| e.path()).max().context("a segment file")?;
    let mut bytes = std::fs::read(&damaged)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&damaged, bytes)?;
    let (ok, text) = replay(&data, &[])?;
    ensure!(!ok && text.contains("is unusable") && text.contains("history segment"), "{text}");
    Ok(())
}

/// Before any cold snapshot is kept (the first minutes of a zone, as after
/// `respawn up`), the history reaches back to the zone's first tick and the
/// replay starts from the zone as its configuration makes it; the recorded
/// hashes catch a configuration other than the one it ran with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_zone_replays_from_its_configuration_and_a_wrong_one_is_caught() -> Result<()> {
    let persistence = "[persistence]\nhot_snapshot_secs = 1\nhistory_segment_secs = 1\n";
    let keep = TempDir::new("replay-young")?;
    let (data, config_path) = (keep.path().join("data"), keep.path().join("zone.toml"));
    std::fs::write(&config_path, TEST_CONFIG.replace("[limits]", &format!("{persistence}\n[limits]")))?;
    play(persistence, &data, 2, 3).await?;
    ensure!(
        !data.join("cold").exists() || std::fs::read_dir(data.join("cold/zone-1"))?.next().is_none(),
        "no cold snapshot yet"
    );

    let config_arg = config_path.to_str().context("a UTF-8 path")?;
    let (ok, text) = replay(&data, &["--config", config_arg])?;
    ensure!(ok && text.contains("ticks 1 to") && text.contains("the zone's start"), "{text}");
    ensure!(text.contains("every one matches"), "{text}");
    // The built-in zones are not the ones it ran: the first hash says so.
    let (ok, text) = replay(&data, &[])?;
    ensure!(!ok && text.contains("give --config the one it ran with"), "{text}");
    Ok(())
}

/// `--build`: the second build of the suite finds one more gold in every
/// grant (respawn-sim's planted-rule-change). Replayed on both, the history
/// parts at the first tick that granted gold, on that player's gold; on
/// this build itself, every tick agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_build_with_a_rule_change_diverges_at_its_first_tick_on_the_changed_field() -> Result<()> {
    let (_keep, data) = played_with_cold_snapshots("replay-build").await?;

    // Where this build first grants gold, to whom and how much they then have.
    let (ok, text) = replay(&data, &["--events", "--json"])?;
    ensure!(ok, "replay failed: {text}");
    let (ticks, report) = json_lines(&text)?;
    let (tick, player) = ticks
        .iter()
        .find_map(|t| {
            let gold = t["events"].as_array()?.iter().find(|e| e["kind"] == "gold_changed")?;
            Some((t["tick"].as_u64()?, gold["player"].as_u64()?))
        })
        .context("the bots found gold")?;
    let (ok, text) = replay(
        &data,
        &["--from", &tick.to_string(), "--to", &tick.to_string(), "--player", &player.to_string(), "--json"],
    )?;
    ensure!(ok, "replay failed: {text}");
    let gold = json_lines(&text)?.0[0]["players"][0]["gold"].as_u64().context("the player's gold")?;

    let next = support::next_build();
    let (ok, text) = replay(&data, &["--build", &next, "--json"])?;
    ensure!(!ok, "a divergence fails the command: {text}");
    let found: Value = serde_json::from_str(text.lines().find(|l| l.starts_with('{')).context("a report")?)?;
    println!("divergence: {found}");
    ensure!(found["first_divergent_tick"] == tick, "the first tick that granted gold, {tick}: {found}");
    ensure!(found["ticks_compared"].as_u64() > Some(0) && found["to_tick"] == report["to_tick"], "{found}");
    ensure!(found["other_build"].as_str().is_some_and(|v| v.ends_with("-next")), "{found}");
    let fields = found["fields"].as_array().context("fields")?;
    let changed = serde_json::json!({
        "field": format!("player {player} gold"), "this_build": gold.to_string(), "other_build": (gold + 1).to_string()
    });
    ensure!(fields.contains(&changed), "{changed} among {found}");
    ensure!(fields.iter().all(|f| f["field"].as_str().is_some_and(|f| f.ends_with(" gold"))), "only gold: {found}");
    let (_, text) = replay(&data, &["--build", &next])?;
    ensure!(text.contains(&format!("tick {tick}: player {player} gold {gold} vs {}", gold + 1)), "{text}");

    // The same build agrees with itself on every tick; a path that is no build says so.
    let (ok, text) = replay(&data, &["--build", env!("CARGO_BIN_EXE_respawn")])?;
    ensure!(ok && text.contains("agree on every tick"), "{text}");
    let (ok, text) = replay(&data, &["--build", "/nonexistent/respawn"])?;
    ensure!(!ok && text.contains("cannot run it"), "{text}");
    Ok(())
}
