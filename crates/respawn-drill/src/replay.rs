//! `respawn replay --zone Z --from … --to …`: a zone's kept history run
//! again ([`respawn_zone::replay`]), on the stores directly: each tick's
//! events and the state of chosen players printed (or one JSON object a
//! tick), every recorded state hash checked, and how fast it ran.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use respawn_harness::zone::StoreFlags;
use respawn_sim::{TickOutput, Zone};
use respawn_zone::persist::Stores;
use respawn_zone::replay::{self, ReplayReport};
use respawn_zone::rollback::RestorePoint;
use respawn_zone::ServerConfig;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Zone name (or numeric id).
    #[arg(long)]
    zone: String,
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
    #[command(flatten)]
    stores: StoreFlags,
}

/// One event of a replayed tick, as the event search shows events.
#[derive(Debug, Serialize)]
pub struct ReplayedEvent {
    pub id: String,
    pub player: u64,
    pub kind: &'static str,
    pub detail: String,
}

/// A player's state after a replayed tick.
#[derive(Debug, Serialize)]
pub struct PlayerState {
    pub player: u64,
    pub name: String,
    pub entity: u32,
    pub x: i32,
    pub y: i32,
    pub hp: i32,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    pub inventory: BTreeMap<&'static str, u32>,
    pub alive: bool,
}

/// What `--json` prints for each tick shown.
#[derive(Debug, Serialize)]
struct ShownTick {
    tick: u64,
    events: Vec<ReplayedEvent>,
    players: Vec<PlayerState>,
}

fn events_of(out: &TickOutput) -> Vec<ReplayedEvent> {
    out.events
        .iter()
        .map(|e| {
            let proto = respawn_zone::events::to_proto(e);
            ReplayedEvent {
                id: proto.id(),
                player: proto.player,
                kind: proto.kind.as_ref().map_or("unknown", |k| k.name()),
                detail: proto.kind.map_or_else(String::new, |k| format!("{k:?}")),
            }
        })
        .collect()
}

fn player_state(zone: &Zone, id: u64) -> Option<PlayerState> {
    let p = zone.player(id)?;
    Some(PlayerState {
        player: id,
        name: p.name.clone(),
        entity: p.entity,
        x: p.pos.x,
        y: p.pos.y,
        hp: p.hp,
        level: p.level,
        xp: p.xp,
        gold: p.gold,
        inventory: p.inventory.iter().map(|(kind, n)| (kind.as_str(), *n)).collect(),
        alive: p.is_alive(),
    })
}

pub async fn run(args: ReplayArgs) -> Result<()> {
    let config = ServerConfig::load_or_defaults(args.config.as_deref())?;
    let zone = config.zone(&args.zone).map_err(anyhow::Error::msg)?;
    let point = |given: &Option<String>, flag: &str| -> Result<Option<RestorePoint>> {
        given.as_deref().map(|p| p.parse().map_err(|e| anyhow!("{flag} {e}"))).transpose()
    };
    let (from, to) = (point(&args.from, "--from")?, point(&args.to, "--to")?);
    let stores = Stores::connect(&args.stores.data_dir, args.stores.redis(), args.stores.mongo()).await?;
    let history = replay::load(&stores, zone.zone_id, from, to).await?;
    let (json, events, players) = (args.json, args.events, args.players.clone());
    let report = tokio::task::spawn_blocking(move || {
        replay::run(history, config.tick_hz, |zone, out| {
            let shown = ShownTick {
                tick: out.tick,
                events: if events { events_of(out) } else { Vec::new() },
                players: players.iter().filter_map(|id| player_state(zone, *id)).collect(),
            };
            print_tick(&shown, json);
        })
    })
    .await??;
    print_report(&zone.name, &report, args.json)?;
    if let Some(tick) = report.first_mismatch() {
        bail!("the replayed state differs from the recorded one from tick {tick} on");
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
        "zone {zone}: ticks {} to {} replayed from the cold snapshot at tick {} ({} ticks in {:.3} s: {:.0} ticks/s, {:.0}x real time)",
        r.from_tick, r.to_tick, r.snapshot_tick, r.ticks, r.seconds, r.ticks_per_second, r.real_time_factor
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
