//! The deployment a recovery or pipeline drill runs on: one zone server
//! kept running by the local supervisor, bots playing, embedded or real
//! stores (and the event pipeline's servers for the pipeline drills).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use respawn_api::admin::RestoreSource;
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use respawn_client::{signed_tokens, Access, Fleet};
use respawn_harness::process::{find_binary, free_port, Service, MONGOD_CACHED};
use respawn_harness::supervisor::{ChildSpec, Supervisor};
use respawn_harness::zone::StoreFlags;
use respawn_harness::TempDir;
use respawn_token::TokenKey;
use serde::{Deserialize, Serialize};

use crate::findings::{EventTally, Killed};
use crate::ledger::{settle, EventCounts, LedgerView};
use crate::services::Pipeline;

/// What the deployment under test is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Redis and a MongoDB-wire-compatible server rather than files.
    pub(crate) real: bool,
    pub(crate) bots: u32,
    /// With `real`: a Kafka-compatible broker, MariaDB and the platform server too.
    pub(crate) pipeline: bool,
    /// Cold snapshots this often instead of the default 5 minutes (so a drill sees them).
    pub(crate) cold_every_secs: Option<u64>,
}

/// The deployment under test.
pub(crate) struct Deployment {
    pub(crate) dir: TempDir,
    /// Its stores; for the pipeline drills, the event pipeline's servers.
    pub(crate) backing: Backing,
    pub(crate) supervisor: Supervisor,
    pub(crate) zone_addr: String,
    pub(crate) zones: Vec<String>,
    pub(crate) bots: Fleet,
    /// Events of the zone-server processes killed so far.
    pub(crate) killed: Killed,
    pub(crate) started: Instant,
    pub(crate) timeline: Vec<String>,
}

impl Deployment {
    pub(crate) async fn start(options: Options) -> Result<Self> {
        let Options { real, bots, pipeline: _, cold_every_secs } = options;
        let dir = TempDir::new("drill")?;
        // Embedded, the zone server's own ledger is the pipeline: nothing more to start.
        let backing = Backing::start(dir.path(), real, options.pipeline && real).await?;
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
            stores: backing.stores.clone(),
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
            backing,
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

    pub(crate) fn note(&mut self, what: impl std::fmt::Display) {
        self.timeline.push(format!("{:>7.3} s  {what}", self.started.elapsed().as_secs_f64()));
    }

    pub(crate) async fn samples(&self) -> Result<Vec<prom::Sample>> {
        Ok(prom::parse(&http::scrape(&self.zone_addr).await?))
    }

    pub(crate) async fn players(&self) -> u64 {
        match self.samples().await {
            Ok(s) => prom::sum(&s, "respawn_zone_players", &[]) as u64,
            Err(_) => 0,
        }
    }

    pub(crate) async fn wait_players(&self, want: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.players().await >= want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub(crate) async fn tick_histogram(&self) -> Option<Histogram> {
        Histogram::read(&self.samples().await.ok()?, "respawn_zone_tick_duration_seconds", &[])
    }

    /// Kills the zone server and measures the way back.
    pub(crate) async fn crash_zone(&mut self) -> Result<KillResult> {
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
    pub(crate) async fn tally_events(&mut self) -> Result<EventTally> {
        self.bots.halt().await;
        let ledger = LedgerView::Sqlite(self.dir.path().join("data").join(respawn_harness::zone::EVENTS_DB));
        let rolled_back = self.killed.rolled_back;
        let (generated, _, stored) = settle(self, &ledger, None, rolled_back).await?;
        self.note(format!(
            "bots stopped; {} events stored of {generated} generated ({rolled_back} in ticks a restore took back)",
            stored.distinct_rows
        ));
        Ok(EventTally::of(generated, rolled_back, &stored))
    }

    /// Stops everything; the directory goes when the returned guard does.
    pub(crate) async fn stop(self) -> TempDir {
        self.bots.stop().await;
        self.supervisor.stop().await;
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
    let want = d.bots.len() as u64;
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
