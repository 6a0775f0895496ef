//! Point-in-time restore: `respawn ctl restore` rolls a stopped zone back to
//! an older cold snapshot, and the zone server resumes from exactly there.

mod support;

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Result};
use support::{TempDir, ZoneProcess, ADMIN_TOKEN, TEST_CONFIG};

fn ctl(data: &std::path::Path, at: &str, yes: bool) -> Result<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_respawn"));
    cmd.args(["ctl", "restore", "--zone", "meadow", "--at", at, "--data-dir"]).arg(data);
    if yes {
        cmd.arg("--yes");
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(anyhow!("ctl restore failed: {text}"));
    }
    Ok(text)
}

fn tick_in(text: &str) -> Result<u64> {
    text.split("at tick ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow!("no tick in {text:?}"))
}

#[tokio::test]
async fn ctl_restore_rolls_a_zone_back_to_an_older_cold_snapshot() -> Result<()> {
    let config =
        TEST_CONFIG.replace("[limits]", "[persistence]\ncold_snapshot_secs = 1\nhot_snapshot_secs = 1\n\n[limits]");
    let keep = TempDir::new("restore")?;
    let data = keep.path().join("data");
    let zone = ZoneProcess::start_in(&config, TempDir::new("zone")?, &data)?;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let refused = ctl(&data, "999999999", true).expect_err("a zone a server runs is not rolled back under it");
    assert!(refused.to_string().contains("is hosted by server"), "{refused}");
    support::http(zone.addr, "POST", "/admin/drain", Some(ADMIN_TOKEN)).await?;
    let (status, _) = zone.wait_exit(Duration::from_secs(10))?;
    assert!(status.success());

    let newest = tick_in(&ctl(&data, "999999999", false)?)?;
    let dry = ctl(&data, &(newest - 1).to_string(), false)?;
    assert!(dry.contains("dry run"), "{dry}");
    let older = tick_in(&dry)?;
    assert!(older < newest, "an older snapshot exists: {older} < {newest}");
    let done = ctl(&data, &(newest - 1).to_string(), true)?;
    assert!(done.contains("restored"), "{done}");
    // The abandoned timeline's history is gone with it: no segment reaches past the point.
    for file in std::fs::read_dir(data.join("history/zone-1")).into_iter().flatten() {
        let name = file?.file_name().to_string_lossy().into_owned();
        let last_tick: u64 = name.split('-').next().and_then(|t| t.parse().ok()).ok_or_else(|| anyhow!("{name}"))?;
        assert!(last_tick <= older, "history segment {name} reaches past tick {older}");
    }

    let zone = ZoneProcess::start_in(&config, TempDir::new("zone")?, &data)?;
    support::http(zone.addr, "POST", "/admin/drain", Some(ADMIN_TOKEN)).await?;
    let (_, log) = zone.wait_exit(Duration::from_secs(10))?;
    let line = log
        .lines()
        .find(|l| l.contains("zone state restored") && l.contains("zone=meadow"))
        .ok_or_else(|| anyhow!("no restore line in:\n{log}"))?;
    assert!(line.contains(&format!("snapshot_tick={older}")), "resumed from the chosen snapshot: {line}");
    assert!(line.contains("replayed_ticks=0"), "the abandoned journal is not replayed: {line}");

    assert!(ctl(&data, "not-a-time", false).is_err(), "bad --at is refused");
    Ok(())
}
