//! A full disk under the zone server's outbox, for real: a small tmpfs
//! (mounted as root, or with `sudo -n`), filled to the last byte while bots
//! play. The tick goes on, the events wait in memory, every failed append is
//! cut back off, and once space returns the writer catches up: every event
//! the server counted as recorded reaches the ledger.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use respawn_platform::ledger::Ledger;
use support::{TempDir, ZoneProcess, ADMIN_TOKEN, TEST_CONFIG, TOKEN_KEY};

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    dir: TempDir,
}

/// `mount`-family commands as root: directly, or through `sudo -n`.
fn as_root(program: &str, args: &[&str]) -> Result<()> {
    let direct = Command::new(program).args(args).output();
    if direct.as_ref().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    let sudo = Command::new("sudo").arg("-n").arg(program).args(args).output()?;
    if !sudo.status.success() {
        let why = direct.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_else(|e| e.to_string());
        bail!("{program} {args:?} needs root (run the suite as root or with passwordless sudo): {why}");
    }
    Ok(())
}

impl SmallDisk {
    fn mount(bytes: u64) -> Result<Self> {
        let dir = TempDir::new("full-disk")?;
        let path = dir.path().to_str().context("utf-8 path")?.to_owned();
        as_root("mount", &["-t", "tmpfs", "-o", &format!("size={bytes},mode=0777"), "tmpfs", &path])?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk refuses more; returns it (delete it to give the space back).
    fn fill(&self) -> Result<PathBuf> {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 4096];
        loop {
            match file.write_all(&chunk).and_then(|()| file.sync_data()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return Ok(filler), // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(path) = self.path().to_str() {
            let _ = as_root("umount", &["-l", path]);
        }
    }
}

async fn series(zone: &ZoneProcess, name: &str) -> Result<f64> {
    let text = support::scrape(zone.addr).await?;
    Ok(support::metric(&text, &format!("{name}{{zone=\"meadow\"}}")).unwrap_or(0.0))
}

async fn wait_series(zone: &ZoneProcess, name: &str, what: &str, want: impl Fn(f64) -> bool) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = series(zone, name).await?;
        if want(value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: {name} is {value} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_events_back_without_stopping_the_tick_and_loses_none() -> Result<()> {
    let disk = SmallDisk::mount(4 << 20)?;
    let outbox = disk.path().join("outbox");
    let state = TempDir::new("full-disk-state")?;
    let data = state.path().join("data");
    let outbox_arg = outbox.to_str().context("utf-8 path")?;
    let zone = ZoneProcess::start_full_with(TEST_CONFIG, &data, &["--outbox-dir", outbox_arg])?;
    let key = respawn_token::TokenKey::new(TOKEN_KEY.as_bytes())?;
    let access = respawn_client::Access::Direct {
        url: zone.ws_url(),
        tokens: respawn_client::signed_tokens(key, Duration::from_secs(3_600)),
    };
    let mut bots = respawn_client::Fleet::spawn(access, &["meadow".to_owned()], 8, "disk");
    let recorded = "respawn_zone_events_recorded_total";
    wait_series(&zone, recorded, "bots playing", |v| v > 0.0).await?;

    // The disk fills: appends fail and are retried; the events wait in memory.
    let filler = disk.fill()?;
    wait_series(&zone, "respawn_zone_outbox_write_failures_total", "a refused append", |v| v > 0.0).await?;
    let held = wait_series(&zone, "respawn_zone_events_unrecorded", "events held back", |v| v > 0.0).await?;
    let tick = series(&zone, "respawn_zone_tick").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticked = series(&zone, "respawn_zone_tick").await? - tick;
    ensure!(ticked >= 40.0, "the tick went on while the disk was full: {ticked} ticks in 3 s");
    let paused = series(&zone, "respawn_zone_ticks_paused_total").await?;
    ensure!(paused == 0.0, "{paused} ticks paused (the backlog is far under its bound)");
    println!("disk full: {held} events held back at first, {ticked} ticks in 3 s");

    // Space returns: the writer catches up by itself.
    std::fs::remove_file(filler)?;
    wait_series(&zone, "respawn_zone_events_unrecorded", "the backlog written", |v| v == 0.0).await?;
    bots.halt().await;
    // Everything recorded goes out to the ledger, then the count holds still.
    wait_series(&zone, "respawn_zone_outbox_pending_events", "the outbox published", |v| v == 0.0).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recorded = series(&zone, recorded).await?;
    let (status, _) = support::http(zone.addr, "POST", "/admin/drain", Some(ADMIN_TOKEN)).await?;
    ensure!(status == 202, "drain: {status}");
    let (exit, log) = zone.wait_exit(Duration::from_secs(30))?;
    ensure!(exit.success(), "the zone server stopped cleanly: {exit}\n{log}");
    ensure!(!log.contains("panicked"), "{log}");
    let ledger = respawn_platform::SqliteLedger::open(&data.join("events.sqlite")).await?;
    let stored = ledger.event_count().await? as f64;
    ensure!(stored >= recorded, "{recorded} events recorded, {stored} in the ledger: some were lost");
    println!("{recorded} events recorded, {stored} stored");
    Ok(())
}
