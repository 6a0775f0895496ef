//! The zone server process: zone threads, the HTTP/WebSocket listener, health,
//! metrics, and the graceful drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use respawn_proto::NoticeKind;
use respawn_sim::Command;
use respawn_token::TokenKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::metrics::{Metrics, ZoneMetrics};
use crate::persist::{self, PersistState, Stores};
use crate::zone_loop::{self, Control, LoopSettings, PersistLink, ZoneRunner, ZoneStatus};
use respawn_store::kafka::EventLog;
use respawn_store::outbox::Outbox;

/// A running zone as the rest of the server sees it.
#[derive(Debug)]
pub struct ZoneHandle {
    pub name: String,
    pub commands: mpsc::Sender<Command>,
    pub control: mpsc::UnboundedSender<Control>,
    pub metrics: ZoneMetrics,
    pub status: Arc<ZoneStatus>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    persister: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What every request handler and connection shares.
#[derive(Debug)]
pub struct ServerState {
    pub config: ServerConfig,
    pub token_key: TokenKey,
    pub stores: Stores,
    admin_token: Option<String>,
    pub metrics: Metrics,
    /// Players refused at join and kicked if connected.
    pub bans: crate::bans::BanList,
    /// Command limits of players who left recently, so reconnecting does not refill them.
    pub command_limits: Mutex<std::collections::HashMap<u64, respawn_store::ratelimit::LocalGcra>>,
    zones: BTreeMap<String, ZoneHandle>,
    ready: AtomicBool,
    pub draining: AtomicBool,
    /// Cancelled to start a drain (signal or admin call).
    drain_requested: CancellationToken,
    /// Cancelled to skip the wait for players (second signal).
    force: CancellationToken,
    /// Cancelled when connections must close.
    pub shutdown: CancellationToken,
    /// Cancelled once the zones stopped: publishers flush what they can and end.
    publishers_stop: CancellationToken,
    publishers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub epoch: Instant,
    next_conn: AtomicU64,
    connections: TaskTracker,
}

impl ServerState {
    pub fn zone(&self, name: &str) -> Option<&ZoneHandle> {
        self.zones.get(name)
    }

    pub fn zone_handles(&self) -> impl Iterator<Item = &ZoneHandle> {
        self.zones.values()
    }

    pub fn zone_names(&self) -> String {
        self.zones.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn players(&self) -> usize {
        self.zones.values().map(|z| z.status.players.load(Ordering::Relaxed)).sum()
    }
}

/// Options beyond the config file: secrets and identity.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub config: ServerConfig,
    pub token_key: TokenKey,
    pub stores: Stores,
    /// Where each zone's event outbox lives (local disk).
    pub outbox_dir: std::path::PathBuf,
    /// Where events are published; without one they wait in the outbox.
    pub event_log: Option<Arc<dyn EventLog>>,
    /// Bearer token for `/admin/*`; `None` disables the admin API.
    pub admin_token: Option<String>,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("zone {zone}: {message}")]
    Zone { zone: String, message: String },
    #[error("cannot start zone thread: {0}")]
    Thread(std::io::Error),
    #[error("http server failed: {0}")]
    Http(std::io::Error),
}

/// How a drain went, for the log and for tests.
#[derive(Debug, Clone)]
pub struct DrainReport {
    pub players_at_start: usize,
    pub players_left_over: usize,
    pub waited: Duration,
}

/// A bound, started zone server; [`ZoneServer::run`] serves until drained.
#[derive(Debug)]
pub struct ZoneServer {
    state: Arc<ServerState>,
    listener: TcpListener,
}

/// Starts a drain from outside (signal handlers).
#[derive(Debug, Clone)]
pub struct DrainTrigger {
    drain: CancellationToken,
    force: CancellationToken,
}

impl DrainTrigger {
    /// Whether a drain was asked for (by a signal or the admin API).
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// First call drains; a second call stops waiting for players.
    pub fn trigger(&self) {
        if self.drain.is_cancelled() {
            self.force.cancel();
        } else {
            self.drain.cancel();
        }
    }
}

impl ZoneServer {
    /// Starts every zone thread and binds the listener.
    pub async fn start(options: ServerOptions) -> Result<Self, ServerError> {
        let ServerOptions { config, token_key, stores, outbox_dir, event_log, admin_token, version } = options;
        let publishers_stop = CancellationToken::new();
        let mut publishers = Vec::new();
        let metrics = Metrics::new(&version);
        let epoch = Instant::now();
        let mut zones = BTreeMap::new();
        tracing::info!(stores = %stores.description, "state stores");
        // Zones restore side by side: the restart time is the slowest zone's,
        // not the sum. Every start then stores its state, so a snapshot always exists.
        let restored = futures_util::future::join_all(config.zones.iter().map(|z| persist::restore(z, &stores)))
            .await
            .into_iter()
            .zip(&config.zones)
            .map(|(r, z)| r.map_err(|message| ServerError::Zone { zone: z.name.clone(), message }))
            .collect::<Result<Vec<_>, _>>()?;
        let states: Vec<Arc<PersistState>> = config.zones.iter().map(|_| Arc::default()).collect();
        futures_util::future::join_all(
            restored
                .iter()
                .zip(&states)
                .map(|((zone, _), state)| persist::checkpoint_after_restore(zone, &stores, state)),
        )
        .await;
        for ((zone_config, (zone, report)), persist_state) in config.zones.iter().zip(restored).zip(states) {
            let name = zone_config.name.clone();
            let zone_metrics = metrics.zone(&name);
            let persist_metrics = metrics.persist(&name);
            persist_metrics.restored(report.source, report.took.as_secs_f64());
            for refused in &report.refused {
                tracing::warn!(zone = %name, "refused at start: {refused}");
            }
            tracing::info!(
                zone = %name,
                source = report.source,
                snapshot_tick = report.snapshot_tick,
                replayed_ticks = report.replayed_ticks,
                tick = zone.tick_number(),
                players = zone.players().len(),
                took_ms = report.took.as_millis() as u64,
                "zone state restored"
            );
            let outbox = Outbox::open(
                &outbox_dir.join(format!("zone-{}", zone_config.zone_id)),
                config.outbox_quota_bytes,
                config.outbox_segment_bytes,
            )
            .map_err(|e| ServerError::Zone {
                zone: name.clone(),
                message: format!("cannot open the event outbox: {e}"),
            })?;
            // Events of replayed ticks may never have reached the outbox; their ids are
            // deterministic, so sending them twice is harmless downstream.
            outbox.append(&report.replayed_events).map_err(|e| ServerError::Zone {
                zone: name.clone(),
                message: format!("cannot write replayed events to the outbox: {e}"),
            })?;
            let outbox = Arc::new(outbox);
            if let Some(log) = &event_log {
                publishers.push(tokio::spawn(crate::publish::run_publisher(
                    name.clone(),
                    outbox.clone(),
                    log.clone(),
                    persist_metrics.clone(),
                    publishers_stop.clone(),
                    Duration::from_secs(3),
                )));
            }
            let (persist_tx, persist_rx) = persist::queue();
            let persister = tokio::spawn(persist::run_persister(
                persist::ZonePersistence {
                    zone: zone_config.zone_id,
                    name: name.clone(),
                    stores: stores.clone(),
                    outbox,
                    settings: config.persist.clone(),
                    state: persist_state.clone(),
                    metrics: persist_metrics,
                },
                persist_rx,
            ));
            let persist_link = PersistLink::new(persist_tx, persist_state, config.persist.hot_every);
            let settings = LoopSettings {
                period: config.tick_period(),
                tick_hz: config.tick_hz,
                view_radius: config.view_radius,
                max_visible: config.max_visible,
                max_players: config.max_players_per_zone,
                max_dropped_updates: config.limits.max_dropped_updates,
                max_batch: config.command_queue_capacity,
                server_version: version.clone(),
                resume_grace: config.resume_grace,
                extra_tick: config.extra_tick,
            };
            let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue_capacity);
            let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
            let (fan_tx, fan_rx) = mpsc::unbounded_channel();
            tokio::spawn(crate::link::fan_out(fan_rx));
            let status = Arc::new(ZoneStatus::default());
            let runner = ZoneRunner::new(zone, settings, zone_metrics.clone(), Some(persist_link));
            let thread_status = status.clone();
            let thread = std::thread::Builder::new()
                .name(format!("zone-{name}"))
                .spawn(move || zone_loop::run(runner, cmd_rx, ctl_rx, fan_tx, thread_status, epoch))
                .map_err(ServerError::Thread)?;
            tracing::info!(zone = %name, id = zone_config.zone_id, tick_hz = config.tick_hz, "zone started");
            zones.insert(
                name.clone(),
                ZoneHandle {
                    name,
                    commands: cmd_tx,
                    control: ctl_tx,
                    metrics: zone_metrics,
                    status,
                    thread: Mutex::new(Some(thread)),
                    persister: Mutex::new(Some(persister)),
                },
            );
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let state = Arc::new(ServerState {
            config,
            token_key,
            stores,
            admin_token,
            metrics,
            bans: crate::bans::BanList::default(),
            command_limits: Mutex::default(),
            zones,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_requested: CancellationToken::new(),
            force: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            publishers_stop,
            publishers: Mutex::new(publishers),
            epoch,
            next_conn: AtomicU64::new(1),
            connections: TaskTracker::new(),
        });
        Ok(Self { state, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the platform server's ban lists are applied.
    pub fn ban_enforcer(&self) -> crate::bans::BanEnforcer {
        crate::bans::BanEnforcer { state: self.state.clone() }
    }

    pub fn drain_trigger(&self) -> DrainTrigger {
        DrainTrigger { drain: self.state.drain_requested.clone(), force: self.state.force.clone() }
    }

    /// Serves until a drain completes, then stops every zone.
    pub async fn run(self) -> Result<DrainReport, ServerError> {
        let state = self.state;
        let app = router(state.clone());
        let http_shutdown = state.shutdown.clone();
        // Updates are small frames; Nagle's algorithm would hold them for the peer's delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let http = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(http_shutdown.cancelled_owned()).await
        });
        state.ready.store(true, Ordering::SeqCst);
        state.metrics.set_ready(true);
        tracing::info!(zones = %state.zone_names(), "ready");

        state.drain_requested.cancelled().await;
        let report = drain(&state).await;

        tracing::info!(step = "5/5", "closing remaining connections and stopping zones");
        state.shutdown.cancel();
        state.connections.close();
        if tokio::time::timeout(Duration::from_secs(5), state.connections.wait()).await.is_err() {
            tracing::warn!("some connections did not close within 5 s");
        }
        for zone in state.zones.values() {
            let _ = zone.control.send(Control::Stop);
            let thread = zone.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(thread) = thread {
                let name = zone.name.clone();
                let joined = tokio::task::spawn_blocking(move || thread.join()).await;
                if !matches!(joined, Ok(Ok(()))) {
                    tracing::error!(zone = %name, "zone thread ended abnormally");
                }
            }
            // The stopped thread sent a last snapshot; let the persister store it.
            let persister = zone.persister.lock().ok().and_then(|mut p| p.take());
            if let Some(persister) = persister {
                if tokio::time::timeout(Duration::from_secs(5), persister).await.is_err() {
                    tracing::warn!(zone = %zone.name, "final snapshot not stored within 5 s");
                }
            }
        }
        state.publishers_stop.cancel();
        let publishers = state.publishers.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        for publisher in publishers {
            let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
        }
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServerError::Http(e)),
            Err(e) => tracing::error!(error = %e, "http task failed"),
        }
        tracing::info!(
            players_at_start = report.players_at_start,
            left_over = report.players_left_over,
            waited_ms = report.waited.as_millis() as u64,
            "stopped cleanly"
        );
        Ok(report)
    }
}

/// Steps 1-4 of the drain: readiness off, joins refused, players told,
/// wait for them to leave until the deadline.
async fn drain(state: &ServerState) -> DrainReport {
    let deadline = state.config.drain_deadline;
    state.ready.store(false, Ordering::SeqCst);
    state.metrics.set_ready(false);
    tracing::info!(step = "1/5", "drain: readiness off");
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(step = "2/5", "drain: refusing new joins");
    let players_at_start = state.players();
    let deadline_ms = deadline.as_millis().min(u128::from(u32::MAX)) as u32;
    for zone in state.zones.values() {
        let _ = zone.control.send(Control::Broadcast {
            kind: NoticeKind::Shutdown,
            text: "This server is shutting down for maintenance. Please reconnect.".into(),
            deadline_ms,
        });
    }
    tracing::info!(step = "3/5", players = players_at_start, deadline_ms, "drain: players told of the shutdown");
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let players = state.players();
        if players == 0 {
            break;
        }
        if started.elapsed() >= deadline {
            tracing::warn!(players, "drain: deadline reached with players still connected");
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(1) {
            tracing::info!(step = "4/5", players, "drain: waiting for players to leave");
            last_log = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = state.force.cancelled() => {
                tracing::warn!(players, "drain: forced, not waiting for players");
                break;
            }
        }
    }
    let report = DrainReport { players_at_start, players_left_over: state.players(), waited: started.elapsed() };
    tracing::info!(step = "4/5", left_over = report.players_left_over, "drain: wait over");
    report
}

fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/drain", post(admin_drain))
        .route("/admin/announce", post(admin_announce))
        .route("/admin/kick", post(admin_kick))
        .with_state(state)
}

async fn ws_upgrade(State(state): State<Arc<ServerState>>, ws: WebSocketUpgrade) -> Response {
    let max = respawn_proto::MAX_CLIENT_FRAME_BYTES;
    let tracker = state.connections.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tracker.track_future(crate::conn::serve(socket, state)))
}

/// Liveness: every zone thread has ticked within the last few seconds.
async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let now_ms = state.epoch.elapsed().as_millis() as u64;
    let stale: Vec<&str> = state
        .zones
        .values()
        .filter(|z| now_ms.saturating_sub(z.status.last_tick_ms.load(Ordering::Relaxed)) > 5_000)
        .map(|z| z.name.as_str())
        .collect();
    if stale.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("zones not ticking: {}\n", stale.join(", "))).into_response()
    }
}

async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else if state.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Checks the admin bearer token; the error is the status and text to answer.
fn authorize(state: &ServerState, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err((StatusCode::NOT_FOUND, "admin API disabled: start the server with --admin-token\n"));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| respawn_token::constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong admin bearer token\n"))
    }
}

async fn admin_drain(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    tracing::info!("drain requested through the admin API");
    state.drain_requested.cancel();
    (StatusCode::ACCEPTED, "draining\n").into_response()
}

const MAX_NOTICE_LEN: usize = 500;

#[derive(Debug, serde::Deserialize)]
struct AnnounceParams {
    text: String,
    /// One zone; every zone when absent.
    zone: Option<String>,
}

async fn admin_announce(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Query<AnnounceParams>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    if params.text.trim().is_empty() || params.text.len() > MAX_NOTICE_LEN {
        return (StatusCode::BAD_REQUEST, format!("text must be 1..={MAX_NOTICE_LEN} bytes\n")).into_response();
    }
    let zones: Vec<&ZoneHandle> = match &params.zone {
        Some(name) => match state.zone(name) {
            Some(z) => vec![z],
            None => return (StatusCode::NOT_FOUND, format!("no zone named {name:?}\n")).into_response(),
        },
        None => state.zones.values().collect(),
    };
    for zone in &zones {
        let notice = Control::Broadcast { kind: NoticeKind::Announcement, text: params.text.clone(), deadline_ms: 0 };
        let _ = zone.control.send(notice);
    }
    tracing::info!(zones = zones.len(), text = %params.text, "announcement sent");
    (StatusCode::ACCEPTED, "announced\n").into_response()
}

#[derive(Debug, serde::Deserialize)]
struct KickParams {
    player: u64,
    reason: Option<String>,
}

async fn admin_kick(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Query<KickParams>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let reason = params.reason.unwrap_or_else(|| "kicked by an operator".into());
    if reason.len() > MAX_NOTICE_LEN {
        return (StatusCode::BAD_REQUEST, format!("reason must be at most {MAX_NOTICE_LEN} bytes\n")).into_response();
    }
    // The player is in at most one zone; every zone ignores a player it lacks.
    for zone in state.zones.values() {
        let _ = zone.control.send(Control::Kick { player: params.player, reason: reason.clone() });
    }
    tracing::info!(player = params.player, reason = %reason, "kick requested");
    (StatusCode::ACCEPTED, "kick sent\n").into_response()
}
