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

use respawn_api::admin::{ServerInfo, ZoneAdmin};
use respawn_api::http::CallError;
use respawn_store::ServerEntry;
use serde::Serialize;

use crate::fleet::http_address;
use crate::http::HttpContext;

/// How players move to the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The guide's way: new players go to the new version, the old one waits
    /// until its players have gone (they are asked to reconnect), then its
    /// zones move with their stored state.
    Guide,
    /// Zones move at once, players with them (a migrate notice).
    Handoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Milliseconds since the rollout started.
    pub at_ms: u64,
    pub step: u8,
    pub message: String,
}

/// One zone's move.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveState {
    /// On the new server.
    Moved,
    /// Back where it was: the rollout was rolled back.
    Returned,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, Serialize)]
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

    /// Starts `plan` in the background; refused while another one runs.
    pub fn start(self: &Arc<Self>, ctx: HttpContext, plan: Plan) -> Result<Rollout, String> {
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
            let outcome = execute(&ctx, &plan, &progress).await;
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

/// The zone servers' admin API as a rollout uses it: each call names a
/// registered server, and a failure is a sentence that names it.
struct Admin<'a>(&'a ZoneAdmin);

impl Admin<'_> {
    async fn at<T, F: std::future::Future<Output = Result<T, CallError>>>(
        &self,
        server: &ServerEntry,
        call: impl FnOnce(String) -> F,
    ) -> Result<T, String> {
        let addr = http_address(&server.address).ok_or_else(|| format!("{}: address has no HTTP host", server.id))?;
        call(addr.to_owned()).await.map_err(|e| format!("{} {e}", server.id))
    }

    async fn info(&self, server: &ServerEntry) -> Result<ServerInfo, String> {
        self.at(server, |addr| async move { self.0.info(&addr).await }).await
    }
}

/// A ready server other than `from`, configured for every zone `from`
/// hosts and speaking its clients' protocol: another version first (during a
/// rolling update the old version's spares are about to go too), then the
/// one hosting the fewest zones.
async fn standby_for(admin: &Admin<'_>, servers: &[ServerEntry], from: &str) -> Option<ServerEntry> {
    let source = servers.iter().find(|s| s.id == from)?;
    let source_info = admin.info(source).await.ok()?;
    let mut candidates: Vec<&ServerEntry> =
        servers.iter().filter(|s| s.id != from && s.state == respawn_store::ServerState::Ready).collect();
    candidates.sort_by_key(|s| (s.version == source.version, s.zones.len()));
    for candidate in candidates {
        let Ok(info) = admin.info(candidate).await else { continue };
        if info.can_host(&source.zones) && info.compat.protocol_version == source_info.compat.protocol_version {
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

async fn execute(ctx: &HttpContext, plan: &Plan, p: &Progress) -> Outcome {
    let Some(zone_admin) = &ctx.zone_admin else {
        return Outcome::RolledBack(
            "the zone servers' admin token is not configured: start the platform server with --zone-admin-token".into(),
        );
    };
    let admin = Admin(zone_admin);

    p.step(1);
    let servers = match ctx.registry.servers().await {
        Ok(s) => s,
        Err(e) => return Outcome::RolledBack(format!("the server registry is unavailable: {e}")),
    };
    let target = match &plan.from {
        Some(from) if plan.to.is_empty() => standby_for(&admin, &servers, from).await,
        _ => pick_target(&servers, &plan.to).cloned(),
    };
    let Some(target) = target else {
        return Outcome::RolledBack(match &plan.from {
            Some(from) if plan.to.is_empty() => format!("no other ready server can take the zones of {from}"),
            _ => format!(
                "no registered game server is {:?}: start the new version first (respawn zone --standby ...)",
                plan.to
            ),
        });
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
        return Outcome::RolledBack(match &plan.from {
            Some(from) => format!("nothing to move: {from} hosts no zone"),
            None => format!("nothing to roll out: no server of another version than {} hosts a zone", target.version),
        });
    }
    for s in &old {
        p.log(format!("old: {} version {} hosting {}", s.id, s.version, s.zones.join(", ")));
    }

    p.step(2);
    let addr = http_address(&target.address).unwrap_or_default().to_owned();
    let healthy = async {
        for _ in 0..20 {
            if let Ok((200, _)) = respawn_api::http::request(&addr, "GET", "/readyz", None).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    };
    if !healthy.await {
        return Outcome::RolledBack(format!("{} is not ready (GET /readyz) within 10 s", target.id));
    }
    let target_info = match admin.info(&target).await {
        Ok(info) => info,
        Err(why) => return Outcome::RolledBack(why),
    };
    let mut players_before = target_info.players;
    for s in &old {
        let info = match admin.info(s).await {
            Ok(info) => info,
            Err(why) => return Outcome::RolledBack(why),
        };
        players_before += info.players;
        let (theirs, ours) = (info.compat.protocol_version, target_info.compat.protocol_version);
        if theirs != ours {
            return Outcome::RolledBack(format!(
                "compatibility: {} speaks client protocol {ours}, the players of {} speak {theirs}; nothing was changed",
                target.id, s.id
            ));
        }
        if let Some(missing) = s.zones.iter().find(|z| !target_info.configured_zones.contains(z)) {
            return Outcome::RolledBack(format!(
                "{} cannot host zone {missing:?} (not in its configuration); nothing was changed",
                target.id
            ));
        }
    }
    p.log(format!(
        "ready; client protocol {}, snapshot format {}",
        target_info.compat.protocol_version, target_info.compat.snapshot_format
    ));
    p.update(|r| r.players_before = players_before);

    p.step(3);
    p.log(format!("{} is in the registry as {}: logins can reach it", target.id, target.state.as_str()));

    p.step(4);
    let notify = plan.mode == Mode::Guide;
    for s in &old {
        if let Err(why) = admin.at(s, |addr| async move { zone_admin.cordon(&addr, notify).await }).await {
            uncordon(&admin, &old, p).await;
            return Outcome::RolledBack(why);
        }
        p.log(format!(
            "{} takes no new players{}",
            s.id,
            if notify { "; its players are asked to reconnect" } else { "" }
        ));
    }

    p.step(5);
    if plan.mode == Mode::Guide {
        let deadline = Instant::now() + plan.wait;
        let mut last_log = Instant::now();
        loop {
            let mut left = 0;
            for s in &old {
                left += admin.info(s).await.map(|i| i.players).unwrap_or(0);
            }
            if left == 0 {
                p.log("the old servers have 0 players".into());
                break;
            }
            if Instant::now() >= deadline {
                p.log(format!("{left} players still connected after {:?}: their zones move live", plan.wait));
                break;
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                p.log(format!("{left} players still on the old version"));
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    } else {
        p.log("hand-off: no waiting; zones move with their players".into());
    }

    p.step(6);
    let mut moved: Vec<(ServerEntry, String)> = Vec::new();
    for s in &old {
        let zones = match admin.info(s).await {
            Ok(info) => info.hosted(),
            Err(_) => s.zones.clone(),
        };
        for zone in zones {
            match move_zone(&admin, &zone, s, &target, p).await {
                Ok(record) => {
                    p.update(|r| r.zones.push(record));
                    moved.push((s.clone(), zone));
                }
                Err(why) => {
                    let returned = move_back(&admin, &moved, &target, p).await;
                    uncordon(&admin, &old, p).await;
                    return if returned {
                        Outcome::RolledBack(why)
                    } else {
                        Outcome::Failed(format!("{why}; and not every moved zone could be returned (see the log)"))
                    };
                }
            }
        }
    }

    p.step(7);
    for s in &old {
        match admin.at(s, |addr| async move { zone_admin.drain(&addr).await }).await {
            Ok(_) => p.log(format!("{} is shutting down", s.id)),
            Err(why) => p.log(format!("{} could not be told to shut down: {why}", s.id)),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: Vec<String> = match ctx.registry.servers().await {
            Ok(servers) => servers.into_iter().filter(|s| old.iter().any(|o| o.id == s.id)).map(|s| s.id).collect(),
            Err(_) => Vec::new(),
        };
        if alive.is_empty() {
            p.log("the old servers have left the registry".into());
            break;
        }
        if Instant::now() >= deadline {
            p.log(format!("still registered after 30 s: {}", alive.join(", ")));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Outcome::Succeeded
}

/// Moves one zone from `from` to `to`: release, adopt, redirect. A refused
/// adoption resumes the zone on `from`.
async fn move_zone(
    admin: &Admin<'_>,
    zone: &str,
    from: &ServerEntry,
    to: &ServerEntry,
    p: &Progress,
) -> Result<ZoneMove, String> {
    let started = Instant::now();
    let released = admin.at(from, |addr| async move { admin.0.release(&addr, zone).await }).await?;
    let (tick, players) = (released.tick, released.players);
    if let Err(why) = admin.at(to, |addr| async move { admin.0.adopt(&addr, zone, Some(tick)).await }).await {
        let resumed = admin.at(from, |addr| async move { admin.0.resume(&addr, zone).await }).await;
        let where_now = match resumed {
            Ok(_) => format!("it ticks on {} again", from.id),
            Err(e) => format!("and it could not be resumed on {}: {e}", from.id),
        };
        return Err(format!("zone {zone} refused by the new server: {why}; {where_now}"));
    }
    redirect(admin, zone, from, to).await;
    let pause_ms = started.elapsed().as_millis() as u64;
    p.log(format!("zone {zone} moved at tick {tick} with {players} players: {pause_ms} ms without ticks"));
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

/// Sends the released zone's clients to its new owner. If the old server
/// does not answer, its clients time out and log in again.
async fn redirect(admin: &Admin<'_>, zone: &str, from: &ServerEntry, to: &ServerEntry) {
    let to = to.address.as_str();
    if let Err(why) = admin.at(from, |addr| async move { admin.0.redirect(&addr, zone, to).await }).await {
        tracing::warn!(zone, why = %why, "redirect failed; the zone's clients will log in again");
    }
}

/// Returns every moved zone to where it came from, newest first; whether all went back.
async fn move_back(admin: &Admin<'_>, moved: &[(ServerEntry, String)], target: &ServerEntry, p: &Progress) -> bool {
    let mut all = true;
    for (from, zone) in moved.iter().rev() {
        match move_zone(admin, zone, target, from, p).await {
            Ok(_) => p.update(|r| {
                if let Some(m) = r.zones.iter_mut().find(|m| &m.zone == zone) {
                    m.state = MoveState::Returned;
                }
            }),
            Err(why) => {
                p.log(format!("zone {zone} could not be returned: {why}"));
                all = false;
            }
        }
    }
    all
}

async fn uncordon(admin: &Admin<'_>, old: &[ServerEntry], p: &Progress) {
    for s in old {
        match admin.at(s, |addr| async move { admin.0.uncordon(&addr).await }).await {
            Ok(_) => p.log(format!("{} takes new players again", s.id)),
            Err(why) => p.log(format!("{} could not be reopened: {why}", s.id)),
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
}
