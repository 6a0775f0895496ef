//! `respawn drill platform-loss --real`: the platform as two replicas
//! behind one address (a balancing proxy, as a load balancer in front of
//! several pods), a live hand-off rollout under load, and the replica
//! running it killed (`kill -9`) as the zones move. The other replica takes
//! the rollout over from the operations store (Redis): it must complete or
//! roll back cleanly (every zone ticking on exactly one server, every
//! player back, nothing acknowledged lost), and no alert may be told twice,
//! though both replicas, and the killed one restarted, watch the fleet and
//! post to one webhook.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::http::{HeaderMap, StatusCode};
use respawn_api::admin::ZoneAdmin;
use respawn_api::http::{Call, Method};
use respawn_api::registry::RegistryClient;
use respawn_harness::gate::Gate;
use respawn_harness::process::{free_port, Service};
use respawn_platform::rollout::{Rollout, State};
use serde::{Deserialize, Serialize};

use crate::deployment::Backing;
use crate::findings::{Findings, Problem, ProblemKind};
use crate::rollout::{bots_playing, two_versions, PlayersSince, Setup};
use crate::services::{create_database, platform_service, start_mariadb, start_tansu, PlatformSecrets};
use crate::Scenario;

/// How long the other replica may take to carry a killed runner's rollout
/// to its end: the runner's lease (2 s), a look (every 0.5 s), the moves.
const FINISH_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
pub struct PlatformLossReport {
    pub scenario: Scenario,
    pub from_version: String,
    pub to_version: String,
    /// How the rollout ended.
    pub rollout_state: State,
    pub rollout_error: Option<String>,
    /// The step its runner was killed at, and the zones moved by then.
    pub killed_at_step: u8,
    pub zones_moved_before_kill: usize,
    /// From the kill to the other replica's taking the rollout over, and to its end.
    pub takeover_ms: u64,
    pub finished_after_kill_ms: u64,
    /// Each zone and the servers running it at the end (exactly one each).
    pub zone_hosts: BTreeMap<String, Vec<String>>,
    pub players_before: u64,
    pub players_after: u64,
    pub players_resumed: u64,
    /// Longest time a player's world stood still (those of a zone caught
    /// mid-move wait for the take-over).
    pub pause_ms: f64,
    pub commands_lost: u64,
    pub characters_lost: u64,
    pub inventories_lost: u64,
    /// Alert notifications the webhook got, and the alerts told twice in a row.
    pub notifications: u64,
    pub alerts_told_twice: Vec<String>,
    #[serde(flatten)]
    pub findings: Findings,
}

/// Every notification the webhook got: (alert name and key, state), in order.
type Told = Arc<Mutex<Vec<(String, String)>>>;

/// The alerts' webhook: notes each notification by its id (`name|key|since|state`).
async fn webhook() -> Result<(SocketAddr, Told)> {
    let told: Told = Arc::default();
    let seen = told.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let id = headers.get("x-respawn-notification-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let mut parts = id.rsplitn(3, '|');
            let (state, _since, alert) = (parts.next(), parts.next(), parts.next());
            if let (Some(state), Some(alert), Ok(mut told)) = (state, alert, seen.lock()) {
                told.push((alert.to_owned(), state.to_owned()));
            }
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, told))
}

/// Alerts told in the same state twice in a row (fired while firing,
/// resolved while resolved), or resolved without having fired.
fn told_twice(told: &[(String, String)]) -> Vec<String> {
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    let mut twice = Vec::new();
    for (alert, state) in told {
        let before = last.insert(alert, state).unwrap_or("resolved");
        if before == state {
            twice.push(format!("{alert} told {state} twice"));
        }
    }
    twice
}

/// One platform replica: a `respawn platform` process.
struct Replica {
    service: Service,
    addr: SocketAddr,
}

/// The runner named in a rollout record (`<host> pid <pid>[ #n]`) is this process.
fn runs_it(runner: &str, pid: Option<u32>) -> bool {
    pid.is_some_and(|pid| runner.split(' ').skip_while(|w| *w != "pid").nth(1) == Some(pid.to_string().as_str()))
}

/// Runs the drill in `dir`.
pub async fn run(dir: &Path, next: &Path, bots: u32) -> Result<PlatformLossReport> {
    let started = Instant::now();
    let mut timeline = Vec::new();
    let note = |timeline: &mut Vec<String>, what: String| {
        timeline.push(format!("{:>7.3} s  {what}", started.elapsed().as_secs_f64()));
    };
    let backing = Backing::start(dir, true, false).await?;
    let mut stores = backing.stores.clone();
    let redis_url = stores.redis_url.clone().context("real stores have a Redis")?;
    let broker_port = free_port()?;
    let _broker = start_tansu(&dir.join("broker"), broker_port, broker_port).await?;
    let brokers = format!("127.0.0.1:{broker_port}");
    stores.kafka_brokers = Some(brokers.clone());
    let _mysql = start_mariadb(&dir.join("mariadb")).await?;
    let mysql_url = create_database(&format!("mysql://root@127.0.0.1:{}", _mysql.port), "respawn").await?;

    let secrets = PlatformSecrets::random()?;
    let (hook, told) = webhook().await?;
    let mut replicas = Vec::new();
    for i in 1..=2 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let dir = dir.join(format!("platform-{i}"));
        let mut service = platform_service(&addr.to_string(), &brokers, &redis_url, &mysql_url, &secrets, dir)?
            .env("RESPAWN_ALERT_WEBHOOK", format!("http://{hook}/alerts"));
        service.start().await.with_context(|| format!("platform replica {i}"))?;
        replicas.push(Replica { service, addr });
    }
    let balancer = Gate::open_balanced(0, &replicas.iter().map(|r| r.addr).collect::<Vec<_>>()).await?;
    let platform = format!("127.0.0.1:{}", balancer.port);

    let server_key = respawn_token::ServerKey::new(secrets.server_key.as_bytes())?;
    let setup = Setup {
        dir,
        stores: &stores,
        token_key: &secrets.token_key,
        server_key: &server_key,
        platform: &platform,
        admin_token: Some(&secrets.admin_token),
    };
    let mut old = setup.zone(&std::env::current_exe()?, "old", false).await?;
    let new = setup.zone(next, "new", true).await?;
    let registry = RegistryClient::new(platform.clone(), secrets.admin_token.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let servers = loop {
        let servers = registry.servers().await.unwrap_or_default();
        if servers.len() == 2 {
            break servers;
        }
        if Instant::now() > deadline {
            bail!("the two zone servers did not both register within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let listed: Vec<(&str, &str)> = servers.iter().map(|s| (s.address.as_str(), s.version.as_str())).collect();
    let (from_version, to_version) = two_versions(&listed, &old.addr, &new.addr)?;
    note(
        &mut timeline,
        format!(
            "platform replicas {} and {} behind {platform}; {from_version} at {} hosting every zone, {to_version} at {} standing by",
            replicas[0].addr, replicas[1].addr, old.addr, new.addr
        ),
    );

    // Both replicas' fleet watchers see both versions meanwhile (an alert each).
    let fleet = bots_playing(&platform, bots).await?;
    let stats = fleet.stats.clone();
    let players_before = stats.connected.load(Relaxed);
    note(&mut timeline, format!("{players_before} bots playing"));
    let since = PlayersSince::mark(&stats);

    let admin = secrets.admin_token.as_str();
    let body = serde_json::json!({ "to": to_version, "handoff": true });
    let started_rollout: Rollout =
        Call::new(Method::POST, &platform, "/v1/rollouts").bearer(Some(admin)).json(&body).read().await?;
    note(&mut timeline, format!("rollout {} to {to_version} started (hand-off)", started_rollout.id));
    let current = || async {
        Call::new(Method::GET, &platform, "/v1/rollouts/current").bearer(Some(admin)).read::<Rollout>().await
    };

    // The runner is killed as soon as the record says zones are moving.
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        if let Ok(r) = current().await {
            if r.step >= 6 || r.state != State::Running {
                break r;
            }
        }
        if Instant::now() > deadline {
            bail!("the rollout did not reach step 6 within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if at_kill.state != State::Running {
        bail!("the rollout ended ({:?}) before its runner could be killed", at_kill.state);
    }
    let Some(killed) = replicas.iter().position(|r| runs_it(&at_kill.runner, r.service.pid())) else {
        bail!("no replica runs the rollout: its runner is {:?}", at_kill.runner);
    };
    replicas[killed].service.kill().await;
    let killed_at = Instant::now();
    note(
        &mut timeline,
        format!(
            "replica {} ({}), running the rollout, killed at step {}/7 with {} zones moved",
            killed + 1,
            at_kill.runner,
            at_kill.step,
            at_kill.zones.len()
        ),
    );

    let (mut takeover_ms, mut taken_by) = (None, String::new());
    let rollout = loop {
        if let Ok(r) = current().await {
            if takeover_ms.is_none() && r.runner != at_kill.runner {
                takeover_ms = Some(killed_at.elapsed().as_millis() as u64);
                taken_by = r.runner.clone();
            }
            if r.state != State::Running {
                break r;
            }
        }
        if killed_at.elapsed() > FINISH_LIMIT {
            bail!("the rollout was still running {FINISH_LIMIT:?} after its runner was killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let finished_after_kill_ms = killed_at.elapsed().as_millis() as u64;
    let takeover_ms = takeover_ms.unwrap_or(finished_after_kill_ms);
    note(&mut timeline, format!("taken over by {taken_by} after {takeover_ms} ms"));
    note(
        &mut timeline,
        format!(
            "rollout {:?} {finished_after_kill_ms} ms after the kill{}",
            rollout.state,
            rollout.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
    );
    let mut problems = Vec::new();
    if !matches!(rollout.state, State::Succeeded | State::RolledBack) {
        problems.push(Problem::new(
            ProblemKind::Rollout,
            format!("the rollout ended {:?}: {}", rollout.state, rollout.error.clone().unwrap_or_default()),
        ));
    }
    if rollout.id != started_rollout.id {
        problems.push(Problem::new(ProblemKind::Rollout, "another rollout replaced the one started"));
    }

    // The killed replica comes back: it must not tell again what was told.
    replicas[killed].service.start().await.context("restarting the killed replica")?;
    note(&mut timeline, format!("replica {} restarted", killed + 1));
    if rollout.state == State::Succeeded {
        match old.service.wait_exit(Duration::from_secs(30)).await {
            Ok(status) if status.success() => note(&mut timeline, "the old server stopped cleanly".into()),
            Ok(status) => {
                problems.push(Problem::new(ProblemKind::ProcessStop, format!("the old server ended with {status}")))
            }
            Err(e) => {
                problems.push(Problem::new(ProblemKind::ProcessStop, format!("the old server did not stop: {e}")))
            }
        }
    }

    // Every zone ticking on exactly one server: the new one after a
    // success, the old one after a rollback.
    let zone_admin = ZoneAdmin::new(&secrets.admin_token);
    let configured = respawn_zone::ServerConfig::defaults().zones;
    let mut zone_hosts: BTreeMap<String, Vec<String>> =
        configured.iter().map(|z| (z.name.clone(), Vec::new())).collect();
    for (name, server) in [("old", &old), ("new", &new)] {
        let Ok(info) = zone_admin.info(&server.addr).await else { continue };
        for zone in info.zones.iter().filter(|z| !z.parked) {
            zone_hosts.entry(zone.name.clone()).or_default().push(name.to_owned());
        }
    }
    let expected = if rollout.state == State::Succeeded { "new" } else { "old" };
    for (zone, hosts) in &zone_hosts {
        if hosts.as_slice() != [expected] {
            problems.push(Problem::new(
                ProblemKind::TwoOwners,
                format!(
                    "zone {zone} runs on {hosts:?}; after a {:?} rollout it runs on {expected} alone",
                    rollout.state
                ),
            ));
        }
    }
    note(&mut timeline, format!("zones: {zone_hosts:?}"));

    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.connected.load(Relaxed) < players_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both replicas and the restarted one look at the fleet a few more times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let players_after = stats.connected.load(Relaxed);
    note(&mut timeline, format!("{players_after} of {players_before} players playing"));
    fleet.stop().await;
    let players = since.tally(&stats);
    // A rollback moves players twice, a success once: every one resumes at least once.
    players.judge(players_before, players_after, &mut problems);

    let told: Vec<(String, String)> = told.lock().map(|t| t.clone()).unwrap_or_default();
    let alerts_told_twice = told_twice(&told);
    for twice in &alerts_told_twice {
        problems.push(Problem::new(ProblemKind::AlertsRepeated, twice.clone()));
    }
    if told.is_empty() {
        problems.push(Problem::new(ProblemKind::NothingTested, "no alert was told: nothing to tell twice"));
    }
    note(
        &mut timeline,
        format!(
            "{} notifications: {}",
            told.len(),
            told.iter().map(|(alert, state)| format!("{alert} {state}")).collect::<Vec<_>>().join("; ")
        ),
    );
    for replica in &mut replicas {
        replica.service.kill().await;
    }
    drop((old, new, balancer, backing));
    Ok(PlatformLossReport {
        scenario: Scenario::PlatformLoss,
        from_version,
        to_version,
        rollout_state: rollout.state,
        rollout_error: rollout.error,
        killed_at_step: at_kill.step,
        zones_moved_before_kill: at_kill.zones.len(),
        takeover_ms,
        finished_after_kill_ms,
        zone_hosts,
        players_before,
        players_after,
        players_resumed: players.pauses.len() as u64,
        pause_ms: players.pause_ms(),
        commands_lost: players.commands_lost,
        characters_lost: players.characters_lost,
        inventories_lost: players.inventories_lost,
        notifications: told.len() as u64,
        alerts_told_twice,
        findings: Findings { timeline, ..Findings::judge(problems) },
    })
}

pub fn print_report(r: &PlatformLossReport) {
    println!("Drill platform-loss {} -> {} (two platform replicas, live hand-off)", r.from_version, r.to_version);
    println!();
    r.findings.print_timeline();
    println!("Figures                                                   target");
    println!("  runner killed at step {}/7, {} zones moved by then", r.killed_at_step, r.zones_moved_before_kill);
    println!("  taken over after     {:>7} ms", r.takeover_ms);
    println!(
        "  rollout ended        {:>7} ms after the kill: {:?}   succeeded or rolled back",
        r.finished_after_kill_ms, r.rollout_state
    );
    println!("  zones on one server  {:?}", r.zone_hosts);
    println!("  players              {:>4} before, {:>4} after               all", r.players_before, r.players_after);
    println!("  longest player pause {:>7.0} ms", r.pause_ms);
    println!("  acknowledged commands lost {:>4}                          0", r.commands_lost);
    println!("  characters lost {}, inventories lost {}                   0", r.characters_lost, r.inventories_lost);
    println!(
        "  alert notifications  {:>4}; told twice {}                0",
        r.notifications,
        r.alerts_told_twice.len()
    );
    r.findings.print_verdict();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_told_twice_in_the_same_state_is_caught() {
        let told = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(a, s)| ((*a).to_owned(), (*s).to_owned())).collect()
        };
        let clean = told(&[("A|x", "firing"), ("B|y", "firing"), ("A|x", "resolved"), ("A|x", "firing")]);
        assert!(told_twice(&clean).is_empty());
        let twice = told(&[("A|x", "firing"), ("B|y", "firing"), ("A|x", "firing"), ("C|z", "resolved")]);
        assert_eq!(told_twice(&twice), ["A|x told firing twice", "C|z told resolved twice"]);
    }

    #[test]
    fn the_runner_is_found_by_its_process_id() {
        assert!(runs_it("host-a pid 4242", Some(4242)));
        assert!(runs_it("host-a pid 4242 #2", Some(4242)));
        assert!(!runs_it("host-a pid 42421", Some(4242)));
        assert!(!runs_it("host-a pid 4242", None));
    }
}
