//! `respawn drill <scenario>`: disaster-recovery drills that run for real.
//! Each starts its own local deployment on free ports (real Redis and a
//! MongoDB-wire-compatible server with `--real`, files otherwise), keeps bots
//! playing, injects the fault, measures, and prints a verdict.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use respawn_api::admin::RestoreSource;
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use respawn_client::{signed_tokens, Access, Fleet};
use respawn_token::TokenKey;
use serde::Serialize;

use respawn_harness::process::{find_binary, free_port, Service, MONGOD_CACHED};
use respawn_harness::supervisor::{ChildSpec, Supervisor};
use respawn_harness::zone::StoreFlags;
use respawn_harness::TempDir;

mod pipeline;
mod report;
mod rollout;
mod site;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
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
    /// Every failure scenario above, one after another (not the rollout).
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
            _ => None,
        }
    }

    /// What `all` runs: every failure scenario this deployment can have.
    fn all(real: bool) -> Vec<Scenario> {
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
    /// kafka-down, mysql-down, platform-down: how long the fault lasts.
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
const RTO_TARGET_MS: f64 = 1_000.0;
/// A restart while MongoDB is down first waits for it (one store call), since
/// it may hold a newer cold snapshot than Redis; then restores from Redis.
const RTO_TARGET_MONGO_DOWN_MS: f64 = RTO_TARGET_MS + respawn_store::CALL_TIMEOUT.as_millis() as f64;
const RPO_TARGET_TICKS: u64 = 2;
const TICK_BUDGET_MS: f64 = 50.0;

#[derive(Debug, Clone, Serialize)]
pub struct KillResult {
    pub rto_ms: f64,
    pub rpo_ticks: u64,
    pub commands_lost: u64,
    pub players_before: u64,
    pub players_resumed: u64,
    /// Where the restored state came from (null if the metrics did not say).
    pub restore_source: Option<RestoreSource>,
    pub resume_gap_max_ms: f64,
}

#[derive(Debug, Serialize)]
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
    fn one_kill(
        scenario: Scenario,
        kill: KillResult,
        max_tick_ms: f64,
        events: EventTally,
        mut problems: Vec<String>,
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

/// What the zone-server processes a drill killed had done with their events,
/// from the last look before each kill (a process's counters die with it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Killed {
    /// Events their ticks generated.
    pub generated: u64,
    /// Of those, events not yet written to the durable outbox: their ticks
    /// were not durable either, so a restore takes them back with that play.
    pub rolled_back: u64,
}

impl Killed {
    /// Adds one last look (the metrics of processes about to be killed).
    fn add(&mut self, samples: &[prom::Sample]) {
        let generated = prom::sum(samples, "respawn_zone_events_total", &[]) as u64;
        let recorded = prom::sum(samples, "respawn_zone_events_recorded_total", &[]) as u64;
        self.generated += generated;
        self.rolled_back += generated.saturating_sub(recorded);
    }
}

/// The events of a drill: generated by the zone servers, rolled back with
/// the play a restore took back (never recorded, see [`Killed`]), persisted
/// in the ledger (distinct ids), lost (recorded but never stored) and stored
/// twice.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EventTally {
    pub events_generated: u64,
    pub events_rolled_back: u64,
    pub events_persisted: u64,
    pub events_lost: u64,
    pub events_duplicated: u64,
}

impl EventTally {
    fn of(generated: u64, rolled_back: u64, stored: &pipeline::Comparison) -> Self {
        Self {
            events_generated: generated,
            events_rolled_back: rolled_back,
            events_persisted: stored.distinct_rows,
            events_lost: generated.saturating_sub(rolled_back).saturating_sub(stored.distinct_rows),
            events_duplicated: stored.rows - stored.distinct_rows,
        }
    }

    /// What misses the target of none lost, none twice.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.events_lost > 0 {
            problems.push(format!("{} events generated but not stored", self.events_lost));
        }
        if self.events_duplicated > 0 {
            problems.push(format!("{} events stored twice", self.events_duplicated));
        }
        problems
    }

    fn print(&self) {
        println!("  events generated   {:>9}", self.events_generated);
        println!("  events rolled back {:>9} (in ticks a restore took back)", self.events_rolled_back);
        println!("  events persisted   {:>9}                                 = the rest", self.events_persisted);
        println!("  events lost        {:>9}                                 0", self.events_lost);
        println!("  events duplicated  {:>9}                                 0", self.events_duplicated);
    }
}

/// Whether a drill met every target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Pass,
    Fail,
}

impl Verdict {
    pub fn of(passed: bool) -> Self {
        if passed {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

/// How every drill report ends: the verdict, what missed its target, and the
/// timeline of the drill (in the JSON, three fields at the top level).
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub verdict: Verdict,
    pub problems: Vec<String>,
    pub timeline: Vec<String>,
    /// Tick duration and CCU over the drill, for `--report`.
    #[serde(skip)]
    pub chart: Vec<report::ChartPoint>,
}

impl Findings {
    /// A pass when nothing missed its target; the timeline is added at the end.
    pub fn judge(problems: Vec<String>) -> Self {
        Self { verdict: Verdict::of(problems.is_empty()), problems, timeline: Vec::new(), chart: Vec::new() }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    fn print_timeline(&self) {
        println!("Timeline");
        for line in &self.timeline {
            println!("  {line}");
        }
        println!();
    }

    fn print_verdict(&self) {
        println!();
        if self.problems.is_empty() {
            println!("Verdict: PASS");
        } else {
            println!("Verdict: FAIL");
            for p in &self.problems {
                println!("  - {p}");
            }
        }
    }
}

/// What the deployment under test is made of.
#[derive(Debug, Clone, Copy)]
struct Options {
    /// Redis and a MongoDB-wire-compatible server rather than files.
    real: bool,
    bots: u32,
    /// With `real`: a Kafka-compatible broker, MariaDB and the platform server too.
    pipeline: bool,
    /// Cold snapshots this often instead of the default 5 minutes (so a drill sees them).
    cold_every_secs: Option<u64>,
}

/// The deployment under test.
struct Deployment {
    dir: TempDir,
    redis: Option<Service>,
    mongo: Option<Service>,
    /// Kafka-compatible broker, MariaDB and the platform server, for the pipeline drills.
    pipeline: Option<pipeline::Pipeline>,
    supervisor: Supervisor,
    zone_addr: String,
    zones: Vec<String>,
    bots: Fleet,
    /// Events of the zone-server processes killed so far.
    killed: Killed,
    started: Instant,
    timeline: Vec<String>,
}

impl Deployment {
    async fn start(options: Options) -> Result<Self> {
        let Options { real, bots, pipeline: _, cold_every_secs } = options;
        let dir = TempDir::new("drill")?;
        let mut stores = drill_stores(dir.path());
        let (mut redis, mut mongo) = (None, None);
        if real {
            let (r, m) = start_real_stores(dir.path(), &mut stores).await?;
            redis = Some(r);
            mongo = Some(m);
        }
        // Embedded, the zone server's own ledger is the pipeline: nothing more to start.
        let pipeline = if options.pipeline && real {
            let p = pipeline::Pipeline::start(dir.path()).await?;
            stores.kafka_brokers = Some(p.brokers.clone());
            Some(p)
        } else {
            None
        };
        let token_key = respawn_token::random_hex(32)?;
        let key = TokenKey::new(token_key.as_bytes())?;
        let config = match cold_every_secs {
            Some(secs) => {
                let path = dir.path().join("zone.toml");
                std::fs::write(&path, format!("[persistence]\ncold_snapshot_secs = {secs}\n"))?;
                Some(path)
            }
            None => None,
        };
        let spec = ChildSpec {
            exe: std::env::current_exe()?,
            config,
            stores,
            token_key,
            admin_token: respawn_token::random_hex(32)?,
            platform: None,
            log_path: dir.path().join("zone.log"),
            echo_warnings: false,
        };
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let supervisor = Supervisor::start(spec, listen, Default::default()).await?;
        let zone_addr = supervisor.addr.to_string();
        let zones: Vec<String> = respawn_zone::ServerConfig::defaults().zones.iter().map(|z| z.name.clone()).collect();
        let tokens = signed_tokens(key, Duration::from_secs(3_600));
        let bots = Fleet::spawn(Access::Direct { url: format!("ws://{zone_addr}/ws"), tokens }, &zones, bots, "drill");
        let mut d = Self {
            dir,
            redis,
            mongo,
            pipeline,
            supervisor,
            zone_addr,
            zones,
            bots,
            killed: Killed::default(),
            started: Instant::now(),
            timeline: Vec::new(),
        };
        d.note(format!(
            "deployment up: zone server {} ({}), {} bots",
            d.zone_addr,
            if real { "Redis + MongoDB-compatible" } else { "embedded files" },
            d.bots.len()
        ));
        Ok(d)
    }

    fn note(&mut self, what: String) {
        self.timeline.push(format!("{:>7.3} s  {what}", self.started.elapsed().as_secs_f64()));
    }

    async fn samples(&self) -> Result<Vec<prom::Sample>> {
        Ok(prom::parse(&http::scrape(&self.zone_addr).await?))
    }

    async fn players(&self) -> u64 {
        match self.samples().await {
            Ok(s) => prom::sum(&s, "respawn_zone_players", &[]) as u64,
            Err(_) => 0,
        }
    }

    async fn wait_players(&self, want: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.players().await >= want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    async fn tick_histogram(&self) -> Option<Histogram> {
        Histogram::read(&self.samples().await.ok()?, "respawn_zone_tick_duration_seconds", &[])
    }

    /// Kills the zone server and measures the way back.
    async fn crash_zone(&mut self) -> Result<KillResult> {
        let players_before = self.players().await;
        let resumes_before = self.bots.stats.resumes().len();
        let restarts_before = self.supervisor.status.restarts();
        let pid = self.supervisor.status.child_pid.load(Ordering::Relaxed);
        let last_look = self.samples().await?;
        let t0 = Instant::now();
        let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
        if !killed.success() {
            bail!("kill -9 {pid} failed");
        }
        self.killed.add(&last_look);
        self.note(format!("kill -9 zone server (pid {pid}) with {players_before} players"));
        // RTO: until a new process runs and every zone has ticked in it.
        let deadline = t0 + Duration::from_secs(20);
        let rto = loop {
            if Instant::now() > deadline {
                bail!("the zone server did not come back within 20 s");
            }
            if self.supervisor.status.restarts() > restarts_before {
                if let Ok(s) = self.samples().await {
                    let ticking = self.zones.iter().all(|z| {
                        prom::value(&s, "respawn_zone_tick_duration_seconds_count", &[("zone", z)]).unwrap_or(0.0) > 0.0
                    });
                    if ticking {
                        break t0.elapsed();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.note(format!("zones ticking again after {:.0} ms", rto.as_secs_f64() * 1e3));
        let source = self.samples().await.ok().and_then(|s| {
            [RestoreSource::Hot, RestoreSource::Cold, RestoreSource::Journal, RestoreSource::Fresh]
                .into_iter()
                .find(|src| prom::sum(&s, "respawn_zone_restores_total", &[("source", src.as_str())]) > 0.0)
        });
        let back = self.wait_players(players_before, Duration::from_secs(15)).await;
        let resumes: Vec<_> = self.bots.stats.resumes().into_iter().skip(resumes_before).collect();
        self.note(format!(
            "{} of {players_before} players back{} (state restored from {})",
            resumes.len(),
            if back { "" } else { " before the 15 s limit ran out" },
            source_name(source)
        ));
        Ok(KillResult {
            rto_ms: rto.as_secs_f64() * 1e3,
            rpo_ticks: resumes.iter().map(|r| r.lost_ticks()).max().unwrap_or(0),
            commands_lost: resumes.iter().map(|r| u64::from(r.lost_acknowledged)).sum(),
            players_before,
            players_resumed: resumes.len() as u64,
            restore_source: source,
            resume_gap_max_ms: resumes.iter().map(|r| r.gap.as_secs_f64() * 1e3).fold(0.0, f64::max),
        })
    }

    /// Stops the bots, waits for the events to settle in the embedded ledger
    /// (the recovery drills' event log), and counts them.
    async fn tally_events(&mut self) -> Result<EventTally> {
        self.bots.halt().await;
        let ledger = pipeline::LedgerView::Sqlite(self.dir.path().join("data").join(respawn_harness::zone::EVENTS_DB));
        let rolled_back = self.killed.rolled_back;
        let (generated, _, stored) = pipeline::settle(self, &ledger, None, rolled_back).await?;
        self.note(format!(
            "bots stopped; {} events stored of {generated} generated ({rolled_back} in ticks a restore took back)",
            stored.distinct_rows
        ));
        Ok(EventTally::of(generated, rolled_back, &stored))
    }

    /// Stops everything; the directory goes when the returned guard does.
    async fn stop(self) -> TempDir {
        self.bots.stop().await;
        self.supervisor.stop().await;
        self.dir
    }
}

/// A drill deployment's stores: files under `dir` until real services are added.
fn drill_stores(dir: &std::path::Path) -> StoreFlags {
    StoreFlags::files(&dir.join("data"), "drill")
}

/// Redis and SecantusDB (MongoDB-compatible) under `dir`, and `stores` pointed at them.
async fn start_real_stores(dir: &std::path::Path, stores: &mut StoreFlags) -> Result<(Service, Service)> {
    let port = free_port()?;
    let mut redis = Service::new(
        "redis",
        find_binary("RESPAWN_REDIS_SERVER", &["redis-server"])?,
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        port,
        dir.join("redis"),
    );
    redis.start().await?;
    stores.redis_url = Some(format!("redis://127.0.0.1:{port}/0"));
    let port = free_port()?;
    let path = dir.join("mongo/data");
    let mut mongo = Service::new(
        "mongo",
        find_binary("RESPAWN_MONGOD", MONGOD_CACHED)?,
        ["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path", &path.display().to_string()],
        port,
        dir.join("mongo"),
    );
    mongo.start().await?;
    stores.mongo_uri = Some(format!("mongodb://127.0.0.1:{port}/?directConnection=true"));
    Ok((redis, mongo))
}

/// A restore's source as a report says it.
fn source_name(source: Option<RestoreSource>) -> &'static str {
    source.map_or("unknown", RestoreSource::as_str)
}

/// The upper bound of the highest histogram bucket that holds an observation.
fn max_bucket_ms(h: &Histogram) -> f64 {
    let mut prev = 0.0;
    let mut max = 0.0;
    for &(le, cum) in &h.buckets {
        if cum > prev {
            max = if le.is_finite() { le * 1e3 } else { f64::INFINITY };
        }
        prev = cum;
    }
    max
}

/// One drill's headline figures, for the summary of several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub scenario: Scenario,
    pub passed: bool,
    /// Fault to service restored (for the event pipeline: heal to backlog stored).
    pub rto_ms: Option<f64>,
    pub rpo_ticks: Option<u64>,
    pub events_lost: Option<u64>,
    pub commands_lost: Option<u64>,
}

impl Figures {
    fn failed(scenario: Scenario) -> Self {
        Self { scenario, passed: false, rto_ms: None, rpo_ticks: None, events_lost: None, commands_lost: None }
    }
}

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
                    let problems = vec![format!("the drill could not finish: {e:#}")];
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
    match out.scenario {
        Scenario::Rollout => return run_rollout(args, out).await,
        Scenario::AllZonesDown | Scenario::SiteLoss => return run_site(args, out).await,
        _ => {}
    }
    let options = Options {
        real: args.real,
        bots: args.bots,
        pipeline: out.scenario.is_pipeline(),
        cold_every_secs: (out.scenario == Scenario::MongoDown).then_some(MONGO_DRILL_COLD_SECS),
    };
    let mut d = Deployment::start(options).await?;
    let sampler = out.report.is_some().then(|| report::Sampler::start(vec![d.zone_addr.clone()], d.started));
    let outage = Duration::from_secs(args.outage_secs);
    let result = match out.scenario {
        Scenario::ZoneCrash => zone_crash(&mut d, args.kills).await.map(Report::Recovery),
        Scenario::RedisDown => redis_down(&mut d).await.map(Report::Recovery),
        Scenario::MongoDown => mongo_down(&mut d).await.map(Report::Recovery),
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
            let figures = Figures {
                scenario: r.scenario,
                passed: r.findings.passed(),
                rto_ms: Some(r.rto_ms),
                rpo_ticks: Some(r.rpo_ticks),
                events_lost: Some(r.events.events_lost),
                commands_lost: Some(r.commands_lost),
            };
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
    let mut stores = drill_stores(dir.path());
    let real_stores = if args.real { Some(start_real_stores(dir.path(), &mut stores).await?) } else { None };
    let options =
        rollout::Options { next, handoff: args.handoff, bots: args.bots, real: args.real, chart: out.report.is_some() };
    let result = rollout::run(dir.path(), stores, options).await;
    drop(real_stores);
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

async fn run_site(args: &DrillArgs, out: &Output) -> Result<(Figures, serde_json::Value)> {
    let dir = TempDir::new("drill")?;
    let mut site = site::Site::start(dir.path(), out.scenario, args.real, args.bots).await?;
    let sampler = out.report.is_some().then(|| report::Sampler::start(site.addrs(), site.started()));
    let result = site::run(&mut site, out.scenario).await;
    let chart = match sampler {
        Some(sampler) => sampler.finish().await,
        None => Vec::new(),
    };
    site.stop().await;
    if args.keep {
        eprintln!("deployment kept in {}", dir.keep().display());
    }
    let mut r = result?;
    r.findings.chart = chart;
    let figures = Figures {
        scenario: r.scenario,
        passed: r.findings.passed(),
        rto_ms: Some(r.rto_ms),
        rpo_ticks: Some(r.rpo_ticks),
        events_lost: Some(r.events.events_lost),
        commands_lost: Some(r.commands_lost),
    };
    Ok((figures, publish(out, &r, &r.findings, || site::print_report(&r))?))
}

/// Several runs of one scenario, summed up.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub runs: usize,
    pub passed: usize,
    pub rto_median_ms: Option<f64>,
    pub rto_worst_ms: Option<f64>,
    pub rpo_worst_ticks: Option<u64>,
    pub events_lost_total: Option<u64>,
    pub events_lost_worst: Option<u64>,
    pub commands_lost_total: Option<u64>,
}

fn summarize(figures: &[Figures]) -> Vec<Summary> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for f in figures {
        if !scenarios.contains(&f.scenario) {
            scenarios.push(f.scenario);
        }
    }
    scenarios
        .into_iter()
        .map(|scenario| {
            let runs: Vec<&Figures> = figures.iter().filter(|f| f.scenario == scenario).collect();
            let mut rto: Vec<f64> = runs.iter().filter_map(|f| f.rto_ms).collect();
            rto.sort_by(f64::total_cmp);
            let events: Vec<u64> = runs.iter().filter_map(|f| f.events_lost).collect();
            let commands: Vec<u64> = runs.iter().filter_map(|f| f.commands_lost).collect();
            Summary {
                scenario,
                runs: runs.len(),
                passed: runs.iter().filter(|f| f.passed).count(),
                rto_median_ms: rto.get(rto.len() / 2).copied(),
                rto_worst_ms: rto.last().copied(),
                rpo_worst_ticks: runs.iter().filter_map(|f| f.rpo_ticks).max(),
                events_lost_total: (!events.is_empty()).then(|| events.iter().sum()),
                events_lost_worst: events.iter().max().copied(),
                commands_lost_total: (!commands.is_empty()).then(|| commands.iter().sum()),
            }
        })
        .collect()
}

/// The summary as a markdown table (what RELIABILITY.md records).
fn print_summary(summary: &[Summary]) {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    println!();
    println!("| drill | runs | passed | RTO median (ms) | RTO worst (ms) | RPO worst (ticks) | events lost (total, worst run) | acknowledged commands lost |");
    println!("|---|---|---|---|---|---|---|---|");
    for s in summary {
        println!(
            "| {} | {} | {} | {} | {} | {} | {}, {} | {} |",
            s.scenario.name(),
            s.runs,
            s.passed,
            ms(s.rto_median_ms),
            ms(s.rto_worst_ms),
            n(s.rpo_worst_ticks),
            n(s.events_lost_total),
            n(s.events_lost_worst),
            n(s.commands_lost_total)
        );
    }
    println!();
    println!("(the event pipeline's RTO is heal to backlog stored: players never lost service)");
}

enum Report {
    Recovery(DrillReport),
    Pipeline(pipeline::PipelineReport),
}

async fn warm_up(d: &mut Deployment) -> Result<()> {
    let want = d.bots.len() as u64;
    if !d.wait_players(want, Duration::from_secs(20)).await {
        bail!("only {} of {want} bots connected", d.players().await);
    }
    // Play long enough for a snapshot and a journal to exist.
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.note(format!("{want} bots playing"));
    Ok(())
}

async fn zone_crash(d: &mut Deployment, kills: u32) -> Result<DrillReport> {
    warm_up(d).await?;
    d.note("decision: no operator action; the supervisor restarts the zone server at once and its zones restore from the newest snapshot and the journal".into());
    let mut results = Vec::new();
    let mut max_tick_ms: f64 = 0.0;
    for i in 0..kills {
        let r = d.crash_zone().await?;
        results.push(r);
        // Let the restored zones play a moment, then read their tick times.
        tokio::time::sleep(Duration::from_millis(if i + 1 == kills { 1_000 } else { 1_500 })).await;
        if let Some(h) = d.tick_histogram().await {
            max_tick_ms = max_tick_ms.max(max_bucket_ms(&h));
        }
    }
    let worst = |f: fn(&KillResult) -> f64| results.iter().map(f).fold(0.0, f64::max);
    let rto_ms = worst(|r| r.rto_ms);
    let rpo_ticks = results.iter().map(|r| r.rpo_ticks).max().unwrap_or(0);
    let commands_lost = results.iter().map(|r| r.commands_lost).sum();
    let players_before = results.iter().map(|r| r.players_before).min().unwrap_or(0);
    let players_resumed = results.iter().map(|r| r.players_resumed).min().unwrap_or(0);
    let mut problems = crash_problems(rto_ms, RTO_TARGET_MS, rpo_ticks, commands_lost);
    if let Some(r) = results.iter().find(|r| r.players_resumed < r.players_before) {
        problems.push(format!("only {} of {} players resumed after a kill", r.players_resumed, r.players_before));
    }
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(format!("a tick took up to {max_tick_ms:.0} ms (budget {TICK_BUDGET_MS:.0} ms)"));
    }
    let events = d.tally_events().await?;
    problems.extend(events.problems());
    Ok(DrillReport {
        scenario: Scenario::ZoneCrash,
        real_services: false,
        rto_ms,
        rpo_ticks,
        commands_lost,
        players_before,
        players_resumed,
        players_back_ms: worst(|r| r.resume_gap_max_ms),
        max_tick_ms,
        kills: results,
        events,
        findings: Findings::judge(problems),
    })
}

async fn redis_down(d: &mut Deployment) -> Result<DrillReport> {
    warm_up(d).await?;
    let before = d.tick_histogram().await.ok_or_else(|| anyhow!("no tick histogram"))?;
    // Cold snapshots written so far, per zone: every zone must write one during the outage.
    let cold_ok = |s: &[prom::Sample], zone: &str| {
        prom::sum(s, "respawn_zone_snapshots_total", &[("zone", zone), ("store", "cold"), ("result", "ok")])
    };
    let samples = d.samples().await?;
    let cold_before: Vec<f64> = d.zones.iter().map(|z| cold_ok(&samples, z)).collect();
    if let Some(redis) = d.redis.as_mut() {
        redis.kill().await;
    }
    d.note("Redis killed".into());
    d.note("decision: keep Redis down and crash the zone server during the outage, to prove the restore from MongoDB; bring Redis back empty".into());
    // Past one hot-snapshot period: hot snapshots fail, cold ones take over.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut problems = Vec::new();
    loop {
        let s = d.samples().await?;
        if d.zones.iter().zip(&cold_before).all(|(z, before)| cold_ok(&s, z) > *before) {
            d.note("hot snapshots failing; every zone wrote a cold snapshot to MongoDB instead".into());
            break;
        }
        if Instant::now() > deadline {
            problems.push("not every zone wrote a cold snapshot during the Redis outage".to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = d.tick_histogram().await.map(|h| h.since(&before));
    let max_tick_ms = during.as_ref().map_or(0.0, max_bucket_ms);
    d.note(format!("ticks during the outage: max <= {max_tick_ms} ms"));
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(format!("a tick took up to {max_tick_ms:.0} ms during the outage"));
    }
    let kill = d.crash_zone().await?;
    if kill.restore_source != Some(RestoreSource::Cold) {
        problems.push(format!("restored from {} instead of the cold snapshot", source_name(kill.restore_source)));
    }
    if kill.players_resumed < kill.players_before {
        problems.push(format!("only {} of {} players resumed", kill.players_resumed, kill.players_before));
    }
    let hot_before = hot_snapshots(&d.samples().await?);
    if let Some(redis) = d.redis.as_mut() {
        redis.start().await?;
    }
    d.note("Redis back (empty: no persistence)".into());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if hot_snapshots(&d.samples().await?) > hot_before {
            d.note("hot snapshots and the journal resumed by themselves".into());
            break;
        }
        if Instant::now() > deadline {
            problems.push("hot snapshots did not resume within 15 s of Redis returning".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = d.tally_events().await?;
    Ok(DrillReport::one_kill(Scenario::RedisDown, kill, max_tick_ms, events, problems))
}

/// What misses the targets of a zone-server crash: the RTO over `rto_target_ms`,
/// more than [`RPO_TARGET_TICKS`] lost, any acknowledged command lost.
fn crash_problems(rto_ms: f64, rto_target_ms: f64, rpo_ticks: u64, commands_lost: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if rto_ms > rto_target_ms {
        problems.push(format!("RTO {rto_ms:.0} ms over the {rto_target_ms:.0} ms target"));
    }
    if rpo_ticks > RPO_TARGET_TICKS {
        problems.push(format!("RPO {rpo_ticks} ticks over the {RPO_TARGET_TICKS}-tick target"));
    }
    if commands_lost > 0 {
        problems.push(format!("{commands_lost} acknowledged commands lost"));
    }
    problems
}

/// The mongo-down drill's cold snapshot period: several attempts fit in its outage.
const MONGO_DRILL_COLD_SECS: u64 = 2;

/// Cold snapshots stored (`ok`) or failed, over every zone.
fn cold_snapshots(s: &[prom::Sample], result: &str) -> f64 {
    prom::sum(s, "respawn_zone_snapshots_total", &[("store", "cold"), ("result", result)])
}

/// Hot snapshots stored, over every zone.
fn hot_snapshots(s: &[prom::Sample]) -> f64 {
    prom::sum(s, "respawn_zone_snapshots_total", &[("store", "hot"), ("result", "ok")])
}

/// Polls the zone server's metrics until `done` holds (`limit` at most); whether it did.
async fn wait_metrics(d: &Deployment, limit: Duration, done: impl Fn(&[prom::Sample]) -> bool) -> Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done(&d.samples().await?) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

async fn mongo_down(d: &mut Deployment) -> Result<DrillReport> {
    warm_up(d).await?;
    let mut problems = Vec::new();
    let stored_before = cold_snapshots(&d.samples().await?, "ok");
    let wait = Duration::from_secs(MONGO_DRILL_COLD_SECS * 3);
    if !wait_metrics(d, wait, |s| cold_snapshots(s, "ok") > stored_before).await? {
        problems.push("no cold snapshot was stored before the outage".into());
    }
    let samples = d.samples().await?;
    let failed_before = cold_snapshots(&samples, "failed");
    let hot_before = hot_snapshots(&samples);
    let players_before = d.players().await;
    let ticks_before = d.tick_histogram().await.ok_or_else(|| anyhow!("no tick histogram"))?;
    if let Some(mongo) = d.mongo.as_mut() {
        mongo.kill().await;
    }
    d.note("MongoDB killed".into());
    d.note(
        "decision: keep MongoDB down and crash the zone server during the outage; bring MongoDB back on its data"
            .into(),
    );
    if wait_metrics(d, wait, |s| cold_snapshots(s, "failed") > failed_before).await? {
        d.note("cold snapshots failing (counted); play goes on".into());
    } else {
        problems.push("no cold snapshot was attempted during the outage".into());
    }
    // One hot snapshot period and a little: Redis keeps taking them.
    let hot_period = respawn_zone::ServerConfig::defaults().persist.hot_every + Duration::from_secs(2);
    if !wait_metrics(d, hot_period, |s| hot_snapshots(s) > hot_before).await? {
        problems.push("hot snapshots stopped during the MongoDB outage".into());
    }
    let players_during = d.players().await;
    if players_during < players_before {
        problems.push(format!("players fell from {players_before} to {players_during} during the outage"));
    }
    let max_tick_ms = d.tick_histogram().await.map(|h| max_bucket_ms(&h.since(&ticks_before))).unwrap_or(0.0);
    d.note(format!(
        "{players_during} of {players_before} players still playing; ticks during the outage: max <= {max_tick_ms} ms"
    ));
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(format!("a tick took up to {max_tick_ms:.0} ms during the outage"));
    }
    let kill = d.crash_zone().await?;
    if kill.restore_source != Some(RestoreSource::Hot) {
        problems.push(format!("restored from {} instead of the Redis hot snapshot", source_name(kill.restore_source)));
    }
    if kill.players_resumed < kill.players_before {
        problems.push(format!("only {} of {} players resumed", kill.players_resumed, kill.players_before));
    }
    let stored_before = cold_snapshots(&d.samples().await?, "ok");
    if let Some(mongo) = d.mongo.as_mut() {
        mongo.start().await?;
    }
    d.note("MongoDB back".into());
    if wait_metrics(d, Duration::from_secs(15), |s| cold_snapshots(s, "ok") > stored_before).await? {
        d.note("cold snapshots stored again".into());
    } else {
        problems.push("cold snapshots did not resume within 15 s of MongoDB returning".into());
    }
    problems.extend(crash_problems(kill.rto_ms, RTO_TARGET_MONGO_DOWN_MS, kill.rpo_ticks, kill.commands_lost));
    let events = d.tally_events().await?;
    Ok(DrillReport::one_kill(Scenario::MongoDown, kill, max_tick_ms, events, problems))
}

fn print_report(r: &DrillReport) {
    let scenario = r.scenario.name();
    println!("Drill {scenario} ({})", if r.real_services { "Redis + MongoDB-compatible" } else { "embedded stores" });
    println!();
    r.findings.print_timeline();
    println!("Figures (worst over {} kill(s))                 guide          target", r.kills.len());
    let rto_target = if r.scenario == Scenario::MongoDown { "<= 2 s (1)" } else { "<= 1 s" };
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
    if r.scenario == Scenario::MongoDown {
        println!();
        println!("(1) a restart while MongoDB is down waits for it once (1 s): it may hold a newer cold");
        println!("    snapshot than Redis; then the zone restores from the Redis hot snapshot.");
    }
    r.findings.print_verdict();
}
