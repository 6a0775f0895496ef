//! `respawn replay --build PATH`: the same history run on this build and on
//! another, and the first tick where their states disagree, with the fields
//! that differ there ("tick 88412: player 42 gold 10 vs 12").
//!
//! The other build gets the history as an incident bundle and answers with
//! a trace (`respawn replay --trace`, a `respawn_api::replay::ReplayTrace`):
//! the digest of its state after every tick. This build traces the same
//! ticks, and at the first tick whose digests differ both builds give their
//! whole state there, compared field by field.

use std::path::Path;

use anyhow::{bail, Context, Result};
use respawn_api::replay::{Divergence, ReplayTrace, ReplayWindow};
use respawn_harness::TempDir;
use respawn_zone::bundle::{self, BundleInfo};
use respawn_zone::inspect;
use respawn_zone::replay::History;

/// Replays `history` here and on the build at `other`, and reports where they part.
/// Every tick from the starting snapshot on is compared, not only the
/// window's: a divergence before the window shows where it began.
pub async fn compare(mut history: History, info: BundleInfo, other: &Path, this_build: &str, json: bool) -> Result<()> {
    history.from = (history.start.tick_number() + 1).min(history.to);
    let dir = TempDir::new("replay-build")?;
    let bundle_path = dir.path().join("history.bundle");
    let bytes = bundle::encode(&history, &info);
    std::fs::write(&bundle_path, &bytes).context("writing the history for the other build")?;
    if !json {
        println!("zone {}: replaying ticks {} to {} on {} …", info.zone, history.from, history.to, other.display());
    }
    let theirs = trace_of(other, &bundle_path, &dir.path().join("trace"), None).await?;
    if !json {
        println!("… and on this build ({this_build})");
    }
    let mine = trace_here(&bytes, info.tick_hz, this_build, None).await?;
    let states = match ReplayWindow::first_divergence(&mine, &theirs) {
        (_, Some(tick)) => {
            let their_state = trace_of(other, &bundle_path, &dir.path().join("state"), Some(tick)).await?.state;
            let my_state = trace_here(&bytes, info.tick_hz, this_build, Some(tick)).await?.state;
            my_state.zip(their_state)
        }
        (_, None) => None,
    };
    let report = Divergence::new(&info.zone, &mine, &theirs, states.as_ref().map(|(m, t)| (m, t)));
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.lines().iter().for_each(|line| println!("{line}"));
    }
    if let Some(tick) = report.first_divergent_tick {
        bail!("builds {} and {} diverge at tick {tick}", report.this_build, report.other_build);
    }
    Ok(())
}

/// This build's trace of the bundle `bytes`.
async fn trace_here(bytes: &[u8], tick_hz: u32, version: &str, state_at: Option<u64>) -> Result<ReplayTrace> {
    let (history, _) = bundle::decode(bytes)?;
    let version = version.to_owned();
    Ok(tokio::task::spawn_blocking(move || inspect::trace(history, tick_hz, &version, state_at)).await??)
}

/// Runs `respawn replay --bundle B --trace FILE` on the build at `binary`
/// and reads the trace back.
async fn trace_of(binary: &Path, bundle: &Path, trace: &Path, state_at: Option<u64>) -> Result<ReplayTrace> {
    let mut command = tokio::process::Command::new(binary);
    command.arg("replay").arg("--bundle").arg(bundle).arg("--trace").arg(trace);
    if let Some(tick) = state_at {
        command.args(["--trace-state-at", &tick.to_string()]);
    }
    let out = command.output().await.with_context(|| format!("--build {}: cannot run it", binary.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("--trace") && stderr.contains("unexpected argument") {
            bail!("--build {}: that build cannot compare replays (it has no `replay --trace`)", binary.display());
        }
        let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).take(8).collect();
        bail!("--build {}: its replay failed ({}): {}", binary.display(), out.status, said.join("\n"));
    }
    let text = std::fs::read(trace).with_context(|| format!("--build {}: its trace", binary.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("--build {}: its trace", binary.display()))
}

/// `respawn replay --trace FILE`: this build's answer to another's `--build`.
pub fn write_trace(history: History, tick_hz: u32, path: &Path, state_at: Option<u64>, version: &str) -> Result<()> {
    let trace = inspect::trace(history, tick_hz, version, state_at)?;
    std::fs::write(path, serde_json::to_vec(&trace)?).with_context(|| format!("--trace {}", path.display()))
}
