//! Zone state on storage: the persister task that writes snapshots and the
//! journal off the tick thread, and the restore that reads them back at start.
//!
//! Durability model: a tick is durable once its command batch is in the
//! journal, or a snapshot at or after it is stored. `durable_tick` tells the
//! tick thread how far that is, so it acknowledges only durable commands.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use respawn_api::admin::RestoreSource;
use respawn_sim::command::decode_batch;
use respawn_sim::{Zone, ZoneConfig};
use respawn_store::lease::Leases;
use respawn_store::outbox::Outbox;
use respawn_store::{
    file,
    history::{HistorySegment, StateHash},
    ColdSnapshots, Fence, HotSnapshots, Journal, JournalEntry, Sessions, SnapshotMeta, StoreError, StoreResult,
    StoredSnapshot,
};
use tokio::sync::mpsc;

use crate::history::{HistoryBuffer, HistorySettings};
use crate::lease::HeldLease;
use crate::metrics::PersistMetrics;

/// The storage roles a zone server uses.
#[derive(Debug, Clone)]
pub struct Stores {
    pub hot: Arc<dyn HotSnapshots>,
    pub cold: Arc<dyn ColdSnapshots>,
    /// The zones' archived history, for replay ([`crate::history`]).
    pub history: Arc<dyn ColdSnapshots>,
    pub journal: Arc<dyn Journal>,
    pub sessions: Arc<dyn Sessions>,
    /// The zones' leases: in the store whose writes they fence (the hot
    /// snapshots' and the journal's).
    pub leases: Arc<dyn Leases>,
    /// What backs each role, for logs: `hot=redis cold=mongodb ...`.
    pub description: String,
}

impl Stores {
    /// Everything in files under `dir`: the embedded default.
    pub fn files(dir: &Path) -> Self {
        Self {
            hot: Arc::new(file::FileHotSnapshots::new(dir)),
            cold: Arc::new(file::FileColdSnapshots::new(dir)),
            history: Arc::new(file::FileColdSnapshots::history(dir)),
            journal: Arc::new(file::FileJournal::new(dir)),
            sessions: Arc::new(file::FileSessions::new(dir)),
            leases: Arc::new(file::FileLeases::new(dir)),
            description: format!("files in {}", dir.display()),
        }
    }

    /// Files under `dir`, with Redis (`url`, key `prefix`) for the hot
    /// snapshots, the journal and the sessions, and MongoDB (`uri`,
    /// database) for the cold snapshots, when given.
    pub async fn connect(
        dir: &Path,
        redis: Option<(&str, &str)>,
        mongo: Option<(&str, &str)>,
    ) -> Result<Self, respawn_store::StoreError> {
        use respawn_store::redis_store::{RedisConn, RedisHotSnapshots, RedisJournal, RedisLeases, RedisSessions};
        let mut stores = Self::files(dir);
        let mut described = vec![stores.description.clone()];
        if let Some((url, prefix)) = redis {
            let conn = RedisConn::new(url, prefix)?;
            stores.hot = Arc::new(RedisHotSnapshots::new(conn.clone()));
            stores.journal = Arc::new(RedisJournal::new(conn.clone()));
            stores.sessions = Arc::new(RedisSessions::new(conn.clone()));
            stores.leases = Arc::new(RedisLeases::new(conn));
            described.push("hot snapshots, journal, sessions and zone leases on Redis".into());
        }
        if let Some((uri, db)) = mongo {
            stores.cold = Arc::new(respawn_store::mongo::MongoColdSnapshots::new(uri, db).await?);
            stores.history = Arc::new(respawn_store::mongo::MongoColdSnapshots::history(uri, db).await?);
            described.push("cold snapshots and history on MongoDB".into());
        }
        stores.description = described.join("; ");
        Ok(stores)
    }
}

#[derive(Debug, Clone)]
pub struct PersistSettings {
    /// Hot snapshot period.
    pub hot_every: Duration,
    /// Cold snapshot period (also written whenever a hot snapshot fails).
    pub cold_every: Duration,
    /// Cold snapshots kept per zone.
    pub keep_cold: usize,
    /// Journal batches held in memory while the journal store is down; past
    /// this the backlog is dropped and a snapshot is asked for instead.
    pub max_pending_ticks: usize,
    /// How long unattended ticks may wait for the journal (see [`PersistMsg::Tick`]).
    pub unattended_journal_every: Duration,
    /// Each zone's lease (see [`crate::lease`]): how long another server
    /// waits for a lost owner before it may take the zone.
    pub lease_ttl: Duration,
    pub history: HistorySettings,
}

impl Default for PersistSettings {
    fn default() -> Self {
        Self {
            hot_every: Duration::from_secs(5),
            cold_every: Duration::from_secs(300),
            keep_cold: 3,
            max_pending_ticks: 20 * 600,
            unattended_journal_every: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(2),
            history: HistorySettings::default(),
        }
    }
}

/// What the tick thread sends to its zone's persister.
#[derive(Debug)]
pub enum PersistMsg {
    /// The command batch accepted in `tick` (sent for every tick) and the
    /// tick's domain events, encoded for the outbox. `attended`: the tick had
    /// commands, events or players in the zone. Ticks that are none of these
    /// (an empty zone's NPCs going on) are journaled at most
    /// [`PersistSettings::unattended_journal_every`] (a second) late: losing them to a crash loses
    /// nobody anything, and an empty zone then costs one disk sync a second
    /// instead of one a tick.
    Tick { tick: u64, batch: Vec<u8>, events: Vec<Vec<u8>>, attended: bool },
    /// The whole zone after `tick`.
    Snapshot { tick: u64, bytes: Vec<u8> },
    /// Answered with the durable tick once everything sent before it was written (or tried).
    Flush(tokio::sync::oneshot::Sender<u64>),
}

/// Shared between a zone's tick thread and its persister.
#[derive(Debug, Default)]
pub struct PersistState {
    /// Highest tick whose effects are stored.
    pub durable_tick: AtomicU64,
    /// Told each time `durable_tick` moves on: the publisher waits for it.
    pub advanced: tokio::sync::Notify,
    /// Set by the persister when it needs a snapshot now (journal backlog dropped).
    pub snapshot_wanted: AtomicBool,
}

/// Everything one zone's persister works with.
#[derive(Debug)]
pub struct ZonePersistence {
    pub zone: u32,
    pub name: String,
    pub stores: Stores,
    pub outbox: Arc<Outbox>,
    pub settings: PersistSettings,
    pub state: Arc<PersistState>,
    pub metrics: PersistMetrics,
    /// The zone's lease: its fence goes with every write.
    pub lease: Arc<HeldLease>,
    /// The zone's timeline, recorded with its history.
    pub epoch: u64,
}

/// One zone's persister: runs until the tick thread drops its sender, then
/// writes what is left.
/// Messages the tick thread may have queued for the persister: a minute of
/// ticks at 20 Hz. When the queue is full (the disk or the stores stalled
/// that long) the zone stops ticking until it drains: the world waits rather
/// than memory growing or anything being dropped.
pub const QUEUE_CAPACITY: usize = 1_200;

/// Events a persister holds in memory while the outbox refuses them (a full
/// disk). Past it, it stops taking ticks from its queue: the queue fills and
/// the zone pauses (see [`QUEUE_CAPACITY`]) until the disk takes them.
pub const MAX_UNRECORDED_EVENTS: usize = 100_000;

/// How often a persister holding [`MAX_UNRECORDED_EVENTS`] tries the outbox again.
const OUTBOX_RETRY: Duration = Duration::from_millis(200);

/// The bounded queue from a tick thread to its persister.
pub fn queue() -> (mpsc::Sender<PersistMsg>, mpsc::Receiver<PersistMsg>) {
    mpsc::channel(QUEUE_CAPACITY)
}

pub async fn run_persister(zp: ZonePersistence, mut rx: mpsc::Receiver<PersistMsg>) {
    let ZonePersistence { zone, name, stores, outbox, settings, state, metrics, lease, epoch } = zp;
    let history = settings.history.enabled().then(|| HistoryBuffer::new(epoch, settings.max_pending_ticks));
    // The start: stored as a snapshot, and archived ([`checkpoint_after_restore`]).
    let started_at = state.durable_tick.load(Ordering::Relaxed);
    let mut p = Persister {
        snapshot_through: started_at,
        archived_through: started_at,
        journaled_through: started_at,
        trimmed_through: started_at,
        history,
        history_in_flight: None,
        history_sizes: VecDeque::new(),
        zone,
        name,
        stores,
        outbox,
        events: Vec::new(),
        settings,
        state,
        metrics,
        pending: VecDeque::new(),
        attended_through: 0,
        pending_since: None,
        latest: None,
        snapshot_due: false,
        last_cold: Instant::now(),
        cold_in_flight: None,
        hot_failures: 0,
        cold_failures: 0,
        journal_down_since: None,
        journal_retry_at: Instant::now(),
        dropping_until_snapshot: false,
        last_tick: 0,
        journal_length: 0,
        outbox_failing_since: None,
        lease,
    };
    let mut open = true;
    let mut flushes = Vec::new();
    while open {
        if p.events.len() >= MAX_UNRECORDED_EVENTS {
            // Backpressure: the ticks wait in the queue, not in memory here.
            tokio::time::sleep(OUTBOX_RETRY).await;
            p.write(false).await;
            continue;
        }
        match rx.recv().await {
            Some(PersistMsg::Flush(reply)) => flushes.push(reply),
            Some(msg) => p.take(msg),
            None => open = false,
        }
        while let Ok(msg) = rx.try_recv() {
            match msg {
                PersistMsg::Flush(reply) => flushes.push(reply),
                msg => p.take(msg),
            }
        }
        // A flush is answered with everything sent before it journaled.
        p.write(!flushes.is_empty()).await;
        for reply in flushes.drain(..) {
            let _ = reply.send(p.state.durable_tick.load(Ordering::Relaxed));
        }
    }
    p.write(true).await;
    p.finish_cold(true).await;
    // What it ran to the end goes into the history too.
    p.archive_history(true).await;
    tracing::info!(zone = %p.name, durable_tick = p.state.durable_tick.load(Ordering::Relaxed), "persister stopped");
}

/// A history segment being stored in its own task: its size, and then how
/// far back the kept history reaches.
struct HistoryPut {
    bytes: u64,
    last_tick: u64,
    task: tokio::task::JoinHandle<StoreResult<Duration>>,
}

/// A cold snapshot being stored in its own task.
struct ColdPut {
    tick: u64,
    started: Instant,
    task: tokio::task::JoinHandle<StoreResult<()>>,
}

struct Persister {
    zone: u32,
    name: String,
    stores: Stores,
    outbox: Arc<Outbox>,
    /// Events not yet in the outbox.
    events: Vec<Vec<u8>>,
    settings: PersistSettings,
    state: Arc<PersistState>,
    metrics: PersistMetrics,
    pending: VecDeque<JournalEntry>,
    /// The newest attended tick taken: a pending tick at or before it is
    /// journaled at once.
    attended_through: u64,
    /// When the oldest pending tick was taken.
    pending_since: Option<Instant>,
    latest: Option<StoredSnapshot>,
    snapshot_due: bool,
    last_cold: Instant,
    /// The cold snapshot being stored, off this loop: an unreachable MongoDB
    /// takes a whole call timeout to fail, and the journal must not wait
    /// behind it (that would hold acknowledgements back and widen the RPO).
    cold_in_flight: Option<ColdPut>,
    hot_failures: u64,
    cold_failures: u64,
    journal_down_since: Option<Instant>,
    journal_retry_at: Instant,
    dropping_until_snapshot: bool,
    last_tick: u64,
    journal_length: u64,
    /// When outbox appends began to fail (a full disk), until one succeeds.
    outbox_failing_since: Option<Instant>,
    lease: Arc<HeldLease>,
    /// The ticks not archived yet (none kept: `None`).
    history: Option<HistoryBuffer>,
    history_in_flight: Option<HistoryPut>,
    /// Sizes of the segments this persister stored, newest last, as many as are kept.
    history_sizes: VecDeque<u64>,
    /// The newest tick of a stored snapshot, of the history, of the journal, and
    /// what the journal was trimmed through.
    snapshot_through: u64,
    archived_through: u64,
    journaled_through: u64,
    trimmed_through: u64,
}

impl Persister {
    fn take(&mut self, msg: PersistMsg) {
        match msg {
            PersistMsg::Tick { tick, batch, events, attended } => {
                self.last_tick = tick;
                if attended {
                    self.attended_through = tick;
                }
                self.events.extend(events);
                let entry = JournalEntry { tick, batch };
                if let Some(history) = self.history.as_mut() {
                    let dropped = history.tick(&entry, respawn_store::unix_ms());
                    if dropped > 0 {
                        self.metrics.history_ticks_dropped(dropped);
                    }
                }
                if self.dropping_until_snapshot {
                    return;
                }
                self.pending.push_back(entry);
                self.pending_since.get_or_insert_with(Instant::now);
                if self.pending.len() > self.settings.max_pending_ticks {
                    tracing::error!(
                        zone = %self.name,
                        ticks = self.pending.len(),
                        "journal backlog too long while its store is down; dropping it until the next snapshot"
                    );
                    self.pending.clear();
                    self.dropping_until_snapshot = true;
                    self.state.snapshot_wanted.store(true, Ordering::Relaxed);
                }
            }
            PersistMsg::Flush(_) => {}
            PersistMsg::Snapshot { tick, bytes } => {
                self.last_tick = self.last_tick.max(tick);
                self.metrics.snapshot_bytes.set(bytes.len() as i64);
                if let (Some(history), Some(hash)) = (self.history.as_mut(), StateHash::of_snapshot(tick, &bytes)) {
                    history.hash(hash);
                }
                let meta = SnapshotMeta { zone: self.zone, tick, taken_at_ms: respawn_store::unix_ms() };
                self.latest = Some(StoredSnapshot { meta, bytes });
                self.snapshot_due = true;
            }
        }
    }

    fn durable(&mut self, tick: u64) {
        if self.state.durable_tick.fetch_max(tick, Ordering::Relaxed) < tick {
            self.state.advanced.notify_one();
        }
    }

    /// A snapshot at `tick` is stored: older journal entries are not needed.
    fn snapshot_stored(&mut self, tick: u64) {
        self.durable(tick);
        // The journal keeps what the history has not archived yet (see `trim_journal`).
        let needed_after = if self.history.is_some() { tick.min(self.archived_through) } else { tick };
        self.pending.retain(|e| e.tick > needed_after);
        self.dropping_until_snapshot = false;
    }

    /// Whether the pending ticks go to the journal now: at once when one of
    /// them is attended (or `force`), else once the oldest has waited
    /// [`PersistSettings::unattended_journal_every`]; never before a failed
    /// append's retry time.
    fn journal_due(&self, force: bool) -> bool {
        let Some(oldest) = self.pending.front() else { return false };
        let every = self.settings.unattended_journal_every;
        let waited = self.pending_since.is_some_and(|since| since.elapsed() >= every);
        Instant::now() >= self.journal_retry_at && (force || oldest.tick <= self.attended_through || waited)
    }

    /// Stores what was taken. `force`: the journal too, attended or not (a
    /// flush, the end).
    async fn write(&mut self, force: bool) {
        if self.lease.is_lost() {
            // Another server owns the zone: nothing more is stored from here
            // (the events too are of ticks never durable, so never published).
            self.pending.clear();
            self.pending_since = None;
            self.events.clear();
            self.latest = None;
            return;
        }
        // Events first: nothing becomes durable (journal, snapshot) before
        // the events of its ticks are safe in the outbox.
        if !self.write_events().await {
            return;
        }
        self.finish_cold(false).await;
        if self.snapshot_due {
            self.snapshot_due = false;
            self.write_snapshot().await;
        }
        if self.last_cold.elapsed() >= self.settings.cold_every {
            if let Some(snapshot) = self.latest.clone() {
                self.start_cold(snapshot);
            }
        }
        if self.journal_due(force) {
            self.append_journal().await;
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        self.archive_history(false).await;
        self.metrics.journal_pending.set(self.pending.len() as i64);
        let durable = self.state.durable_tick.load(Ordering::Relaxed);
        self.metrics.rpo_ticks.set(self.last_tick.saturating_sub(durable) as i64);
    }

    /// Appends pending events to the outbox; `false` if the disk refused.
    async fn write_events(&mut self) -> bool {
        if !self.events.is_empty() {
            let (outbox, events) = (self.outbox.clone(), std::mem::take(&mut self.events));
            let count = events.len() as u64;
            let result = tokio::task::spawn_blocking(move || outbox.append(&events).map_err(|e| (e, events))).await;
            match result {
                Ok(Ok(_)) => {
                    self.metrics.events_recorded.inc_by(count);
                    if let Some(since) = self.outbox_failing_since.take() {
                        let secs = since.elapsed().as_secs_f64();
                        tracing::info!(zone = %self.name, events = count, after_secs = secs, "outbox writes resumed");
                    }
                }
                Ok(Err((e, events))) => {
                    self.metrics.outbox_write_failures.inc();
                    if self.outbox_failing_since.is_none() {
                        self.outbox_failing_since = Some(Instant::now());
                        tracing::error!(
                            zone = %self.name,
                            error = %e,
                            "events cannot be written to the outbox; held in memory and retried"
                        );
                    }
                    self.events = events;
                    self.metrics.events_unrecorded.set(self.events.len() as i64);
                    return false;
                }
                Err(e) => {
                    tracing::error!(zone = %self.name, error = %e, "outbox task failed");
                    return false;
                }
            }
        }
        self.metrics.events_unrecorded.set(0);
        let stats = self.outbox.stats();
        self.metrics.outbox(stats);
        true
    }

    async fn write_snapshot(&mut self) {
        let Some(snapshot) = self.latest.clone() else { return };
        let tick = snapshot.meta.tick;
        let started = Instant::now();
        match self.stores.hot.put(snapshot.clone(), self.lease.fence()).await {
            Err(StoreError::Fenced { newer, .. }) => self.lease.superseded(newer),
            Ok(()) => {
                self.metrics.snapshot("hot", true, started.elapsed().as_secs_f64());
                if self.hot_failures > 0 {
                    tracing::info!(zone = %self.name, tick, "hot snapshots are being written again");
                }
                self.hot_failures = 0;
                self.metrics.failures_in_row("hot", 0);
                self.snapshot_stored(tick);
                self.snapshot_through = tick;
                self.trim_journal().await;
            }
            Err(e) => {
                self.metrics.snapshot("hot", false, started.elapsed().as_secs_f64());
                self.hot_failures += 1;
                self.metrics.failures_in_row("hot", self.hot_failures);
                if self.hot_failures == 1 || self.hot_failures.is_multiple_of(12) {
                    tracing::warn!(
                        zone = %self.name,
                        tick,
                        failures_in_row = self.hot_failures,
                        error = %e,
                        "hot snapshot failed; writing a cold snapshot instead"
                    );
                }
                // Lost meanwhile (the platform said so): nothing more is written.
                if !self.lease.is_lost() {
                    self.start_cold(snapshot);
                }
            }
        }
    }

    /// Starts storing `snapshot` in the cold store unless one is on its way already.
    fn start_cold(&mut self, snapshot: StoredSnapshot) {
        if self.cold_in_flight.is_some() {
            return;
        }
        self.last_cold = Instant::now();
        let (cold, zone, keep, name) =
            (self.stores.cold.clone(), self.zone, self.settings.keep_cold, self.name.clone());
        let (tick, fence) = (snapshot.meta.tick, self.lease.fence());
        let task = tokio::spawn(async move {
            cold.put(snapshot, fence).await?;
            if let Err(e) = cold.prune(zone, keep).await {
                tracing::debug!(zone = %name, error = %e, "cold snapshot prune failed");
            }
            Ok(())
        });
        self.cold_in_flight = Some(ColdPut { tick, started: Instant::now(), task });
    }

    /// Takes the result of the cold snapshot on its way, once it has one
    /// (with `wait`, waits for it: the persister is stopping).
    async fn finish_cold(&mut self, wait: bool) {
        if !self.cold_in_flight.as_ref().is_some_and(|c| wait || c.task.is_finished()) {
            return;
        }
        if wait && self.lease.is_lost() {
            // Another server owns the zone: what this one was storing is of no use, and not waited for.
            if let Some(cold) = self.cold_in_flight.take() {
                cold.task.abort();
            }
            return;
        }
        let Some(ColdPut { tick, started, task }) = self.cold_in_flight.take() else { return };
        let result = task
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend { backend: "cold snapshots", message: e.to_string() }));
        match result {
            Err(StoreError::Fenced { newer, .. }) => self.lease.superseded(newer),
            Ok(()) => {
                self.metrics.snapshot("cold", true, started.elapsed().as_secs_f64());
                self.cold_failures = 0;
                self.metrics.failures_in_row("cold", 0);
                self.snapshot_stored(tick);
            }
            Err(e) => {
                self.metrics.snapshot("cold", false, started.elapsed().as_secs_f64());
                self.cold_failures += 1;
                self.metrics.failures_in_row("cold", self.cold_failures);
                if self.cold_failures == 1 || self.cold_failures.is_multiple_of(12) {
                    tracing::error!(zone = %self.name, tick, error = %e, "cold snapshot failed too");
                }
            }
        }
    }

    /// Takes the result of the segment on its way once it has one, then
    /// starts storing the next when one is due (`last`: everything durable,
    /// waited for; the persister is stopping).
    async fn archive_history(&mut self, last: bool) {
        self.finish_history(last).await;
        self.start_history(last);
        if last {
            self.finish_history(true).await;
        }
    }

    async fn finish_history(&mut self, wait: bool) {
        if self.history_in_flight.as_ref().is_some_and(|h| wait || h.task.is_finished()) {
            if let Some(HistoryPut { bytes, last_tick, task }) = self.history_in_flight.take() {
                let result = task
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Backend { backend: "history", message: e.to_string() }));
                self.metrics.history_segment(result.is_ok());
                match result {
                    Ok(reach) => {
                        self.history_sizes.push_back(bytes);
                        while self.history_sizes.len() > self.settings.history.keep() {
                            self.history_sizes.pop_front();
                        }
                        self.metrics.history_retained(self.history_sizes.iter().sum(), reach);
                        self.archived_through = self.archived_through.max(last_tick);
                        self.trim_journal().await;
                    }
                    Err(StoreError::Fenced { newer, .. }) => self.lease.superseded(newer),
                    Err(e) => {
                        tracing::warn!(zone = %self.name, error = %e, "history segment not stored; those ticks are left out")
                    }
                }
            }
        }
    }

    fn start_history(&mut self, last: bool) {
        if self.history_in_flight.is_some() || self.lease.is_lost() {
            return;
        }
        let durable = self.state.durable_tick.load(Ordering::Relaxed);
        let segment = match self.history.as_mut() {
            Some(history) if last || history.due(self.settings.history.segment) => history.cut(durable),
            _ => None,
        };
        let Some(segment) = segment else { return };
        let bytes = segment.encode();
        let size = bytes.len() as u64;
        let meta = SnapshotMeta { zone: self.zone, tick: segment.last_tick(), taken_at_ms: segment.first_at_ms };
        let keep = self.history_keep(size);
        let (store, zone, fence) = (self.stores.history.clone(), self.zone, self.lease.fence());
        let task = tokio::spawn(async move {
            store.put(StoredSnapshot { meta, bytes }, fence).await?;
            store.prune(zone, keep).await?;
            let oldest = store.list(zone).await?.iter().map(|m| m.taken_at_ms).min().unwrap_or(meta.taken_at_ms);
            Ok(Duration::from_millis(respawn_store::unix_ms().saturating_sub(oldest)))
        });
        self.history_in_flight = Some(HistoryPut { bytes: size, last_tick: meta.tick, task });
    }

    /// Segments to keep with one of `size` more: the window's, fewer if
    /// their sizes pass the cap. Only the sizes of the segments this
    /// persister archived are known: the ones before it (a zone just
    /// adopted or restarted) are kept while what it knows fits, not pruned
    /// for want of a size.
    fn history_keep(&self, size: u64) -> usize {
        let mut total = size;
        let older = self
            .history_sizes
            .iter()
            .rev()
            .take_while(|s| {
                total += **s;
                total <= self.settings.history.max_bytes
            })
            .count();
        match older == self.history_sizes.len() && size <= self.settings.history.max_bytes {
            true => self.settings.history.keep(),
            false => (older + 1).min(self.settings.history.keep()),
        }
    }

    /// Drops the journal's ticks a stored snapshot covers, and (history
    /// kept) the history too: a server that takes over after a crash
    /// archives the rest from the journal ([`checkpoint_after_restore`]).
    async fn trim_journal(&mut self) {
        let through = match self.history {
            Some(_) => self.snapshot_through.min(self.archived_through),
            None => self.snapshot_through,
        };
        if through <= self.trimmed_through {
            return;
        }
        match self.stores.journal.trim_through(self.zone, through).await {
            Ok(()) => {
                self.trimmed_through = through;
                self.journal_length = self.journaled_through.saturating_sub(through);
                self.metrics.journal_length.set(self.journal_length as i64);
            }
            Err(e) => tracing::debug!(zone = %self.name, error = %e, "journal trim failed"),
        }
    }

    async fn append_journal(&mut self) {
        let entries: Vec<JournalEntry> = self.pending.iter().cloned().collect();
        let (count, last) = (entries.len() as u64, entries.last().map_or(0, |e| e.tick));
        match self.stores.journal.append(self.zone, entries, self.lease.fence()).await {
            Err(StoreError::Fenced { newer, .. }) => self.lease.superseded(newer),
            Ok(()) => {
                self.pending.clear();
                self.durable(last);
                self.journaled_through = last;
                self.journal_length += count;
                self.metrics.journal_length.set(self.journal_length as i64);
                if let Some(since) = self.journal_down_since.take() {
                    tracing::info!(
                        zone = %self.name,
                        down_for_ms = since.elapsed().as_millis() as u64,
                        "journal appends resumed"
                    );
                }
            }
            Err(StoreError::Invalid(why)) => {
                // The stored journal is ahead of this zone (it belongs to a
                // state that was not restored); it cannot be appended to.
                tracing::warn!(zone = %self.name, why = %why, "journal out of step; resetting it");
                self.metrics.journal_failures.inc();
                if self.stores.journal.reset(self.zone, self.lease.fence()).await.is_ok() {
                    self.journal_length = 0;
                }
            }
            Err(e) => {
                self.metrics.journal_failures.inc();
                self.journal_retry_at = Instant::now() + Duration::from_millis(500);
                if self.journal_down_since.is_none() {
                    self.journal_down_since = Some(Instant::now());
                    tracing::warn!(
                        zone = %self.name,
                        error = %e,
                        "journal appends paused; a crash now would lose the ticks since the last snapshot \
                         (see respawn_zone_rpo_ticks)"
                    );
                }
            }
        }
    }
}

/// Where a restored zone came from.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub source: RestoreSource,
    pub snapshot_tick: u64,
    pub replayed_ticks: u64,
    /// Snapshots refused on the way, with why.
    pub refused: Vec<String>,
    /// Events of the replayed ticks, to append to the outbox again.
    pub replayed_events: Vec<Vec<u8>>,
    /// The timeline the journal's ticks ran on (the restored zone goes on in
    /// a new one): what the history archives them under.
    pub journal_epoch: u64,
    pub took: Duration,
}

/// Loads the newest valid snapshot (hot or cold, whichever has the higher
/// tick; hot on a tie), replays the journal after it, and returns the zone
/// ready for its next tick. Unreachable stores are skipped with a log line; a
/// zone with nothing stored starts fresh.
///
/// A zone never starts fresh while a store it could not reach might hold its
/// state: then the restore is retried for [`RESTORE_PATIENCE`], and fails
/// after that (the supervisor restarts the process, which tries again).
pub async fn restore(config: &ZoneConfig, stores: &Stores) -> Result<(Zone, RestoreReport), String> {
    restore_reading(config, stores, respawn_sim::snapshot::FORMAT_VERSION, None).await
}

/// [`restore`] by a server that reads only snapshots of `format` (the
/// `[testing] snapshot_format` setting stands in for another build). With
/// `released_at`, the zone was handed over at that tick: a hot snapshot at
/// or after it is the newest state there is, and the cold store (slower, and
/// only ever older) is not listed.
pub async fn restore_reading(
    config: &ZoneConfig,
    stores: &Stores,
    format: u16,
    released_at: Option<u64>,
) -> Result<(Zone, RestoreReport), String> {
    let started = Instant::now();
    loop {
        match restore_once(config, stores, started, format, released_at).await {
            Ok(restored) => return Ok(restored),
            Err(RestoreFailure::Unreadable(why)) => return Err(why),
            Err(RestoreFailure::Unreachable(why)) if started.elapsed() < RESTORE_PATIENCE => {
                tracing::warn!(zone = %config.name, why = %why, "no state found while stores are unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(RestoreFailure::Unreachable(why)) => {
                return Err(format!("refusing to start zone {} fresh: {why} for {RESTORE_PATIENCE:?}", config.name))
            }
        }
    }
}

/// A timeline id that no earlier start of any zone has used (in practice):
/// wall-clock nanoseconds mixed with the process id.
pub fn new_epoch() -> u64 {
    let nanos = respawn_api::clock::unix_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// How long a start waits for unreachable snapshot stores.
pub const RESTORE_PATIENCE: Duration = Duration::from_secs(10);

/// Why a restore found no state to start from.
enum RestoreFailure {
    /// A store could not be reached: it may hold the state, so wait for it.
    Unreachable(String),
    /// The state exists in a format this server cannot read: starting fresh would discard it.
    Unreadable(String),
}

async fn restore_once(
    config: &ZoneConfig,
    stores: &Stores,
    started: Instant,
    format: u16,
    released_at: Option<u64>,
) -> Result<(Zone, RestoreReport), RestoreFailure> {
    let zone_id = config.zone_id;
    let mut unreachable = Vec::new();
    let mut candidates: Vec<(RestoreSource, SnapshotMeta, Option<Vec<u8>>)> = Vec::new();
    match stores.hot.recent(zone_id).await {
        Ok(snaps) => candidates.extend(snaps.into_iter().map(|s| (RestoreSource::Hot, s.meta, Some(s.bytes)))),
        Err(e) => {
            tracing::warn!(zone = %config.name, error = %e, "hot snapshots unreachable at start");
            unreachable.push(format!("hot snapshots: {e}"));
        }
    }
    let hot_is_newest = released_at.is_some_and(|t| candidates.iter().any(|c| c.1.tick >= t));
    if !hot_is_newest {
        match stores.cold.list(zone_id).await {
            Ok(metas) => candidates.extend(metas.into_iter().map(|m| (RestoreSource::Cold, m, None))),
            Err(e) => {
                tracing::warn!(zone = %config.name, error = %e, "cold snapshots unreachable at start");
                unreachable.push(format!("cold snapshots: {e}"));
            }
        }
    }
    candidates
        .sort_by(|a, b| b.1.tick.cmp(&a.1.tick).then((a.0 == RestoreSource::Cold).cmp(&(b.0 == RestoreSource::Cold))));
    let mut refused = Vec::new();
    let mut unreadable_format = None;
    for (source, meta, bytes) in candidates {
        let bytes = match bytes {
            Some(b) => b,
            None => match stores.cold.get(zone_id, meta.tick).await {
                Ok(Some(s)) => s.bytes,
                Ok(None) => continue,
                Err(e) => {
                    unreachable.push(format!("cold snapshot at tick {}: {e}", meta.tick));
                    refused.push(format!("{source} snapshot at tick {}: {e}", meta.tick));
                    continue;
                }
            },
        };
        let found = respawn_sim::snapshot::format_of(&bytes);
        if found.is_some_and(|f| !respawn_sim::snapshot::readable(f, format)) {
            let found = found.unwrap_or_default();
            unreadable_format = unreadable_format.or(Some(found));
            tracing::error!(zone = %config.name, %source, tick = meta.tick, found, format, "snapshot format not readable");
            refused.push(format!(
                "{source} snapshot at tick {}: format {found}, this server reads format {format}",
                meta.tick
            ));
            continue;
        }
        let zone = match Zone::decode_snapshot(&bytes) {
            Ok(z) if z.config().zone_id == zone_id => z,
            Ok(z) => {
                refused.push(format!(
                    "{source} snapshot at tick {}: belongs to zone {}",
                    meta.tick,
                    z.config().zone_id
                ));
                continue;
            }
            Err(e) => {
                tracing::error!(zone = %config.name, %source, tick = meta.tick, error = %e, "snapshot refused");
                refused.push(format!("{source} snapshot at tick {}: {e}", meta.tick));
                continue;
            }
        };
        if zone.config() != config {
            tracing::warn!(zone = %config.name, "zone config changed since the snapshot; the snapshot's rules are kept");
        }
        let snapshot_tick = zone.tick_number();
        let mut replayed_events = Vec::new();
        let journal_epoch = zone.epoch();
        let (zone, replayed) = replay(zone, stores, &config.name, &mut replayed_events).await;
        let report = RestoreReport {
            source,
            snapshot_tick,
            replayed_ticks: replayed,
            refused,
            replayed_events,
            journal_epoch,
            took: started.elapsed(),
        };
        return Ok((zone, report));
    }
    if let Some(found) = unreadable_format {
        return Err(RestoreFailure::Unreadable(format!(
            "refusing to start zone {} fresh: its stored state is in snapshot format {found} and this server \
             reads format {format} ({})",
            config.name,
            refused.join("; ")
        )));
    }
    if !unreachable.is_empty() {
        return Err(RestoreFailure::Unreachable(unreachable.join("; ")));
    }
    // No usable snapshot: a new timeline. The journal may still hold the
    // zone's life since its first tick (a crash before the first snapshot).
    let mut zone = Zone::new(config.clone()).expect("validated zone config");
    zone.set_epoch(new_epoch());
    let mut replayed_events = Vec::new();
    let journal_epoch = zone.epoch();
    let (zone, replayed) = replay(zone, stores, &config.name, &mut replayed_events).await;
    let source = if replayed > 0 { RestoreSource::Journal } else { RestoreSource::Fresh };
    let took = started.elapsed();
    let report = RestoreReport {
        source,
        snapshot_tick: 0,
        replayed_ticks: replayed,
        refused,
        replayed_events,
        journal_epoch,
        took,
    };
    Ok((zone, report))
}

/// The journal's ticks through `zone`'s after the newest the history holds,
/// archived as one segment (their times reckoned back from now at
/// `tick_period`: the journal does not keep them).
async fn archive_journal(zone: &Zone, journal_epoch: u64, stores: &Stores, fence: Fence, tick_period: Duration) {
    let (zone_id, name, tick) = (zone.config().zone_id, &zone.config().name, zone.tick_number());
    let archived = match stores.history.list(zone_id).await {
        Ok(metas) => metas.iter().map(|m| m.tick).max().unwrap_or(0),
        Err(e) => {
            return tracing::warn!(zone = %name, error = %e, "history unreachable at start; the journal's ticks are not archived")
        }
    };
    let entries = match stores.journal.read_after(zone_id, archived).await {
        Ok(entries) => entries,
        Err(e) => {
            return tracing::warn!(zone = %name, error = %e, "journal unreadable at start; its ticks are not archived")
        }
    };
    // One run of consecutive ticks, through the restored one.
    let mut run: Vec<JournalEntry> = Vec::new();
    for entry in entries.into_iter().take_while(|e| e.tick <= tick) {
        if run.last().is_some_and(|last| last.tick + 1 != entry.tick) {
            run.clear();
        }
        run.push(entry);
    }
    let (Some(first), Some(last)) = (run.first().map(|e| e.tick), run.last().map(|e| e.tick)) else { return };
    let last_at_ms = respawn_store::unix_ms();
    let first_at_ms = last_at_ms.saturating_sub((last - first) * tick_period.as_millis() as u64);
    let segment = HistorySegment { epoch: journal_epoch, first_at_ms, last_at_ms, entries: run, hashes: Vec::new() };
    let stored = StoredSnapshot {
        meta: SnapshotMeta { zone: zone_id, tick: last, taken_at_ms: first_at_ms },
        bytes: segment.encode(),
    };
    match stores.history.put(stored, fence).await {
        Ok(()) => tracing::info!(zone = %name, first, last, "the journal's ticks the history lacked are archived"),
        Err(e) => tracing::warn!(zone = %name, error = %e, first, last, "the journal's ticks could not be archived"),
    }
}

/// Applies the journal's contiguous run of ticks after the zone's tick, and
/// collects the events those ticks produce (they may not have reached the
/// outbox before the crash; ids are deterministic, so resending is safe).
async fn replay(mut zone: Zone, stores: &Stores, name: &str, events: &mut Vec<Vec<u8>>) -> (Zone, u64) {
    let from = zone.tick_number();
    let replayed = match stores.journal.read_after(zone.config().zone_id, from).await {
        Ok(entries) => apply_journal(&mut zone, entries, name, events),
        Err(e) => {
            tracing::warn!(zone = %name, error = %e, "journal unreachable at start; resuming at the snapshot's tick");
            0
        }
    };
    // The lost process published events of durable ticks only, but a journal
    // out of reach now may have held ticks after the last one replayed: what
    // this zone does next gets ids of a timeline of its own, or the ledger
    // would take its events for duplicates and drop them. (What it recorded
    // and never made durable, the publisher withdraws.)
    zone.set_epoch(new_epoch());
    (zone, replayed)
}

/// Ticks `zone` through the contiguous run of `entries` after its tick; how many.
fn apply_journal(zone: &mut Zone, entries: Vec<JournalEntry>, name: &str, events: &mut Vec<Vec<u8>>) -> u64 {
    let mut replayed = 0;
    for entry in entries {
        if entry.tick != zone.tick_number() + 1 {
            tracing::warn!(zone = %name, expected = zone.tick_number() + 1, found = entry.tick, "journal gap; replay stops");
            break;
        }
        match decode_batch(&entry.batch) {
            Ok(batch) => {
                events.extend(crate::events::encode_all(&zone.tick(&batch).events));
                replayed += 1;
            }
            Err(e) => {
                tracing::error!(zone = %name, tick = entry.tick, error = %e, "corrupt journal entry; replay stops");
                break;
            }
        }
    }
    replayed
}

/// Stores the starting state as a snapshot and clears the journal, so
/// the journal only ever holds ticks after a stored snapshot. With
/// `history` (the tick period; none when no history is kept), the journal's
/// ticks the history lacks go into it first: a lost owner archived only up
/// to its last segment, and it kept its journal from there for this.
pub async fn checkpoint_after_restore(
    zone: &Zone,
    journal_epoch: u64,
    stores: &Stores,
    state: &PersistState,
    fence: Fence,
    history: Option<Duration>,
) {
    if let Some(tick_period) = history {
        archive_journal(zone, journal_epoch, stores, fence, tick_period).await;
    }
    let tick = zone.tick_number();
    let snapshot = StoredSnapshot {
        meta: SnapshotMeta { zone: zone.config().zone_id, tick, taken_at_ms: respawn_store::unix_ms() },
        bytes: zone.encode_snapshot(),
    };
    let stored = match stores.hot.put(snapshot.clone(), fence).await {
        Ok(()) => true,
        Err(_) => stores.cold.put(snapshot, fence).await.is_ok(),
    };
    if !stored {
        // Keep the journal: it is still the only record of the replayed ticks.
        tracing::warn!(zone = %zone.config().name, tick, "no store took the start-up snapshot");
        return;
    }
    state.durable_tick.fetch_max(tick, Ordering::Relaxed);
    state.advanced.notify_one();
    if let Err(e) = stores.journal.reset(zone.config().zone_id, fence).await {
        tracing::warn!(zone = %zone.config().name, error = %e, "journal could not be reset at start");
    }
}
