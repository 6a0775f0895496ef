//! The zone server process: zone threads, the HTTP/WebSocket listener, health,
//! metrics, and the graceful drain. By job: [`state`] (what handlers and
//! connections share, the hosted zones), `handover` (release, adopt,
//! redirect, resume), `admin` (the admin API's handlers) and `drain`.

mod admin;
mod drain;
mod failover;
mod handover;
pub mod state;

pub use handover::HandoverError;
pub use state::{Characters, ServerState, ZoneHandle};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use respawn_sim::ZoneConfig;
use respawn_store::kafka::EventLog;
use respawn_token::TokenKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::lease::Taken;
use crate::link::Sockets;
use crate::metrics::Metrics;
use crate::persist::{self, PersistState, Stores};
use crate::zone_loop::Control;

/// Applies ban lists to a running server.
#[derive(Debug, Clone)]
pub struct BanEnforcer {
    state: Arc<ServerState>,
}

impl BanEnforcer {
    pub fn version(&self) -> u64 {
        self.state.bans.version()
    }

    /// Installs the list and kicks every newly banned player still connected.
    pub fn apply(&self, version: u64, players: impl IntoIterator<Item = u64>) {
        let added = self.state.bans.replace(version, players.into_iter().collect());
        for player in &added {
            for zone in self.state.zone_handles() {
                let _ = zone.control.send(Control::Kick { player: *player, reason: "banned".into() });
            }
        }
        tracing::info!(version, newly_banned = added.len(), "ban list applied");
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
    /// The bearer tokens `/admin/*` accepts: the operators' `--admin-token`
    /// and the server's registry credential, which the platform calls with;
    /// none disables the admin API.
    pub admin_tokens: Vec<String>,
    /// Serve `/admin/*` here only, not on the players' listener.
    pub admin_listen: Option<SocketAddr>,
    /// Load balancers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: respawn_net::TrustedProxies,
    /// Serve TLS (wss, https) on every listener with this certificate.
    pub tls: Option<respawn_net::ServerTls>,
    pub version: String,
    /// The owner named in the zones' leases; by default
    /// [`default_server_id`] of the address the server listens on.
    pub server_id: Option<String>,
    /// Adopt zones of the configuration whose lease ran out ([`failover`]).
    pub take_over: bool,
    /// Zones of the configuration not to host at start (every one for a
    /// standby server); they arrive by hand-over (`/admin/zones/{zone}/adopt`).
    pub not_hosted: Vec<String>,
    /// Run when a drain starts, while the server still hosts zones: hands
    /// them to another server (the platform's evacuation) before players are told.
    pub before_drain: Option<DrainHook>,
    pub characters: Characters,
}

/// What a drain does first; see [`ServerOptions::before_drain`].
#[derive(Clone)]
pub struct DrainHook(pub Arc<dyn Fn(ServerView) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>);

impl std::fmt::Debug for DrainHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainHook")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("zone {zone}: {message}")]
    Zone { zone: String, message: String },
    #[error("cannot start the players' I/O thread: {0}")]
    Sockets(std::io::Error),
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
    /// `/admin/*` alone (`--admin-listen`), kept off the players' port.
    admin_listener: Option<TcpListener>,
    tls: Option<respawn_net::ServerTls>,
}

/// Starts a drain from outside (signal handlers).
#[derive(Debug, Clone)]
pub struct DrainTrigger {
    drain: CancellationToken,
    force: CancellationToken,
}

impl DrainTrigger {
    /// First call drains; a second call stops waiting for players.
    pub fn trigger(&self) {
        if self.drain.is_cancelled() {
            self.force.cancel();
        } else {
            self.drain.cancel();
        }
    }

    /// Triggers at each SIGTERM or interrupt (Ctrl-C).
    pub fn on_signals(self) {
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                }
                self.trigger();
            }
        });
    }
}

/// What the server's heartbeat reports, read live.
#[derive(Debug, Clone)]
pub struct ServerView {
    state: Arc<ServerState>,
}

impl ServerView {
    /// The zones hosted now.
    pub fn zones(&self) -> Vec<String> {
        self.state.hosted()
    }

    /// The fencing token of each hosted zone's lease.
    pub fn fences(&self) -> std::collections::BTreeMap<String, u64> {
        self.state.fences()
    }

    /// The platform saw a newer lease than ours on `zone` (token `newer`):
    /// the zone is lost here even if the lease store is out of reach, and stops.
    pub fn superseded(&self, zone: &str, newer: u64) {
        if let Some(handle) = self.state.zone(zone).filter(|z| z.lease.fence().0 < newer) {
            handle.lease.superseded(newer);
        }
    }

    /// Whether a hosted zone's lease could not be renewed last time.
    pub fn leases_in_doubt(&self) -> bool {
        self.state.zone_handles().iter().any(|z| z.lease.in_doubt())
    }

    /// Resolves when a zone starts or stops here (at once if one did since the last call).
    pub async fn hosted_changed(&self) {
        self.state.hosted_changed.notified().await
    }

    /// Draining or cordoned: no new players.
    pub fn is_draining(&self) -> bool {
        self.state.draining.load(Ordering::SeqCst) || self.state.drain_requested.is_cancelled()
    }
}

impl ZoneServer {
    /// Binds the listener and starts every zone thread (none when standing by).
    pub async fn start(options: ServerOptions) -> Result<Self, ServerError> {
        let ServerOptions {
            config,
            token_key,
            stores,
            outbox_dir,
            event_log,
            admin_tokens,
            admin_listen,
            trusted_proxies,
            tls,
            version,
            server_id,
            take_over,
            not_hosted,
            before_drain,
            characters,
        } = options;
        tracing::info!(stores = %stores.description, "state stores");
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let server_id = server_id.unwrap_or_else(|| default_server_id(listener.local_addr().unwrap_or(config.listen)));
        let (lost_zones, mut lost) = tokio::sync::mpsc::unbounded_channel();
        let (sockets, io_queue) = Sockets::new().map_err(ServerError::Sockets)?;
        let state = Arc::new(ServerState {
            sockets,
            metrics: Metrics::new(&version),
            server_id,
            lost_zones,
            config,
            token_key,
            characters,
            stores,
            admin_tokens,
            admin_failures: state::AdminFailures::default(),
            trusted_proxies,
            bans: crate::bans::BanList::default(),
            command_limits: Mutex::default(),
            zones: RwLock::default(),
            handover: tokio::sync::Mutex::new(()),
            outboxes: Mutex::default(),
            hosted_changed: tokio::sync::Notify::new(),
            outbox_dir,
            event_log,
            version,
            before_drain,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_requested: CancellationToken::new(),
            force: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            publishers_stop: CancellationToken::new(),
            publishers: Mutex::default(),
            epoch: Instant::now(),
            next_conn: AtomicU64::new(1),
            connections: TaskTracker::new(),
        });
        crate::sockets::start(io_queue, &state).map_err(ServerError::Sockets)?;
        let supervisor = state.clone();
        tokio::spawn(async move {
            // Each at once: one zone's stop waits for its persister, which may be in a store call.
            while let Some(zone) = lost.recv().await {
                let supervisor = supervisor.clone();
                tokio::spawn(async move { supervisor.stop_superseded(&zone).await });
            }
        });
        let wanted: Vec<ZoneConfig> =
            state.config.zones.iter().filter(|z| !not_hosted.contains(&z.name)).cloned().collect();
        if wanted.len() < state.config.zones.len() {
            tracing::info!(
                standing_by_for = %not_hosted.join(", "),
                "standing by: these zones are hosted only once handed over"
            );
        }
        // Each zone's lease first: a zone another live server runs is not
        // restored, let alone run, here.
        let taken = futures_util::future::join_all(wanted.iter().map(|z| state.take_lease(z))).await;
        let mut configs = Vec::new();
        let mut leases = Vec::new();
        for (zone_config, taken) in wanted.into_iter().zip(taken) {
            match taken {
                Ok(Taken::Held(lease)) => {
                    configs.push(zone_config);
                    leases.push(lease);
                }
                Ok(Taken::ByOther { owner }) => {
                    tracing::warn!(zone = %zone_config.name, %owner, "not hosting this zone: another live server runs it");
                }
                Err(e) => {
                    return Err(ServerError::Zone {
                        zone: zone_config.name,
                        message: format!("cannot take its lease: {e}"),
                    })
                }
            }
        }
        let format = state.config.compat.snapshot_format;
        // Zones restore side by side: the restart time is the slowest zone's,
        // not the sum. Every start then stores its state, so a snapshot always exists.
        let restored = futures_util::future::join_all(
            configs.iter().map(|z| persist::restore_reading(z, &state.stores, format, None)),
        )
        .await
        .into_iter()
        .zip(&configs)
        .map(|(r, z)| r.map_err(|message| ServerError::Zone { zone: z.name.clone(), message }))
        .collect::<Result<Vec<_>, _>>()?;
        let states: Vec<Arc<PersistState>> = configs.iter().map(|_| Arc::default()).collect();
        futures_util::future::join_all(restored.iter().zip(&states).zip(&leases).map(
            |(((zone, report), ps), lease)| {
                let history = state.config.persist.history.enabled().then(|| state.config.tick_period());
                persist::checkpoint_after_restore(zone, report.journal_epoch, &state.stores, ps, lease.fence(), history)
            },
        ))
        .await;
        for (((zone_config, (zone, report)), persist_state), lease) in
            configs.iter().zip(restored).zip(states).zip(leases)
        {
            let handle = state
                .start_zone(zone_config, zone, report, persist_state, lease)
                .map_err(|message| ServerError::Zone { zone: zone_config.name.clone(), message })?;
            state.insert_zone(handle);
        }
        if take_over {
            tokio::spawn(failover::take_over_lost_zones(state.clone()));
        }
        let admin_listener = match admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?),
            None => None,
        };
        Ok(Self { state, listener, admin_listener, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/admin/*` is served when it has a listener of its own.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the platform server's ban lists are applied.
    pub fn ban_enforcer(&self) -> BanEnforcer {
        BanEnforcer { state: self.state.clone() }
    }

    /// What the heartbeat reports: hosted zones and whether new players are taken.
    pub fn view(&self) -> ServerView {
        ServerView { state: self.state.clone() }
    }

    pub fn drain_trigger(&self) -> DrainTrigger {
        DrainTrigger { drain: self.state.drain_requested.clone(), force: self.state.force.clone() }
    }

    /// Serves until a drain completes, then stops every zone.
    pub async fn run(self) -> Result<DrainReport, ServerError> {
        let state = self.state;
        let separate_admin = self.admin_listener.is_some();
        let app = router(state.clone(), !separate_admin);
        let http_shutdown = state.shutdown.clone();
        let per_ip = state.config.limits.connections_per_ip;
        let listener = respawn_net::GuardedListener::new(self.listener, per_ip, state.metrics.guard().clone())
            .trusting(state.trusted_proxies.clone())
            .serving_tls(self.tls.clone());
        let http = tokio::spawn(respawn_net::serve(listener, app, http_shutdown.cancelled_owned()));
        if let Some(admin_listener) = self.admin_listener {
            // Operators and the platform only: no cap per address, the same deadlines and TLS.
            let admin_listener = respawn_net::GuardedListener::new(admin_listener, 0, state.metrics.guard().clone())
                .serving_tls(self.tls);
            let admin_listener = axum::serve::ListenerExt::tap_io(admin_listener, |_| {});
            let admin = admin::routes(state.clone()).with_state(state.clone());
            let admin_shutdown = state.shutdown.clone();
            tokio::spawn(async move {
                let app = admin.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) =
                    axum::serve(admin_listener, app).with_graceful_shutdown(admin_shutdown.cancelled_owned()).await
                {
                    tracing::error!(error = %e, "the admin listener failed");
                }
            });
        }
        state.ready.store(true, Ordering::SeqCst);
        state.metrics.set_ready(true);
        tracing::info!(zones = %state.zone_names(), "ready");

        state.drain_requested.cancelled().await;
        let report = drain::drain(&state).await;

        tracing::info!(step = "5/5", "closing remaining connections and stopping zones");
        state.shutdown.cancel();
        state.sockets.shut_down();
        state.connections.close();
        if tokio::time::timeout(Duration::from_secs(5), state.connections.wait()).await.is_err() {
            tracing::warn!("some connections did not close within 5 s");
        }
        for zone in state.zone_handles() {
            // A stopped thread sends a last snapshot; its persister stores it.
            let _ = zone.control.send(Control::Stop);
            zone.wait_stopped().await;
            zone.lease.release().await;
        }
        state.publishers_stop.cancel();
        let publishers = state.publishers.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        for publisher in publishers {
            let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
        }
        if let Err(e) = http.await {
            tracing::error!(error = %e, "http task failed");
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

/// The id of a server given none: its host name and the address it
/// listens on, so the same instance restarted takes its zones' leases back
/// at once, and two servers on one host differ.
pub fn default_server_id(listen: SocketAddr) -> String {
    let clean = |text: &str| -> String {
        let text = text.trim().to_ascii_lowercase();
        text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
    };
    let mut host = clean(&std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default());
    host.truncate(20);
    if host.is_empty() {
        host.push_str("host");
    }
    let id = format!("zone-{host}-{}-{}", clean(&listen.ip().to_string()), listen.port());
    // An IPv6 address can make it too long: the address's end is what differs.
    id[id.len().saturating_sub(64)..].to_owned()
}

/// The players' listener: the WebSocket, health and metrics, and the admin
/// API unless it has a listener of its own.
fn router(state: Arc<ServerState>, with_admin: bool) -> Router {
    let public = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    let app = if with_admin { public.merge(admin::routes(state.clone())) } else { public };
    app.with_state(state)
}

/// The WebSocket upgrade: the handshake answered here, then the socket
/// handed to the I/O thread ([`crate::sockets`]).
async fn ws_upgrade(State(state): State<Arc<ServerState>>, mut request: Request) -> Response {
    let response = match tungstenite::handshake::server::create_response_with_body(&request, Body::empty) {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a WebSocket upgrade: {e}\n")).into_response(),
    };
    let Some(upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded\n").into_response();
    };
    tokio::spawn(async move {
        let handoff = match upgrade.await.map_err(std::io::Error::other).and_then(respawn_net::take_upgraded) {
            Ok(handoff) => handoff,
            Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
        };
        // Tracked until the I/O thread drops `done`: a shutdown waits for every connection to close.
        let (done, closed) = tokio::sync::oneshot::channel::<()>();
        state.connections.spawn(async move {
            let _ = closed.await;
        });
        state.sockets.open(handoff, done);
    });
    response.into_response()
}

/// Liveness: every zone thread has ticked within the last few seconds (a
/// zone parked for a hand-off does not tick on purpose).
async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let now_ms = state.epoch.elapsed().as_millis() as u64;
    let stale: Vec<String> = state
        .zone_handles()
        .iter()
        .filter(|z| !z.status.parked.load(Ordering::Relaxed))
        .filter(|z| now_ms.saturating_sub(z.status.last_tick_ms.load(Ordering::Relaxed)) > 5_000)
        .map(|z| z.name.clone())
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
