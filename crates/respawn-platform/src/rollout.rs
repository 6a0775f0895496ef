//! Rolling updates of the game servers, run by the platform server: the
//! guide's seven steps, either waiting for players to leave the old version
//! (guide mode) or moving every zone live at a tick boundary (hand-off).
//!
//! A zone has one owner at a time. Moving one is three calls to the zone
//! servers' admin API: the old owner *releases* it (a last tick, stored,
//! then no more ticks), the new owner *adopts* it (loads that state, refusing
//! anything older), the old owner *redirects* its clients to the new address.
//! A refused adoption *resumes* the zone where it was, and every zone already
//! moved goes back the same way: the rollout is rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::future::Future;

use respawn_api::admin::{Adopted, Redirected, Released, Resumed, ServerInfo};
use respawn_api::http::CallError;
use respawn_api::replay::{Divergence, ReplayTrace, ReplayWindow};
use respawn_store::ops::{OpsStore, RolloutPut};
use respawn_store::{unix_ms, Registry, ServerEntry, StoreError, StoreResult};
use serde::{Deserialize, Serialize};

use crate::fleet::FleetAdmin;

/// How players move to the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The guide's way: new players go to the new version, the old one waits
    /// until its players have gone (they are asked to reconnect), then its
    /// zones move with their stored state.
    Guide,
    /// Zones move at once, players with them (a migrate notice).
    Handoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Succeeded,
    /// Stopped; everything it had changed was put back.
    RolledBack,
    /// Stopped with something left as the log says (a server that vanished mid-way).
    Failed,
}

/// What was asked for.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A server id, its WebSocket address or a version; empty with `from`:
    /// any standby server that can take `from`'s zones.
    pub to: String,
    /// Only this server's zones move (an evacuation), whatever the versions.
    pub from: Option<String>,
    pub mode: Mode,
    /// Guide mode: how long to wait for the old version's players to go
    /// before moving the zones of those still there live.
    pub wait: Duration,
    pub rollback: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the rollout started.
    pub at_ms: u64,
    pub step: u8,
    pub message: String,
}

/// One zone's move.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneMove {
    pub zone: String,
    pub from: String,
    pub to: String,
    /// The last tick the old owner ran.
    pub tick: u64,
    pub players: u64,
    /// From the release call to the clients being redirected: how long the zone did not tick.
    pub pause_ms: u64,
    pub state: MoveState,
}

/// Where a moved zone ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveState {
    /// On the new server.
    Moved,
    /// Back where it was: the rollout was rolled back.
    Returned,
}

/// A rollout as the API shows it, and as the operations store keeps it for
/// every platform instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    pub mode: Mode,
    pub rollback: bool,
    pub requested: String,
    /// The one server whose zones move (an evacuation), if that is what this is.
    pub evacuation: Option<String>,
    pub state: State,
    pub step: u8,
    pub steps: u8,
    pub step_name: String,
    pub target: Option<String>,
    pub to_version: Option<String>,
    pub from_versions: Vec<String>,
    /// The servers whose zones move (their ids).
    #[serde(default)]
    pub from_servers: Vec<String>,
    pub players_before: u64,
    pub zones: Vec<ZoneMove>,
    pub error: Option<String>,
    pub log: Vec<LogLine>,
    pub took_ms: u64,
    /// When it started (Unix ms): an instance taking it over carries on its clock.
    #[serde(default)]
    pub started_at_ms: u64,
    /// The platform instance running it (another one takes over if it stops).
    #[serde(default)]
    pub runner: String,
    /// Step 2's report: each zone's last minutes replayed on its build and on the new one.
    #[serde(default)]
    pub replay_checks: Vec<ReplayCheck>,
}

/// How much of each zone's history step 2 replays on both builds.
pub const REPLAY_CHECK_SECS: u32 = 120;

/// One zone's last [`REPLAY_CHECK_SECS`] replayed on the build that runs it
/// and on the rollout's target: a report for the operator, not a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayCheck {
    Compared(Divergence),
    /// No comparison: no history kept yet, or a build that cannot replay.
    NotRun {
        zone: String,
        why: String,
    },
}

impl ReplayCheck {
    /// The rollout log's lines for it.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ReplayCheck::Compared(found) => found.lines(),
            ReplayCheck::NotRun { zone, why } => vec![format!("zone {zone}: not compared: {why}")],
        }
    }
}

/// The guide's seven steps, as the log names them.
pub const STEPS: [&str; 7] = [
    "the new version is running",
    "it passes its health check",
    "it is registered with the load balancer",
    "only new players go to it",
    "the old servers wait until they have 0 players",
    "the old servers' zones are snapshotted and handed over",
    "the old servers shut down gracefully",
];

/// How long a rollout's runner holds it without renewing (every third of
/// this): a runner that stops is replaced this long after, by whichever
/// platform instance looks first (every [`WATCH_EVERY`]). Players of a zone
/// caught mid-move wait that long; a zone's own lease is as long.
pub const RUNNER_LEASE: Duration = Duration::from_secs(2);
/// How often every instance looks for a rollout whose runner stopped.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The rollouts of every platform instance, kept in the operations store:
/// one runs at a time, whichever instance started it runs it (holding the
/// store's runner lease), and another instance takes over one whose runner
/// stopped.
#[derive(Debug)]
pub struct Rollouts {
    ops: Arc<dyn OpsStore>,
    /// This instance, as a runner.
    runner: String,
}

impl Rollouts {
    /// Rollouts kept in `ops`, run by this instance under the name `runner`.
    pub fn new(ops: Arc<dyn OpsStore>, runner: String) -> Self {
        Self { ops, runner }
    }

    /// This instance's name as a runner.
    pub fn runner(&self) -> &str {
        &self.runner
    }

    /// The current (or last) rollout of any instance.
    pub async fn current(&self) -> StoreResult<Option<Rollout>> {
        self.ops.rollouts().await?.current.as_deref().map(decode).transpose()
    }

    /// A rollback's plan: back to the version the last successful rollout left, the same way.
    pub async fn rollback_plan(&self, wait: Duration) -> Result<Plan, String> {
        let records = self.ops.rollouts().await.map_err(unavailable)?;
        let last = records.last_succeeded.as_deref().map(decode).transpose().map_err(|e| e.to_string())?;
        let left = last.and_then(|r| Some((r.mode, r.from_versions.first()?.clone())));
        let (mode, version) = left.ok_or("no rollout has succeeded on this platform: nothing to roll back")?;
        Ok(Plan { to: version, from: None, mode, wait, rollback: true })
    }

    /// Starts `plan` in the background, moving zones through `admin` (none:
    /// refused, the server key is not configured); refused while another
    /// one runs, on any instance. A rollout whose runner stopped is taken
    /// over first (and this one refused).
    pub async fn start<A: ZoneServers>(
        self: &Arc<Self>,
        registry: Arc<dyn Registry>,
        admin: Option<A>,
        plan: Plan,
    ) -> Result<Rollout, String> {
        if !self.ops.rollout_lease(&self.runner, RUNNER_LEASE).await.map_err(unavailable)? {
            return Err("a rollout is already running: see GET /v1/rollouts/current".into());
        }
        let previous = match self.current().await {
            Ok(previous) => previous,
            Err(e) => {
                self.give_up_lease().await;
                return Err(unavailable(e));
            }
        };
        if let Some(orphan) = previous.as_ref().filter(|r| r.state == State::Running) {
            let why = format!(
                "rollout {} was left running by {}, which stopped; this instance is taking it over: see GET /v1/rollouts/current",
                orphan.id, orphan.runner
            );
            self.clone().take_over(registry, admin, orphan.clone());
            return Err(why);
        }
        let rollout = Rollout {
            id: previous.map_or(0, |r| r.id) + 1,
            mode: plan.mode,
            rollback: plan.rollback,
            requested: plan.to.clone(),
            evacuation: plan.from.clone(),
            state: State::Running,
            step: 0,
            steps: STEPS.len() as u8,
            step_name: "starting".into(),
            target: None,
            to_version: None,
            from_versions: Vec::new(),
            from_servers: Vec::new(),
            players_before: 0,
            zones: Vec::new(),
            error: None,
            log: Vec::new(),
            took_ms: 0,
            started_at_ms: unix_ms(),
            runner: self.runner.clone(),
            replay_checks: Vec::new(),
        };
        let progress = Progress::new(self.clone(), rollout.clone());
        if let Err(why) = progress.save(false).await {
            self.give_up_lease().await;
            return Err(why);
        }
        progress.write_from_now();
        tokio::spawn(async move {
            let outcome = match &admin {
                Some(admin) => Run { plan: &plan, registry: registry.as_ref(), admin, p: &progress }.execute().await,
                None => Outcome::RolledBack(
                    "the server key is not configured: start the platform server with --server-key".into(),
                ),
            };
            progress.finish(outcome).await;
        });
        Ok(rollout)
    }

    /// Looks every [`WATCH_EVERY`] for a rollout whose runner stopped (its
    /// lease ran out while it was running) and takes it over, until `stop`.
    pub async fn watch<A: ZoneServers + Clone>(
        self: Arc<Self>,
        registry: Arc<dyn Registry>,
        admin: A,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            if let Some(taken) = self.take_over_orphan(registry.clone(), admin.clone()).await {
                let _ = taken.await;
            }
        }
    }

    /// Takes over the current rollout if it is running and its runner's
    /// lease ran out; the task finishing it.
    pub async fn take_over_orphan<A: ZoneServers>(
        self: &Arc<Self>,
        registry: Arc<dyn Registry>,
        admin: A,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let records = self.ops.rollouts().await.ok()?;
        if records.runner.is_some() {
            return None;
        }
        let orphan = decode(records.current.as_deref()?).ok().filter(|r| r.state == State::Running)?;
        if !self.ops.rollout_lease(&self.runner, RUNNER_LEASE).await.ok()? {
            return None;
        }
        // Read again under the lease: it may have ended in between.
        match self.current().await {
            Ok(Some(orphan)) if orphan.state == State::Running => {
                Some(self.clone().take_over(registry, Some(admin), orphan))
            }
            _ => {
                tracing::debug!(id = orphan.id, "the rollout ended before it was taken over");
                self.give_up_lease().await;
                None
            }
        }
    }

    /// Finishes `orphan` (this instance holds the lease now): see [`Run::resume`].
    fn take_over<A: ZoneServers>(
        self: Arc<Self>,
        registry: Arc<dyn Registry>,
        admin: Option<A>,
        mut orphan: Rollout,
    ) -> tokio::task::JoinHandle<()> {
        let stopped = std::mem::replace(&mut orphan.runner, self.runner.clone());
        tracing::warn!(id = orphan.id, %stopped, step = orphan.step, "taking over a rollout whose runner stopped");
        let plan = Plan {
            to: orphan.requested.clone(),
            from: orphan.evacuation.clone(),
            mode: orphan.mode,
            wait: Duration::ZERO,
            rollback: orphan.rollback,
        };
        let progress = Progress::new(self, orphan);
        progress.write_from_now();
        progress.log(format!("taken over by {} from {stopped}, which stopped", progress.rollouts.runner));
        tokio::spawn(async move {
            let outcome = match &admin {
                Some(admin) => Run { plan: &plan, registry: registry.as_ref(), admin, p: &progress }.resume().await,
                None => Outcome::Failed(
                    "the server key is not configured: this instance cannot call the zone servers".into(),
                ),
            };
            progress.finish(outcome).await;
        })
    }

    async fn give_up_lease(&self) {
        let current = match self.ops.rollouts().await {
            Ok(records) => records.current.unwrap_or_default(),
            Err(_) => return,
        };
        // Rewritten as it is, the lease given up in the same step.
        let put = RolloutPut { current: &current, succeeded: None, done: true };
        if let Err(e) = self.ops.rollout_put(&self.runner, put).await {
            tracing::warn!(error = %e, "could not give up the rollout lease; it runs out by itself");
        }
    }
}

/// This platform instance's name as a rollout runner: its host and
/// process, and a number when one process runs several.
pub fn runner_name() -> String {
    static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "localhost".into());
    let name = format!("{host} pid {}", std::process::id());
    match INSTANCES.fetch_add(1, Ordering::Relaxed) {
        0 => name,
        n => format!("{name} #{}", n + 1),
    }
}

fn decode(record: &str) -> StoreResult<Rollout> {
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt(format!("rollout record: {e}")))
}

fn unavailable(e: StoreError) -> String {
    format!("the operations store is unavailable: {e}")
}

/// A running rollout's record: changed here, written through to the store
/// (coalesced, and at least every third of [`RUNNER_LEASE`], renewing it)
/// by a task of its own, so the steps never wait on the store.
struct Progress {
    rollouts: Arc<Rollouts>,
    record: Mutex<Rollout>,
    changed: Arc<tokio::sync::Notify>,
    /// Another instance holds the lease now: this one stops where it is.
    lost: AtomicBool,
    /// Already taken when the record was made (a take-over carries on the clock).
    started: Instant,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How often a long wait for players logs (after its first 20 s, every 2 s):
/// the record stays small however long the wait.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(60);

impl Progress {
    fn new(rollouts: Arc<Rollouts>, record: Rollout) -> Arc<Self> {
        // A take-over counts from the rollout's start (on the instances'
        // clocks), at least from where the stopped runner's record ended.
        let ran_ms = match record.started_at_ms {
            0 => record.took_ms,
            at => unix_ms().saturating_sub(at).max(record.took_ms),
        };
        let started = Instant::now().checked_sub(Duration::from_millis(ran_ms)).unwrap_or_else(Instant::now);
        Arc::new(Self {
            rollouts,
            record: Mutex::new(record),
            changed: Arc::default(),
            lost: AtomicBool::new(false),
            started,
            writer: Mutex::new(None),
        })
    }

    /// Writes every change through from now on, until [`Progress::finish`].
    fn write_from_now(self: &Arc<Self>) {
        let writer = tokio::spawn(Self::write_through(Arc::downgrade(self)));
        if let Ok(mut slot) = self.writer.lock() {
            *slot = Some(writer);
        }
    }

    async fn write_through(progress: std::sync::Weak<Self>) {
        loop {
            // Only while the run holds it: a run that ended (or panicked) stops renewing the lease.
            let Some(p) = progress.upgrade() else { return };
            if let Err(why) = p.save(false).await {
                tracing::warn!(why, "rollout progress not stored; retrying");
            }
            if p.lost() {
                return;
            }
            let changed = p.changed.clone();
            drop(p);
            // A change made meanwhile left a permit: this returns at once.
            let _ = tokio::time::timeout(RUNNER_LEASE / 3, changed.notified()).await;
        }
    }

    fn snapshot(&self) -> Option<Rollout> {
        self.record.lock().ok().map(|r| r.clone())
    }

    /// Renews the lease and stores the record; with `done`, gives the lease up.
    async fn save(&self, done: bool) -> Result<(), String> {
        let Some(record) = self.snapshot() else { return Err("rollout state poisoned".into()) };
        let ops = &self.rollouts.ops;
        let runner = &self.rollouts.runner;
        let current = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        let succeeded = (done && record.state == State::Succeeded).then_some(current.as_str());
        let held = ops.rollout_lease(runner, RUNNER_LEASE).await.map_err(unavailable)?
            && ops.rollout_put(runner, RolloutPut { current: &current, succeeded, done }).await.map_err(unavailable)?;
        if !held && !self.lost.swap(true, Ordering::Relaxed) {
            tracing::error!(id = record.id, "another platform instance holds this rollout now; stopping here");
        }
        Ok(())
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    fn update(&self, f: impl FnOnce(&mut Rollout)) {
        if let Ok(mut r) = self.record.lock() {
            f(&mut r);
            r.took_ms = self.started.elapsed().as_millis() as u64;
        }
        self.changed.notify_one();
    }

    fn step(&self, step: u8) {
        let name = STEPS[usize::from(step) - 1];
        tracing::info!(step = format!("{step}/7"), "rollout: {name}");
        self.update(|r| {
            r.step = step;
            r.step_name = name.to_owned();
        });
        self.log(name.to_owned());
    }

    fn log(&self, message: String) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(at_ms, "rollout: {message}");
        self.update(|r| {
            let step = r.step;
            r.log.push(LogLine { at_ms, step, message });
        });
    }

    /// Records how it ended and stores that (retrying while the store is
    /// down, up to a lease's time: after that another instance may hold it).
    async fn finish(&self, outcome: Outcome) {
        let (state, error) = match outcome {
            Outcome::Succeeded => (State::Succeeded, None),
            Outcome::RolledBack(why) => (State::RolledBack, Some(why)),
            Outcome::Failed(why) => (State::Failed, Some(why)),
        };
        match &error {
            Some(why) => self.log(format!("stopped: {why}")),
            None => self.log("done".into()),
        }
        self.update(|r| {
            r.state = state;
            r.error = error;
        });
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            // Stopped before the last write, so nothing of it lands after.
            writer.abort();
            let _ = writer.await;
        }
        let deadline = Instant::now() + RUNNER_LEASE;
        while !self.lost() {
            match self.save(true).await {
                Ok(()) => return,
                Err(why) if Instant::now() < deadline => {
                    tracing::warn!(why, "the rollout's end not stored; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(why) => {
                    tracing::error!(why, "the rollout's end could not be stored; another instance will take it over");
                    return;
                }
            }
        }
    }
}

enum Outcome {
    Succeeded,
    RolledBack(String),
    Failed(String),
}

/// The zone servers' admin API as a rollout needs it, each call to one
/// registered server. [`FleetAdmin`] is the real one; the unit tests below drive every step against an in-process fake.
pub trait ZoneServers: Send + Sync + 'static {
    fn ready(&self, server: &ServerEntry) -> impl Future<Output = bool> + Send;
    fn info(&self, server: &ServerEntry) -> impl Future<Output = Result<ServerInfo, CallError>> + Send;
    fn cordon(&self, server: &ServerEntry, notify: bool) -> impl Future<Output = Result<(), CallError>> + Send;
    fn uncordon(&self, server: &ServerEntry) -> impl Future<Output = Result<(), CallError>> + Send;
    fn drain(&self, server: &ServerEntry) -> impl Future<Output = Result<(), CallError>> + Send;
    fn release(&self, server: &ServerEntry, zone: &str) -> impl Future<Output = Result<Released, CallError>> + Send;
    fn adopt(
        &self,
        server: &ServerEntry,
        zone: &str,
        after_tick: u64,
    ) -> impl Future<Output = Result<Adopted, CallError>> + Send;
    fn redirect(
        &self,
        server: &ServerEntry,
        zone: &str,
        to: &str,
    ) -> impl Future<Output = Result<Redirected, CallError>> + Send;
    fn resume(&self, server: &ServerEntry, zone: &str) -> impl Future<Output = Result<Resumed, CallError>> + Send;
    fn replay(
        &self,
        server: &ServerEntry,
        zone: &str,
        window: &ReplayWindow,
    ) -> impl Future<Output = Result<ReplayTrace, CallError>> + Send;
}

impl ZoneServers for FleetAdmin {
    async fn ready(&self, server: &ServerEntry) -> bool {
        // Readiness is the players' listener's, wherever the admin API listens.
        match (self.of(server), respawn_api::registry::http_address(&server.address, None)) {
            (Ok((admin, _)), Some(addr)) => admin.ready(&addr).await,
            _ => false,
        }
    }
    async fn info(&self, server: &ServerEntry) -> Result<ServerInfo, CallError> {
        let (admin, addr) = self.of(server)?;
        admin.info(&addr).await
    }
    async fn cordon(&self, server: &ServerEntry, notify: bool) -> Result<(), CallError> {
        let (admin, addr) = self.of(server)?;
        admin.cordon(&addr, notify).await
    }
    async fn uncordon(&self, server: &ServerEntry) -> Result<(), CallError> {
        let (admin, addr) = self.of(server)?;
        admin.uncordon(&addr).await
    }
    async fn drain(&self, server: &ServerEntry) -> Result<(), CallError> {
        let (admin, addr) = self.of(server)?;
        admin.drain(&addr).await
    }
    async fn release(&self, server: &ServerEntry, zone: &str) -> Result<Released, CallError> {
        let (admin, addr) = self.of(server)?;
        admin.release(&addr, zone).await
    }
    async fn adopt(&self, server: &ServerEntry, zone: &str, after_tick: u64) -> Result<Adopted, CallError> {
        let (admin, addr) = self.of(server)?;
        admin.adopt(&addr, zone, Some(after_tick)).await
    }
    async fn redirect(&self, server: &ServerEntry, zone: &str, to: &str) -> Result<Redirected, CallError> {
        let (admin, addr) = self.of(server)?;
        admin.redirect(&addr, zone, to).await
    }
    async fn resume(&self, server: &ServerEntry, zone: &str) -> Result<Resumed, CallError> {
        let (admin, addr) = self.of(server)?;
        admin.resume(&addr, zone).await
    }
    async fn replay(&self, server: &ServerEntry, zone: &str, window: &ReplayWindow) -> Result<ReplayTrace, CallError> {
        let (admin, addr) = self.of(server)?;
        admin.replay(&addr, zone, window).await
    }
}

/// A call's failure as a log sentence that names the server.
fn failed(server: &ServerEntry) -> impl Fn(CallError) -> String + '_ {
    move |e| format!("{} {e}", server.id)
}

/// A ready server other than `from`, configured for every zone `from`
/// hosts and speaking its clients' protocol: another version first (during a
/// rolling update the old version's spares are about to go too), then the
/// one hosting the fewest zones.
async fn standby_for(admin: &impl ZoneServers, servers: &[ServerEntry], from: &str) -> Option<ServerEntry> {
    let source = servers.iter().find(|s| s.id == from)?;
    let source_info = admin.info(source).await.ok()?;
    let mut candidates: Vec<&ServerEntry> =
        servers.iter().filter(|s| s.id != from && s.state == respawn_store::ServerState::Ready).collect();
    candidates.sort_by_key(|s| (s.version == source.version, s.zones.len()));
    for candidate in candidates {
        let Ok(info) = admin.info(candidate).await else { continue };
        if info.can_host(&source.zones) && info.compat.serves_clients_of(&source_info.compat) {
            return Some(candidate.clone());
        }
    }
    None
}

/// The server `to` names: an id or an address exactly, else the ready server
/// of that version hosting the fewest zones (a standby one first).
fn pick_target<'a>(servers: &'a [ServerEntry], to: &str) -> Option<&'a ServerEntry> {
    servers.iter().find(|s| s.id == to || s.address == to).or_else(|| {
        servers
            .iter()
            .filter(|s| s.version == to && s.state == respawn_store::ServerState::Ready)
            .min_by_key(|s| s.zones.len())
    })
}

/// One rollout's run: the plan, what it reads and calls, where it reports.
struct Run<'a, A> {
    plan: &'a Plan,
    registry: &'a dyn Registry,
    admin: &'a A,
    p: &'a Progress,
}

impl<A: ZoneServers> Run<'_, A> {
    /// The guide's seven steps, one method each; a step that stops the rollout says how.
    async fn execute(&self) -> Outcome {
        let (target, old) = match self.find_servers().await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        if let Err(outcome) = self.check(&target, &old).await {
            return outcome;
        }
        self.registered(&target);
        if let Err(outcome) = self.cordon(&old).await {
            return outcome;
        }
        self.wait_for_players(&old).await;
        self.move_and_shut_down(&old, &target).await
    }

    /// Steps 6 and 7.
    async fn move_and_shut_down(&self, old: &[ServerEntry], target: &ServerEntry) -> Outcome {
        if let Err(outcome) = self.move_zones(old, target).await {
            return outcome;
        }
        if let Err(outcome) = self.still_ours() {
            return outcome;
        }
        self.shut_down(old).await;
        Outcome::Succeeded
    }

    /// Carries on a rollout whose runner stopped where it was: before any
    /// zone moved (step 5 or earlier) it is rolled back, the old servers
    /// reopened; from step 6 on it is finished, the zones that have not moved
    /// yet moved (a move refused now rolls it back as ever). First, any zone
    /// the stopped runner left mid-move is settled (see [`Run::settle_parked`]).
    async fn resume(&self) -> Outcome {
        let Some(record) = self.p.snapshot() else { return Outcome::Failed("rollout state poisoned".into()) };
        let servers = match self.registry.servers().await {
            Ok(servers) => servers,
            Err(e) => return Outcome::Failed(format!("the server registry is unavailable: {e}")),
        };
        self.settle_parked(&servers).await;
        let old: Vec<ServerEntry> = servers.iter().filter(|s| record.from_servers.contains(&s.id)).cloned().collect();
        if record.step < 6 {
            self.uncordon(&old).await;
            return Outcome::RolledBack(format!(
                "its runner stopped at step {}/7, before any zone moved; the old servers take players again: start it anew",
                record.step
            ));
        }
        let Some(target) = servers.iter().find(|s| Some(&s.id) == record.target.as_ref()) else {
            self.uncordon(&old).await;
            return Outcome::Failed(format!(
                "its runner stopped at step {}/7 and the target {} is no longer registered; zones on it fail over as any lost server's",
                record.step,
                record.target.as_deref().unwrap_or("-")
            ));
        };
        self.p.log(format!("carrying on from step {}/7", record.step));
        self.move_and_shut_down(&old, target).await
    }

    /// Zones a stopped runner left released (parked) on a server: one whose
    /// adopter runs it already has its move completed (the clients
    /// redirected, recorded as moved); any other ticks again where it was.
    async fn settle_parked(&self, servers: &[ServerEntry]) {
        let mut infos = Vec::new();
        for s in servers {
            match self.admin.info(s).await {
                Ok(info) => infos.push((s, info)),
                Err(e) => self.p.log(format!("{} does not answer ({e}); its zones are left as they are", s.id)),
            }
        }
        let running_on = |zone: &str| {
            infos.iter().find(|(_, info)| info.zones.iter().any(|z| z.name == zone && !z.parked)).map(|(s, _)| *s)
        };
        for (s, info) in &infos {
            for parked in info.zones.iter().filter(|z| z.parked) {
                let zone = parked.name.as_str();
                match running_on(zone) {
                    Some(adopter) => match self.admin.redirect(s, zone, &adopter.address).await {
                        Ok(_) => {
                            self.p.log(format!("zone {zone} was adopted by {}: its move is completed", adopter.id));
                            self.p.update(|r| {
                                r.zones.push(ZoneMove {
                                    zone: zone.to_owned(),
                                    from: s.id.clone(),
                                    to: adopter.id.clone(),
                                    tick: parked.tick,
                                    players: parked.players,
                                    pause_ms: 0,
                                    state: MoveState::Moved,
                                })
                            });
                        }
                        Err(e) => self.p.log(format!("zone {zone}: {} did not redirect its clients: {e}", s.id)),
                    },
                    None => match self.admin.resume(s, zone).await {
                        Ok(_) => {
                            self.p.log(format!("zone {zone} was released but not adopted: it ticks on {} again", s.id))
                        }
                        Err(e) => self.p.log(format!("zone {zone} could not be resumed on {}: {e}", s.id)),
                    },
                }
            }
        }
    }

    /// Stops the run where it is once another instance holds the rollout.
    fn still_ours(&self) -> Result<(), Outcome> {
        match self.p.lost() {
            true => Err(Outcome::Failed(
                "this platform instance could not renew its hold on the rollout; another one carries it on".into(),
            )),
            false => Ok(()),
        }
    }

    /// Step 1: the target server (the new version, or a standby for an
    /// evacuation) and the old servers whose zones move.
    async fn find_servers(&self) -> Result<(ServerEntry, Vec<ServerEntry>), Outcome> {
        let (plan, p) = (self.plan, self.p);
        p.step(1);
        let servers = self
            .registry
            .servers()
            .await
            .map_err(|e| Outcome::RolledBack(format!("the server registry is unavailable: {e}")))?;
        let target = match &plan.from {
            Some(from) if plan.to.is_empty() => standby_for(self.admin, &servers, from).await,
            _ => pick_target(&servers, &plan.to).cloned(),
        };
        let Some(target) = target else {
            return Err(Outcome::RolledBack(match &plan.from {
                Some(from) if plan.to.is_empty() => format!("no other ready server can take the zones of {from}"),
                _ => format!(
                    "no registered game server is {:?}: start the new version first (respawn zone --standby ...)",
                    plan.to
                ),
            }));
        };
        let old: Vec<ServerEntry> = servers
            .iter()
            .filter(|s| s.id != target.id && !s.zones.is_empty())
            .filter(|s| match &plan.from {
                Some(from) => &s.id == from,
                None => s.version != target.version,
            })
            .cloned()
            .collect();
        p.log(format!("new version {} is {} at {}", target.version, target.id, target.address));
        p.update(|r| {
            r.target = Some(target.id.clone());
            r.to_version = Some(target.version.clone());
            r.from_versions =
                old.iter().map(|s| s.version.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            r.from_servers = old.iter().map(|s| s.id.clone()).collect();
        });
        if old.is_empty() {
            return Err(Outcome::RolledBack(match &plan.from {
                Some(from) => format!("nothing to move: {from} hosts no zone"),
                None => {
                    format!("nothing to roll out: no server of another version than {} hosts a zone", target.version)
                }
            }));
        }
        for s in &old {
            p.log(format!("old: {} version {} hosting {}", s.id, s.version, s.zones.join(", ")));
        }
        Ok((target, old))
    }

    /// Step 2: the target is ready, speaks the old servers' client protocol
    /// and is configured for every zone they host. Nothing changes before this passes.
    async fn check(&self, target: &ServerEntry, old: &[ServerEntry]) -> Result<(), Outcome> {
        let p = self.p;
        p.step(2);
        let mut ready = false;
        for _ in 0..20 {
            if self.admin.ready(target).await {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !ready {
            return Err(Outcome::RolledBack(format!("{} is not ready (GET /readyz) within 10 s", target.id)));
        }
        let target_info = self.admin.info(target).await.map_err(failed(target)).map_err(Outcome::RolledBack)?;
        let mut players_before = target_info.players;
        for s in old {
            let info = self.admin.info(s).await.map_err(failed(s)).map_err(Outcome::RolledBack)?;
            players_before += info.players;
            if !target_info.compat.serves_clients_of(&info.compat) {
                let (ours, theirs) = (target_info.compat.protocols(), info.compat.protocols());
                return Err(Outcome::RolledBack(format!(
                    "compatibility: {} speaks client protocols {}..={}, the players of {} may speak {}..={}; nothing was changed",
                    target.id,
                    ours.start(),
                    ours.end(),
                    s.id,
                    theirs.start(),
                    theirs.end()
                )));
            }
            if let Some(missing) = s.zones.iter().find(|z| !target_info.configured_zones.contains(z)) {
                return Err(Outcome::RolledBack(format!(
                    "{} cannot host zone {missing:?} (not in its configuration); nothing was changed",
                    target.id
                )));
            }
        }
        let protocols = target_info.compat.protocols();
        p.log(format!(
            "ready; client protocols {}..={}, snapshot format {}",
            protocols.start(),
            protocols.end(),
            target_info.compat.snapshot_format
        ));
        p.update(|r| r.players_before = players_before);
        self.compare_replays(target, old).await;
        Ok(())
    }

    /// Step 2's report, not a gate: each zone's last minutes replayed on the
    /// build that runs it and on the target, and the first tick where they
    /// part, field by field (a rule change shows here before players meet it).
    async fn compare_replays(&self, target: &ServerEntry, old: &[ServerEntry]) {
        let p = self.p;
        for s in old {
            for zone in &s.zones {
                let check = match self.compare_replay(target, s, zone).await {
                    Ok(found) => ReplayCheck::Compared(found),
                    Err(why) => ReplayCheck::NotRun { zone: zone.clone(), why },
                };
                for line in check.lines() {
                    p.log(format!("replay check: {line}"));
                }
                p.update(|r| r.replay_checks.push(check));
            }
        }
    }

    async fn compare_replay(&self, target: &ServerEntry, from: &ServerEntry, zone: &str) -> Result<Divergence, String> {
        let last = ReplayWindow { last_secs: Some(REPLAY_CHECK_SECS), ..ReplayWindow::default() };
        let theirs = self.admin.replay(from, zone, &last).await.map_err(failed(from))?;
        let same = ReplayWindow::same_as(&theirs);
        let ours = self.admin.replay(target, zone, &same).await.map_err(failed(target))?;
        let states = match ReplayWindow::first_divergence(&theirs, &ours) {
            (_, Some(tick)) => {
                let at = ReplayWindow { state_at: Some(tick), ..same };
                let old_state = self.admin.replay(from, zone, &at).await.map_err(failed(from))?.state;
                let new_state = self.admin.replay(target, zone, &at).await.map_err(failed(target))?.state;
                old_state.zip(new_state)
            }
            (_, None) => None,
        };
        Ok(Divergence::new(zone, &theirs, &ours, states.as_ref().map(|(old, new)| (old, new))))
    }

    /// Step 3: logins reach the target through the registry (its heartbeat put it there).
    fn registered(&self, target: &ServerEntry) {
        self.p.step(3);
        self.p.log(format!("{} is in the registry as {}: logins can reach it", target.id, target.state.as_str()));
    }

    /// Step 4: the old servers take no new players; in guide mode their players are asked to reconnect.
    async fn cordon(&self, old: &[ServerEntry]) -> Result<(), Outcome> {
        let p = self.p;
        p.step(4);
        let notify = self.plan.mode == Mode::Guide;
        for s in old {
            if let Err(why) = self.admin.cordon(s, notify).await.map_err(failed(s)) {
                self.uncordon(old).await;
                return Err(Outcome::RolledBack(why));
            }
            p.log(format!(
                "{} takes no new players{}",
                s.id,
                if notify { "; its players are asked to reconnect" } else { "" }
            ));
        }
        Ok(())
    }

    /// Step 5: guide mode waits (up to the plan's wait) for the old servers'
    /// players to leave; a hand-off does not wait.
    async fn wait_for_players(&self, old: &[ServerEntry]) {
        let (plan, p) = (self.plan, self.p);
        p.step(5);
        if plan.mode != Mode::Guide {
            p.log("hand-off: no waiting; zones move with their players".into());
            return;
        }
        let deadline = Instant::now() + plan.wait;
        let mut last_log = Instant::now();
        while !p.lost() {
            let mut left = 0;
            for s in old {
                left += self.admin.info(s).await.map(|i| i.players).unwrap_or(0);
            }
            if left == 0 {
                p.log("the old servers have 0 players".into());
                return;
            }
            if Instant::now() >= deadline {
                p.log(format!("{left} players still connected after {:?}: their zones move live", plan.wait));
                return;
            }
            let every = if last_log.duration_since(deadline - plan.wait) < Duration::from_secs(20) {
                Duration::from_secs(2)
            } else {
                WAIT_LOG_EVERY
            };
            if last_log.elapsed() >= every {
                p.log(format!("{left} players still on the old version"));
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Step 6: every zone of the old servers moves to the target; a refused
    /// move returns every zone moved so far and reopens the old servers.
    async fn move_zones(&self, old: &[ServerEntry], target: &ServerEntry) -> Result<(), Outcome> {
        let p = self.p;
        p.step(6);
        let mut moved: Vec<(ServerEntry, String)> = Vec::new();
        for s in old {
            let zones = self.admin.info(s).await.map(|i| i.hosted()).unwrap_or_else(|_| s.zones.clone());
            for zone in zones {
                self.still_ours()?;
                match self.move_zone(&zone, s, target).await {
                    Ok(record) => {
                        p.update(|r| r.zones.push(record));
                        moved.push((s.clone(), zone));
                    }
                    Err(why) => {
                        let returned = self.move_back(&moved, target).await;
                        self.uncordon(old).await;
                        return Err(if returned {
                            Outcome::RolledBack(why)
                        } else {
                            Outcome::Failed(format!("{why}; and not every moved zone could be returned (see the log)"))
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Step 7: the old servers drain and leave the registry (waited for up to 30 s).
    async fn shut_down(&self, old: &[ServerEntry]) {
        let p = self.p;
        p.step(7);
        for s in old {
            match self.admin.drain(s).await.map_err(failed(s)) {
                Ok(()) => p.log(format!("{} is shutting down", s.id)),
                Err(why) => p.log(format!("{} could not be told to shut down: {why}", s.id)),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive: Vec<String> = match self.registry.servers().await {
                Ok(servers) => servers.into_iter().filter(|s| old.iter().any(|o| o.id == s.id)).map(|s| s.id).collect(),
                Err(_) => Vec::new(),
            };
            if alive.is_empty() {
                p.log("the old servers have left the registry".into());
                return;
            }
            if Instant::now() >= deadline {
                p.log(format!("still registered after 30 s: {}", alive.join(", ")));
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Moves one zone from `from` to `to`: release, adopt, redirect. A refused
    /// adoption resumes the zone on `from`.
    async fn move_zone(&self, zone: &str, from: &ServerEntry, to: &ServerEntry) -> Result<ZoneMove, String> {
        let started = Instant::now();
        let released = self.admin.release(from, zone).await.map_err(failed(from))?;
        let (tick, players) = (released.tick, released.players);
        if let Err(why) = self.admin.adopt(to, zone, tick).await.map_err(failed(to)) {
            let where_now = match self.admin.resume(from, zone).await {
                Ok(_) => format!("it ticks on {} again", from.id),
                Err(e) => format!("and it could not be resumed on {}: {} {e}", from.id, from.id),
            };
            return Err(format!("zone {zone} refused by the new server: {why}; {where_now}"));
        }
        // If the old server does not answer, its clients time out and log in again.
        if let Err(why) = self.admin.redirect(from, zone, &to.address).await {
            tracing::warn!(zone, why = %why, "redirect failed; the zone's clients will log in again");
        }
        let pause_ms = started.elapsed().as_millis() as u64;
        self.p.log(format!("zone {zone} moved at tick {tick} with {players} players: {pause_ms} ms without ticks"));
        Ok(ZoneMove {
            zone: zone.to_owned(),
            from: from.id.clone(),
            to: to.id.clone(),
            tick,
            players,
            pause_ms,
            state: MoveState::Moved,
        })
    }

    /// Returns every moved zone to where it came from, newest first; whether all went back.
    async fn move_back(&self, moved: &[(ServerEntry, String)], target: &ServerEntry) -> bool {
        let mut all = true;
        for (from, zone) in moved.iter().rev() {
            match self.move_zone(zone, target, from).await {
                Ok(_) => self.p.update(|r| {
                    if let Some(m) = r.zones.iter_mut().find(|m| &m.zone == zone) {
                        m.state = MoveState::Returned;
                    }
                }),
                Err(why) => {
                    self.p.log(format!("zone {zone} could not be returned: {why}"));
                    all = false;
                }
            }
        }
        all
    }

    async fn uncordon(&self, old: &[ServerEntry]) {
        for s in old {
            match self.admin.uncordon(s).await.map_err(failed(s)) {
                Ok(()) => self.p.log(format!("{} takes new players again", s.id)),
                Err(why) => self.p.log(format!("{} could not be reopened: {why}", s.id)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, version: &str, zones: &[&str], state: respawn_store::ServerState) -> ServerEntry {
        ServerEntry {
            id: id.into(),
            address: format!("ws://{id}:1/ws"),
            zones: zones.iter().map(|z| (*z).to_owned()).collect(),
            state,
            version: version.into(),
            admin_address: None,
            fences: Default::default(),
        }
    }

    #[test]
    fn the_target_is_named_by_id_address_or_version() {
        use respawn_store::ServerState::{Draining, Ready};
        let servers = vec![
            entry("a", "1.0", &["meadow"], Ready),
            entry("b", "2.0", &["caverns"], Ready),
            entry("c", "2.0", &[], Ready),
            entry("d", "3.0", &[], Draining),
        ];
        assert_eq!(pick_target(&servers, "a").map(|s| s.id.as_str()), Some("a"));
        assert_eq!(pick_target(&servers, "ws://b:1/ws").map(|s| s.id.as_str()), Some("b"));
        assert_eq!(pick_target(&servers, "2.0").map(|s| s.id.as_str()), Some("c"), "the standby one first");
        assert!(pick_target(&servers, "3.0").is_none(), "a draining server is no target");
        assert!(pick_target(&servers, "9.9").is_none());
    }

    use std::collections::BTreeMap;

    use respawn_api::admin::{Compat, HostedZone, RestoreSource};
    use respawn_store::memory::{MemoryOps, MemoryRegistry};
    use respawn_store::ServerState::Ready;

    /// One zone server as the fake admin API keeps it.
    #[derive(Debug, Clone)]
    struct FakeServer {
        id: String,
        version: String,
        /// The client protocol versions it accepts, oldest and newest.
        protocols: (u32, u32),
        configured: Vec<String>,
        zones: Vec<HostedZone>,
        cordoned: bool,
        draining: bool,
        /// A zone whose adoption this server refuses (a snapshot it cannot read).
        refuses: Option<String>,
        /// Its rules: a player's gold after tick t of a replay is t times this.
        gold_per_tick: u64,
    }

    /// An in-process fleet of zone servers behind the [`ZoneServers`] calls,
    /// with the registry their heartbeats would keep, and a log of every call.
    #[derive(Debug, Clone)]
    struct FakeFleet {
        servers: Arc<Mutex<BTreeMap<String, FakeServer>>>,
        registry: Arc<MemoryRegistry>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn unreachable() -> CallError {
        CallError::Unreachable("no such server".into())
    }

    impl FakeFleet {
        async fn new(servers: Vec<FakeServer>) -> Self {
            let registry = Arc::new(MemoryRegistry::new());
            for s in &servers {
                let hosted = s.zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>();
                registry
                    .heartbeat(entry(&s.id, &s.version, &hosted, Ready), Duration::from_secs(3_600))
                    .await
                    .expect("registry");
            }
            let servers = servers.into_iter().map(|s| (s.id.clone(), s)).collect();
            Self { servers: Arc::new(Mutex::new(servers)), registry, calls: Arc::default() }
        }

        /// Runs `f` on `server`, logging `call` under its id.
        fn with<T>(
            &self,
            server: &ServerEntry,
            call: &str,
            f: impl FnOnce(&mut FakeServer) -> Result<T, CallError>,
        ) -> Result<T, CallError> {
            let mut servers = self.servers.lock().expect("fake fleet");
            let server = servers.get_mut(&server.id).ok_or_else(unreachable)?;
            self.calls.lock().expect("calls").push(format!("{call} {}", server.id));
            f(server)
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("calls").clone()
        }

        fn hosted(&self, id: &str) -> Vec<String> {
            let servers = self.servers.lock().expect("fake fleet");
            servers
                .values()
                .find(|s| s.id == id)
                .map(|s| s.zones.iter().map(|z| z.name.clone()).collect())
                .unwrap_or_default()
        }

        fn server(&self, id: &str) -> FakeServer {
            let servers = self.servers.lock().expect("fake fleet");
            servers.values().find(|s| s.id == id).cloned().expect("a fake server")
        }
    }

    impl ZoneServers for FakeFleet {
        async fn ready(&self, server: &ServerEntry) -> bool {
            self.with(server, "ready", |s| Ok(!s.draining)).unwrap_or(false)
        }

        async fn info(&self, server: &ServerEntry) -> Result<ServerInfo, CallError> {
            self.with(server, "info", |s| {
                Ok(ServerInfo {
                    version: s.version.clone(),
                    compat: Compat {
                        protocol_version: s.protocols.1,
                        oldest_protocol_version: Some(s.protocols.0),
                        snapshot_format: 1,
                    },
                    zones: s.zones.clone(),
                    configured_zones: s.configured.clone(),
                    draining: s.draining,
                    players: s.zones.iter().map(|z| z.players).sum(),
                })
            })
        }

        async fn cordon(&self, server: &ServerEntry, notify: bool) -> Result<(), CallError> {
            self.with(server, &format!("cordon(notify={notify})"), |s| {
                s.cordoned = true;
                Ok(())
            })
        }

        async fn uncordon(&self, server: &ServerEntry) -> Result<(), CallError> {
            self.with(server, "uncordon", |s| {
                s.cordoned = false;
                Ok(())
            })
        }

        async fn drain(&self, server: &ServerEntry) -> Result<(), CallError> {
            let id = self.with(server, "drain", |s| {
                s.draining = true;
                Ok(s.id.clone())
            })?;
            // A drained server stops heartbeating and leaves the registry.
            self.registry.remove(&id).await.map_err(|e| CallError::Unreachable(e.to_string()))
        }

        async fn release(&self, server: &ServerEntry, zone: &str) -> Result<Released, CallError> {
            self.with(server, &format!("release {zone} on"), |s| {
                let z = s
                    .zones
                    .iter_mut()
                    .find(|z| z.name == zone)
                    .ok_or(CallError::Refused { status: 404, answer: format!("no zone {zone:?} here") })?;
                z.parked = true;
                Ok(Released { zone: zone.to_owned(), tick: z.tick, players: z.players, took_ms: 1 })
            })
        }

        async fn adopt(&self, server: &ServerEntry, zone: &str, after_tick: u64) -> Result<Adopted, CallError> {
            self.with(server, &format!("adopt {zone}@{after_tick} on"), |s| {
                if s.refuses.as_deref() == Some(zone) {
                    return Err(CallError::Refused {
                        status: 409,
                        answer: "snapshot format 9, this server reads 1".into(),
                    });
                }
                s.zones.push(HostedZone { name: zone.to_owned(), players: 0, tick: after_tick, parked: false });
                Ok(Adopted {
                    zone: zone.to_owned(),
                    tick: after_tick,
                    players: 0,
                    source: RestoreSource::Hot,
                    took_ms: 1,
                })
            })
        }

        async fn redirect(&self, server: &ServerEntry, zone: &str, to: &str) -> Result<Redirected, CallError> {
            self.with(server, &format!("redirect {zone} from"), |s| {
                s.zones.retain(|z| z.name != zone);
                Ok(Redirected { zone: zone.to_owned(), redirected_players: 0, to: to.to_owned() })
            })
        }

        async fn resume(&self, server: &ServerEntry, zone: &str) -> Result<Resumed, CallError> {
            self.with(server, &format!("resume {zone} on"), |s| {
                s.zones.iter_mut().filter(|z| z.name == zone).for_each(|z| z.parked = false);
                Ok(Resumed { zone: zone.to_owned() })
            })
        }

        /// Ticks 1 to 3 of any zone, one player whose gold grows by the server's rule.
        async fn replay(
            &self,
            server: &ServerEntry,
            zone: &str,
            window: &ReplayWindow,
        ) -> Result<ReplayTrace, CallError> {
            self.with(server, &format!("replay {zone} on"), |s| {
                let state = |tick: u64| serde_json::json!({"players": [{"player": 1, "gold": tick * s.gold_per_tick}]});
                let to = window.state_at.unwrap_or(3);
                Ok(ReplayTrace {
                    version: s.version.clone(),
                    start_tick: 0,
                    from_tick: 1,
                    to_tick: to,
                    digests: (1..=to)
                        .map(|tick| respawn_api::replay::TickDigest {
                            tick,
                            digest: respawn_api::replay::digest(&state(tick)),
                        })
                        .collect(),
                    state: window.state_at.map(state),
                })
            })
        }
    }

    fn server(id: &str, version: &str, hosting: &[&str], configured: &[&str]) -> FakeServer {
        FakeServer {
            id: id.into(),
            version: version.into(),
            protocols: (1, 1),
            configured: configured.iter().map(|z| (*z).to_owned()).collect(),
            zones: hosting
                .iter()
                .map(|z| HostedZone { name: (*z).to_owned(), players: 3, tick: 100, parked: false })
                .collect(),
            cordoned: false,
            draining: false,
            refuses: None,
            gold_per_tick: 1,
        }
    }

    const BOTH: &[&str] = &["meadow", "caverns"];

    fn instance(ops: &Arc<MemoryOps>, name: &str) -> Arc<Rollouts> {
        Arc::new(Rollouts::new(ops.clone(), name.into()))
    }

    /// Runs `plan` to its end on `fleet`.
    async fn roll_out(fleet: &FakeFleet, plan: Plan) -> Rollout {
        let rollouts = instance(&Arc::new(MemoryOps::new()), "a");
        rollouts.start(fleet.registry.clone(), Some(fleet.clone()), plan).await.expect("started");
        ended(&rollouts).await
    }

    async fn ended(rollouts: &Rollouts) -> Rollout {
        loop {
            let current = rollouts.current().await.expect("store").expect("a rollout");
            if current.state != State::Running {
                return current;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn plan(to: &str, mode: Mode) -> Plan {
        Plan { to: to.into(), from: None, mode, wait: Duration::ZERO, rollback: false }
    }

    #[tokio::test]
    async fn a_hand_off_moves_every_zone_of_the_old_version_then_drains_it() {
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), server("new", "2", &[], BOTH)]).await;
        let rollout = roll_out(&fleet, plan("2", Mode::Handoff)).await;
        assert_eq!(rollout.state, State::Succeeded, "{:?}", rollout.error);
        assert_eq!((rollout.step, rollout.players_before), (7, 6));
        assert_eq!(fleet.hosted("new"), ["meadow", "caverns"]);
        assert!(fleet.hosted("old").is_empty());
        assert!(rollout.zones.iter().all(|m| m.state == MoveState::Moved && m.tick == 100 && m.players == 3));
        let moves: Vec<String> = fleet
            .calls()
            .into_iter()
            .filter(|c| !["info", "ready", "replay"].iter().any(|l| c.starts_with(l)))
            .collect();
        assert_eq!(
            moves,
            [
                "cordon(notify=false) old",
                "release meadow on old",
                "adopt meadow@100 on new",
                "redirect meadow from old",
                "release caverns on old",
                "adopt caverns@100 on new",
                "redirect caverns from old",
                "drain old",
            ]
        );
        let left = fleet.registry.servers().await.expect("registry");
        assert_eq!(left.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["new"]);
    }

    #[tokio::test]
    async fn step_two_reports_where_each_zone_replayed_on_the_new_build_parts_from_the_old() {
        let mut new = server("new", "2", &[], BOTH);
        new.gold_per_tick = 2;
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), new]).await;
        let rollout = roll_out(&fleet, plan("2", Mode::Handoff)).await;
        assert_eq!(rollout.state, State::Succeeded, "a report, not a gate: {:?}", rollout.error);
        assert_eq!(rollout.replay_checks.len(), 2, "{:?}", rollout.replay_checks);
        let ReplayCheck::Compared(found) = &rollout.replay_checks[0] else { panic!("{:?}", rollout.replay_checks) };
        assert_eq!((found.zone.as_str(), found.first_divergent_tick, found.ticks_compared), ("meadow", Some(1), 0));
        assert!(
            rollout.log.iter().any(|l| l.message == "replay check:   tick 1: player 1 gold 1 vs 2"),
            "{:?}",
            rollout.log
        );

        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), server("new", "2", &[], BOTH)]).await;
        let rollout = roll_out(&fleet, plan("2", Mode::Handoff)).await;
        let agreed = rollout.replay_checks.iter().all(
            |c| matches!(c, ReplayCheck::Compared(d) if d.first_divergent_tick.is_none() && d.ticks_compared == 3),
        );
        assert!(agreed, "{:?}", rollout.replay_checks);
    }

    #[tokio::test]
    async fn a_refused_adoption_returns_every_moved_zone_and_reopens_the_old_server() {
        let mut new = server("new", "2", &[], BOTH);
        new.refuses = Some("caverns".into());
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), new]).await;
        let rollout = roll_out(&fleet, plan("2", Mode::Guide)).await;
        assert_eq!(rollout.state, State::RolledBack);
        let error = rollout.error.unwrap_or_default();
        assert!(
            error.contains("zone caverns refused by the new server: new answered 409")
                && error.contains("ticks on old again"),
            "{error}"
        );
        assert_eq!(rollout.zones.len(), 1);
        assert_eq!((rollout.zones[0].zone.as_str(), rollout.zones[0].state), ("meadow", MoveState::Returned));
        let old = fleet.server("old");
        let mut hosted: Vec<(String, bool)> = old.zones.iter().map(|z| (z.name.clone(), z.parked)).collect();
        hosted.sort();
        assert_eq!(hosted, [("caverns".into(), false), ("meadow".into(), false)], "both zones tick on the old server");
        assert!(!old.cordoned && !old.draining, "the old server takes players again and keeps running");
        assert!(fleet.hosted("new").is_empty());
        assert!(fleet.calls().contains(&"cordon(notify=true) old".to_owned()), "guide mode asks players to reconnect");
    }

    #[tokio::test]
    async fn a_target_speaking_another_client_protocol_changes_nothing() {
        let mut new = server("new", "2", &[], BOTH);
        new.protocols = (2, 2);
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), new]).await;
        let rollout = roll_out(&fleet, plan("2", Mode::Handoff)).await;
        assert_eq!(rollout.state, State::RolledBack);
        let error = rollout.error.unwrap_or_default();
        assert!(error.contains("speaks client protocols 2..=2, the players of old may speak 1..=1"), "{error}");
        let calls = fleet.calls();
        assert!(calls.iter().all(|c| c.starts_with("info") || c.starts_with("ready")), "only looked: {calls:?}");
        assert!(rollout.replay_checks.is_empty(), "an incompatible target is not compared");
        assert_eq!(fleet.hosted("old"), ["meadow", "caverns"]);
    }

    #[tokio::test]
    async fn a_target_that_still_serves_the_old_protocol_takes_its_players_but_not_back() {
        let mut new = server("new", "2", &[], BOTH);
        new.protocols = (1, 2);
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), new]).await;
        let rollout = roll_out(&fleet, plan("2", Mode::Handoff)).await;
        assert_eq!(rollout.state, State::Succeeded, "{:?}", rollout.error);
        assert_eq!(fleet.hosted("new"), ["meadow", "caverns"]);

        // Going back would strand the players who joined with protocol 2.
        let mut newer = server("newer", "2", BOTH, BOTH);
        newer.protocols = (1, 2);
        let fleet = FakeFleet::new(vec![newer, server("older", "1", &[], BOTH)]).await;
        let back = roll_out(&fleet, plan("1", Mode::Handoff)).await;
        assert_eq!(back.state, State::RolledBack);
        let error = back.error.unwrap_or_default();
        assert!(error.contains("may speak 1..=2"), "{error}");
        assert_eq!(fleet.hosted("newer"), ["meadow", "caverns"]);
    }

    #[tokio::test]
    async fn an_evacuation_moves_the_zones_to_a_standby_configured_for_them() {
        let fleet = FakeFleet::new(vec![
            server("old", "1", BOTH, BOTH),
            server("small", "1", &[], &["meadow"]),
            server("spare", "1", &[], BOTH),
        ])
        .await;
        let evacuation = Plan { to: String::new(), from: Some("old".into()), ..plan("", Mode::Handoff) };
        let rollout = roll_out(&fleet, evacuation).await;
        assert_eq!(rollout.state, State::Succeeded, "{:?}", rollout.error);
        assert_eq!(rollout.target.as_deref(), Some("spare"));
        assert_eq!(fleet.hosted("spare"), ["meadow", "caverns"]);
        assert!(fleet.hosted("small").is_empty());
    }

    #[tokio::test]
    async fn a_version_no_server_runs_is_refused_before_anything_changes() {
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH)]).await;
        let rollout = roll_out(&fleet, plan("9.9", Mode::Handoff)).await;
        assert_eq!(rollout.state, State::RolledBack);
        assert!(rollout.error.unwrap_or_default().contains("no registered game server is \"9.9\""));
        assert!(fleet.calls().is_empty());
    }

    #[tokio::test]
    async fn one_rollout_runs_at_a_time_whichever_instance_is_asked() {
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), server("new", "2", &[], BOTH)]).await;
        let ops = Arc::new(MemoryOps::new());
        let (a, b) = (instance(&ops, "a"), instance(&ops, "b"));
        let waiting = Plan { wait: Duration::from_secs(60), ..plan("2", Mode::Guide) };
        let started = a.start(fleet.registry.clone(), Some(fleet.clone()), waiting).await.expect("started");
        let refused = b.start(fleet.registry.clone(), Some(fleet.clone()), plan("2", Mode::Handoff)).await;
        assert!(refused.expect_err("refused").contains("already running"));
        let seen = b.current().await.expect("store").expect("a rollout");
        assert_eq!((seen.id, seen.runner.as_str(), seen.state), (started.id, "a", State::Running));
    }

    /// What a runner that stopped left in the store: a record at `step`
    /// moving `old`'s zones to `new`, its lease (ending in 50 ms) not renewed.
    async fn stopped_runner(ops: &MemoryOps, step: u8) {
        let record = Rollout {
            id: 7,
            mode: Mode::Handoff,
            rollback: false,
            requested: "2".into(),
            evacuation: None,
            state: State::Running,
            step,
            steps: 7,
            step_name: STEPS[usize::from(step) - 1].into(),
            target: Some("new".into()),
            to_version: Some("2".into()),
            from_versions: vec!["1".into()],
            from_servers: vec!["old".into()],
            players_before: 6,
            zones: Vec::new(),
            error: None,
            log: Vec::new(),
            took_ms: 900,
            started_at_ms: 0,
            runner: "dead".into(),
            replay_checks: Vec::new(),
        };
        let current = serde_json::to_string(&record).expect("json");
        assert!(ops.rollout_lease("dead", Duration::from_millis(50)).await.expect("lease"));
        let put = RolloutPut { current: &current, succeeded: None, done: false };
        assert!(ops.rollout_put("dead", put).await.expect("put"));
    }

    async fn take_over(ops: &Arc<MemoryOps>, fleet: &FakeFleet) -> Rollout {
        let survivor = instance(ops, "survivor");
        let registry: Arc<dyn Registry> = fleet.registry.clone();
        assert!(
            survivor.take_over_orphan(registry.clone(), fleet.clone()).await.is_none(),
            "not while the stopped runner's lease holds"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let task = survivor.take_over_orphan(registry, fleet.clone()).await.expect("taken over");
        task.await.expect("finished");
        let rollout = survivor.current().await.expect("store").expect("a rollout");
        assert_eq!((rollout.id, rollout.runner.as_str()), (7, "survivor"));
        assert!(
            rollout.log.iter().any(|l| l.message.contains("taken over by survivor from dead")),
            "{:?}",
            rollout.log
        );
        assert!(ops.rollouts().await.expect("store").runner.is_none(), "the lease is given up at the end");
        rollout
    }

    #[tokio::test]
    async fn a_rollout_whose_runner_stopped_mid_move_is_finished_by_another_instance() {
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), server("new", "2", &[], BOTH)]).await;
        // The stopped runner had cordoned old, released meadow, and new had adopted it.
        {
            let mut servers = fleet.servers.lock().expect("fake fleet");
            let old = servers.get_mut("old").expect("old");
            old.cordoned = true;
            old.zones.iter_mut().filter(|z| z.name == "meadow").for_each(|z| z.parked = true);
            let adopted = HostedZone { name: "meadow".into(), players: 0, tick: 100, parked: false };
            servers.get_mut("new").expect("new").zones.push(adopted);
        }
        let ops = Arc::new(MemoryOps::new());
        stopped_runner(&ops, 6).await;
        let rollout = take_over(&ops, &fleet).await;
        assert_eq!(rollout.state, State::Succeeded, "{:?}", rollout.error);
        assert_eq!(fleet.hosted("new"), ["meadow", "caverns"]);
        assert!(fleet.server("old").draining, "the old server is shut down");
        let moved: Vec<&str> = rollout.zones.iter().map(|m| m.zone.as_str()).collect();
        assert_eq!(moved, ["meadow", "caverns"]);
        let calls = fleet.calls();
        assert!(calls.contains(&"redirect meadow from old".to_owned()), "{calls:?}");
        assert!(!calls.iter().any(|c| c.starts_with("adopt meadow") || c.starts_with("resume")), "{calls:?}");
    }

    #[tokio::test]
    async fn a_rollout_whose_runner_stopped_before_any_move_is_rolled_back_by_another_instance() {
        let fleet = FakeFleet::new(vec![server("old", "1", BOTH, BOTH), server("new", "2", &[], BOTH)]).await;
        {
            let mut servers = fleet.servers.lock().expect("fake fleet");
            let old = servers.get_mut("old").expect("old");
            old.cordoned = true;
            // Released, never adopted (the runner stopped in between).
            old.zones.iter_mut().filter(|z| z.name == "caverns").for_each(|z| z.parked = true);
        }
        let ops = Arc::new(MemoryOps::new());
        stopped_runner(&ops, 5).await;
        let rollout = take_over(&ops, &fleet).await;
        assert_eq!(rollout.state, State::RolledBack);
        assert!(rollout.error.unwrap_or_default().contains("stopped at step 5/7, before any zone moved"));
        let old = fleet.server("old");
        assert!(!old.cordoned && !old.draining, "the old server takes players again");
        assert!(old.zones.iter().all(|z| !z.parked), "every zone ticks there: {:?}", old.zones);
        assert!(fleet.hosted("new").is_empty());
    }
}
