//! The drills that lose more than one process: `all-zones-down` (every zone
//! server killed, then started anew: the guide's "delete the game-server
//! deployment") and `site-loss` (every process killed, Redis and the broker
//! wiped with the zone servers' disks; MongoDB's cold snapshots and MySQL's
//! data are all that is left). The deployment has one zone server per zone,
//! each with its own bots, so "every zone server" means more than one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use respawn_client::{signed_tokens, Access, Fleet};
use respawn_token::TokenKey;
use serde::{Deserialize, Serialize};

use crate::deployment::{cold_snapshots, max_bucket_ms, Backing};
use crate::findings::{EventTally, Findings, Killed, Problem, ProblemKind};
use crate::ledger::{settle, EventCounts, LedgerView};
use crate::recovery::crash_problems;
use crate::{Scenario, TICK_BUDGET_MS};
use respawn_harness::process::{free_port, Service};
use respawn_harness::zone::ZoneCommand;

/// Our target for every zone back after all zone servers died: they restart
/// side by side, each within the one-server target.
const RTO_ALL_ZONES_TARGET_MS: f64 = super::RTO_TARGET_MS;
/// Our target for a whole site rebuilt from MongoDB and MySQL: the scripted
/// restore of every service, in order (the guide expects 30-60 minutes).
const RTO_SITE_TARGET_MS: f64 = 60_000.0;
/// Cold snapshot period in the site-loss drill (production: 5 minutes).
const SITE_COLD_SECS: u64 = 2;
/// Play a site loss may lose: one cold snapshot period and the time to store it.
const SITE_RPO_TARGET_MS: f64 = (SITE_COLD_SECS * 1_000 + 1_000) as f64;
/// Events a site loss may lose: those generated in this window before it
/// (in the broker or the outboxes, not yet in MySQL).
const SITE_EVENTS_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize)]
pub struct SiteReport {
    pub scenario: Scenario,
    pub real_services: bool,
    pub zone_servers: usize,
    /// From the kill to every zone ticking again.
    pub rto_ms: f64,
    /// Most ticks a player's world went back.
    pub rpo_ticks: u64,
    pub rpo_ms: f64,
    /// Acknowledged commands the restored zones lack.
    pub commands_lost: u64,
    pub players_before: u64,
    pub players_resumed: u64,
    /// Players who came back to a new character.
    pub characters_lost: u64,
    /// Longest time a player was without its character.
    pub players_back_ms: f64,
    /// Where each zone's state came from (hot, cold, journal, fresh).
    pub restored_from: Vec<String>,
    #[serde(flatten)]
    pub events: EventTally,
    /// Events generated in the last second before a site loss: at most these may be lost.
    pub events_last_second: u64,
    pub max_tick_ms: f64,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One zone server of the site, hosting one zone.
struct ZoneServer {
    zone: String,
    addr: String,
    service: Service,
    /// Its own disk: the outbox.
    outbox: PathBuf,
}

/// The deployment of these drills.
pub(super) struct Site {
    root: PathBuf,
    real: bool,
    backing: Backing,
    servers: Vec<ZoneServer>,
    fleets: Vec<Fleet>,
    /// Events of the zone-server processes killed so far.
    killed: Killed,
    started: Instant,
    timeline: Vec<String>,
}

impl Site {
    pub async fn start(root: &Path, scenario: Scenario, real: bool, bots: u32) -> Result<Self> {
        let site_loss = scenario == Scenario::SiteLoss;
        let backing = Backing::start(root, real, site_loss).await?;
        let token_key = respawn_token::random_hex(32)?;
        let admin_token = respawn_token::random_hex(32)?;
        let zones = respawn_zone::ServerConfig::defaults().zones;
        let mut servers = Vec::new();
        for zone in &zones {
            let dir = root.join("zones").join(&zone.name);
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("zone.toml");
            let cold = if site_loss {
                format!("[persistence]\ncold_snapshot_secs = {SITE_COLD_SECS}\n")
            } else {
                String::new()
            };
            std::fs::write(
                &config,
                format!("{cold}[[zones]]\nid = {}\nname = \"{}\"\nseed = {}\n", zone.zone_id, zone.name, zone.seed),
            )?;
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let outbox = dir.join("outbox");
            let command = ZoneCommand::new(std::env::current_exe()?, &addr)
                .config(&config)
                .token_key(&token_key)
                .admin_token(&admin_token)
                .outbox_dir(&outbox)
                .stores(&backing.stores);
            let mut service = Service::zone("zone", &command, port, dir);
            service.start().await?;
            servers.push(ZoneServer { zone: zone.name.clone(), addr, service, outbox });
        }
        let mut fleets = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            let share = bots / servers.len() as u32 + u32::from((i as u32) < bots % servers.len() as u32);
            let tokens = signed_tokens(TokenKey::new(token_key.as_bytes())?, Duration::from_secs(3_600));
            let access = Access::Direct { url: format!("ws://{}/ws", server.addr), tokens };
            fleets.push(Fleet::spawn(
                access,
                std::slice::from_ref(&server.zone),
                share,
                &format!("drill-{}", server.zone),
            ));
        }
        let mut site = Self {
            root: root.to_path_buf(),
            real,
            backing,
            servers,
            fleets,
            killed: Killed::default(),
            started: Instant::now(),
            timeline: Vec::new(),
        };
        let layout: Vec<String> = site.servers.iter().map(|s| format!("{} at {}", s.zone, s.addr)).collect();
        site.note(format!(
            "deployment up: {} zone servers ({}), {}{}; {bots} bots",
            site.servers.len(),
            layout.join(", "),
            if real { "Redis + MongoDB-compatible" } else { "embedded files" },
            if site_loss { ", Tansu broker, MariaDB, platform server" } else { "" }
        ));
        Ok(site)
    }

    pub fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    fn note(&mut self, what: impl std::fmt::Display) {
        self.timeline.push(format!("{:>7.3} s  {what}", self.started.elapsed().as_secs_f64()));
    }

    /// Every server's metrics; `None` where one does not answer.
    async fn scrape(&self) -> Vec<Option<Vec<prom::Sample>>> {
        let mut all = Vec::new();
        for s in &self.servers {
            all.push(http::scrape(&s.addr).await.ok().map(|t| prom::parse(&t)));
        }
        all
    }

    /// A metric summed over every server that answers.
    async fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape().await.iter().flatten().map(|s| prom::sum(s, name, labels)).sum()
    }

    async fn players(&self) -> u64 {
        self.sum("respawn_zone_players", &[]).await as u64
    }

    async fn wait(&self, limit: Duration, done: impl AsyncFn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Whether every server answers and its zone has ticked.
    async fn all_ticking(&self) -> bool {
        let scraped = self.scrape().await;
        self.servers.iter().zip(&scraped).all(|(server, s)| {
            s.as_ref().is_some_and(|s| {
                prom::value(s, "respawn_zone_tick_duration_seconds_count", &[("zone", &server.zone)]).unwrap_or(0.0)
                    > 0.0
            })
        })
    }

    async fn max_tick_ms(&self) -> f64 {
        self.scrape()
            .await
            .iter()
            .flatten()
            .filter_map(|s| Histogram::read(s, "respawn_zone_tick_duration_seconds", &[]))
            .map(|h| max_bucket_ms(&h))
            .fold(0.0, f64::max)
    }

    fn resumes(&self) -> Vec<respawn_client::bot::Resume> {
        self.fleets.iter().flat_map(|f| f.stats.resumes()).collect()
    }

    fn characters_lost(&self) -> u64 {
        self.fleets.iter().map(|f| f.stats.characters_lost.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }

    fn ledger(&self) -> Result<LedgerView> {
        match &self.backing.pipeline {
            Some(p) => LedgerView::of(p),
            None => Ok(LedgerView::Sqlite(self.backing.stores.data_dir.join(respawn_harness::zone::EVENTS_DB))),
        }
    }

    /// Kills every zone server (`kill -9`), all at once.
    async fn kill_zone_servers(&mut self) {
        for s in &mut self.servers {
            s.service.kill().await;
        }
    }

    /// Starts every zone server again, side by side; each answers once its zone is restored.
    async fn start_zone_servers(&mut self) -> Result<()> {
        let starts = self.servers.iter_mut().map(|s| s.service.start());
        futures_util::future::try_join_all(starts).await?;
        Ok(())
    }

    pub async fn stop(mut self) {
        for fleet in std::mem::take(&mut self.fleets) {
            fleet.stop().await;
        }
        self.kill_zone_servers().await;
    }
}

impl EventCounts for Site {
    async fn generated(&self) -> Result<u64> {
        Ok(self.killed.generated + self.sum("respawn_zone_events_total", &[]).await as u64)
    }

    async fn outbox_pending(&self) -> Result<u64> {
        Ok(self.sum("respawn_zone_outbox_pending_events", &[]).await as u64)
    }
}

/// Runs `all-zones-down` or `site-loss` on `site`.
pub(super) async fn run(site: &mut Site, scenario: Scenario) -> Result<SiteReport> {
    let want = site.fleets.iter().map(|f| f.len() as u64).sum::<u64>();
    if !site.wait(Duration::from_secs(20), async || site.players().await >= want).await {
        bail!("only {} of {want} bots connected", site.players().await);
    }
    // Play long enough for snapshots, a journal and events to exist.
    tokio::time::sleep(Duration::from_secs(2)).await;
    site.note(format!("{want} bots playing"));
    let db = site.ledger()?;
    if !site.wait(Duration::from_secs(30), async || db.count().await.unwrap_or(0) > 0).await {
        bail!("no event reached the ledger within 30 s of the bots playing");
    }
    let mut problems = Vec::new();
    // Events generated over time, to know how many came in the last second before the fault.
    let stop_watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_generated(site.addrs(), stop_watching.clone()));
    if scenario == Scenario::SiteLoss {
        // The point a site loss goes back to: a cold snapshot of every zone taken while they played.
        let cold_before = site.sum("respawn_zone_snapshots_total", &[("store", "cold"), ("result", "ok")]).await;
        let every_zone = site.servers.len() as f64;
        let limit = Duration::from_secs(SITE_COLD_SECS * 3);
        if !site.wait(limit, async || cold_snapshots_all(site).await >= cold_before + every_zone).await {
            problems
                .push(Problem::new(ProblemKind::Snapshots, "not every zone stored a cold snapshot before the loss"));
        }
        // A site is lost at any moment of the cold snapshot period, not just after a snapshot.
        let into_period = u64::from_str_radix(&respawn_token::random_hex(8)?, 16)? % (SITE_COLD_SECS * 1_000);
        tokio::time::sleep(Duration::from_millis(into_period)).await;
        site.note(format!("{into_period} ms after the last cold snapshot"));
    }

    let players_before = site.players().await;
    let resumes_before = site.resumes().len();
    let characters_before = site.characters_lost();
    // The last look before the fault: the killed processes' counters die with them.
    let last_look: Vec<prom::Sample> = site.scrape().await.into_iter().flatten().flatten().collect();
    let t0 = Instant::now();
    site.kill_zone_servers().await;
    site.killed.add(&last_look);
    let generated = site.killed.generated;
    stop_watching.cancel();
    let looks = watcher.await.unwrap_or_default();
    let window_start = t0.checked_sub(SITE_EVENTS_WINDOW).unwrap_or(t0);
    let before_window = looks.iter().rev().find(|(at, _)| *at <= window_start).or(looks.first());
    let events_last_second = generated.saturating_sub(before_window.map_or(0, |(_, n)| *n));
    match scenario {
        Scenario::SiteLoss => {
            let Some(p) = site.backing.pipeline.as_mut() else { bail!("site-loss runs with the event pipeline") };
            p.lose(&site.root).await?;
            for service in [site.backing.redis.as_mut(), site.backing.mongo.as_mut()].into_iter().flatten() {
                service.kill().await;
            }
            // The zone servers' disks and Redis's memory are gone with the site.
            for s in &site.servers {
                let _ = std::fs::remove_dir_all(&s.outbox);
            }
            let _ = std::fs::remove_dir_all(&site.backing.stores.data_dir);
            site.note(format!(
                "site lost with {players_before} players: every process killed (kill -9): zone servers, platform, \
                 broker, Redis, MongoDB, MariaDB; Redis's data, the broker's storage and the zone servers' disks \
                 wiped; {generated} events generated so far"
            ));
            site.note("decision: restore MongoDB and MariaDB on their data first, then Redis and the broker empty, \
                       the platform, the zone servers from MongoDB's cold snapshots");
            let p = site.backing.pipeline.as_mut().ok_or_else(|| anyhow!("no pipeline"))?;
            p.rebuild(&site.root).await?;
            if let Some(m) = site.backing.mongo.as_mut() {
                m.start().await?;
            }
            if let Some(r) = site.backing.redis.as_mut() {
                r.start().await?;
            }
            let t = t0.elapsed().as_secs_f64();
            site.note(format!("MariaDB, MongoDB, Redis (empty), the broker (empty) and the platform server up after {t:.1} s"));
        }
        _ => site.note(format!(
            "every zone server killed (kill -9): {} servers, {players_before} players, {generated} events generated so far",
            site.servers.len()
        )),
    }
    let stored_at_loss = db.count().await.unwrap_or(0);
    site.start_zone_servers().await?;
    if scenario == Scenario::AllZonesDown {
        site.note(
            "decision: start new zone servers at once on the same stores, as an orchestrator recreating the deployment",
        );
    }
    site.note("new zone servers started");
    if !site.wait(Duration::from_secs(60), async || site.all_ticking().await).await {
        bail!("the zones did not tick again within 60 s");
    }
    let rto = t0.elapsed();
    site.note(format!("every zone ticking again after {:.0} ms", rto.as_secs_f64() * 1e3));
    let scraped = site.scrape().await;
    let restored_from: Vec<String> = site
        .servers
        .iter()
        .zip(&scraped)
        .map(|(server, s)| {
            let source = s.as_ref().and_then(|s| {
                ["hot", "cold", "journal", "fresh"].into_iter().find(|src| {
                    prom::sum(s, "respawn_zone_restores_total", &[("zone", &server.zone), ("source", src)]) > 0.0
                })
            });
            format!("{}: {}", server.zone, source.unwrap_or("unknown"))
        })
        .collect();
    let back = site.wait(Duration::from_secs(30), async || site.players().await >= players_before).await;
    let resumes: Vec<_> = site.resumes().into_iter().skip(resumes_before).collect();
    let characters_lost = site.characters_lost() - characters_before;
    site.note(format!(
        "{} of {players_before} players back with their characters{} (restored from {})",
        resumes.len(),
        if back { "" } else { " when the 30 s limit ran out" },
        restored_from.join(", ")
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let max_tick_ms = site.max_tick_ms().await;

    for fleet in &mut site.fleets {
        fleet.halt().await;
    }
    // Besides the events rolled back with the lost play, what was recorded
    // but not in MySQL at the loss is gone with the broker and the disks.
    let Killed { generated: killed_generated, rolled_back } = site.killed;
    let gone = killed_generated.saturating_sub(stored_at_loss);
    let (generated, stored, check) = settle(site, &db, None, gone).await?;
    let events = EventTally::of(generated, rolled_back, &check);
    let events_lost = events.events_lost;
    site.note(format!(
        "bots stopped; {stored} of {generated} events stored ({} of them before the loss)",
        stored_at_loss
    ));

    let rpo_ticks = resumes.iter().map(|r| r.lost_ticks()).max().unwrap_or(0);
    let tick_ms = 1e3 / f64::from(respawn_zone::ServerConfig::defaults().tick_hz);
    let rpo_ms = rpo_ticks as f64 * tick_ms;
    let commands_lost: u64 = resumes.iter().map(|r| u64::from(r.lost_acknowledged)).sum();
    let rto_ms = rto.as_secs_f64() * 1e3;
    let players_resumed = resumes.len() as u64;
    if players_resumed < players_before {
        problems.push(Problem::new(
            ProblemKind::PlayersNotBack,
            format!("only {players_resumed} of {players_before} players resumed their characters"),
        ));
    }
    if characters_lost > 0 {
        problems.push(Problem::new(
            ProblemKind::CharactersLost,
            format!("{characters_lost} players came back to a new character"),
        ));
    }
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(Problem::new(
            ProblemKind::TickOverBudget,
            format!("a tick took up to {max_tick_ms:.0} ms (budget {TICK_BUDGET_MS:.0} ms)"),
        ));
    }
    if scenario == Scenario::SiteLoss {
        if rto_ms > RTO_SITE_TARGET_MS {
            problems.push(Problem::new(
                ProblemKind::Rto,
                format!("RTO {rto_ms:.0} ms over the {RTO_SITE_TARGET_MS:.0} ms target"),
            ));
        }
        if rpo_ms > SITE_RPO_TARGET_MS {
            problems.push(Problem::new(
                ProblemKind::Rpo,
                format!("RPO {rpo_ms:.0} ms of play over the {SITE_RPO_TARGET_MS:.0} ms target"),
            ));
        }
        if events_lost > events_last_second {
            problems.push(Problem::new(ProblemKind::EventsLost, format!(
                "{events_lost} events lost, more than the {events_last_second} generated in the last second before the loss"
            )));
        }
        if restored_from.iter().any(|r| !r.ends_with(": cold")) {
            problems.push(Problem::new(
                ProblemKind::RestoreSource,
                format!("not every zone restored from its cold snapshot: {}", restored_from.join(", ")),
            ));
        }
        // A site loss may lose recent events (judged above), never store one twice.
        if events.events_duplicated > 0 {
            problems.push(Problem::new(
                ProblemKind::EventsDuplicated,
                format!("{} events stored twice", events.events_duplicated),
            ));
        }
    } else {
        problems.extend(crash_problems(rto_ms, RTO_ALL_ZONES_TARGET_MS, rpo_ticks, commands_lost));
        problems.extend(events.problems());
    }
    Ok(SiteReport {
        scenario,
        real_services: site.real,
        zone_servers: site.servers.len(),
        rto_ms,
        rpo_ticks,
        rpo_ms,
        commands_lost,
        players_before,
        players_resumed,
        characters_lost,
        players_back_ms: resumes.iter().map(|r| r.gap.as_secs_f64() * 1e3).fold(0.0, f64::max),
        restored_from,
        events,
        events_last_second,
        max_tick_ms,
        findings: Findings { timeline: std::mem::take(&mut site.timeline), ..Findings::judge(problems) },
    })
}

/// Events generated over the zone servers at `addrs`, looked at every 50 ms until `stop`.
async fn watch_generated(addrs: Vec<String>, stop: tokio_util::sync::CancellationToken) -> Vec<(Instant, u64)> {
    let mut looks = Vec::new();
    while !stop.is_cancelled() {
        let mut generated = 0.0;
        for addr in &addrs {
            if let Ok(text) = http::scrape(addr).await {
                generated += prom::sum(&prom::parse(&text), "respawn_zone_events_total", &[]);
            }
        }
        looks.push((Instant::now(), generated as u64));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    looks
}

async fn cold_snapshots_all(site: &Site) -> f64 {
    site.scrape().await.iter().flatten().map(|s| cold_snapshots(s, "ok")).sum()
}

pub(super) fn print_report(r: &SiteReport) {
    let site_loss = r.scenario == Scenario::SiteLoss;
    let stores = if r.real_services { "Redis + MongoDB-compatible" } else { "embedded stores" };
    println!("Drill {} ({} zone servers, {stores})", r.scenario.name(), r.zone_servers);
    println!();
    r.findings.print_timeline();
    let (guide_rto, rto_target) = if site_loss { ("30-60 min", "<= 60 s") } else { ("5-10 min", "<= 1 s") };
    let (guide_rpo, rpo_target) = if site_loss { ("backup", "<= 3 s (1)") } else { ("5-10 s", "<= 2 ticks") };
    println!("Figures                                             guide          target");
    println!("  RTO                 {:>9.0} ms                    {guide_rto:<14} {rto_target}", r.rto_ms);
    println!("  RPO                 {:>9} ticks ({:>6.0} ms)      {guide_rpo:<14} {rpo_target}", r.rpo_ticks, r.rpo_ms);
    let commands_target = if site_loss { "(within RPO)" } else { "0" };
    println!(
        "  acknowledged commands lost {:>5}                                     {commands_target}",
        r.commands_lost
    );
    println!(
        "  players resumed     {:>5} of {:<5}                                  all",
        r.players_resumed, r.players_before
    );
    println!("  characters lost     {:>5}                                            0", r.characters_lost);
    println!("  players back after  {:>9.0} ms (longest wait for a character)", r.players_back_ms);
    println!("  restored from       {}", r.restored_from.join(", "));
    r.events.print();
    if site_loss {
        println!(
            "  events of the last second before the loss {:>5}                <= this lost (2)",
            r.events_last_second
        );
    }
    println!("  max tick            {:>9} ms                                     < 50 ms", r.max_tick_ms);
    if site_loss {
        println!();
        println!("(1) one cold snapshot period ({SITE_COLD_SECS} s in this drill, 5 min by default) and a second to store it:");
        println!("    Redis and its journal are gone, so play since the last cold snapshot is lost.");
        println!("(2) events not yet in MySQL at the loss (in the broker or the outboxes) are gone with the site.");
    }
    r.findings.print_verdict();
}
