//! The drills on hosts of their own ([`crate::lan`]), each with bots
//! playing on zone-a while the fault strikes:
//! - `host-loss`: zone-a's host dies (its link cut, every process on it
//!   killed); a spare takes each zone over once its lease runs out, and the
//!   players follow through the platform.
//! - `partition-store`: zone-a is cut off from the stores' host (both ways)
//!   and from nothing else; a spare takes the zones over, the platform tells
//!   zone-a it was superseded (it cannot learn it from Redis), zone-a stops
//!   them, and the players follow.
//! - `partition-platform`: zone-a is cut off from the platform's host; it
//!   keeps its leases, so nothing moves and no player notices.
//! - `partition-players`: what the players send to zone-a is dropped (one
//!   way) for 4 s; nothing moves, and every player is back once it passes.
//! - `flaky-network`: the players reach zone-a through a slow, lossy network
//!   (a flawed `Gate` on the client host: 100 ms ± 50 ms each way, 5 % of
//!   connections reset); nothing moves, and whoever is reset resumes.
//!
//! Each reports RTO, RPO, acknowledged commands and events lost or
//! duplicated, and what the two-owner checker found.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use respawn_api::prom;
use respawn_harness::netns::Direction;
use serde::{Deserialize, Serialize};

use crate::findings::{EventTally, Findings, Problem, ProblemKind};
use crate::lan::{on_lan, Cluster};
use crate::owners::OwnersCheck;
use crate::{Scenario, RPO_TARGET_TICKS};

/// Issue 21's failover target: from the fault to every zone ticking on a
/// spare with its players back.
pub(crate) const FAILOVER_RTO_TARGET_MS: f64 = 3_000.0;

/// How long a partition that should change nothing is held: past the
/// registry entry's life (3 s), so the platform forgets the server meanwhile.
const HARMLESS_PARTITION: Duration = Duration::from_secs(8);

/// The spares' indices in [`Cluster::servers`].
const SPARES: [usize; 2] = [1, 2];

#[derive(Debug, Serialize, Deserialize)]
pub struct HostFaultReport {
    pub scenario: Scenario,
    /// From the fault to every zone ticking on a spare; `None` when none moved.
    pub zones_moved_ms: Option<f64>,
    /// From the fault to the cut-off owner stopping its zones (partition-store).
    pub superseded_ms: Option<f64>,
    /// From the fault (partition-players: its end) to every player playing again (0: nobody was interrupted).
    pub rto_ms: f64,
    pub rpo_ticks: u64,
    pub commands_lost: u64,
    pub players_before: u64,
    pub players_resumed: u64,
    /// Longest time a player was without its character.
    pub players_back_ms: f64,
    /// Sessions that fell silent (no message for a second).
    pub sessions_lost: u64,
    /// Connections the slow, lossy network reset (flaky-network).
    pub resets: u64,
    /// Per zone, how many times a spare took it over.
    pub takeovers: BTreeMap<String, u64>,
    pub owners: OwnersCheck,
    #[serde(flatten)]
    pub events: EventTally,
    #[serde(flatten)]
    pub findings: Findings,
}

/// Runs one of these drills on a LAN made for it, under `root`; a
/// flaky network lasts `hold`.
pub(crate) fn run(scenario: Scenario, root: std::path::PathBuf, bots: u32, hold: Duration) -> Result<HostFaultReport> {
    on_lan(move |hosts| async move {
        let flaky = scenario == Scenario::FlakyNetwork;
        let mut c = Cluster::start(hosts, &root, bots, flaky).await?;
        let result = match scenario {
            Scenario::HostLoss => host_loss(&mut c).await,
            Scenario::PartitionStore => partition_store(&mut c).await,
            Scenario::PartitionPlatform => partition_platform(&mut c).await,
            Scenario::PartitionPlayers => partition_players(&mut c).await,
            Scenario::FlakyNetwork => flaky_network(&mut c, hold).await,
            other => Err(anyhow::anyhow!("{} is not a drill on hosts of their own", other.name())),
        };
        let timeline = c.timeline.clone();
        c.stop().await;
        let mut report = result?;
        report.findings.timeline = timeline;
        Ok(report)
    })
}

/// Polls `done` every 25 ms until it holds (for `limit` at most): how long after `since` it did.
async fn wait_for(since: Instant, limit: Duration, done: impl AsyncFn() -> bool) -> Option<Duration> {
    while since.elapsed() < limit {
        if done().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The players of zone-a's zones, fault and return, as every scenario that moves them measures them.
struct Moved {
    zones_moved: Option<Duration>,
    back: Option<Duration>,
    resumes_before: usize,
}

impl Cluster {
    /// Waits for every zone to tick on a spare, then for every player to be
    /// back on its character; notes both.
    async fn follow_zones(&mut self, t0: Instant, players_before: u64, resumes_before: usize) -> Moved {
        let zones = self.zones.clone();
        let zones_moved = wait_for(t0, Duration::from_secs(20), async || {
            for zone in &zones {
                let mut on_spare = false;
                for i in SPARES {
                    on_spare |= self.ticks(i, zone).await;
                }
                if !on_spare {
                    return false;
                }
            }
            true
        })
        .await;
        match zones_moved {
            Some(d) => self.note(format!("every zone ticking on a spare after {:.0} ms", ms(d))),
            None => self.note("not every zone was ticking on a spare 20 s after the fault"),
        }
        let stats = self.fleet.stats.clone();
        let back = wait_for(t0, Duration::from_secs(30), async || {
            resumed_players(&stats.resumes()[resumes_before..]) >= players_before
        })
        .await;
        match back {
            Some(d) => self.note(format!("every player back on its character after {:.0} ms", ms(d))),
            None => self.note("not every player was back 30 s after the fault"),
        }
        Moved { zones_moved, back, resumes_before }
    }

    async fn takeovers(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for zone in &self.zones {
            let n = self.sum(&SPARES, "respawn_zone_taken_over_total", &[("zone", zone)]).await as u64;
            counts.insert(zone.clone(), n);
        }
        counts
    }

    /// Plays on a while, stops the bots, and judges what every scenario judges.
    async fn judge(
        &mut self,
        scenario: Scenario,
        expected: Expected,
        mut problems: Vec<Problem>,
    ) -> Result<HostFaultReport> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let players_before = self.fleet.len() as u64;
        // A flaky network stays flaky: a player reset just now is resuming,
        // with the RTO target's time to be back like any other.
        let connected = &self.fleet.stats.connected;
        let rto = Duration::from_secs_f64(FAILOVER_RTO_TARGET_MS / 1e3);
        wait_for(Instant::now(), rto, async || connected.load(Ordering::Relaxed) >= players_before).await;
        let takeovers = self.takeovers().await;
        let sessions_lost = self.fleet.stats.silences.load(Ordering::Relaxed);
        let playing = connected.load(Ordering::Relaxed);
        let events = self.tally_events().await?;
        problems.extend(events.problems());
        let owners = OwnersCheck::of(&self.fleet.stats.ack_spans());
        problems.extend(owners.problems());
        let resumes_before = match &expected {
            Expected::Failover(m) => m.resumes_before,
            Expected::NothingMoves { resumes_before } | Expected::Reconnect { resumes_before, .. } => *resumes_before,
        };
        let resumes = &self.fleet.stats.resumes()[resumes_before..];
        let rpo_ticks = resumes.iter().map(|r| r.lost_ticks()).max().unwrap_or(0);
        let commands_lost = resumes.iter().map(|r| u64::from(r.lost_acknowledged)).sum();
        let players_back_ms = resumes.iter().map(|r| ms(r.gap)).fold(0.0, f64::max);
        let players_resumed = resumed_players(resumes);
        let (rto_ms, zones_moved_ms) = match &expected {
            Expected::Failover(m) => {
                if players_resumed < players_before {
                    problems.push(Problem::new(
                        ProblemKind::PlayersNotBack,
                        format!("only {players_resumed} of {players_before} players back on their characters"),
                    ));
                }
                for (zone, n) in takeovers.iter().filter(|(_, n)| **n != 1) {
                    problems.push(Problem::new(
                        ProblemKind::TwoOwners,
                        format!("{zone} was taken over {n} times by the spares (once is right)"),
                    ));
                }
                (m.back.map_or(f64::INFINITY, ms), m.zones_moved.map(ms))
            }
            // Whoever lost a connection (a reset) must be back as fast as after a failover.
            Expected::NothingMoves { .. } => {
                if sessions_lost > 0 {
                    problems.push(Problem::new(
                        ProblemKind::PlayersNotBack,
                        format!("{sessions_lost} sessions fell silent"),
                    ));
                }
                if playing < players_before {
                    problems.push(Problem::new(
                        ProblemKind::PlayersNotBack,
                        format!("{playing} of {players_before} players playing at the end"),
                    ));
                }
                let moved: u64 = takeovers.values().sum();
                if moved > 0 {
                    problems.push(Problem::new(
                        ProblemKind::TwoOwners,
                        format!("{moved} zones moved although zone-a kept its leases"),
                    ));
                }
                (players_back_ms, None)
            }
            Expected::Reconnect { back, .. } => {
                if players_resumed < players_before {
                    problems.push(Problem::new(
                        ProblemKind::PlayersNotBack,
                        format!("only {players_resumed} of {players_before} players back on their characters"),
                    ));
                }
                let moved: u64 = takeovers.values().sum();
                if moved > 0 {
                    problems.push(Problem::new(
                        ProblemKind::TwoOwners,
                        format!("{moved} zones moved although zone-a kept its leases"),
                    ));
                }
                (back.map_or(f64::INFINITY, ms), None)
            }
        };
        if rto_ms > FAILOVER_RTO_TARGET_MS {
            problems.push(Problem::new(
                ProblemKind::Rto,
                format!("players back after {rto_ms:.0} ms, over the {FAILOVER_RTO_TARGET_MS:.0} ms target"),
            ));
        }
        // Cut off from the store, the owner plays on undurably until told (see print_report).
        if scenario != Scenario::PartitionStore && rpo_ticks > RPO_TARGET_TICKS {
            problems.push(Problem::new(
                ProblemKind::Rpo,
                format!("RPO {rpo_ticks} ticks over the {RPO_TARGET_TICKS}-tick target"),
            ));
        }
        if commands_lost > 0 {
            problems
                .push(Problem::new(ProblemKind::CommandsLost, format!("{commands_lost} acknowledged commands lost")));
        }
        Ok(HostFaultReport {
            scenario,
            zones_moved_ms,
            superseded_ms: None,
            rto_ms,
            rpo_ticks,
            commands_lost,
            players_before,
            players_resumed,
            players_back_ms,
            sessions_lost,
            resets: 0,
            takeovers,
            owners,
            events,
            findings: Findings::judge(problems),
        })
    }
}

/// What a scenario expects of the zones.
enum Expected {
    /// Every zone moves to a spare, and every player follows.
    Failover(Moved),
    /// Zone-a keeps its zones; players who lose a connection resume on it.
    NothingMoves { resumes_before: usize },
    /// Zone-a keeps its zones; every player loses its session and is back
    /// on it `back` after the fault ends (the RTO).
    Reconnect { resumes_before: usize, back: Option<Duration> },
}

/// Distinct players among these resumes.
fn resumed_players(resumes: &[respawn_client::Resume]) -> u64 {
    resumes.iter().map(|r| r.player_id).collect::<std::collections::BTreeSet<_>>().len() as u64
}

async fn host_loss(c: &mut Cluster) -> Result<HostFaultReport> {
    c.warm_up().await?;
    let (players_before, resumes_before) = (c.fleet.len() as u64, c.fleet.stats.resumes().len());
    let death = c.hosts.zones[0].arm_death()?;
    // Events of a tick between the last look and the death would be stored
    // but never counted as generated: the death is armed first, the look parsed after.
    let last_look = c.look_text(0).await.context("zone-a did not answer the last look before its host died")?;
    death.fire().await?;
    let t0 = Instant::now();
    c.servers[0].dead = true;
    c.killed.add(&prom::parse(&last_look));
    c.note(format!("host a died with {players_before} players: its link cut, then every process on it killed"));
    c.note("decision: no operator action; the spares adopt zone-a's zones once their leases run out");
    let moved = c.follow_zones(t0, players_before, resumes_before).await;
    c.judge(Scenario::HostLoss, Expected::Failover(moved), Vec::new()).await
}

async fn partition_store(c: &mut Cluster) -> Result<HostFaultReport> {
    c.warm_up().await?;
    let (players_before, resumes_before) = (c.fleet.len() as u64, c.fleet.stats.resumes().len());
    let (a, store) = (c.hosts.zones[0].clone(), c.hosts.store.clone());
    a.block(&store, Direction::Both)?;
    let t0 = Instant::now();
    c.note("zone-a cut off from the stores' host (both ways), and from nothing else");
    c.note("decision: no operator action; a spare adopts the zones once zone-a's leases run out, and the platform tells zone-a");
    let zones = c.zones.len() as f64;
    let moved = c.follow_zones(t0, players_before, resumes_before).await;
    let superseded = wait_for(t0, Duration::from_secs(20), async || {
        c.sum(&[0], "respawn_zone_leases_lost_total", &[]).await >= zones
    })
    .await;
    let mut problems = Vec::new();
    match superseded {
        Some(d) => c.note(format!("zone-a stopped its zones (superseded) after {:.0} ms", ms(d))),
        None => problems.push(Problem::new(
            ProblemKind::TwoOwners,
            "zone-a did not stop its zones within 20 s of being superseded",
        )),
    }
    a.heal()?;
    c.note("partition healed");
    let mut r = c.judge(Scenario::PartitionStore, Expected::Failover(moved), problems).await?;
    r.superseded_ms = superseded.map(ms);
    Ok(r)
}

async fn partition_platform(c: &mut Cluster) -> Result<HostFaultReport> {
    c.warm_up().await?;
    let (players, resumes_before) = (c.fleet.len() as u64, c.fleet.stats.resumes().len());
    let (a, platform) = (c.hosts.zones[0].clone(), c.hosts.platform.clone());
    let updates_before = c.fleet.stats.updates.load(Ordering::Relaxed);
    a.block(&platform, Direction::Both)?;
    let t0 = Instant::now();
    c.note("zone-a cut off from the platform's host (both ways), and from nothing else");
    c.note("decision: no operator action; zone-a keeps its leases, so its zones stay and its players play on");
    let mut problems = Vec::new();
    while t0.elapsed() < HARMLESS_PARTITION {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let on_a = c.players_on(&[0]).await;
        if on_a < players {
            problems.push(Problem::new(
                ProblemKind::PlayersNotBack,
                format!("{on_a} of {players} players on zone-a {:.1} s into the partition", t0.elapsed().as_secs_f64()),
            ));
            break;
        }
    }
    let updates = c.fleet.stats.updates.load(Ordering::Relaxed) - updates_before;
    c.note(format!(
        "{} s of partition: {updates} updates delivered, every player still on zone-a",
        HARMLESS_PARTITION.as_secs()
    ));
    a.heal()?;
    c.note("partition healed");
    let lobby = async || {
        let listed = respawn_api::http::request(&c.platform_addr, "GET", "/v1/lobby", None).await;
        listed.is_ok_and(|(status, body)| status == 200 && c.zones.iter().all(|z| body.contains(&format!("\"{z}\""))))
    };
    match wait_for(Instant::now(), Duration::from_secs(10), lobby).await {
        Some(d) => c.note(format!("zone-a's zones listed by the platform again {:.0} ms after the heal", ms(d))),
        None => problems.push(Problem::new(
            ProblemKind::NotAsDocumented,
            "the platform did not list zone-a's zones again within 10 s of the heal",
        )),
    }
    c.judge(Scenario::PartitionPlatform, Expected::NothingMoves { resumes_before }, problems).await
}

/// How long partition-players lasts.
const PLAYERS_CUT: Duration = Duration::from_secs(4);

async fn partition_players(c: &mut Cluster) -> Result<HostFaultReport> {
    c.warm_up().await?;
    let (players, resumes_before) = (c.fleet.len() as u64, c.fleet.stats.resumes().len());
    let (a, client) = (c.hosts.zones[0].clone(), c.hosts.client.clone());
    // One way: what the players send is lost, what zone-a sends still leaves
    // (and stalls, unacknowledged); zone-a reaches everything else.
    a.block(&client, Direction::Incoming)?;
    c.note(format!("what the players send to zone-a is dropped (one way) for {} s", PLAYERS_CUT.as_secs()));
    c.note(
        "decision: no operator action; zone-a keeps its leases (nothing moves), and the players come back once through",
    );
    tokio::time::sleep(PLAYERS_CUT).await;
    a.heal()?;
    let healed = Instant::now();
    c.note("partition healed");
    let stats = c.fleet.stats.clone();
    let back = wait_for(healed, Duration::from_secs(20), async || {
        resumed_players(&stats.resumes()[resumes_before..]) >= players
    })
    .await;
    match back {
        Some(d) => c.note(format!("every player back on its character {:.0} ms after the heal", ms(d))),
        None => c.note("not every player was back 20 s after the heal"),
    }
    c.judge(Scenario::PartitionPlayers, Expected::Reconnect { resumes_before, back }, Vec::new()).await
}

async fn flaky_network(c: &mut Cluster, hold: Duration) -> Result<HostFaultReport> {
    c.warm_up().await?;
    let resumes_before = c.fleet.stats.resumes().len();
    let stats = c.fleet.stats.clone();
    let (updates_before, rtts_before) = (stats.updates.load(Ordering::Relaxed), stats.rtt_samples().len());
    c.note(format!(
        "the players' traffic to zone-a goes through a slow, lossy network: 100 ms +- 50 ms each way, 5 % of \
         connections reset within their first 10 s; held {} s",
        hold.as_secs()
    ));
    c.note("decision: no operator action; zone-a keeps its leases, and a reset player resumes");
    tokio::time::sleep(hold).await;
    let updates = stats.updates.load(Ordering::Relaxed) - updates_before;
    let mut rtts = stats.rtt_samples().split_off(rtts_before);
    rtts.sort_unstable();
    let p99 = rtts.get(rtts.len().saturating_sub(1) * 99 / 100).map_or(0.0, |us| f64::from(*us) / 1e3);
    let resets = c.players_gate.as_ref().map_or(0, |g| g.resets());
    c.note(format!(
        "{resets} connections reset; {:.1} updates per player per second; RTT p99 {p99:.0} ms",
        updates as f64 / c.fleet.len() as f64 / hold.as_secs_f64()
    ));
    let mut r = c.judge(Scenario::FlakyNetwork, Expected::NothingMoves { resumes_before }, Vec::new()).await?;
    r.resets = resets;
    Ok(r)
}

pub(crate) fn print_report(r: &HostFaultReport) {
    println!("Drill {} (hosts of their own: network namespaces)", r.scenario.name());
    println!();
    r.findings.print_timeline();
    let shown = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
    println!("Figures                                          target");
    println!("  zones on a spare after  {:>12}", shown(r.zones_moved_ms));
    if r.scenario == Scenario::PartitionStore {
        println!("  cut-off owner stopped   {:>12}", shown(r.superseded_ms));
    }
    println!("  RTO (players back)      {:>9.0} ms                <= {FAILOVER_RTO_TARGET_MS:.0} ms", r.rto_ms);
    let rpo_target = match r.scenario {
        Scenario::PartitionStore => "not judged (1)",
        _ => "<= 2 ticks",
    };
    println!("  RPO                     {:>9} ticks             {rpo_target}", r.rpo_ticks);
    println!("  acknowledged commands lost {:>6}                   0", r.commands_lost);
    if matches!(r.scenario, Scenario::PartitionPlatform | Scenario::FlakyNetwork) {
        println!("  sessions that fell silent {:>5} of {:<5}            0", r.sessions_lost, r.players_before);
        println!(
            "  connections reset       {:>5}, {} resumed, the longest after {:.0} ms",
            r.resets, r.players_resumed, r.players_back_ms
        );
    } else {
        println!("  players resumed         {:>5} of {:<5}", r.players_resumed, r.players_before);
        println!("  players back after      {:>9.0} ms (longest wait for a character)", r.players_back_ms);
        println!("  sessions that fell silent {:>5}", r.sessions_lost);
    }
    let takeovers: Vec<String> = r.takeovers.iter().map(|(z, n)| format!("{z} {n}")).collect();
    println!("  take-overs by the spares  {}", takeovers.join(", "));
    r.owners.print();
    r.events.print();
    if r.scenario == Scenario::PartitionStore {
        println!();
        println!("(1) cut off from Redis, zone-a plays on without durability (the guide's Redis row) until it is");
        println!("    told it was superseded: that play was never acknowledged, and is what the RPO counts.");
    }
    r.findings.print_verdict();
}
