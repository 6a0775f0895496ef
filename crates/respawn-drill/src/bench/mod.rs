//! `respawn bench tick`: one zone at full speed in this process, N bot inputs
//! per tick, timing each tick including every client's replication encoding.
//! `respawn bench pipeline` is in [`pipeline`].

pub mod pipeline;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use respawn_sim::geom::isqrt;
use respawn_sim::rng::Rng;
use respawn_sim::{Command, CommandKind, Point, Zone, ZoneConfig};
use respawn_zone::link::{ClientLink, ConnState, Delivery};
use respawn_zone::metrics::Metrics;
use respawn_zone::persist::PersistState;
use respawn_zone::zone_loop::{Control, Entry, LoopSettings, PersistLink, ZoneRunner};
use serde::Serialize;

#[derive(Args, Debug)]
pub struct TickArgs {
    /// Connected players, each sending one input every tick.
    #[arg(long, default_value_t = 5_000)]
    players: u32,
    /// Wall-clock seconds to measure (after warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Square metres of field per player; sets the zone's size.
    #[arg(long, default_value_t = 100)]
    area_per_player: u32,
    /// Area-of-interest radius in centimetres (as a zone's `view_radius`: 100 to 100,000).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(i32).range(100..=100_000))]
    view_radius: i32,
    /// Nearest entities sent to one client.
    #[arg(long, default_value_t = 128)]
    max_visible: usize,
    /// Threads the replication may use (default: the machine's cores).
    #[arg(long)]
    replication_threads: Option<usize>,
    /// Client protocol version the players speak (its update format).
    #[arg(long, default_value_t = respawn_proto::PROTOCOL_VERSION)]
    protocol_version: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct TickReport {
    players: u32,
    replication_threads: usize,
    protocol_version: u32,
    zone_side_m: u32,
    npcs: u32,
    ticks: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    ticks_per_second: f64,
    update_bytes_per_client_per_tick: f64,
    updates_per_tick: f64,
}

const WARMUP_TICKS: usize = 20;

/// Percentile by nearest rank over sorted durations.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn run_tick(args: TickArgs) -> Result<()> {
    if args.players == 0 || args.players > 100_000 {
        bail!("--players must be 1..=100000");
    }
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let protocols = respawn_proto::OLDEST_PROTOCOL_VERSION..=respawn_proto::PROTOCOL_VERSION;
    if !protocols.contains(&args.protocol_version) {
        bail!("--protocol-version must be {} to {}", protocols.start(), protocols.end());
    }
    let replication_threads =
        args.replication_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if !(1..=256).contains(&replication_threads) {
        bail!("--replication-threads must be 1..=256");
    }
    let area_m2 = u64::from(args.players) * u64::from(args.area_per_player.max(1));
    let side_cm = (isqrt(area_m2 as i64) * 100).clamp(2_000, 1_000_000) as i32;
    let mut config = ZoneConfig::standard(1, "bench", 7).resized(side_cm, side_cm);
    config.npc_count = (args.players / 50).max(10);
    config.max_items = (args.players / 10).max(50);
    let npcs = config.npc_count;
    let max_speed = config.max_speed;
    let zone = Zone::new(config)?;
    let metrics = Metrics::new("bench");
    let settings = LoopSettings {
        period: Duration::from_millis(50),
        tick_hz: 20,
        view_radius: args.view_radius,
        max_visible: args.max_visible,
        max_players: args.players as usize,
        max_dropped_updates: u32::MAX,
        max_batch: usize::MAX,
        server_version: "bench".into(),
        resume_grace: Duration::from_secs(30),
        extra_tick: Duration::ZERO,
        replication_threads,
        replicate_alone_within: respawn_zone::zone_loop::REPLICATE_ALONE_WITHIN,
    };
    // The tick thread's share of persistence (batch encoding, a snapshot
    // every 5 s) is timed; the writes themselves happen elsewhere.
    let (persist_tx, mut persist_rx) = respawn_zone::persist::queue();
    let persist = PersistLink::new(persist_tx, Arc::new(PersistState::default()), Duration::from_secs(5));
    let mut runner = ZoneRunner::new(zone, settings, metrics.zone("bench"), Some(persist));
    // Connection i has id i: its socket takes every frame at once.
    let mut conns = Vec::with_capacity(args.players as usize);
    for i in 0..args.players {
        let conn = ConnState::new(u64::from(i), 8);
        let link = ClientLink { conn: conn.clone(), protocol_version: args.protocol_version };
        let player = u64::from(i) + 1;
        let (name, resume_token) = (format!("bot{i}"), String::new());
        runner.control(Control::Attach { player, name, link, resume_token, entry: Entry::Fresh });
        conns.push(conn);
    }
    let mut rng = Rng::new(42);
    let mut velocities: Vec<Point> = vec![Point::default(); args.players as usize];
    let mut durations = Vec::new();
    let (mut bytes, mut updates) = (0u64, 0u64);
    let measure_for = Duration::from_secs(args.seconds);
    let mut measuring_since = None;
    if !args.json {
        eprintln!(
            "bench tick: {} players on {} m x {} m, {} NPCs, view radius {} m, protocol {}, replication on {} thread(s); warming up...",
            args.players,
            side_cm / 100,
            side_cm / 100,
            npcs,
            args.view_radius / 100,
            args.protocol_version,
            replication_threads
        );
    }
    loop {
        for (i, v) in velocities.iter_mut().enumerate() {
            // Each bot turns now and then, and sends its velocity every tick.
            if rng.below(20) == 0 {
                *v = Point::new(rng.range_i32(-max_speed, max_speed), rng.range_i32(-max_speed, max_speed));
                if v.len2() > i64::from(max_speed).pow(2) {
                    *v = Point::new(v.x / 2, v.y / 2);
                }
            }
            runner.push_command(Command { player: i as u64 + 1, seq: 0, kind: CommandKind::Move { velocity: *v } });
        }
        let started = Instant::now();
        runner.tick();
        let took = started.elapsed();
        while persist_rx.try_recv().is_ok() {}
        let mut tick_bytes = 0u64;
        let mut tick_updates = 0u64;
        // The server hands these to its I/O thread.
        for delivery in runner.take_deliveries() {
            if let Delivery::Frame(conn, frame) = delivery {
                tick_bytes += frame.len() as u64;
                tick_updates += 1;
                if let Some(conn) = conns.get(conn as usize) {
                    conn.sent(1);
                }
            }
        }
        let tick = runner.zone().tick_number() as usize;
        if tick <= WARMUP_TICKS {
            continue;
        }
        let since = *measuring_since.get_or_insert_with(Instant::now);
        durations.push(took.as_secs_f64() * 1_000.0);
        bytes += tick_bytes;
        updates += tick_updates;
        if since.elapsed() >= measure_for {
            break;
        }
    }
    let ticks = durations.len();
    let mean_ms = durations.iter().sum::<f64>() / ticks as f64;
    durations.sort_by(f64::total_cmp);
    let report = TickReport {
        players: args.players,
        replication_threads,
        protocol_version: args.protocol_version,
        zone_side_m: (side_cm / 100) as u32,
        npcs,
        ticks,
        p50_ms: percentile(&durations, 0.50),
        p99_ms: percentile(&durations, 0.99),
        max_ms: durations.last().copied().unwrap_or(0.0),
        mean_ms,
        ticks_per_second: 1_000.0 / mean_ms,
        update_bytes_per_client_per_tick: bytes as f64 / ticks as f64 / f64::from(args.players),
        updates_per_tick: updates as f64 / ticks as f64,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "players {}  ticks {}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms  ({:.0} ticks/s)  {:.0} B/client/tick",
            report.players,
            report.ticks,
            report.p50_ms,
            report.p99_ms,
            report.max_ms,
            report.mean_ms,
            report.ticks_per_second,
            report.update_bytes_per_client_per_tick
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
