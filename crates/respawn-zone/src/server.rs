//! The zone server process: zone threads, the HTTP/WebSocket listener, health,
//! metrics, and the graceful drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use respawn_api::admin::{Adopted, HostedZone, Redirected, Released, Resumed, ServerInfo};
use respawn_proto::NoticeKind;
use respawn_sim::{Command, Zone, ZoneConfig};
use respawn_token::TokenKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::metrics::{Metrics, PersistMetrics, ZoneMetrics};
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

impl ZoneHandle {
    /// Waits for the zone's thread to end, then for its persister to store what it was sent.
    async fn wait_stopped(&self) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!(zone = %self.name, "zone thread ended abnormally");
            }
        }
        let persister = self.persister.lock().ok().and_then(|mut p| p.take());
        if let Some(persister) = persister {
            if tokio::time::timeout(Duration::from_secs(5), persister).await.is_err() {
                tracing::warn!(zone = %self.name, "final snapshot not stored within 5 s");
            }
        }
    }
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
    /// The zones hosted now: they change when zones are handed over.
    zones: RwLock<BTreeMap<String, Arc<ZoneHandle>>>,
    /// One hand-over at a time on this server.
    handover: tokio::sync::Mutex<()>,
    /// Each zone's event outbox, opened once per process (a zone handed away
    /// and back reuses it while its publisher is still emptying it).
    outboxes: Mutex<BTreeMap<u32, Arc<Outbox>>>,
    outbox_dir: std::path::PathBuf,
    event_log: Option<Arc<dyn EventLog>>,
    version: String,
    before_drain: Option<DrainHook>,
    ready: AtomicBool,
    /// No new players: set by a drain or a cordon.
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
    pub fn zone(&self, name: &str) -> Option<Arc<ZoneHandle>> {
        self.zones.read().ok()?.get(name).cloned()
    }

    pub fn zone_handles(&self) -> Vec<Arc<ZoneHandle>> {
        self.zones.read().map(|z| z.values().cloned().collect()).unwrap_or_default()
    }

    /// The names of the zones hosted now, in the configuration's order.
    pub fn hosted(&self) -> Vec<String> {
        let Ok(zones) = self.zones.read() else { return Vec::new() };
        self.config.zones.iter().filter(|z| zones.contains_key(&z.name)).map(|z| z.name.clone()).collect()
    }

    pub fn zone_names(&self) -> String {
        let hosted = self.hosted();
        if hosted.is_empty() {
            "no zone".to_owned()
        } else {
            hosted.join(", ")
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn players(&self) -> usize {
        self.zone_handles().iter().map(|z| z.status.players.load(Ordering::Relaxed)).sum()
    }

    fn insert_zone(&self, handle: Arc<ZoneHandle>) {
        if let Ok(mut zones) = self.zones.write() {
            zones.insert(handle.name.clone(), handle);
        }
    }

    fn remove_zone(&self, name: &str) -> Option<Arc<ZoneHandle>> {
        self.zones.write().ok()?.remove(name)
    }

    /// The zone's outbox: the one this process already has, or opened now
    /// (with its publisher started).
    fn outbox(&self, zone: &ZoneConfig, metrics: &PersistMetrics) -> Result<Arc<Outbox>, String> {
        let mut outboxes = self.outboxes.lock().map_err(|_| "outbox registry poisoned".to_owned())?;
        if let Some(outbox) = outboxes.get(&zone.zone_id) {
            return Ok(outbox.clone());
        }
        let dir = self.outbox_dir.join(format!("zone-{}", zone.zone_id));
        let outbox = Outbox::open(&dir, self.config.outbox_quota_bytes, self.config.outbox_segment_bytes)
            .map_err(|e| format!("cannot open the event outbox: {e}"))?;
        let outbox = Arc::new(outbox);
        if let Some(log) = &self.event_log {
            let publisher = tokio::spawn(crate::publish::run_publisher(
                zone.name.clone(),
                outbox.clone(),
                log.clone(),
                metrics.clone(),
                self.publishers_stop.clone(),
                Duration::from_secs(3),
            ));
            if let Ok(mut publishers) = self.publishers.lock() {
                publishers.push(publisher);
            }
        }
        outboxes.insert(zone.zone_id, outbox.clone());
        Ok(outbox)
    }

    /// Starts ticking a restored zone: its outbox, persister and thread.
    fn start_zone(
        &self,
        zone_config: &ZoneConfig,
        zone: Zone,
        report: persist::RestoreReport,
        persist_state: Arc<PersistState>,
    ) -> Result<Arc<ZoneHandle>, String> {
        let config = &self.config;
        let name = zone_config.name.clone();
        let zone_metrics = self.metrics.zone(&name);
        let persist_metrics = self.metrics.persist(&name);
        persist_metrics.restored(report.source.as_str(), report.took.as_secs_f64());
        for refused in &report.refused {
            tracing::warn!(zone = %name, "refused at start: {refused}");
        }
        tracing::info!(
            zone = %name,
            source = %report.source,
            snapshot_tick = report.snapshot_tick,
            replayed_ticks = report.replayed_ticks,
            tick = zone.tick_number(),
            players = zone.players().len(),
            took_ms = report.took.as_millis() as u64,
            "zone state restored"
        );
        let outbox = self.outbox(zone_config, &persist_metrics)?;
        // Events of replayed ticks may never have reached the outbox; their ids are
        // deterministic, so sending them twice is harmless downstream.
        outbox
            .append(&report.replayed_events)
            .map_err(|e| format!("cannot write replayed events to the outbox: {e}"))?;
        let (persist_tx, persist_rx) = persist::queue();
        let persister = tokio::spawn(persist::run_persister(
            persist::ZonePersistence {
                zone: zone_config.zone_id,
                name: name.clone(),
                stores: self.stores.clone(),
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
            server_version: self.version.clone(),
            resume_grace: config.resume_grace,
            extra_tick: config.extra_tick,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue_capacity);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (fan_tx, fan_rx) = mpsc::unbounded_channel();
        tokio::spawn(crate::link::fan_out(fan_rx));
        let status = Arc::new(ZoneStatus::default());
        status.last_tick_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let runner = ZoneRunner::new(zone, settings, zone_metrics.clone(), Some(persist_link));
        let (thread_status, epoch) = (status.clone(), self.epoch);
        let thread = std::thread::Builder::new()
            .name(format!("zone-{name}"))
            .spawn(move || zone_loop::run(runner, cmd_rx, ctl_rx, fan_tx, thread_status, epoch))
            .map_err(|e| format!("cannot start the zone thread: {e}"))?;
        tracing::info!(zone = %name, id = zone_config.zone_id, tick_hz = config.tick_hz, "zone started");
        Ok(Arc::new(ZoneHandle {
            name,
            commands: cmd_tx,
            control: ctl_tx,
            metrics: zone_metrics,
            status,
            thread: Mutex::new(Some(thread)),
            persister: Mutex::new(Some(persister)),
        }))
    }

    /// Restores the zone from the stores and starts it here. With
    /// `after_tick`, a zone handed over at that tick: anything older (the
    /// newest snapshot unreadable, say) is refused rather than run.
    async fn adopt(&self, name: &str, after_tick: Option<u64>) -> Result<Adopted, HandoverError> {
        let _one_at_a_time = self.handover.lock().await;
        if self.zone(name).is_some() {
            return Err(HandoverError::AlreadyHosted(name.to_owned()));
        }
        let Some(zone_config) = self.config.zones.iter().find(|z| z.name == name) else {
            return Err(HandoverError::NotConfigured(name.to_owned()));
        };
        let started = Instant::now();
        let format = self.config.compat.snapshot_format;
        let (zone, report) = persist::restore_reading(zone_config, &self.stores, format, after_tick)
            .await
            .map_err(HandoverError::Unrestorable)?;
        if let Some(expected) = after_tick.filter(|t| zone.tick_number() < *t) {
            let refused = if report.refused.is_empty() { "none".to_owned() } else { report.refused.join("; ") };
            return Err(HandoverError::Stale { zone: name.to_owned(), expected, found: zone.tick_number(), refused });
        }
        let persist_state = Arc::new(PersistState::default());
        persist::checkpoint_after_restore(&zone, &self.stores, &persist_state).await;
        let (tick, players, source) = (zone.tick_number(), zone.players().len(), report.source);
        let handle = self.start_zone(zone_config, zone, report, persist_state).map_err(HandoverError::StartFailed)?;
        self.insert_zone(handle);
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(zone = %name, tick, players, took_ms, "zone adopted");
        Ok(Adopted { zone: name.to_owned(), tick, players: players as u64, source, took_ms })
    }

    /// Hand-off, first half: the zone's last tick is stored and it stops
    /// ticking here. Abandoned (the zone ticks on) if its state cannot be stored.
    async fn release(&self, name: &str) -> Result<Released, HandoverError> {
        let _one_at_a_time = self.handover.lock().await;
        let zone = self.zone(name).ok_or_else(|| HandoverError::NotHere(name.to_owned()))?;
        let started = Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel();
        zone.control.send(Control::Release { reply }).map_err(|_| gone(name))?;
        let tick = match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(Ok(tick))) => tick,
            Ok(Ok(Err(why))) => return Err(HandoverError::NotStored(why)),
            Ok(Err(_)) | Err(_) => return Err(gone(name)),
        };
        // The new owner reads the stores: everything through `tick` must be there first.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (reply, answer) = tokio::sync::oneshot::channel();
            zone.control.send(Control::Flush { reply }).map_err(|_| gone(name))?;
            let durable = tokio::time::timeout(Duration::from_secs(5), answer).await.ok().and_then(Result::ok);
            if durable.is_some_and(|d| d >= tick) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = zone.control.send(Control::Unpark);
                return Err(HandoverError::NotStored(format!(
                    "zone {name:?}: its state through tick {tick} could not be stored; it ticks here again"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let players = zone.status.players.load(Ordering::Relaxed);
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(zone = %name, tick, players, took_ms, "zone released");
        Ok(Released { zone: name.to_owned(), tick, players: players as u64, took_ms })
    }

    /// Hand-off, second half: clients go to the zone's new owner and the zone leaves this server.
    async fn redirect(&self, name: &str, address: &str) -> Result<Redirected, HandoverError> {
        let _one_at_a_time = self.handover.lock().await;
        let zone = self.zone(name).ok_or_else(|| HandoverError::NotHere(name.to_owned()))?;
        if !zone.status.parked.load(Ordering::SeqCst) {
            return Err(HandoverError::NotReleased(name.to_owned()));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        zone.control.send(Control::Redirect { address: address.to_owned(), reply }).map_err(|_| gone(name))?;
        let told = tokio::time::timeout(Duration::from_secs(5), answer).await.ok().and_then(Result::ok).unwrap_or(0);
        self.remove_zone(name);
        zone.wait_stopped().await;
        zone.metrics.players.set(0);
        Ok(Redirected { zone: name.to_owned(), redirected_players: told as u64, to: address.to_owned() })
    }

    /// Abandons a hand-off: the released zone ticks here again.
    async fn unpark(&self, name: &str) -> Result<Resumed, HandoverError> {
        let zone = self.zone(name).ok_or_else(|| HandoverError::NotHere(name.to_owned()))?;
        zone.control.send(Control::Unpark).map_err(|_| gone(name))?;
        Ok(Resumed { zone: name.to_owned() })
    }

    /// Stops or resumes taking new players (a rollout's first step on the old
    /// server); with `notify`, connected players are asked to reconnect.
    fn cordon(&self, on: bool, notify: bool) {
        let taking = !on && !self.drain_requested.is_cancelled();
        self.draining.store(!taking, Ordering::SeqCst);
        self.ready.store(taking, Ordering::SeqCst);
        self.metrics.set_ready(taking);
        if on && notify {
            let deadline_ms = self.config.drain_deadline.as_millis().min(u128::from(u32::MAX)) as u32;
            for zone in self.zone_handles() {
                let _ = zone.control.send(Control::Broadcast {
                    kind: NoticeKind::Shutdown,
                    text: "This server is being updated. Reconnecting keeps your character.".into(),
                    deadline_ms,
                });
            }
        }
        tracing::info!(cordoned = on, notify, "new players {}", if taking { "welcome" } else { "refused" });
    }
}

/// Why a hand-over call (adopt, release, redirect, resume) was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("zone {0:?} is already hosted here")]
    AlreadyHosted(String),
    #[error("zone {0:?} is not in this server's configuration")]
    NotConfigured(String),
    #[error("no zone {0:?} here")]
    NotHere(String),
    /// No stored state of the zone this server can use.
    #[error("{0}")]
    Unrestorable(String),
    #[error(
        "cannot resume zone {zone:?} at tick {expected}: the newest state this server can read is tick {found} \
         (refused: {refused})"
    )]
    Stale { zone: String, expected: u64, found: u64, refused: String },
    #[error("{0}")]
    StartFailed(String),
    /// The zone's last tick could not be made durable; it ticks on.
    #[error("{0}")]
    NotStored(String),
    #[error("zone {0:?} is not released; release it first")]
    NotReleased(String),
    #[error("zone {0:?} stopped")]
    Gone(String),
}

fn gone(zone: &str) -> HandoverError {
    HandoverError::Gone(zone.to_owned())
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
    /// Zones of the configuration not to host at start (every one for a
    /// standby server); they arrive by hand-over (`/admin/zones/{zone}/adopt`).
    pub not_hosted: Vec<String>,
    /// Run when a drain starts, while the server still hosts zones: hands
    /// them to another server (the platform's evacuation) before players are told.
    pub before_drain: Option<DrainHook>,
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
    /// First call drains; a second call stops waiting for players.
    pub fn trigger(&self) {
        if self.drain.is_cancelled() {
            self.force.cancel();
        } else {
            self.drain.cancel();
        }
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
            admin_token,
            version,
            not_hosted,
            before_drain,
        } = options;
        tracing::info!(stores = %stores.description, "state stores");
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let state = Arc::new(ServerState {
            metrics: Metrics::new(&version),
            config,
            token_key,
            stores,
            admin_token,
            bans: crate::bans::BanList::default(),
            command_limits: Mutex::default(),
            zones: RwLock::default(),
            handover: tokio::sync::Mutex::new(()),
            outboxes: Mutex::default(),
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
        let configs: Vec<ZoneConfig> =
            state.config.zones.iter().filter(|z| !not_hosted.contains(&z.name)).cloned().collect();
        if configs.len() < state.config.zones.len() {
            tracing::info!(
                standing_by_for = %not_hosted.join(", "),
                "standing by: these zones are hosted only once handed over"
            );
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
        futures_util::future::join_all(
            restored
                .iter()
                .zip(&states)
                .map(|((zone, _), ps)| persist::checkpoint_after_restore(zone, &state.stores, ps)),
        )
        .await;
        for ((zone_config, (zone, report)), persist_state) in configs.iter().zip(restored).zip(states) {
            let handle = state
                .start_zone(zone_config, zone, report, persist_state)
                .map_err(|message| ServerError::Zone { zone: zone_config.name.clone(), message })?;
            state.insert_zone(handle);
        }
        Ok(Self { state, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the platform server's ban lists are applied.
    pub fn ban_enforcer(&self) -> crate::bans::BanEnforcer {
        crate::bans::BanEnforcer { state: self.state.clone() }
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
        let app = router(state.clone());
        let http_shutdown = state.shutdown.clone();
        let per_ip = state.config.limits.connections_per_ip;
        let listener = respawn_net::GuardedListener::new(self.listener, per_ip, state.metrics.guard().clone());
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
        for zone in state.zone_handles() {
            // A stopped thread sends a last snapshot; its persister stores it.
            let _ = zone.control.send(Control::Stop);
            zone.wait_stopped().await;
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
async fn drain(state: &Arc<ServerState>) -> DrainReport {
    let deadline = state.config.drain_deadline;
    if let Some(hook) = state.before_drain.as_ref().filter(|_| !state.hosted().is_empty()) {
        tracing::info!(step = "0/5", "drain: handing the zones to another server first");
        let view = ServerView { state: state.clone() };
        if tokio::time::timeout(deadline, (hook.0)(view)).await.is_err() {
            tracing::warn!("drain: the hand-over did not finish within the drain deadline");
        }
        match state.zone_names().as_str() {
            "no zone" => tracing::info!("drain: every zone runs elsewhere now"),
            left => tracing::warn!(zones = left, "drain: still hosting these; their players are told to reconnect"),
        }
    }
    state.ready.store(false, Ordering::SeqCst);
    state.metrics.set_ready(false);
    tracing::info!(step = "1/5", "drain: readiness off");
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(step = "2/5", "drain: refusing new joins");
    let players_at_start = state.players();
    let deadline_ms = deadline.as_millis().min(u128::from(u32::MAX)) as u32;
    for zone in state.zone_handles() {
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
        .route("/admin/info", get(admin_info))
        .route("/admin/cordon", post(admin_cordon))
        .route("/admin/uncordon", post(admin_uncordon))
        .route("/admin/zones/{zone}/release", post(admin_release))
        .route("/admin/zones/{zone}/adopt", post(admin_adopt))
        .route("/admin/zones/{zone}/redirect", post(admin_redirect))
        .route("/admin/zones/{zone}/resume", post(admin_resume))
        .with_state(state)
}

async fn ws_upgrade(State(state): State<Arc<ServerState>>, ws: WebSocketUpgrade) -> Response {
    let max = respawn_proto::MAX_CLIENT_FRAME_BYTES;
    let tracker = state.connections.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tracker.track_future(crate::conn::serve(socket, state)))
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
    let zones: Vec<Arc<ZoneHandle>> = match &params.zone {
        Some(name) => match state.zone(name) {
            Some(z) => vec![z],
            None => return (StatusCode::NOT_FOUND, format!("no zone named {name:?}\n")).into_response(),
        },
        None => state.zone_handles(),
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
    for zone in state.zone_handles() {
        let _ = zone.control.send(Control::Kick { player: params.player, reason: reason.clone() });
    }
    tracing::info!(player = params.player, reason = %reason, "kick requested");
    (StatusCode::ACCEPTED, "kick sent\n").into_response()
}

/// What this server is and can take: a rollout checks it before moving zones here.
async fn admin_info(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let zones = state
        .zone_handles()
        .iter()
        .map(|z| HostedZone {
            name: z.name.clone(),
            players: z.status.players.load(Ordering::Relaxed) as u64,
            tick: z.status.tick.load(Ordering::Relaxed),
            parked: z.status.parked.load(Ordering::Relaxed),
        })
        .collect();
    json(&ServerInfo {
        version: state.version.clone(),
        compat: state.config.compat,
        zones,
        configured_zones: state.config.zones.iter().map(|z| z.name.clone()).collect(),
        draining: state.draining.load(Ordering::SeqCst),
        players: state.players() as u64,
    })
}

/// A contract type as a JSON answer.
fn json(body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("answer not serializable: {e}\n")).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct CordonParams {
    /// Ask connected players to reconnect (they keep their characters).
    #[serde(default)]
    notify: bool,
}

async fn admin_cordon(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Query<CordonParams>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    state.cordon(true, params.notify);
    (StatusCode::ACCEPTED, "cordoned: no new players\n").into_response()
}

async fn admin_uncordon(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    if state.drain_requested.is_cancelled() {
        return (StatusCode::CONFLICT, "the server is draining to stop; it cannot take players again\n")
            .into_response();
    }
    state.cordon(false, false);
    (StatusCode::ACCEPTED, "taking new players\n").into_response()
}

/// The status a refused hand-over call answers with.
fn handover_status(error: &HandoverError) -> StatusCode {
    match error {
        HandoverError::NotConfigured(_) | HandoverError::NotHere(_) => StatusCode::NOT_FOUND,
        HandoverError::AlreadyHosted(_)
        | HandoverError::Unrestorable(_)
        | HandoverError::Stale { .. }
        | HandoverError::NotReleased(_) => StatusCode::CONFLICT,
        HandoverError::StartFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        HandoverError::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
        HandoverError::Gone(_) => StatusCode::GONE,
    }
}

fn answer<T: serde::Serialize>(result: Result<T, HandoverError>) -> Response {
    match result {
        Ok(body) => json(&body),
        Err(error) => {
            let status = handover_status(&error);
            tracing::warn!(status = status.as_u16(), why = %error, "hand-over call refused");
            (status, format!("{error}\n")).into_response()
        }
    }
}

async fn admin_release(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(zone): Path<String>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    answer(state.release(&zone).await)
}

#[derive(Debug, serde::Deserialize)]
struct AdoptParams {
    /// The tick the zone was released at: an older state is refused.
    after_tick: Option<u64>,
}

async fn admin_adopt(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(zone): Path<String>,
    Query(params): Query<AdoptParams>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    if state.drain_requested.is_cancelled() {
        return (StatusCode::CONFLICT, "the server is draining to stop; it takes no zone\n").into_response();
    }
    answer(state.adopt(&zone, params.after_tick).await)
}

#[derive(Debug, serde::Deserialize)]
struct RedirectParams {
    /// The zone's new WebSocket address.
    to: String,
}

async fn admin_redirect(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(zone): Path<String>,
    Query(params): Query<RedirectParams>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let valid = (params.to.starts_with("ws://") || params.to.starts_with("wss://"))
        && params.to.len() <= 256
        && !params.to.chars().any(char::is_control);
    if !valid {
        return (StatusCode::BAD_REQUEST, "to must be a ws:// or wss:// address of at most 256 characters\n")
            .into_response();
    }
    answer(state.redirect(&zone, &params.to).await)
}

async fn admin_resume(State(state): State<Arc<ServerState>>, headers: HeaderMap, Path(zone): Path<String>) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    answer(state.unpark(&zone).await)
}
