//! The one deployment every drill but the rollout runs on: zone servers
//! (one supervised server hosting every zone, or one server per zone), bots
//! playing on each, embedded or real stores, and for the pipeline drills the
//! event pipeline's servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use respawn_api::admin::RestoreSource;
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use respawn_client::bot::Resume;
use respawn_client::{signed_tokens, Access, Fleet};
use respawn_harness::armed::Armed;
use respawn_harness::process::{find_binary, free_port, Service, MONGOD_CACHED};
use respawn_harness::supervisor::{ChildSpec, Supervisor};
use respawn_harness::zone::{StoreFlags, ZoneCommand};
use respawn_harness::TempDir;
use respawn_token::TokenKey;
use serde::{Deserialize, Serialize};

use crate::findings::{withdrawn, EventTally, Killed};
use crate::ledger::{settle, EventCounts, LedgerView};
use crate::services::Pipeline;

/// How a deployment's zone servers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One zone server hosting every zone, kept running by the local
    /// supervisor: a killed one is restarted at once (the one-server drills).
    Supervised,
    /// One zone server per zone, each with its own disk and bots; only the
    /// drill kills and starts them (the drills that lose every server).
    ServerPerZone,
}

/// What the deployment under test is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) layout: Layout,
    /// Redis and a MongoDB-wire-compatible server rather than files.
    pub(crate) real: bool,
    /// Over every zone server.
    pub(crate) bots: u32,
    /// With `real`: a Kafka-compatible broker, MariaDB and the platform server too.
    pub(crate) pipeline: bool,
    /// Cold snapshots this often instead of the default 5 minutes (so a drill sees them).
    pub(crate) cold_every_secs: Option<u64>,
}

/// One zone server of a deployment, and the bots playing on it.
pub(crate) struct ZoneServer {
    pub(crate) zones: Vec<String>,
    pub(crate) addr: String,
    process: ZoneProcess,
    /// Its own disk: the event outbox.
    outbox: PathBuf,
    pub(crate) bots: Fleet,
}

enum ZoneProcess {
    Supervised(Supervisor),
    Plain(Box<Service>),
}

/// The deployment under test.
pub(crate) struct Deployment {
    pub(crate) dir: TempDir,
    pub(crate) real: bool,
    /// Its stores; for the pipeline drills, the event pipeline's servers.
    pub(crate) backing: Backing,
    pub(crate) servers: Vec<ZoneServer>,
    /// Events of the zone-server processes killed so far.
    pub(crate) killed: Killed,
    pub(crate) started: Instant,
    pub(crate) timeline: Vec<String>,
}

/// How long a store stays down after the crash in [`Deployment::crash_while_down`].
pub(crate) const STORE_BACK_AFTER_CRASH: Duration = Duration::from_secs(2);

/// A zone server just killed, for [`Deployment::recovered`].
pub(crate) struct Crash {
    status: std::sync::Arc<respawn_harness::supervisor::SupervisorStatus>,
    t0: Instant,
    players_before: u64,
    resumes_before: usize,
    restarts_before: u64,
}

impl Deployment {
    pub(crate) async fn start(options: Options) -> Result<Self> {
        let Options { layout, real, bots, pipeline, cold_every_secs } = options;
        let dir = TempDir::new("drill")?;
        // Embedded, the zone server's own ledger is the pipeline: nothing more to start.
        let backing = Backing::start(dir.path(), real, pipeline && real).await?;
        let token_key = respawn_token::random_hex(32)?;
        let admin_token = respawn_token::random_hex(32)?;
        let all_zones = respawn_zone::ServerConfig::defaults().zones;
        let hosted: Vec<Vec<&respawn_sim::ZoneConfig>> = match layout {
            Layout::Supervised => vec![all_zones.iter().collect()],
            Layout::ServerPerZone => all_zones.iter().map(|z| vec![z]).collect(),
        };
        let cold = cold_every_secs.map(|secs| format!("[persistence]\ncold_snapshot_secs = {secs}\n"));
        let mut servers = Vec::new();
        for (i, zones) in hosted.iter().enumerate() {
            let server_dir = match layout {
                Layout::Supervised => dir.path().to_path_buf(),
                Layout::ServerPerZone => dir.path().join("zones").join(&zones[0].name),
            };
            std::fs::create_dir_all(&server_dir)?;
            // The zones, when not every default one, and the cold snapshot period go in a file of its own.
            let mut config_text = cold.clone().unwrap_or_default();
            if layout == Layout::ServerPerZone {
                for z in zones {
                    config_text +=
                        &format!("[[zones]]\nid = {}\nname = \"{}\"\nseed = {}\n", z.zone_id, z.name, z.seed);
                }
            }
            let config = (!config_text.is_empty())
                .then(|| -> Result<PathBuf> {
                    let path = server_dir.join("zone.toml");
                    std::fs::write(&path, config_text)?;
                    Ok(path)
                })
                .transpose()?;
            let (process, addr, outbox) = match layout {
                Layout::Supervised => {
                    let spec = ChildSpec {
                        exe: std::env::current_exe()?,
                        config,
                        stores: backing.stores.clone(),
                        token_key: token_key.clone(),
                        admin_token: admin_token.clone(),
                        platform: None,
                        log_path: server_dir.join("zone.log"),
                        echo_warnings: false,
                    };
                    let listen: SocketAddr = "127.0.0.1:0".parse()?;
                    let supervisor = Supervisor::start(spec, listen, Default::default()).await?;
                    let addr = supervisor.addr.to_string();
                    (ZoneProcess::Supervised(supervisor), addr, backing.stores.data_dir.join("outbox"))
                }
                Layout::ServerPerZone => {
                    let port = free_port()?;
                    let addr = format!("127.0.0.1:{port}");
                    let outbox = server_dir.join("outbox");
                    let mut command = ZoneCommand::new(std::env::current_exe()?, &addr)
                        .token_key(&token_key)
                        .admin_token(&admin_token)
                        .outbox_dir(&outbox)
                        .stores(&backing.stores);
                    if let Some(config) = &config {
                        command = command.config(config);
                    }
                    let mut service = Service::zone("zone", &command, port, server_dir);
                    service.start().await?;
                    (ZoneProcess::Plain(Box::new(service)), addr, outbox)
                }
            };
            let names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
            // The bots split evenly over the servers; the first ones take what is left over.
            let share = bots / hosted.len() as u32 + u32::from((i as u32) < bots % hosted.len() as u32);
            let tokens = signed_tokens(TokenKey::new(token_key.as_bytes())?, Duration::from_secs(3_600));
            let access = Access::Direct { url: format!("ws://{addr}/ws"), tokens };
            let prefix = match layout {
                Layout::Supervised => "drill".to_owned(),
                Layout::ServerPerZone => format!("drill-{}", names[0]),
            };
            let bots = Fleet::spawn(access, &names, share, &prefix);
            servers.push(ZoneServer { zones: names, addr, process, outbox, bots });
        }
        let mut d = Self {
            dir,
            real,
            backing,
            servers,
            killed: Killed::default(),
            started: Instant::now(),
            timeline: Vec::new(),
        };
        let layout: Vec<String> = d.servers.iter().map(|s| format!("{} at {}", s.zones.join(", "), s.addr)).collect();
        d.note(format!(
            "deployment up: {} zone server{} ({}), {}{}; {} bots",
            d.servers.len(),
            if d.servers.len() == 1 { "" } else { "s" },
            layout.join("; "),
            if real { "Redis + MongoDB-compatible" } else { "embedded files" },
            if d.backing.pipeline.is_some() { ", Tansu broker, MariaDB, platform server" } else { "" },
            d.bot_count()
        ));
        Ok(d)
    }

    pub(crate) fn note(&mut self, what: impl std::fmt::Display) {
        self.timeline.push(format!("{:>7.3} s  {what}", self.started.elapsed().as_secs_f64()));
    }

    pub(crate) fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// Every zone of the deployment.
    pub(crate) fn zones(&self) -> Vec<String> {
        self.servers.iter().flat_map(|s| s.zones.iter().cloned()).collect()
    }

    /// Every server's metrics; `None` where one does not answer.
    pub(crate) async fn scrape(&self) -> Vec<Option<Vec<prom::Sample>>> {
        self.scrape_texts().await.iter().map(|t| t.as_deref().map(prom::parse)).collect()
    }

    /// Every server's metrics as it answered them, unparsed: the last look
    /// before a kill parses after it, to keep the window between them short.
    pub(crate) async fn scrape_texts(&self) -> Vec<Option<String>> {
        let mut all = Vec::new();
        for s in &self.servers {
            all.push(http::scrape(&s.addr).await.ok());
        }
        all
    }

    /// The metrics of every server together; an error if one does not answer.
    pub(crate) async fn samples(&self) -> Result<Vec<prom::Sample>> {
        let mut all = Vec::new();
        for s in &self.servers {
            all.extend(prom::parse(&http::scrape(&s.addr).await?));
        }
        Ok(all)
    }

    /// A metric summed over every server that answers.
    pub(crate) async fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape().await.iter().flatten().map(|s| prom::sum(s, name, labels)).sum()
    }

    pub(crate) async fn players(&self) -> u64 {
        self.sum("respawn_zone_players", &[]).await as u64
    }

    /// Polls `done` until it holds (`limit` at most); whether it did.
    pub(crate) async fn wait(&self, limit: Duration, done: impl AsyncFn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub(crate) async fn wait_players(&self, want: u64, limit: Duration) -> bool {
        self.wait(limit, async || self.players().await >= want).await
    }

    /// Whether every server answers and each of its zones has ticked.
    pub(crate) async fn all_ticking(&self) -> bool {
        let scraped = self.scrape().await;
        self.servers.iter().zip(&scraped).all(|(server, s)| {
            s.as_ref().is_some_and(|s| {
                server.zones.iter().all(|z| {
                    prom::value(s, "respawn_zone_tick_duration_seconds_count", &[("zone", z)]).unwrap_or(0.0) > 0.0
                })
            })
        })
    }

    /// The tick durations of every zone together.
    pub(crate) async fn tick_histogram(&self) -> Option<Histogram> {
        Histogram::read(&self.samples().await.ok()?, "respawn_zone_tick_duration_seconds", &[])
    }

    /// The longest tick any zone took, as the histograms say.
    pub(crate) async fn max_tick_ms(&self) -> f64 {
        self.scrape()
            .await
            .iter()
            .flatten()
            .filter_map(|s| Histogram::read(s, "respawn_zone_tick_duration_seconds", &[]))
            .map(|h| max_bucket_ms(&h))
            .fold(0.0, f64::max)
    }

    pub(crate) fn bot_count(&self) -> usize {
        self.servers.iter().map(|s| s.bots.len()).sum()
    }

    /// Every reconnection of a bot to its character so far.
    pub(crate) fn resumes(&self) -> Vec<Resume> {
        self.servers.iter().flat_map(|s| s.bots.stats.resumes()).collect()
    }

    /// Bots that came back to a new character.
    pub(crate) fn characters_lost(&self) -> u64 {
        self.servers.iter().map(|s| s.bots.stats.characters_lost.load(Ordering::Relaxed)).sum()
    }

    /// Stops every bot (each leaves its zone first).
    pub(crate) async fn halt_bots(&mut self) {
        for s in &mut self.servers {
            s.bots.halt().await;
        }
    }

    /// Where the drill counts stored events: MySQL with the pipeline, else the embedded ledger.
    pub(crate) fn ledger(&self) -> Result<LedgerView> {
        match &self.backing.pipeline {
            Some(p) => LedgerView::of(p),
            None => Ok(LedgerView::Sqlite(self.backing.stores.events_db())),
        }
    }

    /// Kills the supervised zone server and measures the way back.
    pub(crate) async fn crash_zone(&mut self) -> Result<KillResult> {
        let crash = self.kill_zone_server().await?;
        self.recovered(crash).await
    }

    /// Kills the zone server while the store `down` picks is down, brings
    /// the store back [`STORE_BACK_AFTER_CRASH`] later (the restarted
    /// server waits for it: a zone starts only once every store that makes
    /// its ticks durable is fenced with its new lease), and measures the return.
    pub(crate) async fn crash_while_down(
        &mut self,
        down: fn(&mut Backing) -> Option<&mut Service>,
    ) -> Result<KillResult> {
        let crash = self.kill_zone_server().await?;
        tokio::time::sleep(STORE_BACK_AFTER_CRASH).await;
        if let Some(store) = down(&mut self.backing) {
            store.start().await?;
        }
        self.note("the store is back; the restarted server can fence it and restore");
        self.recovered(crash).await
    }

    /// The first half of [`crash_zone`](Self::crash_zone): the kill. The
    /// drill may act before [`recovered`](Self::recovered) measures the return.
    pub(crate) async fn kill_zone_server(&mut self) -> Result<Crash> {
        let [ZoneServer { process: ZoneProcess::Supervised(supervisor), .. }] = self.servers.as_slice() else {
            bail!("a zone crash is drilled on one supervised zone server");
        };
        let status = supervisor.status.clone();
        let players_before = self.players().await;
        let resumes_before = self.resumes().len();
        let restarts_before = status.restarts();
        let pid = status.child_pid.load(Ordering::Relaxed);
        // Events of a tick between the last look and the kill would be stored
        // but never counted as generated: the kill is armed before the look
        // and the look parsed after it, so only the reply's transfer is between.
        let kill = Armed::shell(&format!("kill -9 {pid}"), format!("kill -9 {pid}"))?;
        let last_look = self.scrape_texts().await;
        let t0 = Instant::now();
        kill.fire().await?;
        let mut samples = Vec::new();
        for text in last_look {
            samples.extend(prom::parse(&text.context("the zone server did not answer the last look before the kill")?));
        }
        self.killed.add(&samples);
        self.note(format!("kill -9 zone server (pid {pid}) with {players_before} players"));
        Ok(Crash { status, t0, players_before, resumes_before, restarts_before })
    }

    /// The second half of [`crash_zone`](Self::crash_zone): how the zones came back.
    pub(crate) async fn recovered(&mut self, crash: Crash) -> Result<KillResult> {
        let Crash { status, t0, players_before, resumes_before, restarts_before } = crash;
        // RTO: until a new process runs and every zone has ticked in it.
        let deadline = t0 + Duration::from_secs(20);
        let rto = loop {
            if Instant::now() > deadline {
                bail!("the zone server did not come back within 20 s");
            }
            if status.restarts() > restarts_before && self.all_ticking().await {
                break t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.note(format!("zones ticking again after {:.0} ms", rto.as_secs_f64() * 1e3));
        let source = self.samples().await.ok().and_then(|s| restored_from(&s, &[]));
        let back = self.wait_players(players_before, Duration::from_secs(15)).await;
        let resumes: Vec<_> = self.resumes().into_iter().skip(resumes_before).collect();
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

    /// Kills every zone server (`kill -9`), all at once; a supervised one comes back by itself.
    pub(crate) async fn kill_zone_servers(&mut self) -> Result<()> {
        for s in &mut self.servers {
            match &mut s.process {
                ZoneProcess::Plain(service) => service.kill().await,
                ZoneProcess::Supervised(_) => bail!("every zone server is killed in the one-server-per-zone layout"),
            }
        }
        Ok(())
    }

    /// Starts every killed zone server again, side by side; each answers once its zones are restored.
    pub(crate) async fn start_zone_servers(&mut self) -> Result<()> {
        let starts = self.servers.iter_mut().filter_map(|s| match &mut s.process {
            ZoneProcess::Plain(service) => Some(service.start()),
            ZoneProcess::Supervised(_) => None,
        });
        futures_util::future::try_join_all(starts).await?;
        Ok(())
    }

    /// Wipes what the zone servers keep on their own disks and in the
    /// embedded stores: the outboxes and the data directory.
    pub(crate) fn wipe_zone_disks(&self) {
        for s in &self.servers {
            let _ = std::fs::remove_dir_all(&s.outbox);
        }
        let _ = std::fs::remove_dir_all(&self.backing.stores.data_dir);
    }

    /// Stops the bots, waits for the events to settle in the ledger, and counts them.
    pub(crate) async fn tally_events(&mut self) -> Result<EventTally> {
        self.halt_bots().await;
        let ledger = self.ledger()?;
        let rolled_back = self.killed.rolled_back + withdrawn(&self.samples().await?);
        let (generated, _, stored) = settle(self, &ledger, None, rolled_back).await?;
        self.note(format!(
            "bots stopped; {} events stored of {generated} generated ({rolled_back} in ticks a restore took back)",
            stored.distinct_rows
        ));
        Ok(EventTally::of(generated, rolled_back, &stored))
    }

    /// Stops everything; the directory goes when the returned guard does.
    pub(crate) async fn stop(self) -> TempDir {
        for server in self.servers {
            server.bots.stop().await;
            match server.process {
                ZoneProcess::Supervised(supervisor) => supervisor.stop().await,
                ZoneProcess::Plain(mut service) => service.kill().await,
            }
        }
        self.dir
    }
}

/// What a drill deployment's zone servers stand on: their stores (files,
/// or real Redis and a MongoDB-compatible server), and with the event
/// pipeline its servers (broker, MariaDB, platform server). Both kinds of
/// deployment (one supervised zone server, or one per zone) start it the same way.
pub(crate) struct Backing {
    pub(crate) stores: StoreFlags,
    pub(crate) redis: Option<Service>,
    pub(crate) mongo: Option<Service>,
    pub(crate) pipeline: Option<Pipeline>,
}

impl Backing {
    /// Under `root`; `real`: Redis and a MongoDB-compatible server; `pipeline`: the event pipeline too.
    pub(crate) async fn start(root: &std::path::Path, real: bool, pipeline: bool) -> Result<Self> {
        let mut stores = drill_stores(root);
        let (mut redis, mut mongo) = (None, None);
        if real {
            let (r, m) = start_real_stores(root, &mut stores).await?;
            (redis, mongo) = (Some(r), Some(m));
        }
        let pipeline = if pipeline {
            let p = Pipeline::start(root).await?;
            stores.kafka_brokers = Some(p.brokers.clone());
            Some(p)
        } else {
            None
        };
        Ok(Self { stores, redis, mongo, pipeline })
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

/// Where the zones of these metrics (those `labels` select) were restored
/// from, as their restore counter says.
pub(crate) fn restored_from(samples: &[prom::Sample], labels: &[(&str, &str)]) -> Option<RestoreSource> {
    RestoreSource::ALL.into_iter().find(|source| {
        let labels: Vec<(&str, &str)> = labels.iter().copied().chain([("source", source.as_str())]).collect();
        prom::sum(samples, "respawn_zone_restores_total", &labels) > 0.0
    })
}

/// A restore's source as a report says it.
pub(crate) fn source_name(source: Option<RestoreSource>) -> &'static str {
    source.map_or("unknown", RestoreSource::as_str)
}

/// The upper bound of the highest histogram bucket that holds an observation.
pub(crate) fn max_bucket_ms(h: &Histogram) -> f64 {
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

pub(crate) async fn warm_up(d: &mut Deployment) -> Result<()> {
    let want = d.bot_count() as u64;
    if !d.wait_players(want, Duration::from_secs(20)).await {
        bail!("only {} of {want} bots connected", d.players().await);
    }
    // Play long enough for a snapshot and a journal to exist.
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.note(format!("{want} bots playing"));
    Ok(())
}

/// Cold snapshots stored (`ok`) or failed, over every zone.
pub(crate) fn cold_snapshots(s: &[prom::Sample], result: &str) -> f64 {
    prom::sum(s, "respawn_zone_snapshots_total", &[("store", "cold"), ("result", result)])
}

/// Hot snapshots stored, over every zone.
pub(crate) fn hot_snapshots(s: &[prom::Sample]) -> f64 {
    prom::sum(s, "respawn_zone_snapshots_total", &[("store", "hot"), ("result", "ok")])
}

/// Polls the zone server's metrics until `done` holds (`limit` at most); whether it did.
pub(crate) async fn wait_metrics(
    d: &Deployment,
    limit: Duration,
    done: impl Fn(&[prom::Sample]) -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done(&d.samples().await?) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

impl EventCounts for Deployment {
    async fn generated(&self) -> Result<u64> {
        Ok(self.killed.generated + prom::sum(&self.samples().await?, "respawn_zone_events_total", &[]) as u64)
    }

    async fn outbox_pending(&self) -> Result<u64> {
        Ok(prom::sum(&self.samples().await?, "respawn_zone_outbox_pending_events", &[]) as u64)
    }
}

/// What one zone-server kill cost and how it came back.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
