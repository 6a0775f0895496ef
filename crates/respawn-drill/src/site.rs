//! The drills that lose more than one process: `all-zones-down` (every zone
//! server killed, then started anew: the guide's "delete the game-server
//! deployment") and `site-loss` (every process killed, Redis and the broker
//! wiped with the zone servers' disks; MongoDB's cold snapshots and MySQL's
//! data are all that is left). They run on the deployment's one-server-per-zone
//! layout, each server with its own bots, so "every zone server" means more than one.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use respawn_api::admin::RestoreSource;
use respawn_api::{http, prom};
use serde::{Deserialize, Serialize};

use crate::deployment::{cold_snapshots, restored_from, source_name, warm_up, Deployment};
use crate::findings::{withdrawn, EventTally, Findings, Killed, Problem, ProblemKind};
use crate::ledger::settle;
use crate::recovery::crash_problems;
use crate::{Scenario, TICK_BUDGET_MS};

/// Our target for every zone back after all zone servers died: they restart
/// side by side, each within the one-server target.
const RTO_ALL_ZONES_TARGET_MS: f64 = super::RTO_TARGET_MS;
/// Our target for a whole site rebuilt from MongoDB and MySQL: the scripted
/// restore of every service, in order (the guide expects 30-60 minutes).
const RTO_SITE_TARGET_MS: f64 = 60_000.0;
/// Cold snapshot period in the site-loss drill (production: 5 minutes).
pub(crate) const SITE_COLD_SECS: u64 = 2;
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
    pub restored_from: Vec<ZoneRestored>,
    #[serde(flatten)]
    pub events: EventTally,
    /// Events generated in the last second before a site loss: at most these may be lost.
    pub events_last_second: u64,
    pub max_tick_ms: f64,
    #[serde(flatten)]
    pub findings: Findings,
}

/// Where one zone's state came from after the loss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRestored {
    pub zone: String,
    /// `None` if the zone's metrics did not say.
    pub source: Option<RestoreSource>,
}

impl std::fmt::Display for ZoneRestored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.zone, source_name(self.source))
    }
}

/// Runs `all-zones-down` or `site-loss` on `site`.
pub(super) async fn run(site: &mut Deployment, scenario: Scenario) -> Result<SiteReport> {
    warm_up(site).await?;
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
    // Parsed after the kill, so that the window between them stays short.
    let last_look = site.scrape_texts().await;
    let t0 = Instant::now();
    site.kill_zone_servers().await?;
    let last_look: Vec<prom::Sample> = last_look.iter().flatten().flat_map(|t| prom::parse(t)).collect();
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
            p.lose(site.dir.path()).await?;
            for service in [site.backing.redis.as_mut(), site.backing.mongo.as_mut()].into_iter().flatten() {
                service.kill().await;
            }
            // The zone servers' disks and Redis's memory are gone with the site.
            site.wipe_zone_disks();
            site.note(format!(
                "site lost with {players_before} players: every process killed (kill -9): zone servers, platform, \
                 broker, Redis, MongoDB, MariaDB; Redis's data, the broker's storage and the zone servers' disks \
                 wiped; {generated} events generated so far"
            ));
            site.note("decision: restore MongoDB and MariaDB on their data first, then Redis and the broker empty, \
                       the platform, the zone servers from MongoDB's cold snapshots");
            let p = site.backing.pipeline.as_mut().ok_or_else(|| anyhow!("no pipeline"))?;
            p.rebuild(site.dir.path()).await?;
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
    let restored_from: Vec<ZoneRestored> = site
        .servers
        .iter()
        .zip(&scraped)
        .flat_map(|(server, s)| {
            server.zones.iter().map(move |zone| ZoneRestored {
                zone: zone.clone(),
                source: s.as_ref().and_then(|s| restored_from(s, &[("zone", zone)])),
            })
        })
        .collect();
    let restored_list = restored_from.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let back = site.wait(Duration::from_secs(30), async || site.players().await >= players_before).await;
    let resumes: Vec<_> = site.resumes().into_iter().skip(resumes_before).collect();
    let characters_lost = site.characters_lost() - characters_before;
    site.note(format!(
        "{} of {players_before} players back with their characters{} (restored from {})",
        resumes.len(),
        if back { "" } else { " when the 30 s limit ran out" },
        restored_list
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let max_tick_ms = site.max_tick_ms().await;

    site.halt_bots().await;
    // Besides the events rolled back with the lost play, what was recorded
    // but not in MySQL at the loss is gone with the broker and the disks.
    let Killed { generated: killed_generated, rolled_back } = site.killed;
    let rolled_back = rolled_back + withdrawn(&site.samples().await?);
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
        if restored_from.iter().any(|r| r.source != Some(RestoreSource::Cold)) {
            problems.push(Problem::new(
                ProblemKind::RestoreSource,
                format!("not every zone restored from its cold snapshot: {restored_list}"),
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

async fn cold_snapshots_all(site: &Deployment) -> f64 {
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
    let restored: Vec<String> = r.restored_from.iter().map(ToString::to_string).collect();
    println!("  restored from       {}", restored.join(", "));
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
