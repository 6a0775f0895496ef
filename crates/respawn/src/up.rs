//! `respawn up`: the whole local stack in one command. A supervised zone
//! server child process (restarted if it dies), the browser client and a dev
//! login, optional bots, and a live one-line status until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use respawn_client::prom::{self, Histogram};
use respawn_client::{http, signed_tokens, Access, BotStats, Fleet};
use respawn_token::{Claims, TokenKey};
use respawn_zone::ServerConfig;

use crate::supervisor::{say, ChildSpec, Supervisor, SupervisorStatus};
use serde::{Deserialize, Serialize};
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

pub async fn run(args: UpArgs) -> Result<()> {
    let config = match &args.zone_config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::defaults(),
    };
    let zones: Vec<String> = config.zones.iter().map(|z| z.name.clone()).collect();
    let token_key = respawn_token::random_hex(32)?;
    let key = TokenKey::new(token_key.as_bytes())?;
    let run_dir = std::env::temp_dir().join(format!("respawn-up-{}", std::process::id()));
    tokio::fs::create_dir_all(&run_dir).await?;
    let log_path = run_dir.join("zone.log");

    let spec = ChildSpec {
        exe: std::env::current_exe().context("cannot find the respawn binary")?,
        config: args.zone_config.clone(),
        stores: args.stores.clone(),
        token_key,
        admin_token: respawn_token::random_hex(32)?,
        log_path: log_path.clone(),
        echo_warnings: true,
    };
    let supervisor = Supervisor::start(spec, args.zone_listen).await?;
    let zone_addr = supervisor.addr;

    let web = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the play page (try --listen)", args.listen))?;
    let web_addr = web.local_addr()?;
    let state = Arc::new(WebState {
        key: key.clone(),
        ws_url: format!("ws://{zone_addr}/ws"),
        zones: zones.clone(),
        supervisor: supervisor.status.clone(),
    });
    let app = Router::new()
        .route("/", get(play_page))
        .route("/api/session", get(session))
        .route("/metrics", get(supervisor_metrics))
        .with_state(state);
    let web_stop = CancellationToken::new();
    let web_task = tokio::spawn({
        let stop = web_stop.clone();
        async move { axum::serve(web, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    println!("Respawn is up.");
    println!("  play:    http://{web_addr}/");
    println!("  metrics: http://{zone_addr}/metrics (supervisor: http://{web_addr}/metrics)");
    println!("  zones:   {}", zones.join(", "));
    println!("  logs:    {}", log_path.display());
    match &args.stores.kafka_brokers {
        Some(brokers) => println!("  events:  Kafka {brokers} (topic {})", respawn_proto::events::TOPIC),
        None => {
            println!("  events:  {} (embedded ledger, SQLite)", args.stores.data_dir.join(crate::EVENTS_DB).display())
        }
    }
    println!("Ctrl-C stops everything.");

    let tokens = signed_tokens(key.clone(), Duration::from_secs(SESSION_TTL_SECS));
    let bots = Fleet::spawn(Access::Direct { url: format!("ws://{zone_addr}/ws"), tokens }, &zones, args.bots, "bot");

    let mut status = LiveStatus::new(zone_addr.to_string(), zones);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = every.tick() => status.show(&bots.stats, args.bots, supervisor.status.restarts()).await,
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
    bots.stop().await;
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
    supervisor: Arc<SupervisorStatus>,
}

async fn supervisor_metrics(State(state): State<Arc<WebState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.supervisor.render()).into_response()
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

/// The dev login: any valid name gets a signed session token.
async fn session(State(state): State<Arc<WebState>>, Query(params): Query<SessionParams>) -> Response {
    if !respawn_sim::zone::valid_name(&params.name) {
        return (StatusCode::BAD_REQUEST, "name must be 1-24 of A-Z a-z 0-9 _ -\n").into_response();
    }
    let player_id = respawn_token::player_id_for_name(&params.name);
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
