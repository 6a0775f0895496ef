//! `respawn drill rollout [--handoff]`: a rolling update under load between
//! two builds of the binary that report different versions (this one and
//! `--next-build`). A platform server runs in this process (login, registry,
//! the rollout itself); the first build hosts every zone, the second stands
//! by; bots log in and play throughout. The drill measures what players
//! saw: how long their zone froze, commands refused or lost, characters and
//! inventories kept, everyone back.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use respawn_client::{Access, BotStats, Fleet};
use respawn_platform::http::SessionSigner;
use respawn_platform::rollout::{Mode, Plan, State};
use respawn_platform::{PlatformServer, RunningPlatform};
use serde::{Deserialize, Serialize};

use crate::deployment::max_bucket_ms;
use crate::findings::{Findings, Problem, ProblemKind};
use crate::{Scenario, TICK_BUDGET_MS};
use respawn_harness::process::{free_port, Service};
use respawn_harness::zone::{StoreFlags, ZoneCommand};

/// Our target for the longest player-visible pause of a hand-off.
const PAUSE_TARGET_MS: f64 = 1_000.0;

#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutReport {
    pub scenario: Scenario,
    pub real_services: bool,
    pub mode: Mode,
    pub from_version: String,
    pub to_version: String,
    /// Longest time a player's world stood still: its last update before the
    /// move to its resumed session on the new server.
    pub pause_ms: f64,
    pub pause_median_ms: f64,
    /// Longest time a zone did not tick (release to redirect, server side).
    pub zone_pause_ms: u64,
    /// Acknowledged commands the new server's state lacks.
    pub commands_lost: u64,
    /// Commands refused because their zone was moving (the client was told).
    pub commands_refused: u64,
    pub players_before: u64,
    pub players_after: u64,
    pub players_resumed: u64,
    pub characters_lost: u64,
    pub inventories_lost: u64,
    /// The whole rollout, its seven steps.
    pub rollout_ms: u64,
    pub max_tick_ms: f64,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One `respawn zone` process of the drill.
pub(crate) struct ZoneServer {
    pub(crate) service: Service,
    pub(crate) addr: String,
}

/// What the drill's zone servers are started with.
pub(crate) struct Setup<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) stores: &'a StoreFlags,
    pub(crate) token_key: &'a str,
    pub(crate) server_key: &'a respawn_token::ServerKey,
    pub(crate) platform: &'a str,
    /// Their admin API's operator token, if the drill calls it.
    pub(crate) admin_token: Option<&'a str>,
}

impl Setup<'_> {
    /// `exe` as server `name` (its id), hosting every zone or `standby`.
    pub(crate) async fn zone(&self, exe: &Path, name: &'static str, standby: bool) -> Result<ZoneServer> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut command = ZoneCommand::new(exe, &addr)
            .token_key(self.token_key)
            .platform(self.platform, &self.server_key.credential(name)?)
            .outbox_dir(&self.dir.join(name).join("outbox"))
            .stores(self.stores);
        if standby {
            command = command.standby();
        }
        if let Some(token) = self.admin_token {
            command = command.admin_token(token);
        }
        let mut service = Service::zone(name, &command, port, self.dir.join(name));
        service.start().await.with_context(|| format!("{name} ({})", exe.display()))?;
        Ok(ZoneServer { service, addr })
    }
}

/// The platform server in this process: registry, accounts (in a SQLite
/// file under `dir`), sign-in and the rollout.
async fn platform(dir: &Path, server_key: &respawn_token::ServerKey, token_key: &str) -> Result<RunningPlatform> {
    let mut ctx = respawn_platform::http::HttpContext::with_stores(None, "drill")?;
    ctx.server_key = Some(server_key.clone());
    let key = respawn_token::TokenKey::new(token_key.as_bytes())?;
    ctx.sessions = Some(SessionSigner::new(key));
    let accounts = respawn_platform::SqliteLedger::open(&dir.join("platform.sqlite")).await?;
    let _ = ctx.accounts.set(std::sync::Arc::new(accounts.accounts()));
    // Characters are claimed there too; this drill's events go elsewhere, so
    // each stays claimed for the zone its bot plays in.
    let _ = ctx.ledger.set(std::sync::Arc::new(accounts));
    ctx.limits.login_per_ip = respawn_store::ratelimit::Quota { burst: 100_000, period: Duration::from_secs(60) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(PlatformServer::new(ctx).without_fleet_watcher().start(listener)?)
}

async fn tick_max_ms(addr: &str) -> f64 {
    let Ok(text) = http::scrape(addr).await else { return 0.0 };
    Histogram::read(&prom::parse(&text), "respawn_zone_tick_duration_seconds", &[]).map_or(0.0, |h| max_bucket_ms(&h))
}

/// What the rollout drill runs.
#[derive(Debug)]
pub struct Options {
    /// The second build.
    pub next: PathBuf,
    pub handoff: bool,
    pub bots: u32,
    /// Real Redis and MongoDB-compatible stores (already in `stores`).
    pub real: bool,
    /// Sample tick duration and CCU for `--report`.
    pub chart: bool,
}

/// Runs the drill in `dir`.
pub async fn run(dir: &Path, stores: StoreFlags, options: Options) -> Result<RolloutReport> {
    let Options { next, handoff, bots, real, chart } = options;
    let started = Instant::now();
    let mut timeline = Vec::new();
    let note = |timeline: &mut Vec<String>, what: String| {
        timeline.push(format!("{:>7.3} s  {what}", started.elapsed().as_secs_f64()));
    };
    let token_key = respawn_token::random_hex(32)?;
    let server_key = respawn_token::ServerKey::new(respawn_token::random_hex(32)?.as_bytes())?;
    let running_platform = platform(dir, &server_key, &token_key).await?;
    let (ctx, platform_addr) = (running_platform.context().clone(), running_platform.addr().to_string());
    let setup = Setup {
        dir,
        stores: &stores,
        token_key: &token_key,
        server_key: &server_key,
        platform: &platform_addr,
        admin_token: None,
    };
    let current = std::env::current_exe()?;
    let mut old = setup.zone(&current, "old", false).await?;
    let new = setup.zone(&next, "new", true).await?;
    let sampler = chart.then(|| super::report::Sampler::start(vec![old.addr.clone(), new.addr.clone()], started));
    // Both in the registry, with their versions.
    let deadline = Instant::now() + Duration::from_secs(20);
    let servers = loop {
        let servers = ctx.registry.servers().await.unwrap_or_default();
        if servers.len() == 2 {
            break servers;
        }
        if Instant::now() > deadline {
            bail!("the two zone servers did not both register within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed: Vec<(&str, &str)> = servers.iter().map(|s| (s.address.as_str(), s.version.as_str())).collect();
    let (from_version, to_version) = two_versions(&listed, &old.addr, &new.addr)?;
    note(&mut timeline, format!(
        "deployment up: platform {platform_addr}; {from_version} at {} hosting every zone, {to_version} at {} standing by ({})",
        old.addr,
        new.addr,
        if real { "Redis + MongoDB-compatible" } else { "embedded files" }
    ));

    let fleet = bots_playing(&platform_addr, bots).await?;
    let stats = fleet.stats.clone();
    let players_before = stats.connected.load(Relaxed);
    note(&mut timeline, format!("{players_before} bots playing"));
    let mut max_tick_ms = tick_max_ms(&old.addr).await;

    let since = PlayersSince::mark(&stats);
    let mode = if handoff { Mode::Handoff } else { Mode::Guide };
    let plan = Plan { to: to_version.clone(), from: None, mode, wait: Duration::from_secs(60), rollback: false };
    let rollout_started = started.elapsed();
    ctx.start_rollout(plan).await.map_err(anyhow::Error::msg)?;
    note(
        &mut timeline,
        format!("rollout to {to_version} started ({})", if handoff { "hand-off" } else { "guide's steps" }),
    );
    let rollout = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match ctx.rollouts.current().await? {
            Some(r) if r.state != State::Running => break r,
            Some(_) => {}
            None => bail!("the rollout vanished"),
        }
    };
    for line in &rollout.log {
        let at = rollout_started + Duration::from_millis(line.at_ms);
        timeline.push(format!("{:>7.3} s    [{}/7] {}", at.as_secs_f64(), line.step, line.message));
    }
    let mut problems = Vec::new();
    if rollout.state != State::Succeeded {
        problems.push(Problem::new(
            ProblemKind::Rollout,
            format!("the rollout ended {:?}: {}", rollout.state, rollout.error.clone().unwrap_or_default()),
        ));
    }
    match old.service.wait_exit(Duration::from_secs(30)).await {
        Ok(status) if status.success() => note(&mut timeline, "the old server stopped cleanly".into()),
        Ok(status) => {
            problems.push(Problem::new(ProblemKind::ProcessStop, format!("the old server ended with {status}")))
        }
        Err(e) => problems.push(Problem::new(ProblemKind::ProcessStop, format!("the old server did not stop: {e}"))),
    }

    // Everyone back and playing on the new server.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.connected.load(Relaxed) < players_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let players_after = stats.connected.load(Relaxed);
    note(&mut timeline, format!("{players_after} of {players_before} players playing on {to_version}"));
    max_tick_ms = max_tick_ms.max(tick_max_ms(&new.addr).await);
    fleet.stop().await;
    if let Ok(Err(why)) = tokio::time::timeout(Duration::from_secs(3), running_platform.shutdown()).await {
        problems
            .push(Problem::new(ProblemKind::ProcessStop, format!("the platform server did not stop cleanly: {why}")));
    }
    let chart = match sampler {
        Some(sampler) => sampler.finish().await,
        None => Vec::new(),
    };

    let players = since.tally(&stats);
    let (pause_ms, pause_median_ms) = (players.pause_ms(), players.pause_median_ms());
    if let (Some(first), Some(last)) = (players.pauses.first(), players.pauses.last()) {
        note(
            &mut timeline,
            format!("{} players resumed after pauses of {first:.0} to {last:.0} ms", players.pauses.len()),
        );
    }
    players.judge(players_before, players_after, &mut problems);
    if handoff && pause_ms > PAUSE_TARGET_MS {
        problems.push(Problem::new(
            ProblemKind::Pause,
            format!("a player's world froze for {pause_ms:.0} ms (target < {PAUSE_TARGET_MS:.0} ms)"),
        ));
    }
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(Problem::new(
            ProblemKind::TickOverBudget,
            format!("a tick took up to {max_tick_ms:.0} ms (budget {TICK_BUDGET_MS:.0} ms)"),
        ));
    }
    drop(new);
    Ok(RolloutReport {
        scenario: Scenario::Rollout,
        real_services: real,
        mode,
        from_version,
        to_version,
        pause_ms,
        pause_median_ms,
        zone_pause_ms: rollout.zones.iter().map(|z| z.pause_ms).max().unwrap_or(0),
        commands_lost: players.commands_lost,
        commands_refused: players.commands_refused,
        players_before,
        players_after,
        players_resumed: players.pauses.len() as u64,
        characters_lost: players.characters_lost,
        inventories_lost: players.inventories_lost,
        rollout_ms: rollout.took_ms,
        max_tick_ms,
        findings: Findings { timeline, chart, ..Findings::judge(problems) },
    })
}

/// The versions of the old and the new build, from the registry's
/// `(address, version)` of each server; refused when they are the same.
pub(crate) fn two_versions(listed: &[(&str, &str)], old: &str, new: &str) -> Result<(String, String)> {
    let version_of =
        |addr: &str| listed.iter().find(|(a, _)| a.contains(addr)).map(|(_, v)| (*v).to_owned()).unwrap_or_default();
    let (from_version, to_version) = (version_of(old), version_of(new));
    if from_version == to_version {
        bail!("both builds report version {from_version}: build the second one with RESPAWN_BUILD_VERSION set");
    }
    Ok((from_version, to_version))
}

/// `bots` signing in through `platform` to the default zones, all connected
/// and then playing 3 s: long enough for acknowledged commands, pickups
/// and a snapshot to exist.
pub(crate) async fn bots_playing(platform: &str, bots: u32) -> Result<Fleet> {
    let zones: Vec<String> = respawn_zone::ServerConfig::defaults().zones.iter().map(|z| z.name.clone()).collect();
    let fleet = Fleet::spawn(Access::Login { platform: platform.to_owned() }, &zones, bots, "drill");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet.stats.connected.load(Relaxed) < u64::from(bots) {
        if Instant::now() > deadline {
            bail!("only {} of {bots} bots connected", fleet.stats.connected.load(Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(fleet)
}

/// The bots' own accounts from a moment on (a fault, a rollout).
pub(crate) struct PlayersSince {
    resumes: usize,
    refused: u64,
    characters_lost: u64,
    inventories_lost: u64,
}

/// What the players went through since a [`PlayersSince`] mark.
pub(crate) struct PlayerTally {
    /// Each resumed player's pause (from its last update to its resumed session), ms, ascending.
    pub(crate) pauses: Vec<f64>,
    /// Acknowledged commands the resumed sessions' state lacked.
    pub(crate) commands_lost: u64,
    /// Commands refused because their zone was moving (the client was told).
    pub(crate) commands_refused: u64,
    pub(crate) characters_lost: u64,
    pub(crate) inventories_lost: u64,
}

impl PlayersSince {
    pub(crate) fn mark(stats: &BotStats) -> Self {
        Self {
            resumes: stats.resumes().len(),
            refused: stats.refused_moving.load(Relaxed),
            characters_lost: stats.characters_lost.load(Relaxed),
            inventories_lost: stats.inventories_lost.load(Relaxed),
        }
    }

    pub(crate) fn tally(&self, stats: &BotStats) -> PlayerTally {
        let resumes: Vec<_> = stats.resumes().into_iter().skip(self.resumes).collect();
        let mut pauses: Vec<f64> = resumes.iter().map(|r| r.frozen.as_secs_f64() * 1e3).collect();
        pauses.sort_by(f64::total_cmp);
        PlayerTally {
            pauses,
            commands_lost: resumes.iter().map(|r| u64::from(r.lost_acknowledged)).sum(),
            commands_refused: stats.refused_moving.load(Relaxed) - self.refused,
            characters_lost: stats.characters_lost.load(Relaxed) - self.characters_lost,
            inventories_lost: stats.inventories_lost.load(Relaxed) - self.inventories_lost,
        }
    }
}

impl PlayerTally {
    pub(crate) fn pause_ms(&self) -> f64 {
        self.pauses.last().copied().unwrap_or(0.0)
    }

    pub(crate) fn pause_median_ms(&self) -> f64 {
        self.pauses.get(self.pauses.len() / 2).copied().unwrap_or(0.0)
    }

    /// Problems: anything acknowledged, any character or inventory lost,
    /// players not back or not resumed.
    pub(crate) fn judge(&self, players_before: u64, players_after: u64, problems: &mut Vec<Problem>) {
        if self.commands_lost > 0 {
            problems.push(Problem::new(
                ProblemKind::CommandsLost,
                format!("{} acknowledged commands lost", self.commands_lost),
            ));
        }
        if self.characters_lost > 0 {
            problems.push(Problem::new(
                ProblemKind::CharactersLost,
                format!("{} players came back to a new character", self.characters_lost),
            ));
        }
        if self.inventories_lost > 0 {
            problems.push(Problem::new(
                ProblemKind::InventoriesLost,
                format!("{} characters came back with less gold, XP or items", self.inventories_lost),
            ));
        }
        if players_after < players_before {
            problems.push(Problem::new(
                ProblemKind::PlayersNotBack,
                format!("only {players_after} of {players_before} players back"),
            ));
        }
        if (self.pauses.len() as u64) < players_before {
            problems.push(Problem::new(
                ProblemKind::PlayersNotBack,
                format!("only {} of {players_before} players resumed their characters", self.pauses.len()),
            ));
        }
    }
}

pub fn print_report(r: &RolloutReport) {
    let how = if r.mode == Mode::Handoff { "live hand-off" } else { "the guide's steps" };
    let stores = if r.real_services { "Redis + MongoDB-compatible" } else { "embedded stores" };
    println!("Drill rollout {} -> {} ({how}, {stores})", r.from_version, r.to_version);
    println!();
    r.findings.print_timeline();
    println!("Figures                                        guide                 target");
    let pause_target = if r.mode == Mode::Handoff { "< 1 s" } else { "-" };
    println!(
        "  player-visible pause {:>7.0} ms (median {:>4.0})  until players leave   {pause_target}",
        r.pause_ms, r.pause_median_ms
    );
    println!("  zone not ticking     {:>7} ms", r.zone_pause_ms);
    println!("  acknowledged commands lost {:>4}                                     0", r.commands_lost);
    println!("  commands refused while moving {:>4} (told to the client)", r.commands_refused);
    println!(
        "  players              {:>4} before, {:>4} after                          all",
        r.players_before, r.players_after
    );
    println!(
        "  characters resumed   {:>4}; lost {}, inventories lost {}                0",
        r.players_resumed, r.characters_lost, r.inventories_lost
    );
    println!("  rollout took         {:>7} ms (7 steps)", r.rollout_ms);
    println!("  max tick             {:>7} ms                                    < 50 ms", r.max_tick_ms);
    r.findings.print_verdict();
}

/// The second build: `--next-build`, else `RESPAWN_NEXT_BIN` (what `scripts/test` exports).
pub fn next_build(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = given.or_else(|| std::env::var_os("RESPAWN_NEXT_BIN").map(PathBuf::from)).context(
        "the rollout drill needs a second build reporting another version: \
         RESPAWN_BUILD_VERSION=0.1.0-next cargo build, copy target/debug/respawn aside, \
         and pass it with --next-build (scripts/test does this and exports RESPAWN_NEXT_BIN)",
    )?;
    // Absolute: each server runs in a directory of its own.
    std::fs::canonicalize(&path).with_context(|| format!("--next-build {}", path.display()))
}
