//! What exercises a deployment and reports figures: the drills, the
//! benchmarks ([`bench`]: the tick in process, the event pipeline against
//! real servers) and the load generator ([`loadgen`]).
//!
//! `respawn drill <scenario>`: disaster-recovery drills that run for real.
//! The drills start `respawn zone` and `respawn platform` children from the
//! running executable: this library runs inside the `respawn` binary.
//! Each starts its own local deployment on free ports (real Redis and a
//! MongoDB-wire-compatible server with `--real`, files otherwise), keeps bots
//! playing, injects the fault, measures, and prints a verdict.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use respawn_harness::TempDir;
use serde::{Deserialize, Serialize};

use crate::deployment::{Backing, Deployment, Layout, Options};
use crate::findings::{print_summary, summarize};
use crate::recovery::print_report;

pub mod bench;
mod characters;
mod deployment;
mod findings;
mod host_faults;
mod lan;
mod ledger;
pub mod loadgen;
mod mongo_down;
mod owners;
mod pipeline;
mod platform_loss;
mod recovery;
mod redis_down;
pub mod replay;
mod report;
mod rollout;
pub mod services;
mod site;
mod zone_crash;

pub use characters::CharactersReport;
pub use deployment::KillResult;
pub use findings::{EventTally, Figures, Findings, Killed, Problem, ProblemKind, Summary, Verdict};
pub use host_faults::HostFaultReport;
pub use owners::OwnersCheck;
pub use pipeline::PipelineReport;
pub use platform_loss::PlatformLossReport;
pub use recovery::DrillReport;
pub use rollout::RolloutReport;
pub use site::{SiteReport, ZoneRestored};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// `kill -9` of the zone server while bots play.
    ZoneCrash,
    /// Redis dies while bots play; the zone server crashes during the outage; Redis returns empty.
    RedisDown,
    /// MongoDB dies while bots play (cold snapshots fail, play goes on); the zone server crashes during the outage.
    MongoDown,
    /// The Kafka-compatible broker becomes unreachable under load and comes back after the outage.
    KafkaDown,
    /// MariaDB is killed under load and comes back after the outage.
    MysqlDown,
    /// The platform server is killed (`kill -9`) mid-batch and restarted after the outage.
    PlatformDown,
    /// Every zone server is killed (`kill -9`) at once and new ones start from the snapshots.
    AllZonesDown,
    /// Every process is killed, Redis, the broker and the zone servers' disks are wiped; everything
    /// comes back from MongoDB's cold snapshots and MySQL's data.
    SiteLoss,
    /// A rolling update to a second build under load: the guide's steps, or live hand-off with --handoff.
    Rollout,
    /// Characters the platform keeps, travelling between two zone servers, taken over by second
    /// sign-ins, through zone-server kills, a Redis restart (--real) and a live hand-off: none
    /// duplicated, none losing what was stored, gold and items conserved.
    Characters,
    /// On hosts of their own (network namespaces, as root): zone-a's host dies (link cut, every
    /// process killed) while bots play; spares on other hosts take its zones over.
    HostLoss,
    /// On hosts of their own: zone-a is cut off from the stores' host; a spare takes its zones over
    /// and the platform tells zone-a it was superseded.
    PartitionStore,
    /// On hosts of their own: zone-a is cut off from the platform's host; nothing moves, nobody notices.
    PartitionPlatform,
    /// On hosts of their own: what the players send to zone-a is dropped (one way) for 4 s;
    /// nothing moves, every player is back once it passes.
    PartitionPlayers,
    /// On hosts of their own: the players reach zone-a through a slow, lossy network for
    /// --outage-secs (100 ms +- 50 ms each way, 5 % of connections reset); whoever is reset resumes.
    FlakyNetwork,
    /// The platform as two replicas behind one address; the one running a live hand-off rollout
    /// is killed (`kill -9`) as zones move: the other takes the rollout over and completes or
    /// rolls it back, and no alert is told twice (needs --real and --next-build, as rollout).
    PlatformLoss,
    /// Every failure scenario above, one after another (not the rollouts); with --real, the
    /// characters drill too, and the drills on hosts of their own where network namespaces can be made.
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::ZoneCrash => "zone-crash",
            Scenario::RedisDown => "redis-down",
            Scenario::MongoDown => "mongo-down",
            Scenario::KafkaDown => "kafka-down",
            Scenario::MysqlDown => "mysql-down",
            Scenario::PlatformDown => "platform-down",
            Scenario::AllZonesDown => "all-zones-down",
            Scenario::SiteLoss => "site-loss",
            Scenario::Rollout => "rollout",
            Scenario::Characters => "characters",
            Scenario::HostLoss => "host-loss",
            Scenario::PartitionStore => "partition-store",
            Scenario::PartitionPlatform => "partition-platform",
            Scenario::PartitionPlayers => "partition-players",
            Scenario::FlakyNetwork => "flaky-network",
            Scenario::PlatformLoss => "platform-loss",
            Scenario::All => "all",
        }
    }

    /// The scenarios that need `--real`: their fault is in a real service.
    fn needs_real(self) -> Option<&'static str> {
        match self {
            Scenario::RedisDown => Some("the embedded deployment has no Redis to stop"),
            Scenario::MongoDown => Some("the embedded deployment has no MongoDB to stop"),
            Scenario::PlatformDown => Some(
                "the embedded deployment has no platform server (its zone server publishes into the ledger \
                 itself, and `respawn drill zone-crash` kills that)",
            ),
            Scenario::SiteLoss => Some("a site of embedded files has nothing off-site to restore from"),
            Scenario::PlatformLoss => Some("the platform's replicas share their state in Redis"),
            s if s.on_hosts() => Some("its hosts run real Redis, MongoDB, broker and MariaDB servers"),
            _ => None,
        }
    }

    /// The drills on hosts of their own (network namespaces).
    fn on_hosts(self) -> bool {
        matches!(
            self,
            Scenario::HostLoss
                | Scenario::PartitionStore
                | Scenario::PartitionPlatform
                | Scenario::PartitionPlayers
                | Scenario::FlakyNetwork
        )
    }

    /// What `all` runs: every failure scenario this deployment can have.
    fn all(real: bool) -> Vec<Scenario> {
        let hosts = [
            Scenario::HostLoss,
            Scenario::PartitionStore,
            Scenario::PartitionPlatform,
            Scenario::PartitionPlayers,
            Scenario::FlakyNetwork,
        ];
        let hosts = match (real, respawn_harness::netns::Lan::available()) {
            (true, Ok(())) => hosts.to_vec(),
            (true, Err(why)) => {
                eprintln!(
                    "skipped: host-loss, partition-store, partition-platform, partition-players and flaky-network (hosts of their own): {why}"
                );
                Vec::new()
            }
            (false, _) => Vec::new(),
        };
        [
            Scenario::ZoneCrash,
            Scenario::RedisDown,
            Scenario::MongoDown,
            Scenario::KafkaDown,
            Scenario::MysqlDown,
            Scenario::PlatformDown,
            Scenario::AllZonesDown,
            Scenario::SiteLoss,
        ]
        .into_iter()
        .filter(|s| real || s.needs_real().is_none())
        // Its embedded form runs in the test suite; `all --real` adds the real one.
        .chain(real.then_some(Scenario::Characters))
        .chain(hosts)
        .collect()
    }

    fn is_pipeline(self) -> bool {
        matches!(self, Scenario::KafkaDown | Scenario::MysqlDown | Scenario::PlatformDown)
    }
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    scenario: Scenario,
    /// Use real Redis and a MongoDB-wire-compatible server (started by the drill).
    #[arg(long)]
    real: bool,
    /// Bots playing throughout.
    #[arg(long, default_value_t = 12)]
    bots: u32,
    /// zone-crash: how many kills, one after another, each measured.
    #[arg(long, default_value_t = 1)]
    kills: u32,
    /// kafka-down, mysql-down, platform-down, flaky-network: how long the fault lasts.
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// Keep the deployment's directory (every process's log and data) and print its path.
    #[arg(long)]
    keep: bool,
    /// rollout: move zones live with their players instead of the guide's wait.
    #[arg(long)]
    handoff: bool,
    /// rollout: the second build (reporting another version); default $RESPAWN_NEXT_BIN.
    #[arg(long)]
    next_build: Option<std::path::PathBuf>,
    /// Also write the report as markdown to this file, with a chart of the
    /// tick duration and CCU over the drill beside it (same name, .svg).
    /// With several drills, one file each: FILE-<scenario>[-<run>].md.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Run the drill (or `all`) this many times, then print median and worst figures.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

/// Targets: ours, and the guide's for comparison.
pub(crate) const RTO_TARGET_MS: f64 = 1_000.0;
pub(crate) const RPO_TARGET_TICKS: u64 = 2;
pub(crate) const TICK_BUDGET_MS: f64 = 50.0;

/// Where one drill's report goes.
struct Output {
    scenario: Scenario,
    real: bool,
    json: bool,
    /// Several drills: their JSON is printed together at the end.
    quiet: bool,
    report: Option<std::path::PathBuf>,
}

pub async fn run(args: DrillArgs) -> Result<()> {
    if let Some(why) = args.scenario.needs_real().filter(|_| !args.real) {
        bail!("{} needs --real: {why}", args.scenario.name());
    }
    if args.scenario.on_hosts() {
        if let Err(why) = respawn_harness::netns::Lan::available() {
            bail!(
                "{} runs on hosts of their own (network namespaces), which cannot be made here: {why}",
                args.scenario.name()
            );
        }
    }
    if args.kills == 0 || args.bots == 0 || args.repeat == 0 {
        bail!("--kills, --bots and --repeat must be at least 1");
    }
    let scenarios = if args.scenario == Scenario::All { Scenario::all(args.real) } else { vec![args.scenario] };
    let several = scenarios.len() > 1 || args.repeat > 1;
    let (mut figures, mut reports) = (Vec::new(), Vec::new());
    for round in 1..=args.repeat {
        for &scenario in &scenarios {
            if several {
                eprintln!("== drill {} (run {round} of {})", scenario.name(), args.repeat);
            }
            let report = args.report.as_ref().map(|path| match several {
                false => path.clone(),
                true => numbered(path, scenario, round, args.repeat),
            });
            let out = Output { scenario, real: args.real, json: args.json, quiet: args.json && several, report };
            match run_one(&args, &out).await {
                Ok((f, json)) => {
                    figures.push(f);
                    reports.push(json);
                }
                // One drill that could not finish is a failed drill; the others still run.
                Err(e) if several => {
                    eprintln!("drill {} could not finish: {e:#}", scenario.name());
                    figures.push(Figures::failed(scenario));
                    let problems =
                        vec![Problem::new(ProblemKind::Incomplete, format!("the drill could not finish: {e:#}"))];
                    reports.push(
                        serde_json::json!({ "scenario": scenario, "verdict": Verdict::Fail, "problems": problems }),
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
    let passed = figures.iter().all(|f| f.passed);
    if several {
        let summary = summarize(&figures);
        if args.json {
            println!("{}", serde_json::json!({ "verdict": Verdict::of(passed), "summary": summary, "runs": reports }));
        } else {
            print_summary(&summary);
        }
    }
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// `FILE.md` of several drills: `FILE-<scenario>[-<run>].md`.
fn numbered(path: &std::path::Path, scenario: Scenario, round: u32, rounds: u32) -> std::path::PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "drill".into());
    let run = if rounds > 1 { format!("-{round}") } else { String::new() };
    path.with_file_name(format!("{stem}-{}{run}.md", scenario.name()))
}

/// Runs one drill and publishes its report; its figures and its JSON.
async fn run_one(args: &DrillArgs, out: &Output) -> Result<(Figures, serde_json::Value)> {
    if out.scenario == Scenario::Rollout {
        return run_rollout(args, out).await;
    }
    if out.scenario == Scenario::Characters {
        return run_characters(args, out).await;
    }
    if out.scenario == Scenario::PlatformLoss {
        return run_platform_loss(args, out).await;
    }
    if out.scenario.on_hosts() {
        return run_on_hosts(args, out).await;
    }
    let loses_every_server = matches!(out.scenario, Scenario::AllZonesDown | Scenario::SiteLoss);
    let options = Options {
        layout: if loses_every_server { Layout::ServerPerZone } else { Layout::Supervised },
        real: args.real,
        bots: args.bots,
        pipeline: out.scenario.is_pipeline() || out.scenario == Scenario::SiteLoss,
        cold_every_secs: match out.scenario {
            Scenario::MongoDown => Some(mongo_down::MONGO_DRILL_COLD_SECS),
            Scenario::SiteLoss => Some(site::SITE_COLD_SECS),
            _ => None,
        },
    };
    let mut d = Deployment::start(options).await?;
    let sampler = out.report.is_some().then(|| report::Sampler::start(d.addrs(), d.started));
    let outage = Duration::from_secs(args.outage_secs);
    let result = match out.scenario {
        Scenario::ZoneCrash => zone_crash::zone_crash(&mut d, args.kills).await.map(Report::Recovery),
        Scenario::RedisDown => redis_down::redis_down(&mut d).await.map(Report::Recovery),
        Scenario::MongoDown => mongo_down::mongo_down(&mut d).await.map(Report::Recovery),
        Scenario::AllZonesDown | Scenario::SiteLoss => site::run(&mut d, out.scenario).await.map(Report::Site),
        pipeline_scenario => pipeline::run(&mut d, pipeline_scenario, outage).await.map(Report::Pipeline),
    };
    let timeline = d.timeline.clone();
    let chart = match sampler {
        Some(sampler) => sampler.finish().await,
        None => Vec::new(),
    };
    let dir = d.stop().await;
    if args.keep {
        eprintln!("deployment kept in {}", dir.keep().display());
    }
    match result? {
        Report::Recovery(mut r) => {
            (r.findings.timeline, r.findings.chart, r.real_services) = (timeline, chart, args.real);
            let figures = Figures::of_crash(r.scenario, &r.findings, r.rto_ms, r.rpo_ticks, &r.events, r.commands_lost);
            Ok((figures, publish(out, &r, &r.findings, || print_report(&r))?))
        }
        Report::Pipeline(mut r) => {
            (r.findings.timeline, r.findings.chart) = (timeline, chart);
            let figures = Figures {
                scenario: r.scenario,
                passed: r.findings.passed(),
                rto_ms: Some(r.catch_up_ms),
                rpo_ticks: None,
                events_lost: Some(r.events_lost),
                commands_lost: None,
            };
            Ok((figures, publish(out, &r, &r.findings, || pipeline::print_report(&r))?))
        }
        Report::Site(mut r) => {
            // Its timeline is in the report already.
            r.findings.chart = chart;
            let figures = Figures::of_crash(r.scenario, &r.findings, r.rto_ms, r.rpo_ticks, &r.events, r.commands_lost);
            Ok((figures, publish(out, &r, &r.findings, || site::print_report(&r))?))
        }
    }
}

/// Prints the report (JSON with `--json`, else `print`; nothing when quiet)
/// and writes `--report`; the report as JSON.
fn publish<R: Serialize>(
    out: &Output,
    report: &R,
    findings: &Findings,
    print: impl FnOnce(),
) -> Result<serde_json::Value> {
    let value = serde_json::to_value(report)?;
    if !out.quiet {
        if out.json {
            println!("{value}");
        } else {
            print();
        }
    }
    if let Some(path) = &out.report {
        let title = format!("Drill {}{}", out.scenario.name(), if out.real { " (real services)" } else { "" });
        report::write(path, &title, &value, findings, &findings.chart)?;
        eprintln!("report written to {} (chart: {})", path.display(), path.with_extension("svg").display());
    }
    Ok(value)
}

async fn run_rollout(args: &DrillArgs, out: &Output) -> Result<(Figures, serde_json::Value)> {
    let next = rollout::next_build(args.next_build.clone())?;
    let dir = TempDir::new("drill")?;
    let backing = Backing::start(dir.path(), args.real, false).await?;
    let options =
        rollout::Options { next, handoff: args.handoff, bots: args.bots, real: args.real, chart: out.report.is_some() };
    let result = rollout::run(dir.path(), backing.stores.clone(), options).await;
    drop(backing);
    if args.keep {
        eprintln!("deployment kept in {}", dir.keep().display());
    }
    let r = result?;
    let figures = Figures {
        scenario: Scenario::Rollout,
        passed: r.findings.passed(),
        rto_ms: Some(r.pause_ms),
        rpo_ticks: None,
        events_lost: None,
        commands_lost: Some(r.commands_lost),
    };
    Ok((figures, publish(out, &r, &r.findings, || rollout::print_report(&r))?))
}

async fn run_platform_loss(args: &DrillArgs, out: &Output) -> Result<(Figures, serde_json::Value)> {
    let next = rollout::next_build(args.next_build.clone())?;
    let dir = TempDir::new("drill")?;
    let result = platform_loss::run(dir.path(), &next, args.bots).await;
    if args.keep {
        eprintln!("deployment kept in {}", dir.keep().display());
    }
    let r = result?;
    let figures = Figures {
        scenario: Scenario::PlatformLoss,
        passed: r.findings.passed(),
        rto_ms: Some(r.finished_after_kill_ms as f64),
        rpo_ticks: None,
        events_lost: None,
        commands_lost: Some(r.commands_lost),
    };
    Ok((figures, publish(out, &r, &r.findings, || platform_loss::print_report(&r))?))
}

async fn run_characters(args: &DrillArgs, out: &Output) -> Result<(Figures, serde_json::Value)> {
    let dir = TempDir::new("drill")?;
    let result = characters::run(dir.path(), characters::Options { bots: args.bots, real: args.real }).await;
    if args.keep {
        eprintln!("deployment kept in {}", dir.keep().display());
    }
    let r = result?;
    let figures = Figures {
        scenario: Scenario::Characters,
        passed: r.findings.passed(),
        rto_ms: None,
        rpo_ticks: None,
        events_lost: None,
        commands_lost: Some(r.progress_lost),
    };
    Ok((figures, publish(out, &r, &r.findings, || characters::print_report(&r))?))
}

async fn run_on_hosts(args: &DrillArgs, out: &Output) -> Result<(Figures, serde_json::Value)> {
    let dir = TempDir::new("drill")?;
    let (scenario, root, bots, hold) =
        (out.scenario, dir.path().to_path_buf(), args.bots, Duration::from_secs(args.outage_secs));
    let result = tokio::task::spawn_blocking(move || host_faults::run(scenario, root, bots, hold)).await?;
    if args.keep {
        eprintln!("deployment kept in {}", dir.keep().display());
    }
    let r = result?;
    let figures = Figures {
        scenario,
        passed: r.findings.passed(),
        rto_ms: Some(r.rto_ms),
        rpo_ticks: Some(r.rpo_ticks),
        events_lost: Some(r.events.events_lost),
        commands_lost: Some(r.commands_lost),
    };
    Ok((figures, publish(out, &r, &r.findings, || host_faults::print_report(&r))?))
}

enum Report {
    Recovery(DrillReport),
    Pipeline(pipeline::PipelineReport),
    Site(SiteReport),
}
