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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::future::Future;

use respawn_api::admin::{Adopted, Redirected, Released, Resumed, ServerInfo};
use respawn_api::http::CallError;
use respawn_store::{Registry, ServerEntry};
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

/// A rollout as the API shows it.
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
    pub players_before: u64,
    pub zones: Vec<ZoneMove>,
    pub error: Option<String>,
    pub log: Vec<LogLine>,
    pub took_ms: u64,
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

/// The current (or last) rollout and what a rollback returns to.
#[derive(Debug, Default)]
pub struct Rollouts {
    current: Mutex<Option<Rollout>>,
    /// The last rollout that succeeded: its mode and the version it left.
    last_succeeded: Mutex<Option<(Mode, String)>>,
    next_id: AtomicU64,
}

impl Rollouts {
    pub fn current(&self) -> Option<Rollout> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// A rollback's plan: back to the version the last successful rollout left, the same way.
    pub fn rollback_plan(&self, wait: Duration) -> Result<Plan, String> {
        let last = self.last_succeeded.lock().map_err(|_| "rollout state poisoned".to_owned())?.clone();
        let (mode, version) = last.ok_or("no rollout has succeeded on this platform server: nothing to roll back")?;
        Ok(Plan { to: version, from: None, mode, wait, rollback: true })
    }

    /// Starts `plan` in the background, moving zones through `admin` (none:
    /// refused, the server key is not configured); refused while another one runs.
    pub fn start<A: ZoneServers>(
        self: &Arc<Self>,
        registry: Arc<dyn Registry>,
        admin: Option<A>,
        plan: Plan,
    ) -> Result<Rollout, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let rollout = Rollout {
            id,
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
            players_before: 0,
            zones: Vec::new(),
            error: None,
            log: Vec::new(),
            took_ms: 0,
        };
        {
            let mut current = self.current.lock().map_err(|_| "rollout state poisoned".to_owned())?;
            if current.as_ref().is_some_and(|r| r.state == State::Running) {
                return Err("a rollout is already running: see GET /v1/rollouts/current".into());
            }
            *current = Some(rollout.clone());
        }
        let this = self.clone();
        tokio::spawn(async move {
            let progress = Progress { rollouts: this.clone(), started: Instant::now() };
            let outcome = match &admin {
                Some(admin) => Run { plan: &plan, registry: registry.as_ref(), admin, p: &progress }.execute().await,
                None => Outcome::RolledBack(
                    "the server key is not configured: start the platform server with --server-key".into(),
                ),
            };
            progress.finish(outcome);
        });
        Ok(rollout)
    }
}

/// Writes a running rollout's progress where the API reads it.
struct Progress {
    rollouts: Arc<Rollouts>,
    started: Instant,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut Rollout)) {
        if let Ok(mut current) = self.rollouts.current.lock() {
            if let Some(r) = current.as_mut() {
                f(r);
                r.took_ms = self.started.elapsed().as_millis() as u64;
            }
        }
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

    fn finish(&self, outcome: Outcome) {
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
        // An evacuation moves zones between servers; a rollback returns to a version.
        if state == State::Succeeded {
            let done = self.rollouts.current().filter(|r| r.evacuation.is_none());
            let left = done.and_then(|r| Some((r.mode, r.from_versions.first()?.clone())));
            if let (Some(left), Ok(mut last)) = (left, self.rollouts.last_succeeded.lock()) {
                *last = Some(left);
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
        if let Err(outcome) = self.move_zones(&old, &target).await {
            return outcome;
        }
        self.shut_down(&old).await;
        Outcome::Succeeded
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
        Ok(())
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
        loop {
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
            if last_log.elapsed() >= Duration::from_secs(2) {
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
    use respawn_store::memory::MemoryRegistry;
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
        }
    }

    const BOTH: &[&str] = &["meadow", "caverns"];

    /// Runs `plan` to its end on `fleet`.
    async fn roll_out(fleet: &FakeFleet, plan: Plan) -> Rollout {
        let rollouts = Arc::new(Rollouts::default());
        rollouts.start(fleet.registry.clone(), Some(fleet.clone()), plan).expect("started");
        loop {
            let current = rollouts.current().expect("a rollout");
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
        let moves: Vec<String> =
            fleet.calls().into_iter().filter(|c| !c.starts_with("info") && !c.starts_with("ready")).collect();
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
}
