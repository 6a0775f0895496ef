//! `respawn drill characters [--real]`: the conservation drill. Bots play
//! characters the platform keeps, on two zone servers whose zones lead
//! into each other, and travel between them; a second sign-in takes a
//! character over and then logs out; meanwhile a zone server is killed
//! twice, Redis is down 5 s and comes back empty (`--real`), the other
//! server's zone moves live to a standby one, (`--real`) the broker is
//! unreachable, then MariaDB down, for 8 s each, and last the platform
//! server is down 8 s. Sampled during the run, and at the end: no
//! character held by two zones, each character's record the fold of its
//! stays in the ledger, the gold and items held what the world gave out,
//! and no join giving back less than a server confirmed stored.
//!
//! Without `--real` the platform server runs in this process on the
//! embedded ledger the zone servers write (its outage: stopped, and started
//! again with nothing kept in memory). With `--real` it is a `respawn
//! platform` process (its outage: `kill -9`) with its state in Redis and
//! its ledger in MariaDB fed by a Kafka-compatible broker; the zones store
//! in Redis and a MongoDB-compatible server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use prost::Message as _;
use respawn_api::admin::{Rosters, ZoneAdmin};
use respawn_api::http::{Call, Method};
use respawn_api::players::{GuestSignUp, PlayerApi};
use respawn_api::registry::RegistryClient;
use respawn_client::conn::{Connection, Event as ClientEvent};
use respawn_client::{Access, Fleet, GuestSession};
use respawn_harness::gate::Gate;
use respawn_harness::process::{free_port, Service};
use respawn_harness::zone::{StoreFlags, ZoneCommand};
use respawn_platform::http::{HttpContext, SessionSigner};
use respawn_platform::ledger::EventQuery;
use respawn_platform::projection::{Hold, PlayerRecord};
use respawn_platform::rollout::{Rollout, State};
use respawn_platform::{Ledger, PlatformServer, RunningPlatform};
use respawn_proto::events::{event::Kind, Character, Event};
use serde::{Deserialize, Serialize};

use crate::deployment::Backing;
use crate::findings::{Findings, Problem, ProblemKind};
use crate::services::{
    broker_port_behind_gate, create_database, platform_service, start_mariadb, start_tansu, PlatformSecrets,
};
use crate::Scenario;

/// How often each bot walks through an exit, about.
const TRAVEL_EVERY: Duration = Duration::from_secs(8);
/// Between two looks at every zone's characters.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Characters a double sign-in round takes over.
const TAKEOVERS_PER_ROUND: usize = 3;

#[derive(Debug, Serialize, Deserialize)]
pub struct CharactersReport {
    pub scenario: Scenario,
    pub real_services: bool,
    /// Guest accounts the bots played, one character each.
    pub characters: u64,
    /// Walks through an exit into the other zone, followed.
    pub travels: u64,
    /// What a travel looked like to the player: from the travel notice to
    /// the first update in the next zone (median, 95th percentile, longest),
    /// over the travels outside the Redis, pipeline and platform outages.
    pub travel_pause_median_ms: f64,
    pub travel_pause_p95_ms: f64,
    pub travel_pause_max_ms: f64,
    /// The longest travel that began during a pipeline or platform outage (it waits for it).
    pub travel_pause_in_outage_max_ms: f64,
    /// Second sign-ins that took a character over from the bot playing it.
    pub takeovers: u64,
    /// Those second sign-ins that then logged out, and the bots' sign-ins after.
    pub logouts: u64,
    /// Zone servers killed (`kill -9`) and restarted under load.
    pub crashes_survived: u64,
    pub redis_restarts: u64,
    /// The broker unreachable, then MariaDB killed, 8 s each (`--real`).
    pub pipeline_outages: u64,
    /// The platform server down 8 s (`kill -9` with `--real`).
    pub platform_outages: u64,
    /// Zones moved live to another server.
    pub zones_handed_off: u64,
    /// Looks at every zone's characters during the run.
    pub samples: u64,
    /// Characters seen in two zones at once (samples), or two stays of one
    /// incarnation in the ledger. Target 0.
    pub duplicates: u64,
    /// Joins that gave back less than a server had confirmed stored. Target 0.
    pub progress_lost: u64,
    /// Characters whose record is not the fold of their stays' events.
    pub records_off: u64,
    /// Gold the world gave out (every gold event stored) and the gold the characters hold.
    pub gold_created: u64,
    pub gold_held: u64,
    /// Items likewise.
    pub items_created: u64,
    pub items_held: u64,
    /// Events of stays that had ended, which the ledger left out of records
    /// (as the platform server counted them before each stop).
    pub stale_events_refused: u64,
    #[serde(flatten)]
    pub findings: Findings,
}

/// One `respawn zone` process of the drill.
struct ZoneServer {
    id: &'static str,
    service: Service,
    addr: String,
}

/// What is seen when looking at every zone at once.
#[derive(Debug, Default)]
struct Sampling {
    samples: u64,
    duplicates: u64,
    /// The first few, described.
    seen: Vec<String>,
}

impl Sampling {
    /// One look: every server's rosters, taken side by side.
    fn look(&mut self, rosters: &[(String, Rosters)]) {
        self.samples += 1;
        let mut held: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (server, r) in rosters {
            // A released zone's characters belong to the server adopting it.
            for zone in r.zones.iter().filter(|z| !z.parked) {
                for c in &zone.characters {
                    held.entry(c.player)
                        .or_default()
                        .push(format!("{} on {server} (stay {})", zone.zone, c.incarnation));
                }
            }
        }
        for (player, places) in held.into_iter().filter(|(_, p)| p.len() > 1) {
            self.duplicates += 1;
            if self.seen.len() < 5 {
                self.seen.push(format!("character {player} held by {}", places.join(" and ")));
            }
        }
    }
}

/// The drill's run: where things are and what was done.
struct Run {
    started: Instant,
    timeline: Vec<String>,
    admin: ZoneAdmin,
    platform: PlatformHost,
    platform_addr: String,
    /// The platform's registry, as a zone server sees it (zone-a's credential).
    registry: RegistryClient,
    /// The ledger the platform keeps, opened by the drill.
    ledger: Arc<dyn Ledger>,
    /// The platform server's count of stale events, summed over its runs.
    stale_events_refused: u64,
    servers: Vec<ZoneServer>,
    secrets: Vec<String>,
    /// The account (and character) id of each secret.
    accounts: Vec<u64>,
    takeovers: u64,
    logouts: u64,
    crashes: u64,
    platform_outages: u64,
    bots: u32,
    /// Which of the travel pauses were of travels in an outage (by index).
    pauses_in_outages: Vec<std::ops::Range<usize>>,
    problems: Vec<Problem>,
}

impl Run {
    fn note(&mut self, what: impl std::fmt::Display) {
        self.timeline.push(format!("{:>7.3} s  {what}", self.started.elapsed().as_secs_f64()));
    }

    fn server(&mut self, id: &str) -> Result<&mut ZoneServer> {
        self.servers.iter_mut().find(|s| s.id == id).with_context(|| format!("no zone server {id}"))
    }

    /// `kill -9` of a zone server, started again at once on its disk.
    async fn crash(&mut self, id: &str) -> Result<()> {
        let server = self.server(id)?;
        server.service.kill().await;
        let t0 = Instant::now();
        server.service.start().await.with_context(|| format!("restarting {id}"))?;
        self.crashes += 1;
        self.note(format!("kill -9 {id}; answering again after {:.0} ms", t0.elapsed().as_secs_f64() * 1e3));
        Ok(())
    }

    /// Second sign-ins: each takes a bot's character over where it plays,
    /// holds it a moment, then logs out (the bot signs in again after).
    async fn sign_in_twice(&mut self, accounts: &[usize]) {
        for &i in accounts {
            match self.take_over(i).await {
                Ok(Some(zone)) => {
                    self.takeovers += 1;
                    self.logouts += 1;
                    self.note(format!(
                        "account {} signed in again: took its character over in {zone}, then logged out",
                        i + 1
                    ));
                }
                Ok(None) => {
                    self.note(format!("account {} signed in again: its character was travelling, nothing taken", i + 1))
                }
                Err(e) => self.problems.push(Problem::new(
                    ProblemKind::Incomplete,
                    format!("a second sign-in of account {} failed: {e:#}", i + 1),
                )),
            }
        }
    }

    /// A sign-in while `what` is down: refused (a problem if it is not).
    async fn sign_in_while_down(&mut self, what: &str) {
        match GuestSession::sign_in(&self.platform_addr, &self.secrets[0]).await {
            Ok(_) => self
                .problems
                .push(Problem::new(ProblemKind::NotAsDocumented, format!("a sign-in succeeded while {what} was down"))),
            Err(e) => self.note(format!("a sign-in meanwhile: refused ({e:#})")),
        }
    }

    /// Signs in as account `i` and joins the zone its character is in; the
    /// zone it took the character over in (`None`: it was between zones).
    async fn take_over(&self, i: usize) -> Result<Option<String>> {
        let mut session = GuestSession::sign_in(&self.platform_addr, &self.secrets[i]).await?;
        let record = self.ledger.player(session.account_id()).await?.context("no record for the account")?;
        let Hold::InZone { zone } = record.hold else { return Ok(None) };
        let grant = session.play(&zone).await?;
        let mut conn = Connection::connect(&grant.address).await?;
        let welcome = conn.join(grant.token, None, &grant.character_ticket, &zone, Duration::from_secs(5)).await?;
        if !welcome.resumed {
            bail!("the join in {zone} made a new stay instead of taking the character over");
        }
        // Play a moment, then log out: the character goes at rest.
        let held = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let Ok(ClientEvent::Closed { .. }) | Err(_) = conn.next().await {
                    return;
                }
            }
        })
        .await;
        if held.is_err() {
            conn.send(respawn_proto::client_message::Body::Leave(respawn_proto::Leave {})).await?;
        }
        conn.close().await;
        Ok(Some(zone))
    }

    /// Adds what the running platform server has counted of stale events
    /// (before it stops: its count ends with it).
    async fn count_stale_events(&mut self) {
        if let Ok(text) = respawn_api::http::scrape(&self.platform_addr).await {
            let samples = respawn_api::prom::parse(&text);
            self.stale_events_refused +=
                respawn_api::prom::sum(&samples, "respawn_platform_stale_character_events_total", &[]) as u64;
        }
    }

    /// The platform server's running (or last) rollout.
    async fn rollout(&self) -> Result<Rollout> {
        let call = Call::new(Method::GET, &self.platform_addr, "/v1/rollouts/current");
        Ok(call.bearer(Some(self.platform.admin_token())).read().await?)
    }

    /// Every server's rosters; those that do not answer (killed, gone) are left out.
    async fn rosters(admin: &ZoneAdmin, addrs: &[(String, String)]) -> Vec<(String, Rosters)> {
        let looks = addrs.iter().map(|(id, addr)| async move { (id.clone(), admin.characters(addr).await) });
        futures_util::future::join_all(looks).await.into_iter().filter_map(|(id, r)| r.ok().map(|r| (id, r))).collect()
    }

    fn addrs(&self) -> Vec<(String, String)> {
        self.servers.iter().map(|s| (s.id.to_owned(), s.addr.clone())).collect()
    }
}

/// What the drill runs.
#[derive(Debug)]
pub struct Options {
    pub bots: u32,
    pub real: bool,
}

/// Runs the drill in `dir`.
pub async fn run(dir: &Path, options: Options) -> Result<CharactersReport> {
    let Options { bots, real } = options;
    let started = Instant::now();
    let backing = Backing::start(dir, real, false).await?;
    let mut stores = backing.stores.clone();
    let (mut redis, _mongo) = (backing.redis, backing.mongo);
    // With --real, events go through the broker (behind a gate the drill can cut) into MariaDB.
    let mut pipeline = match real {
        true => {
            let (port, gate) = broker_port_behind_gate().await?;
            let broker = start_tansu(&dir.join("broker"), port, gate.port).await?;
            let mysql = start_mariadb(&dir.join("mariadb")).await?;
            let url = create_database(&format!("mysql://root@127.0.0.1:{}", mysql.port), "respawn").await?;
            stores.kafka_brokers = Some(format!("127.0.0.1:{}", gate.port));
            Some(RealPipeline { _broker: broker, gate, mysql, url })
        }
        false => None,
    };
    let secrets = PlatformSecrets::random()?;
    let server_key = respawn_token::ServerKey::new(secrets.server_key.as_bytes())?;
    let (token_key, admin_token) = (secrets.token_key.clone(), secrets.admin_token.clone());
    let platform = PlatformHost::start(dir, &stores, pipeline.as_ref(), secrets).await?;
    let platform_addr = platform.addr().to_owned();
    let ledger = platform.open_ledger(&stores).await?;
    // The registry as the first zone server sees it.
    let registry = RegistryClient::new(&platform_addr, server_key.credential("zone-a")?);

    let config = dir.join("zones.toml");
    std::fs::write(&config, respawn_harness::zone::SMALL_ZONES_WITH_EXITS)?;
    let exe = std::env::current_exe()?;
    let mut servers = Vec::new();
    for (id, hosts) in [("zone-a", Some("meadow")), ("zone-b", Some("caverns")), ("zone-c", None)] {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut command = ZoneCommand::new(&exe, &addr)
            .config(&config)
            .token_key(&token_key)
            .admin_token(&admin_token)
            .platform(&platform_addr, &server_key.credential(id)?)
            .outbox_dir(&dir.join(id).join("outbox"))
            .stores(&stores);
        command = match hosts {
            Some(zone) => command.arg("--zones").arg(zone),
            None => command.standby(),
        };
        let mut service = Service::zone(id, &command, port, dir.join(id));
        service.start().await.with_context(|| format!("starting zone server {id}"))?;
        servers.push(ZoneServer { id, service, addr });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while registry.servers().await.map_or(0, |s| s.len()) < servers.len() {
        if Instant::now() > deadline {
            bail!("the three zone servers did not register within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One guest account per bot, made up front so the drill can sign in as any of them.
    let api = PlayerApi::new(&platform_addr);
    let (mut secrets, mut accounts) = (Vec::new(), Vec::new());
    for _ in 0..bots {
        let guest = api.guest(&GuestSignUp::default()).await?;
        secrets.push(guest.device_secret.context("a guest sign-up gave no device secret")?);
        accounts.push(guest.account_id);
    }
    let mut run = Run {
        started,
        timeline: Vec::new(),
        admin: ZoneAdmin::new(&admin_token),
        platform,
        platform_addr: platform_addr.clone(),
        registry,
        ledger,
        stale_events_refused: 0,
        servers,
        secrets: secrets.clone(),
        accounts,
        takeovers: 0,
        logouts: 0,
        crashes: 0,
        platform_outages: 0,
        bots,
        pauses_in_outages: Vec::new(),
        problems: Vec::new(),
    };
    run.note(format!(
        "deployment up: platform {platform_addr} ({}); zone-a hosting meadow, zone-b caverns, zone-c standing by; {}",
        if real { "a process on Redis, MariaDB fed by Tansu" } else { "in this process, embedded ledger" },
        if real { "Redis + MongoDB-compatible" } else { "embedded files" },
    ));

    let zones = ["meadow".to_owned(), "caverns".to_owned()];
    let access = Access::Guests { platform: platform_addr.clone(), device_secrets: Arc::from(secrets) };
    let mut fleet = Fleet::spawn_with(access, &zones, bots, "keeper", Some(TRAVEL_EVERY));
    let stats = fleet.stats.clone();

    // Look at every zone's characters throughout.
    let sampling = Arc::new(Mutex::new(Sampling::default()));
    let sampler_stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (sampling, stop, admin, addrs) = (sampling.clone(), sampler_stop.clone(), run.admin.clone(), run.addrs());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let rosters = Run::rosters(&admin, &addrs).await;
                if let Ok(mut s) = sampling.lock() {
                    s.look(&rosters);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };

    let result = faults(&mut run, &stats, redis.as_mut(), pipeline.as_mut()).await;
    fleet.halt().await;
    if let Err(e) = &result {
        run.problems.push(Problem::new(ProblemKind::Incomplete, format!("the drill could not finish: {e:#}")));
    }
    // Everyone at rest: every stay's leaving stored.
    let (rested, held) = settle(&run).await;
    sampler_stop.cancel();
    let _ = sampler.await;
    run.note(format!("bots stopped; {rested} of {bots} characters out of every zone"));
    if !held.is_empty() {
        run.problems.push(Problem::new(
            ProblemKind::PlayersNotBack,
            format!("30 s after the bots left, records still put characters in zones: {}", held.join("; ")),
        ));
    }
    let rosters = Run::rosters(&run.admin, &run.addrs()).await;
    let left_in_zones: usize = rosters.iter().flat_map(|(_, r)| &r.zones).map(|z| z.characters.len()).sum();
    if left_in_zones > 0 {
        run.problems.push(Problem::new(
            ProblemKind::RecordsInconsistent,
            format!("{left_in_zones} characters still held by a zone after every player left"),
        ));
    }

    let audit = audit(run.ledger.as_ref(), &run.accounts).await?;
    let sampled = std::mem::take(&mut *sampling.lock().map_err(|_| anyhow::anyhow!("sampler poisoned"))?);
    let progress_lost = stats.progress_lost.load(Relaxed);
    let duplicates = sampled.duplicates + audit.duplicate_stays;
    let mut problems = std::mem::take(&mut run.problems);
    if duplicates > 0 {
        let mut seen = sampled.seen.clone();
        seen.extend(audit.duplicates_seen.iter().cloned());
        problems.push(Problem::new(
            ProblemKind::Duplicates,
            format!("{duplicates} characters in two places at once: {}", seen.join("; ")),
        ));
    }
    if progress_lost > 0 {
        problems.push(Problem::new(
            ProblemKind::InventoriesLost,
            format!("{progress_lost} joins gave back less than a zone had confirmed stored"),
        ));
    }
    if !audit.mismatches.is_empty() {
        problems.push(Problem::new(
            ProblemKind::RecordsInconsistent,
            format!(
                "{} characters' records are not the fold of their stays: {}",
                audit.mismatches.len(),
                audit.mismatches.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    if audit.gold_created != audit.gold_held || audit.items_created != audit.items_held {
        problems.push(Problem::new(
            ProblemKind::RecordsInconsistent,
            format!(
                "the world gave out {} gold and {} items; the characters hold {} gold and {} items",
                audit.gold_created, audit.items_created, audit.gold_held, audit.items_held
            ),
        ));
    }
    let travels = stats.travels.load(Relaxed);
    let (mut pauses, mut in_outage_max) = (Vec::new(), 0.0_f64);
    for (i, pause) in stats.travel_pauses().iter().enumerate() {
        let ms = pause.as_secs_f64() * 1e3;
        match run.pauses_in_outages.iter().any(|r| r.contains(&i)) {
            true => in_outage_max = in_outage_max.max(ms),
            false => pauses.push(ms),
        }
    }
    pauses.sort_by(f64::total_cmp);
    let pause_at =
        |q: f64| pauses.get(((pauses.len() as f64 * q) as usize).min(pauses.len().saturating_sub(1))).copied();
    if travels == 0 || run.takeovers == 0 || run.crashes == 0 {
        problems.push(Problem::new(
            ProblemKind::NothingTested,
            format!(
                "{travels} travels, {} takeovers, {} crashes: the drill tested too little",
                run.takeovers, run.crashes
            ),
        ));
    }
    run.note(format!(
        "audit: {} characters; {} gold and {} items given out, {} gold and {} items held; {} records off",
        audit.characters,
        audit.gold_created,
        audit.items_created,
        audit.gold_held,
        audit.items_held,
        audit.mismatches.len()
    ));

    for server in &mut run.servers {
        server.service.kill().await;
    }
    run.count_stale_events().await;
    if let Err(why) = run.platform.stop().await {
        problems
            .push(Problem::new(ProblemKind::ProcessStop, format!("the platform server did not stop cleanly: {why}")));
    }
    drop(pipeline);
    Ok(CharactersReport {
        scenario: Scenario::Characters,
        real_services: real,
        characters: audit.characters,
        travels,
        travel_pause_median_ms: pause_at(0.5).unwrap_or(0.0),
        travel_pause_p95_ms: pause_at(0.95).unwrap_or(0.0),
        travel_pause_max_ms: pauses.last().copied().unwrap_or(0.0),
        travel_pause_in_outage_max_ms: in_outage_max,
        takeovers: run.takeovers,
        logouts: run.logouts,
        crashes_survived: run.crashes,
        redis_restarts: u64::from(real),
        pipeline_outages: 2 * u64::from(real),
        platform_outages: run.platform_outages,
        zones_handed_off: run.timeline.iter().filter(|l| l.contains("moved live")).count() as u64,
        samples: sampled.samples,
        duplicates,
        progress_lost,
        records_off: audit.mismatches.len() as u64,
        gold_created: audit.gold_created,
        gold_held: audit.gold_held,
        items_created: audit.items_created,
        items_held: audit.items_held,
        stale_events_refused: run.stale_events_refused,
        findings: Findings { timeline: std::mem::take(&mut run.timeline), ..Findings::judge(problems) },
    })
}

/// The event pipeline of a `--real` run.
struct RealPipeline {
    _broker: Service,
    /// The zones reach the broker through it: cut, the broker is unreachable.
    gate: Gate,
    mysql: Service,
    url: String,
}

/// What a `--real` run takes away for a while.
#[derive(Debug, Clone, Copy)]
enum PipelinePart {
    /// Unreachable (its gate cut); it keeps running.
    Broker,
    /// Killed, and started again on its data.
    Database,
}

impl PipelinePart {
    fn name(self) -> &'static str {
        match self {
            PipelinePart::Broker => "the broker",
            PipelinePart::Database => "MariaDB",
        }
    }

    fn failed(self) -> &'static str {
        match self {
            PipelinePart::Broker => "broker unreachable",
            PipelinePart::Database => "MariaDB killed",
        }
    }
}

impl RealPipeline {
    async fn fail(&mut self, part: PipelinePart) {
        match part {
            PipelinePart::Broker => self.gate.cut(),
            PipelinePart::Database => self.mysql.kill().await,
        }
    }

    async fn heal(&mut self, part: PipelinePart) -> Result<()> {
        match part {
            PipelinePart::Broker => self.gate.reopen().await.context("reopening the broker's gate"),
            PipelinePart::Database => self.mysql.start().await.context("restarting MariaDB"),
        }
    }
}

/// How long the broker is unreachable, MariaDB down (`--real`), and the platform server down.
const OUTAGE: Duration = Duration::from_secs(8);
/// How long Redis is down in a `--real` run.
const REDIS_OUTAGE: Duration = Duration::from_secs(5);

/// The faults, one after another, while the bots play.
async fn faults(
    run: &mut Run,
    stats: &respawn_client::BotStats,
    redis: Option<&mut Service>,
    pipeline: Option<&mut RealPipeline>,
) -> Result<()> {
    let bots = run.bots;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.connected.load(Relaxed) < u64::from(bots) {
        if Instant::now() > deadline {
            bail!("only {} of {bots} bots playing after 30 s", stats.connected.load(Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.note(format!("{bots} bots playing"));
    tokio::time::sleep(Duration::from_secs(6)).await;

    let first: Vec<usize> = (0..TAKEOVERS_PER_ROUND.min(bots as usize)).collect();
    run.sign_in_twice(&first).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    run.crash("zone-b").await?;
    tokio::time::sleep(Duration::from_secs(6)).await;

    if let Some(redis) = redis {
        // The zones' snapshots and the platform's registry, tokens and rate
        // limits are there: zones play on, sign-in and travel are refused.
        redis.kill().await;
        let outage = run.outage_begins(stats, format!("Redis down for {} s", REDIS_OUTAGE.as_secs()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        run.sign_in_while_down("Redis").await;
        tokio::time::sleep(REDIS_OUTAGE - Duration::from_secs(1)).await;
        redis.start().await.context("restarting Redis")?;
        run.outage_ends(stats, &outage, "Redis back, empty");
        run.all_back(stats, outage, "Redis").await;
        // The zones store their state there again before the next fault.
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    // zone-a's zones move live to the standby server, as its drain with hand-off asks.
    run.registry.evacuate("zone-a").await.context("asking the platform to evacuate zone-a")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rollout = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match run.rollout().await {
            Ok(r) if r.state != State::Running => break r,
            Ok(_) if Instant::now() > deadline => bail!("the hand-off of zone-a did not end within 60 s"),
            Err(e) if Instant::now() > deadline => bail!("the hand-off of zone-a did not end within 60 s: {e:#}"),
            _ => {}
        }
    };
    if rollout.state != State::Succeeded {
        bail!("the hand-off of zone-a ended {:?}: {}", rollout.state, rollout.error.unwrap_or_default());
    }
    for m in &rollout.zones {
        run.note(format!(
            "{} moved live from {} to {} with {} players ({} ms paused)",
            m.zone, m.from, m.to, m.players, m.pause_ms
        ));
    }
    let a = run.server("zone-a")?;
    match a.service.wait_exit(Duration::from_secs(30)).await {
        Ok(status) if status.success() => run.note("zone-a stopped cleanly after the hand-off"),
        Ok(status) => run.problems.push(Problem::new(ProblemKind::ProcessStop, format!("zone-a ended with {status}"))),
        Err(e) => run.problems.push(Problem::new(ProblemKind::ProcessStop, format!("zone-a did not stop: {e:#}"))),
    }
    tokio::time::sleep(Duration::from_secs(4)).await;

    let second: Vec<usize> =
        (0..bots as usize).rev().take(TAKEOVERS_PER_ROUND).filter(|i| !first.contains(i)).collect();
    run.sign_in_twice(&second).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    run.crash("zone-b").await?;
    tokio::time::sleep(Duration::from_secs(8)).await;

    if let Some(p) = pipeline {
        // Players in zones play on; travel and sign-in wait for the newest
        // state (Kafka) or are refused (MariaDB) until it is back.
        for part in [PipelinePart::Broker, PipelinePart::Database] {
            p.fail(part).await;
            let outage = run.outage_begins(stats, format!("{} for {} s", part.failed(), OUTAGE.as_secs()));
            tokio::time::sleep(OUTAGE).await;
            p.heal(part).await?;
            run.outage_ends(stats, &outage, &format!("{} back", part.name()));
            run.all_back(stats, outage, part.name()).await;
        }
    }

    // The platform server down: zones play on; sign-in and travel wait for it.
    run.count_stale_events().await;
    if let Err(why) = run.platform.stop().await {
        run.problems.push(Problem::new(ProblemKind::ProcessStop, format!("the platform server stopped badly: {why}")));
    }
    run.platform_outages += 1;
    let what = format!("platform server {} for {} s", run.platform.stopped_how(), OUTAGE.as_secs());
    let outage = run.outage_begins(stats, what);
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.sign_in_while_down("the platform server").await;
    tokio::time::sleep(OUTAGE - Duration::from_secs(1)).await;
    run.outage_ends(stats, &outage, "platform server back");
    run.platform.start_again().await.context("starting the platform server again")?;
    run.all_back(stats, outage, "the platform server").await;
    run.note(format!("{} bots playing; {} travels so far", stats.connected.load(Relaxed), stats.travels.load(Relaxed)));
    Ok(())
}

/// Where the bots were when an outage began.
struct OutageStart {
    travels: u64,
    out_of_zones: u64,
    /// Travel pauses recorded by then.
    pauses: usize,
}

impl Run {
    fn outage_begins(&mut self, stats: &respawn_client::BotStats, what: String) -> OutageStart {
        self.note(what);
        OutageStart {
            travels: stats.travels.load(Relaxed),
            out_of_zones: u64::from(self.bots).saturating_sub(stats.connected.load(Relaxed)),
            pauses: stats.travel_pauses().len(),
        }
    }

    /// At the end of an outage, players still play: a bot out of its zone
    /// is one that walked through an exit meanwhile (or was out already).
    fn outage_ends(&mut self, stats: &respawn_client::BotStats, start: &OutageStart, what: &str) {
        let (travelled, playing) = (stats.travels.load(Relaxed) - start.travels, stats.connected.load(Relaxed));
        self.note(format!("{what}; {travelled} travels began meanwhile, {playing} bots in a zone at its end"));
        let out = u64::from(self.bots).saturating_sub(playing);
        if out > start.out_of_zones + travelled {
            self.problems.push(Problem::new(
                ProblemKind::PlayersNotBack,
                format!(
                    "{out} bots out of a zone at the end ({what}): {} were out at its start and {travelled} travelled",
                    start.out_of_zones
                ),
            ));
        }
    }

    /// Waits (30 s at most) for every bot to play again after an outage of
    /// `what`; the travels that ended meanwhile count as travels in an outage.
    async fn all_back(&mut self, stats: &respawn_client::BotStats, start: OutageStart, what: &str) {
        let t0 = Instant::now();
        let bots = self.bots;
        while stats.connected.load(Relaxed) < u64::from(bots) && t0.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pauses_in_outages.push(start.pauses..stats.travel_pauses().len());
        let playing = stats.connected.load(Relaxed);
        if playing < u64::from(bots) {
            self.problems.push(Problem::new(
                ProblemKind::PlayersNotBack,
                format!("30 s after {what} came back only {playing} of {bots} bots were in a zone"),
            ));
        } else {
            self.note(format!("all {bots} bots in a zone {:.1} s after {what} came back", t0.elapsed().as_secs_f64()));
        }
    }
}

/// Waits (30 s at most) until no account's character is in a zone by its
/// record (each stay's leaving stored); how many are out. A character may
/// stay claimed for a zone its bot was stopped before joining: that claim
/// lapses, and no zone holds it meanwhile.
async fn settle(run: &Run) -> (u64, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = still_in_zones(run).await;
        if held.is_empty() || Instant::now() > deadline {
            return ((run.accounts.len() - held.len()) as u64, held);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The characters whose record says a zone holds them, described.
async fn still_in_zones(run: &Run) -> Vec<String> {
    let mut held = Vec::new();
    for &account in &run.accounts {
        match run.ledger.player(account).await {
            Ok(Some(PlayerRecord { hold: Hold::InZone { zone }, incarnation, .. })) => {
                held.push(format!("character {account} in {zone} (stay {incarnation})"))
            }
            Ok(Some(_)) => {}
            Ok(None) => held.push(format!("character {account} has no record")),
            Err(e) => held.push(format!("character {account}: {e}")),
        }
    }
    held
}

/// What the ledger says of the characters at the end.
#[derive(Debug, Default)]
struct Audit {
    characters: u64,
    gold_created: u64,
    gold_held: u64,
    items_created: u64,
    items_held: u64,
    /// One incarnation joined in two zones.
    duplicate_stays: u64,
    duplicates_seen: Vec<String>,
    mismatches: Vec<String>,
}

/// A character's durable part, as the fold carries it from stay to stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Carried {
    level: u32,
    xp: u64,
    gold: u64,
    items: BTreeMap<u32, u64>,
}

impl Carried {
    fn of(c: &Character) -> Self {
        let mut items = BTreeMap::new();
        for s in c.inventory.iter().filter(|s| s.count > 0) {
            *items.entry(s.item).or_insert(0) += u64::from(s.count);
        }
        Self { level: c.level.max(1), xp: c.xp, gold: c.gold, items }
    }

    fn of_record(r: &PlayerRecord) -> Self {
        Self { level: r.level.max(1), xp: r.xp, gold: r.gold, items: r.inventory.clone() }
    }
}

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "level {} xp {} gold {} items {:?}", self.level, self.xp, self.gold, self.items)
    }
}

/// Folds every account's stays from the ledger and compares them with its record.
async fn audit(ledger: &dyn Ledger, accounts: &[u64]) -> Result<Audit> {
    let mut audit = Audit::default();
    for &account in accounts {
        let record = ledger.player(account).await?.with_context(|| format!("no record of character {account}"))?;
        let events = events_of(ledger, account).await?;
        audit.characters += 1;
        for e in &events {
            match &e.kind {
                Some(Kind::GoldChanged(g)) => audit.gold_created += g.delta.max(0) as u64,
                Some(Kind::ItemAcquired(i)) => audit.items_created += u64::from(i.count),
                _ => {}
            }
        }
        audit.gold_held += record.gold;
        audit.items_held += record.inventory.values().sum::<u64>();
        if let Err(why) = fold_stays(account, &events, &record, &mut audit) {
            audit.mismatches.push(format!("character {account}: {why}"));
        }
    }
    Ok(audit)
}

/// Every stored event about `player`.
async fn events_of(ledger: &dyn Ledger, player: u64) -> Result<Vec<Event>> {
    let mut query = EventQuery { player: Some(player), limit: 500, ..Default::default() };
    let mut events = Vec::new();
    loop {
        let page = ledger.search(&query).await?;
        for row in &page {
            events.push(Event::decode(row.payload.as_slice()).context("a stored event does not decode")?);
        }
        match page.last() {
            Some(last) if page.len() == query.limit as usize => query.after = Some(last.cursor()),
            _ => return Ok(events),
        }
    }
}

/// Replays a character's stays in order: each starts as the one before
/// ended, gains exactly what its events say, and the last ends as the
/// record is. `Err`: the first place where it does not.
fn fold_stays(player: u64, events: &[Event], record: &PlayerRecord, audit: &mut Audit) -> Result<(), String> {
    let mut stays: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.incarnation > 0) {
        stays.entry(e.incarnation).or_default().push(e);
    }
    let mut carried: Option<Carried> = None;
    for (incarnation, mut stay) in stays {
        let zones: BTreeSet<u32> =
            stay.iter().filter(|e| matches!(e.kind, Some(Kind::PlayerJoined(_)))).map(|e| e.zone).collect();
        if zones.len() > 1 {
            audit.duplicate_stays += 1;
            audit.duplicates_seen.push(format!("character {player}: stay {incarnation} joined zones {zones:?}"));
        }
        stay.sort_by_key(|e| (e.epoch, e.tick, e.index));
        let joined = stay.iter().find_map(|e| match &e.kind {
            Some(Kind::PlayerJoined(j)) => Some(j.character.as_ref().map(Carried::of).unwrap_or_default()),
            _ => None,
        });
        let Some(start) = joined else { return Err(format!("stay {incarnation} has events but no join")) };
        if let Some(before) = &carried {
            if *before != start {
                return Err(format!("stay {incarnation} began with {start}, the stay before ended with {before}"));
            }
        }
        let mut now = start;
        let mut left = None;
        for e in &stay {
            match &e.kind {
                Some(Kind::GoldChanged(g)) => now.gold = now.gold.saturating_add_signed(g.delta),
                Some(Kind::XpGained(x)) => now.xp += x.amount,
                Some(Kind::LevelUp(l)) => now.level = now.level.max(l.level),
                Some(Kind::ItemAcquired(i)) => *now.items.entry(i.item).or_insert(0) += u64::from(i.count),
                Some(Kind::PlayerLeft(l)) if left.is_none() => {
                    left = Some(l.character.as_ref().map(Carried::of).unwrap_or_default())
                }
                _ => {}
            }
        }
        let Some(end) = left else { return Err(format!("stay {incarnation} never left its zone")) };
        if end != now {
            return Err(format!("stay {incarnation} ended with {end}, its events add up to {now}"));
        }
        carried = Some(end);
    }
    let held = Carried::of_record(record);
    match carried {
        Some(last) if last != held => Err(format!("the record holds {held}, its last stay ended with {last}")),
        None if held != Carried::default() && held != Carried { level: 1, ..Carried::default() } => {
            Err(format!("the record holds {held} without a stay"))
        }
        _ => Ok(()),
    }
}

/// The drill's platform server (registry, accounts, sign-in, claims, the
/// hand-off): a `respawn platform` process with `--real`, else in this
/// process on the embedded ledger. Either way it can be stopped and
/// started again at its address.
#[allow(clippy::large_enum_variant)] // one per drill
enum PlatformHost {
    /// On Redis (its own prefix), MariaDB fed from the broker; stopped with `kill -9`.
    Process { service: Service, addr: String, admin_token: String, mysql_url: String },
    /// Stopped, it keeps nothing: its registry, tokens and rate limits were in its memory.
    InProcess { running: Option<RunningPlatform>, addr: SocketAddr, stores: StoreFlags, secrets: PlatformSecrets },
}

impl PlatformHost {
    async fn start(
        dir: &Path,
        stores: &StoreFlags,
        pipeline: Option<&RealPipeline>,
        secrets: PlatformSecrets,
    ) -> Result<Self> {
        let (Some(p), Some(brokers), Some(redis)) = (pipeline, &stores.kafka_brokers, &stores.redis_url) else {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let mut host = PlatformHost::InProcess { running: None, addr, stores: stores.clone(), secrets };
            host.start_again().await?;
            return Ok(host);
        };
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let service = platform_service(&addr, brokers, redis, &p.url, &secrets, dir.join("platform"))?;
        let mut host =
            PlatformHost::Process { service, addr, admin_token: secrets.admin_token, mysql_url: p.url.clone() };
        host.start_again().await?;
        Ok(host)
    }

    fn addr(&self) -> String {
        match self {
            PlatformHost::Process { addr, .. } => addr.clone(),
            PlatformHost::InProcess { addr, .. } => addr.to_string(),
        }
    }

    fn admin_token(&self) -> &str {
        match self {
            PlatformHost::Process { admin_token, .. } => admin_token,
            PlatformHost::InProcess { secrets, .. } => &secrets.admin_token,
        }
    }

    fn stopped_how(&self) -> &'static str {
        match self {
            PlatformHost::Process { .. } => "killed (kill -9)",
            PlatformHost::InProcess { .. } => "stopped",
        }
    }

    /// Starts it (again), and waits until its ledger is connected.
    async fn start_again(&mut self) -> Result<()> {
        match self {
            PlatformHost::Process { service, addr, .. } => {
                service.start().await?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while !matches!(respawn_api::http::request(addr, "GET", "/readyz", None).await, Ok((200, _))) {
                    if Instant::now() > deadline {
                        bail!("the platform server was not ready (its ledger connected) within 30 s");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            PlatformHost::InProcess { running, addr, stores, secrets } => {
                // The port of the one just stopped may take a moment to be free.
                let deadline = Instant::now() + Duration::from_secs(5);
                let listener = loop {
                    match tokio::net::TcpListener::bind(*addr).await {
                        Ok(l) => break l,
                        Err(e) if Instant::now() > deadline => return Err(e).context("binding the platform's address"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                *running = Some(start_in_process(stores, secrets, listener).await?);
            }
        }
        Ok(())
    }

    /// Stops it: `kill -9` of the process, or the one in this process shut down.
    async fn stop(&mut self) -> Result<(), String> {
        match self {
            PlatformHost::Process { service, .. } => {
                service.kill().await;
                Ok(())
            }
            PlatformHost::InProcess { running, .. } => match running.take() {
                Some(platform) => tokio::time::timeout(Duration::from_secs(3), platform.shutdown())
                    .await
                    .map_err(|_| "still stopping after 3 s".to_owned())?,
                None => Ok(()),
            },
        }
    }

    /// The ledger it keeps, opened by the drill: the embedded one, or MariaDB.
    async fn open_ledger(&self, stores: &StoreFlags) -> Result<Arc<dyn Ledger>> {
        Ok(match self {
            PlatformHost::Process { mysql_url, .. } => {
                Arc::new(respawn_platform::connect(mysql_url, Duration::from_secs(30)).await?)
            }
            PlatformHost::InProcess { .. } => {
                Arc::new(respawn_platform::SqliteLedger::open(&stores.events_db()).await?)
            }
        })
    }
}

/// A platform server in this process on `listener`, on the embedded ledger
/// the zone servers write, its registry and operations state in memory.
async fn start_in_process(
    stores: &StoreFlags,
    secrets: &PlatformSecrets,
    listener: tokio::net::TcpListener,
) -> Result<RunningPlatform> {
    let mut ctx = HttpContext::with_stores(None, "drill")?;
    ctx.server_key = Some(respawn_token::ServerKey::new(secrets.server_key.as_bytes())?);
    ctx.sessions = Some(SessionSigner::new(respawn_token::TokenKey::new(secrets.token_key.as_bytes())?));
    ctx.limits.login_per_ip = respawn_store::ratelimit::Quota { burst: 100_000, period: Duration::from_secs(60) };
    respawn_platform::http::ops::install_bootstrap_admin(&mut ctx, &secrets.admin_token).await?;
    std::fs::create_dir_all(&stores.data_dir)?;
    let ledger = respawn_platform::SqliteLedger::open(&stores.events_db()).await?;
    let _ = ctx.accounts.set(Arc::new(ledger.accounts()));
    let _ = ctx.ledger.set(Arc::new(ledger));
    Ok(PlatformServer::new(ctx).without_fleet_watcher().start(listener)?)
}

pub fn print_report(r: &CharactersReport) {
    let stores = if r.real_services { "Redis + MongoDB-compatible, MariaDB via Tansu" } else { "embedded stores" };
    println!("Drill characters ({stores})");
    println!();
    r.findings.print_timeline();
    println!("Figures                                                     target");
    println!("  characters             {:>6}", r.characters);
    println!("  travels                {:>6}", r.travels);
    println!(
        "  travel pause           {:>6.0} ms median, {:.0} ms p95, {:.0} ms longest   < 250 ms",
        r.travel_pause_median_ms, r.travel_pause_p95_ms, r.travel_pause_max_ms
    );
    if r.pipeline_outages + r.platform_outages > 0 {
        println!(
            "  travel in an outage    {:>6.0} ms longest (it waits for the pipeline or the platform)",
            r.travel_pause_in_outage_max_ms
        );
    }
    println!("  takeovers              {:>6} (each then logged out: {})", r.takeovers, r.logouts);
    println!("  crashes survived       {:>6}", r.crashes_survived);
    println!("  Redis down, back empty {:>6}", r.redis_restarts);
    println!("  pipeline outages       {:>6} (broker unreachable, MariaDB killed)", r.pipeline_outages);
    println!("  platform outages       {:>6}", r.platform_outages);
    println!("  zones handed off       {:>6}", r.zones_handed_off);
    println!("  duplicates             {:>6} ({} samples)                      0", r.duplicates, r.samples);
    println!("  progress lost          {:>6}                                   0", r.progress_lost);
    println!("  records not the fold   {:>6}                                   0", r.records_off);
    println!("  gold given out / held  {:>6} / {:<6}                          equal", r.gold_created, r.gold_held);
    println!("  items given out / held {:>6} / {:<6}                          equal", r.items_created, r.items_held);
    println!("  stale events refused   {:>6}", r.stale_events_refused);
    r.findings.print_verdict();
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_api::admin::{HeldCharacter, ZoneRoster};
    use respawn_proto::events::{GoldChanged, ItemAcquired, ItemStack, PlayerJoined, PlayerLeft, XpGained};

    fn character(gold: u64, xp: u64, gems: u32) -> Character {
        let inventory = (gems > 0).then_some(ItemStack { item: 3, count: gems }).into_iter().collect();
        Character { level: 1, xp, gold, inventory, ..Default::default() }
    }

    fn event(zone: u32, tick: u64, incarnation: u64, kind: Kind) -> Event {
        Event { zone, tick, epoch: 1, player: 7, incarnation, kind: Some(kind), ..Default::default() }
    }

    /// A stay in `zone` that joins with `from`, picks up 5 gold, 10 XP and a gem, and leaves.
    fn stay(zone: u32, incarnation: u64, from: (u64, u64, u32)) -> Vec<Event> {
        let (gold, xp, gems) = from;
        vec![
            event(
                zone,
                1,
                incarnation,
                Kind::PlayerJoined(PlayerJoined { character: Some(character(gold, xp, gems)), ..Default::default() }),
            ),
            event(zone, 2, incarnation, Kind::GoldChanged(GoldChanged { delta: 5, total: gold + 5 })),
            event(zone, 2, incarnation, Kind::XpGained(XpGained { amount: 10, total: xp + 10 })),
            event(zone, 3, incarnation, Kind::ItemAcquired(ItemAcquired { item: 3, count: 1 })),
            event(
                zone,
                4,
                incarnation,
                Kind::PlayerLeft(PlayerLeft {
                    character: Some(character(gold + 5, xp + 10, gems + 1)),
                    ..Default::default()
                }),
            ),
        ]
    }

    fn record(gold: u64, xp: u64, gems: u64) -> PlayerRecord {
        let mut r = PlayerRecord::new(7);
        (r.level, r.gold, r.xp) = (1, gold, xp);
        if gems > 0 {
            r.inventory.insert(3, gems);
        }
        r
    }

    fn fold(events: &[Event], r: &PlayerRecord) -> (Result<(), String>, Audit) {
        let mut audit = Audit::default();
        (fold_stays(7, events, r, &mut audit), audit)
    }

    #[test]
    fn stays_that_carry_on_from_each_other_fold_into_the_record() {
        let events: Vec<Event> = [stay(1, 1, (0, 0, 0)), stay(2, 2, (5, 10, 1))].concat();
        let (result, audit) = fold(&events, &record(10, 20, 2));
        assert_eq!(result, Ok(()));
        assert_eq!(audit.duplicate_stays, 0);
    }

    #[test]
    fn a_stay_that_starts_from_an_older_state_is_caught() {
        // The second stay was handed the character as it was before the first.
        let events: Vec<Event> = [stay(1, 1, (0, 0, 0)), stay(2, 2, (0, 0, 0))].concat();
        let (result, _) = fold(&events, &record(5, 10, 1));
        assert!(result.is_err_and(|e| e.contains("stay 2 began with")), "an older state handed out went unseen");
    }

    #[test]
    fn gold_that_events_do_not_account_for_is_caught() {
        let mut events = stay(1, 1, (0, 0, 0));
        events.remove(1);
        let (result, _) = fold(&events, &record(5, 10, 1));
        assert!(result.is_err_and(|e| e.contains("its events add up to")));
    }

    #[test]
    fn a_record_behind_its_last_stay_is_caught() {
        let (result, _) = fold(&stay(1, 1, (0, 0, 0)), &record(0, 0, 0));
        assert!(result.is_err_and(|e| e.contains("the record holds")));
    }

    #[test]
    fn one_stay_joined_in_two_zones_is_a_duplicate() {
        let mut events = stay(1, 1, (0, 0, 0));
        events.push(event(
            2,
            9,
            1,
            Kind::PlayerJoined(PlayerJoined { character: Some(character(0, 0, 0)), ..Default::default() }),
        ));
        let (_, audit) = fold(&events, &record(5, 10, 1));
        assert_eq!(audit.duplicate_stays, 1);
    }

    #[test]
    fn a_character_in_two_ticking_zones_is_a_duplicate_but_not_in_a_released_one() {
        let held = |player| HeldCharacter { player, incarnation: 1, connected: true };
        let roster = |zone: &str, parked, players: &[u64]| ZoneRoster {
            zone: zone.into(),
            tick: 1,
            parked,
            characters: players.iter().map(|&p| held(p)).collect(),
        };
        let mut sampling = Sampling::default();
        sampling.look(&[
            ("a".into(), Rosters { zones: vec![roster("meadow", false, &[1, 2])] }),
            ("b".into(), Rosters { zones: vec![roster("caverns", false, &[3])] }),
        ]);
        assert_eq!(sampling.duplicates, 0);
        sampling.look(&[
            ("a".into(), Rosters { zones: vec![roster("meadow", true, &[1, 2])] }),
            ("c".into(), Rosters { zones: vec![roster("meadow", false, &[1, 2])] }),
        ]);
        assert_eq!(sampling.duplicates, 0, "a released zone's characters are the adopter's");
        sampling.look(&[
            ("a".into(), Rosters { zones: vec![roster("meadow", false, &[1])] }),
            ("b".into(), Rosters { zones: vec![roster("caverns", false, &[1])] }),
        ]);
        assert_eq!((sampling.samples, sampling.duplicates), (3, 1));
        assert!(sampling.seen[0].contains("character 1"), "{:?}", sampling.seen);
    }
}
