//! `respawn up`: the whole local stack in one command. A supervised zone
//! server child process (restarted if it dies), the browser client and a dev
//! login, optional bots, and a live one-line status until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use respawn_client::prom::{self, Histogram};
use respawn_client::{http, run_bot, BotConfig, BotStats, TokenSource};
use respawn_token::{Claims, TokenKey};
use respawn_zone::ServerConfig;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const PLAY_PAGE: &str = include_str!("../web/play.html");
/// Session tokens minted by the dev login live this long.
const SESSION_TTL_SECS: u64 = 12 * 3600;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Address of the play page and its dev login.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the zone server (WebSocket, metrics).
    #[arg(long, default_value = "127.0.0.1:7350")]
    zone_listen: SocketAddr,
    /// Simulated players, spread over the zones.
    #[arg(long, default_value_t = 12)]
    bots: u32,
    /// Zone server configuration file; two standard zones when absent.
    #[arg(long)]
    zone_config: Option<PathBuf>,
    #[command(flatten)]
    stores: crate::StoreArgs,
}

/// Secrets of one `up` run, never written anywhere.
struct Secrets {
    token_key: String,
    admin_token: String,
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Prints above the live status line.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[K");
    }
    let _ = writeln!(err, "{line}");
}

pub async fn run(args: UpArgs) -> Result<()> {
    let config = match &args.zone_config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::defaults(),
    };
    let zones: Vec<String> = config.zones.iter().map(|z| z.name.clone()).collect();
    let secrets = Secrets { token_key: random_hex(32)?, admin_token: random_hex(32)? };
    let key = TokenKey::new(secrets.token_key.as_bytes())?;
    let run_dir = std::env::temp_dir().join(format!("respawn-up-{}", std::process::id()));
    tokio::fs::create_dir_all(&run_dir).await?;
    let log_path = run_dir.join("zone.log");

    let supervisor = Supervisor::start(&args, &secrets, log_path.clone()).await?;
    let zone_addr = supervisor.addr;

    let web = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the play page (try --listen)", args.listen))?;
    let web_addr = web.local_addr()?;
    let state = Arc::new(WebState { key: key.clone(), ws_url: format!("ws://{zone_addr}/ws"), zones: zones.clone() });
    let app = Router::new().route("/", get(play_page)).route("/api/session", get(session)).with_state(state);
    let web_stop = CancellationToken::new();
    let web_task = tokio::spawn({
        let stop = web_stop.clone();
        async move { axum::serve(web, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    println!("Respawn is up.");
    println!("  play:    http://{web_addr}/");
    println!("  metrics: http://{zone_addr}/metrics");
    println!("  zones:   {}", zones.join(", "));
    println!("  logs:    {}", log_path.display());
    println!("Ctrl-C stops everything.");

    let bot_stop = CancellationToken::new();
    let bot_stats = Arc::new(BotStats::default());
    let tokens: TokenSource = Arc::new(move |player_id, name: &str| {
        let claims = Claims { player_id, name: name.to_owned(), expires_at: crate::unix_now() + SESSION_TTL_SECS };
        key.sign(&claims).unwrap_or_default()
    });
    let bots: Vec<_> = (0..args.bots)
        .map(|i| {
            let config = BotConfig {
                url: format!("ws://{zone_addr}/ws"),
                zone: zones[i as usize % zones.len()].clone(),
                player_id: u64::from(i) + 1,
                name: format!("bot{}", i + 1),
                reconnect: true,
            };
            tokio::spawn(run_bot(config, tokens.clone(), bot_stats.clone(), bot_stop.clone()))
        })
        .collect();

    let mut status = LiveStatus::new(zone_addr.to_string(), zones);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = every.tick() => status.show(&bot_stats, args.bots, supervisor.restarts()).await,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            ended = supervisor.ended() => {
                // The supervisor only ends on its own when the zone server cannot start.
                say("");
                return Err(ended);
            }
        }
    }
    say("stopping: bots, then the zone server (drain), then the play page");
    bot_stop.cancel();
    for bot in bots {
        let _ = tokio::time::timeout(Duration::from_secs(3), bot).await;
    }
    supervisor.stop().await;
    web_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), web_task).await;
    let _ = tokio::fs::remove_dir_all(&run_dir).await;
    say("stopped");
    Ok(())
}

struct WebState {
    key: TokenKey,
    ws_url: String,
    zones: Vec<String>,
}

async fn play_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PLAY_PAGE).into_response()
}

#[derive(Deserialize)]
struct SessionParams {
    name: String,
}

#[derive(Serialize)]
struct SessionReply<'a> {
    token: String,
    player_id: u64,
    ws_url: &'a str,
    zones: &'a [String],
}

/// Stable player id for a name (FNV-1a), kept above the bots' small ids.
fn player_id_for(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    hash | (1 << 62)
}

/// The dev login: any valid name gets a signed session token.
async fn session(State(state): State<Arc<WebState>>, Query(params): Query<SessionParams>) -> Response {
    if !respawn_sim::zone::valid_name(&params.name) {
        return (StatusCode::BAD_REQUEST, "name must be 1-24 of A-Z a-z 0-9 _ -\n").into_response();
    }
    let player_id = player_id_for(&params.name);
    let claims = Claims { player_id, name: params.name, expires_at: crate::unix_now() + SESSION_TTL_SECS };
    let Ok(token) = state.key.sign(&claims) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot sign a token\n").into_response();
    };
    let reply = SessionReply { token, player_id, ws_url: &state.ws_url, zones: &state.zones };
    match serde_json::to_string(&reply) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Runs the zone server as a child process and restarts it when it dies.
struct Supervisor {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    restarts: Arc<AtomicU64>,
    admin_token: String,
}

struct ChildSpec {
    exe: PathBuf,
    config: Option<PathBuf>,
    stores: crate::StoreArgs,
    token_key: String,
    admin_token: String,
    log_path: PathBuf,
}

impl ChildSpec {
    /// Starts `respawn zone` on `listen` and returns it with the address it bound.
    async fn spawn(&self, listen: SocketAddr) -> Result<(Child, SocketAddr)> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("zone").arg("--listen").arg(listen.to_string()).arg("--drain-deadline-secs").arg("3");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(self.stores.to_args());
        // Its own process group: Ctrl-C reaches only `up`, which drains the child in order.
        cmd.env("RESPAWN_TOKEN_KEY", &self.token_key)
            .env("RESPAWN_ADMIN_TOKEN", &self.admin_token)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start the zone server")?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        tokio::spawn(copy_log(stderr, self.log_path.clone()));
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => line.rsplit("http://").next().and_then(|a| a.trim().parse().ok()),
            _ => None,
        };
        match addr {
            Some(addr) => Ok((child, addr)),
            None => {
                let _ = child.kill().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!("the zone server did not start; its log ends with:\n{}", log_tail(&self.log_path, 8).await)
            }
        }
    }
}

async fn log_tail(path: &Path, lines: usize) -> String {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Appends the child's log to the log file; warnings and errors are also shown.
async fn copy_log(stderr: tokio::process::ChildStderr, path: PathBuf) {
    let Ok(mut file) = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await else { return };
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            say(&format!("zone server: {line}"));
        }
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_owned(),
    }
}

impl Supervisor {
    async fn start(args: &UpArgs, secrets: &Secrets, log_path: PathBuf) -> Result<Self> {
        let spec = ChildSpec {
            exe: std::env::current_exe().context("cannot find the respawn binary")?,
            config: args.zone_config.clone(),
            stores: args.stores.clone(),
            token_key: secrets.token_key.clone(),
            admin_token: secrets.admin_token.clone(),
            log_path,
        };
        let (child, addr) = spec.spawn(args.zone_listen).await?;
        let stop = CancellationToken::new();
        let restarts = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(supervise(spec, child, addr, stop.clone(), restarts.clone()));
        Ok(Self { addr, stop, task, restarts, admin_token: secrets.admin_token.clone() })
    }

    fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Resolves only if supervision gave up.
    async fn ended(&self) -> anyhow::Error {
        loop {
            if self.task.is_finished() {
                return anyhow!("the zone server could not be kept running; see its log");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drains the zone server and waits for it to exit.
    async fn stop(self) {
        self.stop.cancel();
        let drain = http::request(&self.addr.to_string(), "POST", "/admin/drain", Some(&self.admin_token)).await;
        if let Err(e) = drain {
            say(&format!("drain request failed: {e}"));
        }
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => say(&format!("zone server: {e}")),
            _ => say("zone server did not stop in time; it was killed"),
        }
    }
}

async fn supervise(
    spec: ChildSpec,
    mut child: Child,
    addr: SocketAddr,
    stop: CancellationToken,
    restarts: Arc<AtomicU64>,
) -> Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = stop.cancelled() => {
                // `stop` asked for a drain; give it time, then insist.
                return match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                    Ok(status) => {
                        say(&format!("zone server {}", describe(status?)));
                        Ok(())
                    }
                    Err(_) => {
                        child.kill().await?;
                        Ok(())
                    }
                };
            }
        };
        if stop.is_cancelled() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        say(&format!(
            "zone server {} after {:.1} s; restarting in {} ms",
            describe(status),
            started.elapsed().as_secs_f64(),
            backoff.as_millis()
        ));
        tracing::warn!(cause = %describe(status), "zone server died; restarting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let mut attempts = 0;
        child = loop {
            match spec.spawn(addr).await {
                Ok((child, _)) => break child,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    say(&format!("zone server restart failed ({e}); retrying"));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        };
        restarts.fetch_add(1, Ordering::Relaxed);
        say(&format!("zone server restarted on {addr}"));
    }
}

/// The one-line live status: CCU and tick p99 per zone.
struct LiveStatus {
    addr: String,
    zones: Vec<String>,
    last: Vec<Option<Histogram>>,
    shown: u64,
}

impl LiveStatus {
    fn new(addr: String, zones: Vec<String>) -> Self {
        let last = vec![None; zones.len()];
        Self { addr, zones, last, shown: 0 }
    }

    async fn show(&mut self, bots: &BotStats, bots_wanted: u32, restarts: u64) {
        let line = match http::scrape(&self.addr).await {
            Ok(text) => {
                let samples = prom::parse(&text);
                let mut parts = Vec::new();
                for (i, zone) in self.zones.iter().enumerate() {
                    let z = [("zone", zone.as_str())];
                    let ccu = prom::value(&samples, "respawn_zone_players", &z).unwrap_or(0.0);
                    let now = Histogram::read(&samples, "respawn_zone_tick_duration_seconds", &z);
                    let p99 = match (&now, &self.last[i]) {
                        (Some(n), Some(l)) => n.since(l).quantile(0.99),
                        (Some(n), None) => n.quantile(0.99),
                        _ => None,
                    };
                    self.last[i] = now;
                    let p99 = p99.map_or("-".to_owned(), |s| format!("{:.1} ms", s * 1_000.0));
                    parts.push(format!("{zone}: {ccu} players, tick p99 {p99}"));
                }
                let connected = bots.connected.load(Ordering::Relaxed);
                format!("{} | bots {connected}/{bots_wanted} | restarts {restarts}", parts.join(" | "))
            }
            Err(_) => format!("zone server not answering (restarts {restarts})"),
        };
        self.shown += 1;
        let mut err = std::io::stderr().lock();
        if err.is_terminal() {
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
        } else if self.shown % 10 == 1 {
            let _ = writeln!(err, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_ids_are_stable_and_above_bot_ids() {
        assert_eq!(player_id_for("ann"), player_id_for("ann"));
        assert_ne!(player_id_for("ann"), player_id_for("bob"));
        assert!(player_id_for("ann") > u64::from(u32::MAX));
    }

    #[test]
    fn secrets_are_random() {
        let a = random_hex(16).expect("urandom");
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16).expect("urandom"));
    }
}
