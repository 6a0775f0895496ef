//! `respawn loadgen`: N bots over real WebSockets against a zone server,
//! ramped up with a progress line, then a report of what clients saw and what
//! the server's own `/metrics` say about its ticks. With `--soak DURATION`
//! the load is held that long with players coming and going, and the server
//! is read every tenth of it: memory growth and the tick p99's trend.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use respawn_client::{run_bot, signed_tokens, Access, BotConfig, BotReport, BotStats};
use respawn_token::TokenKey;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench::percentile;

#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// Zone server address (host:port, or https://host:port for one serving
    /// TLS): WebSocket at /ws, metrics at /metrics.
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
    /// Secret the zone server verifies session tokens with (clients mint
    /// their own tokens); not needed with --platform.
    #[arg(long, env = "RESPAWN_TOKEN_KEY", hide_env_values = true, required_unless_present = "platform")]
    token_key: Option<String>,
    /// Sign clients in through this platform server (host:port, or https://host:port) as players
    /// do, each with a guest account of its own, instead of minting tokens.
    /// Its per-address limits (`--login-per-minute`) must allow the clients.
    #[arg(long)]
    platform: Option<String>,
    /// With --platform: a file of guest device secrets, one per line; client
    /// i signs in with line i, and lines missing are filled with new guest
    /// accounts and written back, so the next run plays the same characters.
    #[arg(long, requires = "platform")]
    accounts: Option<std::path::PathBuf>,
    /// Connect the clients from this many loopback addresses (127.0.0.2,
    /// 127.0.0.3, ...) in turn, for a zone server on this machine: its cap
    /// of connections per address (`--connections-per-ip`, 128 by
    /// default) then counts each address apart. 1: from any address.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    source_addrs: u8,
    /// First player id used (ids are base..base+clients).
    #[arg(long, default_value_t = 1_000_000)]
    player_id_base: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Hold the load this long instead of --hold-secs (e.g. 90s, 10m, 2h),
    /// replacing the longest-playing client with a new player every
    /// --churn-secs, and report the server's memory growth and tick p99 trend.
    #[arg(long, value_parser = parse_duration)]
    soak: Option<Duration>,
    /// Soak: one client leaves and a new player joins this often.
    #[arg(long, default_value_t = 1.0)]
    churn_secs: f64,
}

/// `90s`, `10m`, `2h` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 90s, 10m or 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        _ => return Err(format!("`{text}`: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("a soak lasts at least a second".into());
    }
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, Serialize)]
struct LoadReport {
    clients: u32,
    /// Clients run in all (a soak replaces them as it goes).
    sessions: u32,
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
    /// How late the ticks started against their schedule (the cadence).
    server_tick_lateness_p99_ms: Option<f64>,
    server_ticks: f64,
    server_updates_dropped: f64,
    server_ticks_overrun: f64,
    /// The hold (after the ramp), by the server's own `process_cpu_seconds_total`:
    /// its CPU per update the clients received, and in cores.
    hold_secs: f64,
    updates_received_in_hold: u64,
    server_cpu_secs_in_hold: f64,
    server_cpu_us_per_update: Option<f64>,
    server_cores: f64,
    /// `server_cores` for 1,000 connected clients, at this load per client.
    server_cores_per_1000_clients: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    soak: Option<SoakReport>,
}

/// Where the hold began: the server's CPU and the updates received by then.
struct HoldStart {
    at: Instant,
    cpu_secs: f64,
    updates: u64,
}

/// The zones' tick histograms and the counters loadgen reports on.
struct ServerFigures {
    tick: Option<Histogram>,
    lateness: Option<Histogram>,
    dropped: f64,
    overrun: f64,
    /// The whole process's CPU time.
    cpu_secs: f64,
}

/// Histogram `name` of all `zones` together (their buckets are the same).
fn zones_histogram(samples: &[prom::Sample], name: &str, zones: &[String]) -> Option<Histogram> {
    zones.iter().filter_map(|zone| Histogram::read(samples, name, &[("zone", zone.as_str())])).reduce(|mut acc, h| {
        for (slot, (_, c)) in acc.buckets.iter_mut().zip(h.buckets) {
            slot.1 += c;
        }
        acc
    })
}

async fn server_figures(addr: &str, zones: &[String]) -> Result<ServerFigures> {
    let samples = prom::parse(&http::scrape(addr).await?);
    let (mut dropped, mut overrun) = (0.0, 0.0);
    for zone in zones {
        let z = [("zone", zone.as_str())];
        dropped += prom::sum(&samples, "respawn_zone_updates_dropped_total", &z);
        overrun += prom::sum(&samples, "respawn_zone_ticks_overrun_total", &z);
    }
    Ok(ServerFigures {
        tick: zones_histogram(&samples, "respawn_zone_tick_duration_seconds", zones),
        lateness: zones_histogram(&samples, "respawn_zone_tick_lateness_seconds", zones),
        dropped,
        overrun,
        cpu_secs: prom::sum(&samples, "process_cpu_seconds_total", &[]),
    })
}

/// How the clients get in: straight to the zone server with minted tokens,
/// or through the platform as guests (new ones, or a pool kept in a file).
async fn access(args: &LoadgenArgs) -> Result<Access> {
    let Some(platform) = args.platform.clone() else {
        let key = TokenKey::new(args.token_key.as_deref().unwrap_or_default().as_bytes()).context("token key")?;
        let tokens = signed_tokens(key, Duration::from_secs(24 * 3600));
        return Ok(Access::Direct { url: respawn_api::registry::ws_address(&args.addr), tokens });
    };
    let Some(path) = &args.accounts else { return Ok(Access::Login { platform }) };
    let device_secrets = account_pool(&platform, path, args.clients as usize).await?;
    Ok(Access::Guests { platform, device_secrets: device_secrets.into() })
}

/// The first `wanted` device secrets of the pool in `path`, making the
/// guest accounts that are missing (written back as they are made, the file
/// readable by its owner only: each line signs in as a player).
async fn account_pool(platform: &str, path: &std::path::Path, wanted: usize) -> Result<Vec<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read the account pool {}", path.display())),
    };
    let mut secrets: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if secrets.len() < wanted {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot write the account pool {}", path.display()))?;
        let api = respawn_api::players::PlayerApi::new(platform);
        eprintln!("making {} guest accounts for {}", wanted - secrets.len(), path.display());
        while secrets.len() < wanted {
            let signed_in = api.guest(&Default::default()).await.context("guest sign-up at the platform server")?;
            let secret = signed_in.device_secret.context("the platform gave no device secret")?;
            writeln!(file, "{secret}")?;
            secrets.push(secret);
        }
    }
    secrets.truncate(wanted);
    Ok(secrets)
}

/// Client `i`'s local address with `--source-addrs n` (above 1).
fn source_addr(n: u8, i: u32) -> Option<std::net::IpAddr> {
    (n > 1).then(|| std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % u32::from(n)) as u8).into())
}

/// What to do when the zone server refused clients for its per-address cap.
fn cap_advice(capped: u64, clients: u32) -> String {
    format!(
        "the zone server refused {capped} of {clients} clients with 429: one address may hold at most its \
         `connections_per_ip` (128 by default) and every client came from this machine's. Start the zone \
         server with `--connections-per-ip 0` (or `[limits] connections_per_ip = 0`), or, for a zone server \
         on this machine, spread the clients with `--source-addrs {}` (about 100 per address)",
        clients.div_ceil(100).clamp(2, 250)
    )
}

/// [`server_figures`] while the clients play: when the zone server refuses
/// this address's connections, the error says why and what to do.
async fn server_figures_under_load(args: &LoadgenArgs, stats: &BotStats) -> Result<ServerFigures> {
    server_figures(&args.addr, &args.zones).await.map_err(|e| match stats.connects_capped.load(Ordering::Relaxed) {
        0 => e.context(format!("cannot read the zone server's metrics at {}", args.addr)),
        capped => anyhow::anyhow!("{}; its /metrics did not answer either ({e})", cap_advice(capped, args.clients)),
    })
}

pub async fn run(args: LoadgenArgs) -> Result<()> {
    if args.clients == 0 || args.zones.is_empty() {
        bail!("--clients must be at least 1 and at least one --zone given");
    }
    if args.source_addrs > 1 && args.platform.is_some() {
        bail!("--source-addrs is for clients that connect straight to a zone server, not with --platform");
    }
    if args.source_addrs > 1 {
        let addr = args.addr.trim_start_matches("https://");
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        if !host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            bail!("--source-addrs needs a zone server on this machine: --addr {} is not a loopback address", args.addr);
        }
    }
    if !(args.churn_secs > 0.0 && args.churn_secs.is_finite()) {
        bail!("--churn-secs must be a positive number of seconds");
    }
    let before = server_figures(&args.addr, &args.zones)
        .await
        .with_context(|| format!("cannot read the zone server's metrics at {}", args.addr))?;
    let access = access(&args).await?;
    let stats = Arc::new(BotStats::default());
    let cancel = CancellationToken::new();
    // Playing clients, longest-playing first; the ones a soak replaced wait in `left`.
    let mut bots: VecDeque<(tokio::task::JoinHandle<BotReport>, CancellationToken)> = VecDeque::new();
    let mut left = Vec::new();
    let mut made = 0u32;
    let spawn = |made: &mut u32| {
        let config = BotConfig {
            access: access.clone(),
            zone: args.zones[*made as usize % args.zones.len()].clone(),
            player_id: args.player_id_base + u64::from(*made),
            name: format!("load{made}"),
            reconnect: false,
            travel_every: None,
            source: source_addr(args.source_addrs, *made),
        };
        *made += 1;
        let token = cancel.child_token();
        (tokio::spawn(run_bot(config, stats.clone(), token.clone())), token)
    };
    let started = Instant::now();
    let ramp = Duration::from_secs(args.ramp_secs);
    let hold = args.soak.unwrap_or(Duration::from_secs(args.hold_secs));
    let total = ramp + hold;
    let mut soak = args.soak.map(|_| Soak::new(started + ramp, hold, args.churn_secs));
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut last_updates = 0;
    let mut hold_start: Option<HoldStart> = None;
    loop {
        if hold_start.is_none() && started.elapsed() >= ramp {
            let server = match server_figures_under_load(&args, &stats).await {
                Ok(server) => server,
                Err(e) => {
                    if !args.json {
                        eprintln!();
                    }
                    return Err(e);
                }
            };
            let updates = stats.updates.load(Ordering::Relaxed);
            hold_start = Some(HoldStart { at: Instant::now(), cpu_secs: server.cpu_secs, updates });
        }
        // Spawn every bot whose start time has come (evenly spread over the ramp).
        while made < args.clients && started.elapsed() >= ramp.mul_f64(f64::from(made) / f64::from(args.clients)) {
            bots.push_back(spawn(&mut made));
        }
        if let Some(soak) = soak.as_mut() {
            if soak.churn_due() {
                if let Some((bot, token)) = bots.pop_front() {
                    token.cancel();
                    left.push(bot);
                }
                bots.push_back(spawn(&mut made));
            }
            if soak.window_due() {
                soak.look(&args.addr, &args.zones).await;
            }
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
    let after = server_figures_under_load(&args, &stats).await?;
    let updates_at_end = stats.updates.load(Ordering::Relaxed);
    cancel.cancel();
    let mut reports: Vec<BotReport> = Vec::with_capacity(bots.len());
    for bot in bots.into_iter().map(|(bot, _)| bot).chain(left) {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), bot).await {
            reports.push(r);
        }
    }
    let mut report = summarize(&args, &stats, &reports, &before, &after);
    if let Some(hold) = hold_start {
        report.add_hold(&hold, &after, updates_at_end);
    }
    report.soak = soak.map(|s| s.report(made.saturating_sub(args.clients)));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    let capped = stats.connects_capped.load(Ordering::Relaxed);
    if capped > 0 {
        bail!("{}", cap_advice(capped, args.clients));
    }
    if report.soak.as_ref().is_some_and(|s| !s.problems.is_empty()) {
        std::process::exit(1);
    }
    Ok(())
}

/// Memory may grow this much over a soak (from the first look to the last).
const SOAK_MEMORY_GROWTH_PCT: f64 = 10.0;
/// The tick p99's fitted line may rise this much over a soak.
const SOAK_P99_RISE_MS: f64 = 5.0;
/// The tick budget: no look's p99 may exceed it.
const TICK_BUDGET_MS: f64 = 50.0;

/// A soak's schedule and what it saw.
struct Soak {
    start: Instant,
    window: Duration,
    churn: Duration,
    next_window: Instant,
    next_churn: Instant,
    last_tick: Option<Histogram>,
    windows: Vec<SoakWindow>,
}

#[derive(Debug, Serialize)]
struct SoakWindow {
    at_s: f64,
    players: f64,
    resident_mb: f64,
    tick_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SoakReport {
    duration_s: f64,
    /// Players replaced by new ones during the soak.
    churned: u32,
    windows: Vec<SoakWindow>,
    memory_first_mb: f64,
    memory_last_mb: f64,
    memory_growth_pct: f64,
    /// Least-squares slope of the looks' tick p99.
    tick_p99_trend_ms_per_min: f64,
    tick_p99_worst_ms: f64,
    verdict: &'static str,
    problems: Vec<String>,
}

impl Soak {
    /// Ten looks over `hold` from `start` (at least a second apart).
    fn new(start: Instant, hold: Duration, churn_secs: f64) -> Self {
        let window = (hold / 10).max(Duration::from_secs(1));
        let churn = Duration::from_secs_f64(churn_secs);
        Self {
            start,
            window,
            churn,
            next_window: start,
            next_churn: start + churn,
            last_tick: None,
            windows: Vec::new(),
        }
    }

    fn churn_due(&mut self) -> bool {
        let due = Instant::now() >= self.next_churn;
        if due {
            self.next_churn += self.churn;
        }
        due
    }

    fn window_due(&mut self) -> bool {
        let due = Instant::now() >= self.next_window;
        if due {
            self.next_window += self.window;
        }
        due
    }

    /// Reads the server: players, resident memory, the tick p99 since the last look.
    async fn look(&mut self, addr: &str, zones: &[String]) {
        let Ok(text) = http::scrape(addr).await else { return };
        let samples = prom::parse(&text);
        let tick = server_figures(addr, zones).await.ok().and_then(|f| f.tick);
        let since = match (&tick, &self.last_tick) {
            (Some(now), Some(then)) => Some(now.since(then)),
            _ => None,
        };
        if tick.is_some() {
            self.last_tick = tick;
        }
        // The first look is the baseline the others are measured from.
        if since.is_none() {
            return;
        }
        self.windows.push(SoakWindow {
            at_s: self.start.elapsed().as_secs_f64(),
            players: prom::sum(&samples, "respawn_zone_players", &[]),
            resident_mb: prom::sum(&samples, "process_resident_memory_bytes", &[]) / 1e6,
            tick_p99_ms: since.and_then(|h| h.quantile(0.99)).map(|s| s * 1e3),
        });
    }

    fn report(self, churned: u32) -> SoakReport {
        let first = self.windows.first().map_or(0.0, |w| w.resident_mb);
        let last = self.windows.last().map_or(0.0, |w| w.resident_mb);
        let growth = if first > 0.0 { (last - first) / first * 100.0 } else { 0.0 };
        let points: Vec<(f64, f64)> =
            self.windows.iter().filter_map(|w| w.tick_p99_ms.map(|p| (w.at_s / 60.0, p))).collect();
        let trend = slope(&points);
        let worst = points.iter().map(|p| p.1).fold(0.0, f64::max);
        let minutes = self.start.elapsed().as_secs_f64() / 60.0;
        let mut problems = Vec::new();
        if self.windows.len() < 3 {
            problems.push(format!("only {} looks at the server: too few to see a trend", self.windows.len()));
        }
        if growth > SOAK_MEMORY_GROWTH_PCT {
            problems.push(format!("memory grew {growth:.1}% ({first:.1} -> {last:.1} MB)"));
        }
        if trend * minutes > SOAK_P99_RISE_MS {
            problems.push(format!("tick p99 rose {trend:.2} ms per minute, {:.1} ms over the soak", trend * minutes));
        }
        if worst > TICK_BUDGET_MS {
            problems.push(format!("a tick p99 of {worst:.1} ms is over the {TICK_BUDGET_MS} ms budget"));
        }
        SoakReport {
            duration_s: self.start.elapsed().as_secs_f64(),
            churned,
            windows: self.windows,
            memory_first_mb: first,
            memory_last_mb: last,
            memory_growth_pct: growth,
            tick_p99_trend_ms_per_min: trend,
            tick_p99_worst_ms: worst,
            verdict: if problems.is_empty() { "steady" } else { "unsteady" },
            problems,
        }
    }
}

/// Least-squares slope of y over x; 0 with fewer than two points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

fn summarize(
    args: &LoadgenArgs,
    stats: &BotStats,
    reports: &[BotReport],
    before: &ServerFigures,
    after: &ServerFigures,
) -> LoadReport {
    let connected = reports.iter().filter(|r| r.joined).count() as u32;
    let sessions = (reports.len() as u32).max(1);
    let mut rtts: Vec<f64> = stats.rtt_samples().into_iter().map(|us| f64::from(us) / 1_000.0).collect();
    rtts.sort_by(f64::total_cmp);
    let rates: Vec<f64> = reports
        .iter()
        .filter(|r| r.joined && r.connected > Duration::from_secs(1))
        .map(|r| r.updates as f64 / r.connected.as_secs_f64())
        .collect();
    let window = |after: &Option<Histogram>, before: &Option<Histogram>| match (after, before) {
        (Some(a), Some(b)) => Some(a.since(b)),
        (Some(a), None) => Some(a.clone()),
        _ => None,
    };
    let tick = window(&after.tick, &before.tick);
    let lateness = window(&after.lateness, &before.lateness);
    let ms = |v: Option<f64>| v.map(|s| s * 1_000.0);
    LoadReport {
        clients: args.clients,
        sessions,
        connected,
        failed_connects: stats.connects_failed.load(Ordering::Relaxed),
        connect_success_rate: f64::from(connected) / f64::from(sessions),
        rtt_p50_ms: percentile(&rtts, 0.50),
        rtt_p90_ms: percentile(&rtts, 0.90),
        rtt_p99_ms: percentile(&rtts, 0.99),
        rtt_max_ms: rtts.last().copied().unwrap_or(0.0),
        updates_per_client_per_s_mean: if rates.is_empty() {
            0.0
        } else {
            rates.iter().sum::<f64>() / rates.len() as f64
        },
        updates_per_client_per_s_min: rates.iter().copied().reduce(f64::min).unwrap_or(0.0),
        commands_sent: stats.commands_sent.load(Ordering::Relaxed),
        commands_rejected: stats.rejections.load(Ordering::Relaxed),
        server_tick_p50_ms: ms(tick.as_ref().and_then(|h| h.quantile(0.50))),
        server_tick_p99_ms: ms(tick.as_ref().and_then(|h| h.quantile(0.99))),
        server_tick_lateness_p99_ms: ms(lateness.as_ref().and_then(|h| h.quantile(0.99))),
        server_ticks: tick.as_ref().map_or(0.0, Histogram::count),
        server_updates_dropped: after.dropped - before.dropped,
        server_ticks_overrun: after.overrun - before.overrun,
        hold_secs: 0.0,
        updates_received_in_hold: 0,
        server_cpu_secs_in_hold: 0.0,
        server_cpu_us_per_update: None,
        server_cores: 0.0,
        server_cores_per_1000_clients: None,
        soak: None,
    }
}

impl LoadReport {
    /// The server's CPU over the hold, from its start to `end`.
    fn add_hold(&mut self, start: &HoldStart, end: &ServerFigures, updates_at_end: u64) {
        self.hold_secs = start.at.elapsed().as_secs_f64();
        self.updates_received_in_hold = updates_at_end.saturating_sub(start.updates);
        self.server_cpu_secs_in_hold = (end.cpu_secs - start.cpu_secs).max(0.0);
        self.server_cores = if self.hold_secs > 0.0 { self.server_cpu_secs_in_hold / self.hold_secs } else { 0.0 };
        self.server_cpu_us_per_update = (self.updates_received_in_hold > 0)
            .then(|| self.server_cpu_secs_in_hold * 1e6 / self.updates_received_in_hold as f64);
        self.server_cores_per_1000_clients =
            (self.connected > 0).then(|| self.server_cores * 1_000.0 / f64::from(self.connected));
    }
}

fn print_report(r: &LoadReport) {
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} ms"));
    println!(
        "clients            {} at a time, {} in all ({} connected, {} failed connects, success rate {:.1}%)",
        r.clients,
        r.sessions,
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
        "server tick        p50 {}  p99 {}  over {} ticks ({} overran the period); started late by p99 {}",
        opt(r.server_tick_p50_ms),
        opt(r.server_tick_p99_ms),
        r.server_ticks,
        r.server_ticks_overrun,
        opt(r.server_tick_lateness_p99_ms)
    );
    println!("server dropped     {} updates", r.server_updates_dropped);
    match (r.server_cpu_us_per_update, r.server_cores_per_1000_clients) {
        (Some(per_update), Some(per_1000)) => println!(
            "server CPU         {:.2} cores over the {:.0} s hold: {per_update:.1} µs per update received, {per_1000:.2} cores per 1,000 clients",
            r.server_cores, r.hold_secs
        ),
        _ => println!("server CPU         n/a (no update received during the hold)"),
    }
    if let Some(s) = &r.soak {
        println!();
        println!("soak               {:.0} s, {} players replaced by new ones", s.duration_s, s.churned);
        println!("  {:>8}  {:>7}  {:>12}  {:>12}", "at", "players", "resident MB", "tick p99 ms");
        for w in &s.windows {
            let p99 = w.tick_p99_ms.map_or("n/a".to_owned(), |p| format!("{p:.2}"));
            println!("  {:>7.0}s  {:>7.0}  {:>12.1}  {:>12}", w.at_s, w.players, w.resident_mb, p99);
        }
        println!(
            "memory             {:.1} -> {:.1} MB ({:+.1}%, limit {SOAK_MEMORY_GROWTH_PCT}%)",
            s.memory_first_mb, s.memory_last_mb, s.memory_growth_pct
        );
        println!(
            "tick p99 trend     {:+.3} ms per minute (worst look {:.2} ms; rise limit {SOAK_P99_RISE_MS} ms over the soak)",
            s.tick_p99_trend_ms_per_min, s.tick_p99_worst_ms
        );
        println!("verdict            {}", s.verdict);
        for p in &s.problems {
            println!("  - {p}");
        }
    }
}
