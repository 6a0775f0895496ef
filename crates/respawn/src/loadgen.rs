//! `respawn loadgen`: N bots over real WebSockets against a zone server,
//! ramped up with a progress line, then a report of what clients saw and what
//! the server's own `/metrics` say about its ticks.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use respawn_client::prom::{self, Histogram};
use respawn_client::{http, run_bot, signed_tokens, Access, BotConfig, BotReport, BotStats};
use respawn_token::TokenKey;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench::percentile;

#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// Zone server address (host:port): WebSocket at /ws, metrics at /metrics.
    #[arg(long, default_value = "127.0.0.1:7350")]
    addr: String,
    /// Number of bot clients.
    #[arg(long, default_value_t = 100)]
    clients: u32,
    /// Seconds over which clients connect.
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// Seconds to keep every client playing after the ramp.
    #[arg(long, default_value_t = 30)]
    hold_secs: u64,
    /// Zones to spread clients over (repeat the flag for several).
    #[arg(long = "zone", default_values_t = ["meadow".to_owned()])]
    zones: Vec<String>,
    /// Secret the zone server verifies session tokens with.
    #[arg(long, env = "RESPAWN_TOKEN_KEY", hide_env_values = true)]
    token_key: String,
    /// First player id used (ids are base..base+clients).
    #[arg(long, default_value_t = 1_000_000)]
    player_id_base: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct LoadReport {
    clients: u32,
    connected: u32,
    failed_connects: u64,
    connect_success_rate: f64,
    rtt_p50_ms: f64,
    rtt_p90_ms: f64,
    rtt_p99_ms: f64,
    rtt_max_ms: f64,
    updates_per_client_per_s_mean: f64,
    updates_per_client_per_s_min: f64,
    commands_sent: u64,
    commands_rejected: u64,
    server_tick_p50_ms: Option<f64>,
    server_tick_p99_ms: Option<f64>,
    server_ticks: f64,
    server_updates_dropped: f64,
    server_ticks_overrun: f64,
}

/// The zones' tick histogram and the counters loadgen reports on.
struct ServerFigures {
    tick: Option<Histogram>,
    dropped: f64,
    overrun: f64,
}

async fn server_figures(addr: &str, zones: &[String]) -> Result<ServerFigures> {
    let samples = prom::parse(&http::scrape(addr).await?);
    let mut tick: Option<Histogram> = None;
    let (mut dropped, mut overrun) = (0.0, 0.0);
    for zone in zones {
        let z = [("zone", zone.as_str())];
        if let Some(h) = Histogram::read(&samples, "respawn_zone_tick_duration_seconds", &z) {
            tick = Some(match tick {
                None => h,
                Some(mut acc) => {
                    for (slot, (_, c)) in acc.buckets.iter_mut().zip(h.buckets) {
                        slot.1 += c;
                    }
                    acc
                }
            });
        }
        dropped += prom::sum(&samples, "respawn_zone_updates_dropped_total", &z);
        overrun += prom::sum(&samples, "respawn_zone_ticks_overrun_total", &z);
    }
    Ok(ServerFigures { tick, dropped, overrun })
}

pub async fn run(args: LoadgenArgs) -> Result<()> {
    if args.clients == 0 || args.zones.is_empty() {
        bail!("--clients must be at least 1 and at least one --zone given");
    }
    let key = TokenKey::new(args.token_key.as_bytes()).context("token key")?;
    let before = server_figures(&args.addr, &args.zones)
        .await
        .with_context(|| format!("cannot read the zone server's metrics at {}", args.addr))?;
    let tokens = signed_tokens(key, Duration::from_secs(24 * 3600));
    let stats = Arc::new(BotStats::default());
    let cancel = CancellationToken::new();
    let url = format!("ws://{}/ws", args.addr);
    let mut bots = Vec::with_capacity(args.clients as usize);
    let started = Instant::now();
    let ramp = Duration::from_secs(args.ramp_secs);
    let total = ramp + Duration::from_secs(args.hold_secs);
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut last_updates = 0;
    let mut spawned = 0u32;
    loop {
        // Spawn every bot whose start time has come (evenly spread over the ramp).
        while spawned < args.clients {
            let due = ramp.mul_f64(f64::from(spawned) / f64::from(args.clients));
            if started.elapsed() < due {
                break;
            }
            let config = BotConfig {
                access: Access::Direct { url: url.clone(), tokens: tokens.clone() },
                zone: args.zones[spawned as usize % args.zones.len()].clone(),
                player_id: args.player_id_base + u64::from(spawned),
                name: format!("load{spawned}"),
                reconnect: false,
            };
            bots.push(tokio::spawn(run_bot(config, stats.clone(), cancel.clone())));
            spawned += 1;
        }
        if started.elapsed() >= total {
            break;
        }
        tokio::select! {
            _ = progress.tick() => {
                let updates = stats.updates.load(Ordering::Relaxed);
                if !args.json {
                    eprint!(
                        "\r{:>4}s  connected {:>5}/{}  failed {:>4}  updates/s {:>7}   ",
                        started.elapsed().as_secs(),
                        stats.connected.load(Ordering::Relaxed),
                        args.clients,
                        stats.connects_failed.load(Ordering::Relaxed),
                        updates - last_updates,
                    );
                    let _ = std::io::stderr().flush();
                }
                last_updates = updates;
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    if !args.json {
        eprintln!();
    }
    let after = server_figures(&args.addr, &args.zones).await?;
    cancel.cancel();
    let mut reports: Vec<BotReport> = Vec::with_capacity(bots.len());
    for bot in bots {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), bot).await {
            reports.push(r);
        }
    }
    let report = summarize(&args, &stats, &reports, &before, &after);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn summarize(
    args: &LoadgenArgs,
    stats: &BotStats,
    reports: &[BotReport],
    before: &ServerFigures,
    after: &ServerFigures,
) -> LoadReport {
    let connected = reports.iter().filter(|r| r.joined).count() as u32;
    let mut rtts: Vec<f64> = stats.rtt_samples().into_iter().map(|us| f64::from(us) / 1_000.0).collect();
    rtts.sort_by(f64::total_cmp);
    let rates: Vec<f64> = reports
        .iter()
        .filter(|r| r.joined && r.connected > Duration::from_secs(1))
        .map(|r| r.updates as f64 / r.connected.as_secs_f64())
        .collect();
    let tick = match (&after.tick, &before.tick) {
        (Some(a), Some(b)) => Some(a.since(b)),
        (Some(a), None) => Some(a.clone()),
        _ => None,
    };
    let ms = |v: Option<f64>| v.map(|s| s * 1_000.0);
    LoadReport {
        clients: args.clients,
        connected,
        failed_connects: stats.connects_failed.load(Ordering::Relaxed),
        connect_success_rate: f64::from(connected) / f64::from(args.clients),
        rtt_p50_ms: percentile(&rtts, 0.50),
        rtt_p90_ms: percentile(&rtts, 0.90),
        rtt_p99_ms: percentile(&rtts, 0.99),
        rtt_max_ms: rtts.last().copied().unwrap_or(0.0),
        updates_per_client_per_s_mean: if rates.is_empty() {
            0.0
        } else {
            rates.iter().sum::<f64>() / rates.len() as f64
        },
        updates_per_client_per_s_min: rates.iter().copied().fold(f64::INFINITY, f64::min).min(f64::MAX),
        commands_sent: stats.commands_sent.load(Ordering::Relaxed),
        commands_rejected: stats.rejections.load(Ordering::Relaxed),
        server_tick_p50_ms: ms(tick.as_ref().and_then(|h| h.quantile(0.50))),
        server_tick_p99_ms: ms(tick.as_ref().and_then(|h| h.quantile(0.99))),
        server_ticks: tick.as_ref().map_or(0.0, Histogram::count),
        server_updates_dropped: after.dropped - before.dropped,
        server_ticks_overrun: after.overrun - before.overrun,
    }
}

fn print_report(r: &LoadReport) {
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} ms"));
    println!(
        "clients            {} ({} connected, {} failed connects, success rate {:.1}%)",
        r.clients,
        r.connected,
        r.failed_connects,
        r.connect_success_rate * 100.0
    );
    println!(
        "rtt                p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.rtt_p50_ms, r.rtt_p90_ms, r.rtt_p99_ms, r.rtt_max_ms
    );
    println!(
        "updates per client mean {:.1}/s  min {:.1}/s",
        r.updates_per_client_per_s_mean, r.updates_per_client_per_s_min
    );
    println!("commands           {} sent, {} rejected", r.commands_sent, r.commands_rejected);
    println!(
        "server tick        p50 {}  p99 {}  over {} ticks ({} overran the period)",
        opt(r.server_tick_p50_ms),
        opt(r.server_tick_p99_ms),
        r.server_ticks,
        r.server_ticks_overrun
    );
    println!("server dropped     {} updates", r.server_updates_dropped);
}
