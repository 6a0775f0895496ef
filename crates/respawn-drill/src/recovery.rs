//! What the recovery drills (zone-crash, redis-down, mongo-down) share:
//! their report and the targets a zone-server crash must meet.

use serde::{Deserialize, Serialize};

use crate::deployment::{source_name, KillResult};
use crate::findings::{EventTally, Findings, Problem, ProblemKind};
use crate::{Scenario, RPO_TARGET_TICKS};

#[derive(Debug, Serialize, Deserialize)]
pub struct DrillReport {
    pub scenario: Scenario,
    pub real_services: bool,
    pub rto_ms: f64,
    pub rpo_ticks: u64,
    pub commands_lost: u64,
    pub players_before: u64,
    pub players_resumed: u64,
    /// Longest time a player was without its character (disconnect to resumed Welcome).
    pub players_back_ms: f64,
    pub max_tick_ms: f64,
    pub kills: Vec<KillResult>,
    #[serde(flatten)]
    pub events: EventTally,
    #[serde(flatten)]
    pub findings: Findings,
}

impl DrillReport {
    /// The report of a drill on real services with one zone-server kill in it.
    pub(crate) fn one_kill(
        scenario: Scenario,
        kill: KillResult,
        max_tick_ms: f64,
        events: EventTally,
        mut problems: Vec<Problem>,
    ) -> Self {
        problems.extend(events.problems());
        Self {
            scenario,
            real_services: true,
            rto_ms: kill.rto_ms,
            rpo_ticks: kill.rpo_ticks,
            commands_lost: kill.commands_lost,
            players_before: kill.players_before,
            players_resumed: kill.players_resumed,
            players_back_ms: kill.resume_gap_max_ms,
            max_tick_ms,
            kills: vec![kill],
            events,
            findings: Findings::judge(problems),
        }
    }
}

/// What misses the targets of a zone-server crash: the RTO over `rto_target_ms`,
/// more than [`RPO_TARGET_TICKS`] lost, any acknowledged command lost.
pub(crate) fn crash_problems(rto_ms: f64, rto_target_ms: f64, rpo_ticks: u64, commands_lost: u64) -> Vec<Problem> {
    let mut problems = Vec::new();
    if rto_ms > rto_target_ms {
        problems
            .push(Problem::new(ProblemKind::Rto, format!("RTO {rto_ms:.0} ms over the {rto_target_ms:.0} ms target")));
    }
    if rpo_ticks > RPO_TARGET_TICKS {
        problems.push(Problem::new(
            ProblemKind::Rpo,
            format!("RPO {rpo_ticks} ticks over the {RPO_TARGET_TICKS}-tick target"),
        ));
    }
    if commands_lost > 0 {
        problems.push(Problem::new(ProblemKind::CommandsLost, format!("{commands_lost} acknowledged commands lost")));
    }
    problems
}

pub(crate) fn print_report(r: &DrillReport) {
    let scenario = r.scenario.name();
    println!("Drill {scenario} ({})", if r.real_services { "Redis + MongoDB-compatible" } else { "embedded stores" });
    println!();
    r.findings.print_timeline();
    println!("Figures (worst over {} kill(s))                 guide          target", r.kills.len());
    let rto_target = match r.scenario {
        Scenario::MongoDown => "MongoDB back (1)",
        Scenario::RedisDown => "Redis back (1)",
        _ => "<= 1 s",
    };
    println!("  RTO                {:>9.0} ms               10 s           {rto_target}", r.rto_ms);
    let rpo_target = if r.scenario == Scenario::RedisDown { "last cold snapshot" } else { "<= 2 ticks" };
    println!("  RPO                {:>9} ticks            5-10 s         {rpo_target}", r.rpo_ticks);
    println!("  acknowledged commands lost {:>5}                             0", r.commands_lost);
    println!("  players resumed    {:>5} of {:<5}                           all", r.players_resumed, r.players_before);
    println!("  players back after {:>9.0} ms (longest wait for a character)", r.players_back_ms);
    println!("  max tick           {:>9} ms               -              < 50 ms", r.max_tick_ms);
    r.events.print();
    if r.kills.len() > 1 {
        println!();
        println!("Kills");
        for (i, k) in r.kills.iter().enumerate() {
            println!(
                "  {:>3}: RTO {:>6.0} ms  RPO {} ticks  lost {}  resumed {}/{}  from {}",
                i + 1,
                k.rto_ms,
                k.rpo_ticks,
                k.commands_lost,
                k.players_resumed,
                k.players_before,
                source_name(k.restore_source)
            );
        }
    }
    if matches!(r.scenario, Scenario::MongoDown | Scenario::RedisDown) {
        println!();
        println!("(1) a zone starts only once the stores that make its ticks durable are fenced with its new");
        println!("    lease: the restarted server waits for the store to come back (here 2 s after the kill).");
    }
    r.findings.print_verdict();
}
