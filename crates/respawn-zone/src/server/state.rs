//! What every request handler and connection of a zone server shares
//! ([`ServerState`]): the configuration, the stores, the zones hosted now
//! (a map that changes at run time), starting a zone, and the cordon.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use respawn_proto::NoticeKind;
use respawn_sim::{Command, Zone, ZoneConfig};
use respawn_store::kafka::EventLog;
use respawn_store::outbox::Outbox;
use respawn_store::StoreError;
use respawn_token::TokenKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DrainHook;
use crate::config::ServerConfig;
use crate::lease::{HeldLease, Taken};
use crate::metrics::{Metrics, PersistMetrics, ZoneMetrics};
use crate::persist::{self, PersistState, Stores};
use crate::publish::PublishGate;
use crate::zone_loop::{self, Control, LoopSettings, PersistLink, ZoneRunner, ZoneStatus};

/// A running zone as the rest of the server sees it.
#[derive(Debug)]
pub struct ZoneHandle {
    pub name: String,
    pub commands: mpsc::Sender<Command>,
    pub control: mpsc::UnboundedSender<Control>,
    pub metrics: ZoneMetrics,
    pub status: Arc<ZoneStatus>,
    /// The zone's lease, held while it is hosted here.
    pub lease: Arc<HeldLease>,
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) persister: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ZoneHandle {
    /// Waits for the zone's thread to end, then for its persister to store what it was sent.
    pub(crate) async fn wait_stopped(&self) {
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

/// Where the characters that join come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Characters {
    /// Each join makes a new character (a zone server of its own).
    Fresh,
    /// The platform keeps them: a join needs its character ticket, and a
    /// resume token takes back only a character still in the zone.
    KeptByPlatform,
}

/// A zone's outbox and what its publisher may send from it.
pub(crate) type OpenOutbox = (Arc<Outbox>, Arc<PublishGate>);

/// What every request handler and connection shares.
#[derive(Debug)]
pub struct ServerState {
    pub config: ServerConfig,
    /// The owner named in this server's zone leases.
    pub server_id: String,
    /// Told the name of each zone whose lease was lost (another server runs it).
    pub(crate) lost_zones: mpsc::UnboundedSender<String>,
    pub token_key: TokenKey,
    pub characters: Characters,
    pub stores: Stores,
    pub(crate) admin_tokens: Vec<String>,
    pub(crate) admin_failures: AdminFailures,
    pub(crate) trusted_proxies: respawn_net::TrustedProxies,
    pub metrics: Metrics,
    /// Players refused at join and kicked if connected.
    pub bans: crate::bans::BanList,
    /// Command limits of players who left recently, so reconnecting does not refill them.
    pub command_limits: Mutex<std::collections::HashMap<u64, respawn_store::ratelimit::LocalGcra>>,
    /// The zones hosted now: they change when zones are handed over.
    pub(crate) zones: RwLock<BTreeMap<String, Arc<ZoneHandle>>>,
    /// Woken when a zone starts or stops here: the heartbeat tells the platform at once.
    pub(crate) hosted_changed: tokio::sync::Notify,
    /// One hand-over at a time on this server.
    pub(crate) handover: tokio::sync::Mutex<()>,
    /// Each zone's event outbox, opened once per process (a zone handed away
    /// and back reuses it while its publisher is still emptying it).
    /// Each zone's outbox and what its publisher may send from it.
    pub(crate) outboxes: Mutex<BTreeMap<u32, OpenOutbox>>,
    pub(crate) outbox_dir: std::path::PathBuf,
    pub(crate) event_log: Option<Arc<dyn EventLog>>,
    pub(crate) version: String,
    pub(crate) before_drain: Option<DrainHook>,
    pub(crate) ready: AtomicBool,
    /// No new players: set by a drain or a cordon.
    pub draining: AtomicBool,
    /// Cancelled to start a drain (signal or admin call).
    pub(crate) drain_requested: CancellationToken,
    /// Cancelled to skip the wait for players (second signal).
    pub(crate) force: CancellationToken,
    /// Cancelled when connections must close.
    pub shutdown: CancellationToken,
    /// Cancelled once the zones stopped: publishers flush what they can and end.
    pub(crate) publishers_stop: CancellationToken,
    pub(crate) publishers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub epoch: Instant,
    pub(crate) next_conn: AtomicU64,
    pub(crate) connections: TaskTracker,
    /// The players' sockets (the I/O thread).
    pub(crate) sockets: crate::link::Sockets,
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

    pub(crate) fn players(&self) -> usize {
        self.zone_handles().iter().map(|z| z.status.players.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn insert_zone(&self, handle: Arc<ZoneHandle>) {
        if let Ok(mut zones) = self.zones.write() {
            zones.insert(handle.name.clone(), handle);
        }
        self.hosted_changed.notify_one();
    }

    pub(crate) fn remove_zone(&self, name: &str) -> Option<Arc<ZoneHandle>> {
        let removed = self.zones.write().ok()?.remove(name);
        self.hosted_changed.notify_one();
        removed
    }

    /// The fencing token of each hosted zone's lease.
    pub fn fences(&self) -> BTreeMap<String, u64> {
        self.zone_handles().iter().map(|z| (z.name.clone(), z.lease.fence().0)).collect()
    }

    /// The zone's outbox and its gate: the ones this process already has, or
    /// opened now (with its publisher started).
    pub(crate) fn outbox(&self, zone: &ZoneConfig, metrics: &PersistMetrics) -> Result<OpenOutbox, String> {
        let mut outboxes = self.outboxes.lock().map_err(|_| "outbox registry poisoned".to_owned())?;
        if let Some(opened) = outboxes.get(&zone.zone_id) {
            return Ok(opened.clone());
        }
        let dir = self.outbox_dir.join(format!("zone-{}", zone.zone_id));
        let outbox = Outbox::open(&dir, self.config.outbox_quota_bytes, self.config.outbox_segment_bytes)
            .map_err(|e| format!("cannot open the event outbox: {e}"))?;
        let (outbox, gate) = (Arc::new(outbox), Arc::new(PublishGate::default()));
        if let Some(log) = &self.event_log {
            let publisher = tokio::spawn(crate::publish::run_publisher(
                zone.name.clone(),
                outbox.clone(),
                gate.clone(),
                log.clone(),
                metrics.clone(),
                self.publishers_stop.clone(),
                Duration::from_secs(3),
            ));
            if let Ok(mut publishers) = self.publishers.lock() {
                publishers.push(publisher);
            }
        }
        outboxes.insert(zone.zone_id, (outbox.clone(), gate.clone()));
        Ok((outbox, gate))
    }

    /// Takes the zone's lease for this server, waiting out one left by a
    /// lost owner, and fences the cold snapshots' store with it: from here
    /// on nothing an older owner stores is taken, so what the restore reads
    /// next is all there is.
    pub(crate) async fn take_lease(&self, zone: &ZoneConfig) -> Result<Taken, StoreError> {
        let (leases, ttl) = (self.stores.leases.clone(), self.config.persist.lease_ttl);
        let taken = HeldLease::take(leases, zone.zone_id, &zone.name, &self.server_id, ttl, self.lost_zones.clone());
        let lease = match taken.await? {
            Taken::Held(lease) => lease,
            other => return Ok(other),
        };
        let started = Instant::now();
        loop {
            match self.stores.cold.fence(zone.zone_id, lease.fence()).await {
                Ok(()) => {
                    // The history is for replay, not for restores: a fence it misses is logged, not waited for.
                    if let Err(e) = self.stores.history.fence(zone.zone_id, lease.fence()).await {
                        tracing::warn!(zone = %zone.name, error = %e, "history store not fenced for this owner");
                    }
                    return Ok(Taken::Held(lease));
                }
                Err(StoreError::Unavailable { .. }) if started.elapsed() < persist::RESTORE_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    lease.release().await;
                    return Err(e);
                }
            }
        }
    }

    /// Stops a zone whose lease was lost, without writing: another server runs it now.
    pub(crate) async fn stop_superseded(&self, name: &str) {
        let Some(zone) = self.zone(name).filter(|z| z.lease.is_lost()) else { return };
        self.remove_zone(name);
        let _ = zone.control.send(Control::Superseded);
        zone.wait_stopped().await;
        if let Some(config) = self.config.zones.iter().find(|z| z.name == name) {
            if let Some((_, gate)) = self.outboxes.lock().ok().and_then(|o| o.get(&config.zone_id).cloned()) {
                gate.end_superseded();
            }
        }
        zone.metrics.players.set(0);
        self.metrics.lease_lost(name);
        tracing::warn!(zone = %name, "zone stopped here: another server runs it now");
    }

    /// Starts ticking a restored zone: its outbox, persister and thread.
    pub(crate) fn start_zone(
        &self,
        zone_config: &ZoneConfig,
        zone: Zone,
        report: persist::RestoreReport,
        persist_state: Arc<PersistState>,
        lease: Arc<HeldLease>,
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
        let (outbox, gate) = self.outbox(zone_config, &persist_metrics)?;
        // From here on only this timeline's durable ticks are published, and
        // nothing recorded before past the tick it starts from.
        gate.begin(zone.epoch(), zone.tick_number(), persist_state.clone());
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
                lease: lease.clone(),
                epoch: zone.epoch(),
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
            replication_threads: config.replication_threads,
            replicate_alone_within: crate::zone_loop::REPLICATE_ALONE_WITHIN,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue_capacity);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let status = Arc::new(ZoneStatus::default());
        status.last_tick_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let runner = ZoneRunner::new(zone, settings, zone_metrics.clone(), Some(persist_link));
        let (thread_status, epoch, sockets) = (status.clone(), self.epoch, self.sockets.clone());
        let thread = std::thread::Builder::new()
            .name(format!("zone-{name}"))
            .spawn(move || zone_loop::run(runner, cmd_rx, ctl_rx, sockets, thread_status, epoch))
            .map_err(|e| format!("cannot start the zone thread: {e}"))?;
        tracing::info!(zone = %name, id = zone_config.zone_id, tick_hz = config.tick_hz, "zone started");
        Ok(Arc::new(ZoneHandle {
            name,
            commands: cmd_tx,
            control: ctl_tx,
            metrics: zone_metrics,
            status,
            lease,
            thread: Mutex::new(Some(thread)),
            persister: Mutex::new(Some(persister)),
        }))
    }
    /// Stops or resumes taking new players (a rollout's first step on the old
    /// server); with `notify`, connected players are asked to reconnect.
    pub(crate) fn cordon(&self, on: bool, notify: bool) {
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

/// Failed admin calls an address may make within [`FAILURE_WINDOW`]; past
/// them it is refused (429), right token or not, until the window ends.
const FAILURES_ALLOWED: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (the oldest windows go first).
const TRACKED_MAX: usize = 10_000;

/// Failed admin calls per client address: a guessed token costs a window.
#[derive(Debug, Default)]
pub(crate) struct AdminFailures(Mutex<std::collections::HashMap<std::net::IpAddr, (u32, Instant)>>);

impl AdminFailures {
    /// How long `ip` is still refused, if it is.
    pub(crate) fn refused_for(&self, ip: std::net::IpAddr) -> Option<Duration> {
        let failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (count, since) = failures.get(&ip)?;
        (*count >= FAILURES_ALLOWED).then(|| FAILURE_WINDOW.checked_sub(since.elapsed())).flatten()
    }

    pub(crate) fn failed(&self, ip: std::net::IpAddr) {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= TRACKED_MAX {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        if failures.len() >= TRACKED_MAX {
            return;
        }
        let (count, since) = failures.entry(ip).or_insert((0, Instant::now()));
        if since.elapsed() >= FAILURE_WINDOW {
            (*count, *since) = (0, Instant::now());
        }
        *count += 1;
        if *count == FAILURES_ALLOWED {
            tracing::warn!(%ip, "{FAILURES_ALLOWED} failed admin calls: refused for a minute");
        }
    }
}
