//! `respawn replay --zone Z --from … --to …`: a zone's kept history run
//! again ([`respawn_zone::replay`]), on the stores directly or from an
//! incident bundle (`--bundle`, [`respawn_zone::bundle`]): each tick's
//! events and the state of chosen players printed (or one JSON object a
//! tick), every recorded state hash checked, and how fast it ran; with
//! `--build`, the same history run on another build too and the first tick
//! where they disagree, field by field ([`divergence`]). And `respawn ctl
//! incident export`, which writes such a bundle.

mod divergence;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use respawn_harness::zone::StoreFlags;
use respawn_zone::bundle::{self, BundleInfo};
use respawn_zone::inspect::PlayerState;
use respawn_zone::persist::Stores;
use respawn_zone::replay::{self, History, ReplayReport};
use respawn_zone::rollback::RestorePoint;
use respawn_zone::ServerConfig;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Zone name (or numeric id).
    #[arg(long, required_unless_present = "bundle")]
    zone: Option<String>,
    /// Replay an incident bundle (`respawn ctl incident export`) instead of the stores: offline, no service needed.
    #[arg(long, conflicts_with_all = ["zone", "from", "to"])]
    bundle: Option<PathBuf>,
    /// The first tick to show: a tick number, or a UTC time like
    /// 2026-11-26T10:00:00Z; by default the first a replay can reach (after the oldest cold snapshot).
    #[arg(long)]
    from: Option<String>,
    /// The last tick to show (a tick or a UTC time); by default the newest kept.
    #[arg(long)]
    to: Option<String>,
    /// Print each tick's events.
    #[arg(long)]
    events: bool,
    /// Print this player's state at every tick (repeatable).
    #[arg(long = "player")]
    players: Vec<u64>,
    /// One JSON object per shown tick, then the report.
    #[arg(long)]
    json: bool,
    /// The zone server's configuration file (to find the zone's id and tick rate).
    #[arg(long, env = "RESPAWN_ZONE_CONFIG")]
    config: Option<PathBuf>,
    /// Run the same history on another build too (the path of its `respawn`
    /// binary) and report the first tick where the two disagree, with the
    /// fields that differ there.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["trace", "events", "players"])]
    build: Option<PathBuf>,
    /// Write the digest of the state after each tick to FILE, as one JSON
    /// object (what `--build` asks of the other build).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// With --trace: the whole state at this tick too, and stop there.
    #[arg(long, value_name = "TICK", requires = "trace")]
    trace_state_at: Option<u64>,
    #[command(flatten)]
    stores: StoreFlags,
}

/// What `--json` prints for each tick shown.
#[derive(Debug, Serialize)]
struct ShownTick {
    tick: u64,
    events: Vec<respawn_api::replay::ReplayedEvent>,
    players: Vec<PlayerState>,
}

/// The history the arguments name, the zone's name and its tick rate.
async fn history_of(
    zone: &str,
    from: &Option<String>,
    to: &Option<String>,
    config: Option<&std::path::Path>,
    stores: &StoreFlags,
) -> Result<(History, String, u32)> {
    let config = ServerConfig::load_or_defaults(config)?;
    let zone = config.zone(zone).map_err(anyhow::Error::msg)?;
    let point = |given: &Option<String>, flag: &str| -> Result<Option<RestorePoint>> {
        given.as_deref().map(|p| p.parse().map_err(|e| anyhow!("{flag} {e}"))).transpose()
    };
    let (from, to) = (point(from, "--from")?, point(to, "--to")?);
    let stores = Stores::connect(&stores.data_dir, stores.redis(), stores.mongo()).await?;
    let history = replay::load(&stores, zone, from, to).await?;
    Ok((history, zone.name.clone(), config.tick_hz))
}

/// Runs the replay on this build, `build` (its version).
pub async fn run(args: ReplayArgs, build: &str) -> Result<()> {
    let quiet = args.json || args.trace.is_some();
    let (history, info) = match (&args.bundle, &args.zone) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).with_context(|| format!("--bundle {}", path.display()))?;
            let (history, info) = bundle::decode(&bytes).with_context(|| format!("--bundle {}", path.display()))?;
            if !quiet {
                println!("bundle of zone {} exported by build {} (this is {build})", info.zone, info.build);
            }
            (history, info)
        }
        (None, Some(zone)) => {
            let (history, zone, tick_hz) =
                history_of(zone, &args.from, &args.to, args.config.as_deref(), &args.stores).await?;
            (history, BundleInfo { build: build.to_owned(), zone, tick_hz })
        }
        (None, None) => bail!("--zone or --bundle is needed"),
    };
    if let Some(other) = &args.build {
        return divergence::compare(history, info, other, build, args.json).await;
    }
    if let Some(trace) = args.trace {
        let version = build.to_owned();
        return tokio::task::spawn_blocking(move || {
            divergence::write_trace(history, info.tick_hz, &trace, args.trace_state_at, &version)
        })
        .await?;
    }
    let (json, events, players) = (args.json, args.events, args.players.clone());
    let tick_hz = info.tick_hz;
    let report = tokio::task::spawn_blocking(move || {
        replay::run(history, tick_hz, |zone, out| {
            let shown = ShownTick {
                tick: out.tick,
                events: if events { respawn_zone::inspect::events_of(out) } else { Vec::new() },
                players: players.iter().filter_map(|id| PlayerState::of(zone, *id)).collect(),
            };
            print_tick(&shown, json);
        })
    })
    .await??;
    print_report(&info.zone, &report, args.json)?;
    if let Some(tick) = report.first_mismatch() {
        let hint = match report.snapshot_tick {
            0 => " (replayed from the zone's configuration: give --config the one it ran with)",
            _ => "",
        };
        bail!("the replayed state differs from the recorded one from tick {tick} on{hint}");
    }
    Ok(())
}

fn print_tick(shown: &ShownTick, json: bool) {
    if json {
        if !shown.events.is_empty() || !shown.players.is_empty() {
            println!("{}", serde_json::to_string(shown).unwrap_or_default());
        }
        return;
    }
    for e in &shown.events {
        println!("tick {:>8}  {:<16} player {:<6} {}", shown.tick, e.kind, e.player, e.detail);
    }
    for p in &shown.players {
        println!(
            "tick {:>8}  player {} {:?} at ({}, {}) hp {} level {} xp {} gold {} items {:?}{}",
            shown.tick,
            p.player,
            p.name,
            p.x,
            p.y,
            p.hp,
            p.level,
            p.xp,
            p.gold,
            p.inventory,
            if p.alive { "" } else { " (dead)" }
        );
    }
}

fn print_report(zone: &str, r: &ReplayReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!(
        "zone {zone}: ticks {} to {} replayed from {} ({} ticks in {:.3} s: {:.0} ticks/s, {:.0}x real time)",
        r.from_tick,
        r.to_tick,
        match r.snapshot_tick {
            0 => "the zone's start (its configuration)".to_owned(),
            tick => format!("the snapshot at tick {tick}"),
        },
        r.ticks,
        r.seconds,
        r.ticks_per_second,
        r.real_time_factor
    );
    match r.first_mismatch() {
        None => println!("{} recorded state hashes checked: every one matches", r.hashes_checked),
        Some(tick) => println!(
            "{} recorded state hashes checked: {} differ, the first at tick {tick}",
            r.hashes_checked,
            r.mismatches.len()
        ),
    }
    Ok(())
}

/// `respawn ctl incident …`.
#[derive(clap::Subcommand, Debug)]
pub enum IncidentCmd {
    /// Write one self-contained file with a window of a zone's history
    /// (snapshot, history, configuration, hashes, this build's version):
    /// `respawn replay --bundle FILE` replays it anywhere, offline.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Zone name (or numeric id).
    #[arg(long)]
    zone: String,
    /// The first tick of the window (a tick or a UTC time); by default the first a replay can reach.
    #[arg(long)]
    from: Option<String>,
    /// The last tick of the window (a tick or a UTC time); by default the newest kept.
    #[arg(long)]
    to: Option<String>,
    /// The bundle file to write.
    #[arg(long)]
    out: PathBuf,
    /// The zone server's configuration file (to find the zone's id and tick rate).
    #[arg(long, env = "RESPAWN_ZONE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    stores: StoreFlags,
}

/// Runs `cmd` on this build, `build` (its version, recorded in the bundle).
pub async fn incident(cmd: IncidentCmd, build: &str) -> Result<()> {
    let IncidentCmd::Export(args) = cmd;
    let (history, zone, tick_hz) =
        history_of(&args.zone, &args.from, &args.to, args.config.as_deref(), &args.stores).await?;
    let (from, to, start) = (history.from, history.to, history.start.tick_number());
    let bytes = bundle::encode(&history, &BundleInfo { build: build.to_owned(), zone: zone.clone(), tick_hz });
    // Written whole or not at all: a reader never finds half a bundle.
    let partial = args.out.with_extension("partial");
    std::fs::write(&partial, &bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "zone {zone}: ticks {from} to {to} (from the snapshot at tick {start}) written to {} ({} bytes)",
        args.out.display(),
        bytes.len()
    );
    Ok(())
}
