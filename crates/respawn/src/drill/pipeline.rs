//! The event-pipeline drills: `kafka-down`, `mysql-down`, `platform-down`.
//! With `--real` the deployment adds a Kafka-compatible broker (Tansu),
//! MariaDB and the platform server, each a process of its own on free ports.
//! Embedded, the zone server publishes into its SQLite ledger, and the fault
//! is that ledger refusing writes (another process holds its write lock):
//! the event log and the database are one there. The check at the end is the
//! one Kafka's system tests use: every event the zone server generated is
//! stored exactly once, counts and ids compared (ids against the ones in the
//! topic, where there is one).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use respawn_api::{http, prom};
use respawn_harness::gate::Gate;
use respawn_proto::events::{Event, TOPIC};
use serde::Serialize;
use sqlx::mysql::MySqlPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

use super::{max_bucket_ms, warm_up, Deployment, Findings, Scenario, TICK_BUDGET_MS};
use crate::services::{create_database, pool, start_mariadb, start_tansu, PARTITIONS};
use respawn_harness::process::{free_port, Service};

/// How long the pipeline may take to store what was generated before the heal.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);
/// How long the pipeline may take to settle once the bots stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

type EventKey = (u32, u64, u64, u32);

/// The broker, the database and the platform server of a pipeline drill.
pub(super) struct Pipeline {
    broker: Service,
    /// Clients reach the broker only through this gate (its advertised address):
    /// kafka-down cuts it. Killing Tansu 0.6 instead is not survivable by Tansu
    /// itself: after `kill -9` it can lose idempotent-producer state and then
    /// panics on every produce ("more or less than one row", tansu-storage lite.rs).
    broker_gate: Gate,
    mysql: Service,
    platform: Service,
    pub brokers: String,
    mysql_url: String,
    platform_addr: String,
}

impl Pipeline {
    pub async fn start(root: &Path) -> Result<Self> {
        let port = free_port()?;
        let gate = Gate::open(0, SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let broker = start_tansu(&root.join("broker"), port, gate.port).await?;
        let mysql = start_mariadb(&root.join("mariadb")).await?;
        let mysql_url = create_database(&format!("mysql://root@127.0.0.1:{}", mysql.port), "respawn").await?;

        let brokers = format!("127.0.0.1:{}", gate.port);
        let platform_port = free_port()?;
        let platform_addr = format!("127.0.0.1:{platform_port}");
        let mut platform = Service::new(
            "platform",
            std::env::current_exe()?,
            ["platform", "--listen", &platform_addr, "--kafka-brokers", &brokers, "--mysql-url", &mysql_url],
            platform_port,
            root.join("platform"),
        );
        platform.start().await?;
        Ok(Self { broker, broker_gate: gate, mysql, platform, brokers, mysql_url, platform_addr })
    }

    /// The site-loss drill's fault: every process killed (`kill -9`) and the
    /// broker's storage gone with the site; MariaDB's data stays.
    pub async fn lose(&mut self, root: &Path) -> Result<()> {
        self.platform.kill().await;
        self.broker.kill().await;
        self.mysql.kill().await;
        let broker_dir = root.join("broker");
        std::fs::remove_dir_all(&broker_dir).with_context(|| format!("wiping {}", broker_dir.display()))
    }

    /// After [`Pipeline::lose`]: MariaDB on its data, a new empty broker at
    /// the same address (the topic created anew), the platform server.
    pub async fn rebuild(&mut self, root: &Path) -> Result<()> {
        self.mysql.start().await?;
        self.broker = start_tansu(&root.join("broker"), self.broker.port, self.broker_gate.port).await?;
        self.platform.start().await
    }

    pub fn ledger(&self) -> Result<LedgerView> {
        Ok(LedgerView::MySql(pool(&self.mysql_url)?))
    }

    fn describe(&self) -> String {
        format!("broker {}, MariaDB :{}, platform server {}", self.brokers, self.mysql.port, self.platform_addr)
    }
}

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub scenario: Scenario,
    pub real_services: bool,
    pub outage_ms: f64,
    /// From the healed service answering to every event generated before then being in MySQL.
    pub catch_up_ms: f64,
    pub events_generated: u64,
    pub events_persisted: u64,
    pub events_lost: u64,
    pub events_duplicated: u64,
    /// Records the broker holds more than once (publisher retries), absorbed by the event ids.
    pub redelivered_absorbed: u64,
    /// Most events generated but not yet in MySQL during the fault.
    pub backlog_peak: u64,
    /// `SUM(players.events)` equals the stored events about players.
    pub records_consistent: bool,
    pub players_before: u64,
    pub players_min_during_fault: u64,
    pub players_after: u64,
    pub max_tick_ms: f64,
    #[serde(flatten)]
    pub findings: Findings,
}

/// The zone servers' event counts, for [`settle`].
pub(super) trait EventCounts {
    /// Events generated so far.
    async fn generated(&self) -> Result<u64>;
    /// Events in the outboxes, not yet in the event log.
    async fn outbox_pending(&self) -> Result<u64>;
}

impl EventCounts for Deployment {
    async fn generated(&self) -> Result<u64> {
        Ok(self.killed.generated + prom::sum(&self.samples().await?, "respawn_zone_events_total", &[]) as u64)
    }

    async fn outbox_pending(&self) -> Result<u64> {
        Ok(prom::sum(&self.samples().await?, "respawn_zone_outbox_pending_events", &[]) as u64)
    }
}

/// Once the load has stopped: waits until every event generated is stored,
/// the outboxes are empty and nothing changed for a second ([`SETTLE_LIMIT`]
/// at most), then compares the ledger (and the topic at `brokers`).
/// `gone`: events known never to arrive (lost with a site), not waited for.
/// Returns (generated, stored, comparison).
pub(super) async fn settle(
    zones: &impl EventCounts,
    db: &LedgerView,
    brokers: Option<&str>,
    gone: u64,
) -> Result<(u64, u64, Comparison)> {
    let settle = Instant::now();
    let mut last = (u64::MAX, 0, Instant::now());
    loop {
        let generated = zones.generated().await?;
        let stored = db.count().await.unwrap_or(0);
        let drained = stored + gone >= generated && zones.outbox_pending().await? == 0;
        if (generated, stored) != (last.0, last.1) {
            last = (generated, stored, Instant::now());
        }
        let quiet = last.2.elapsed() >= Duration::from_secs(1);
        if (drained && quiet) || settle.elapsed() > SETTLE_LIMIT {
            let check = compare(db, brokers).await?;
            // Nothing may have happened while comparing, or the comparison is of two different moments.
            if zones.generated().await? == generated || settle.elapsed() > SETTLE_LIMIT {
                return Ok((generated, stored, check));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (10 s at most) until the platform server holds a batch it
/// received but has not stored yet; `false` if none was seen.
async fn wait_mid_batch(platform: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(text) = http::scrape(platform).await {
            let s = prom::parse(&text);
            let consumed = prom::sum(&s, "respawn_platform_records_consumed_total", &[]);
            let done = prom::sum(&s, "respawn_platform_events_stored_total", &[])
                + prom::sum(&s, "respawn_platform_events_duplicate_total", &[])
                + prom::sum(&s, "respawn_platform_errors_total", &[("kind", "malformed")]);
            if consumed > done {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

pub(super) async fn run(d: &mut Deployment, scenario: Scenario, outage: Duration) -> Result<PipelineReport> {
    let real = d.pipeline.is_some();
    let (db, description) = match &d.pipeline {
        Some(p) => (p.ledger()?, p.describe()),
        None => {
            let path = d.dir.path().join("data").join(respawn_harness::zone::EVENTS_DB);
            let description = format!("embedded ledger {}", path.display());
            (LedgerView::Sqlite(path), description)
        }
    };
    d.note(description);
    warm_up(d).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count().await.unwrap_or(0) == 0 {
        if Instant::now() > deadline {
            bail!("no event reached the ledger within 30 s of the bots playing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.note(format!("events flowing: {} stored", db.count().await.unwrap_or(0)));

    let mut problems = Vec::new();
    let ticks_before = d.tick_histogram().await.ok_or_else(|| anyhow!("no tick histogram"))?;
    let players_before = d.players().await;
    let mid_batch = match &d.pipeline {
        Some(p) if scenario == Scenario::PlatformDown => wait_mid_batch(&p.platform_addr).await,
        _ => false,
    };
    let mut lock = None;
    let fault = match (scenario, d.pipeline.as_mut()) {
        (Scenario::KafkaDown, Some(p)) => {
            p.broker_gate.cut();
            "broker unreachable (every connection cut, new ones refused)"
        }
        (Scenario::MysqlDown, Some(p)) => {
            p.mysql.kill().await;
            "MariaDB killed (kill -9)"
        }
        (_, Some(p)) => {
            p.platform.kill().await;
            if mid_batch {
                "platform server killed (kill -9) mid-batch: events received, not yet committed"
            } else {
                "platform server killed (kill -9); no batch was caught in flight within 10 s"
            }
        }
        (_, None) => {
            lock = Some(db.lock().await?);
            "embedded ledger unwritable (another process holds its write lock; every write waits, then fails)"
        }
    };
    let t_fault = Instant::now();
    d.note(format!("{fault}; outage of {} s under load", outage.as_secs()));
    d.note(
        "decision: no operator action during the outage; heal it at the end and let the backlog drain by itself".into(),
    );

    let (mut backlog_peak, mut players_min) = (0u64, players_before);
    while t_fault.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let generated = d.generated().await?;
        let stored = db.count().await.unwrap_or(0);
        backlog_peak = backlog_peak.max(generated.saturating_sub(stored));
        players_min = players_min.min(d.players().await);
    }
    let outbox_at_end = d.outbox_pending().await?;
    d.note(format!(
        "end of the outage: {backlog_peak} events generated but not stored at most, {outbox_at_end} waiting in outboxes, \
         {players_min} of {players_before} players online at least"
    ));

    match (scenario, d.pipeline.as_mut()) {
        (Scenario::KafkaDown, Some(p)) => p.broker_gate.reopen().await?,
        (Scenario::MysqlDown, Some(p)) => p.mysql.start().await?,
        (_, Some(p)) => p.platform.start().await?,
        (_, None) => {
            if let Some(lock) = lock.take() {
                lock.close().await?;
            }
        }
    }
    let t_heal = Instant::now();
    let outage_ms = t_fault.elapsed().as_secs_f64() * 1e3;
    let generated_at_heal = d.generated().await?;
    let healed = match (real, scenario) {
        (false, _) => "the ledger's write lock released",
        (true, Scenario::KafkaDown) => "the broker reachable again",
        (true, Scenario::MysqlDown) => "MariaDB restarted",
        (true, _) => "the platform server restarted",
    };
    d.note(format!("healed: {healed}; {generated_at_heal} events generated so far"));
    let catch_up_ms = loop {
        if db.count().await.unwrap_or(0) >= generated_at_heal {
            break t_heal.elapsed().as_secs_f64() * 1e3;
        }
        if t_heal.elapsed() > CATCH_UP_LIMIT {
            problems.push(format!("the backlog was not stored within {} s of the heal", CATCH_UP_LIMIT.as_secs()));
            break f64::NAN;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    d.note(format!("caught up after {catch_up_ms:.0} ms"));
    let max_tick_ms = d.tick_histogram().await.map_or(0.0, |h| max_bucket_ms(&h.since(&ticks_before)));
    let players_after = d.players().await;

    // Stop the load, let the pipeline settle (the bots' leave events too), then compare everything.
    d.bots.halt().await;
    let (generated, stored, check) = settle(d, &db, d.pipeline.as_ref().map(|p| p.brokers.as_str()), 0).await?;
    d.note(format!("bots stopped; settled with {stored} of {generated} events stored"));
    d.note(match &check.topic {
        Some(t) => format!(
            "compared: {} ids in the topic ({} records), {} rows stored, {} topic ids missing from the ledger",
            t.ids, t.records, check.rows, t.missing_from_ledger
        ),
        None => format!("compared: {} rows stored, {} distinct ids", check.rows, check.distinct_rows),
    });

    let mut events_lost = generated.saturating_sub(stored);
    if let Some(t) = &check.topic {
        events_lost = events_lost.max(t.missing_from_ledger).max(generated.saturating_sub(t.ids));
        if t.extra_in_ledger > 0 {
            problems.push(format!("{} events stored that the topic never held", t.extra_in_ledger));
        }
    }
    let events_duplicated = check.rows - check.distinct_rows;
    if events_lost > 0 {
        problems.push(format!("{events_lost} events generated but not stored at the end"));
    }
    if events_duplicated > 0 {
        problems.push(format!("{events_duplicated} events stored twice"));
    }
    if !check.records_consistent {
        problems.push("player records disagree with the events stored".into());
    }
    if backlog_peak == 0 {
        problems.push("the fault held nothing back: the drill did not test anything".into());
    }
    if players_min < players_before || players_after < players_before {
        problems.push(format!(
            "players dropped during the fault: {players_before} before, {players_min} at least during, {players_after} after"
        ));
    }
    if max_tick_ms > TICK_BUDGET_MS {
        problems.push(format!("a tick took up to {max_tick_ms:.0} ms (budget {TICK_BUDGET_MS:.0} ms)"));
    }
    Ok(PipelineReport {
        scenario,
        real_services: real,
        outage_ms,
        catch_up_ms,
        events_generated: generated,
        events_persisted: stored,
        events_lost,
        events_duplicated,
        redelivered_absorbed: check.topic.as_ref().map_or(0, |t| t.records - t.ids),
        backlog_peak,
        records_consistent: check.records_consistent,
        players_before,
        players_min_during_fault: players_min,
        players_after,
        max_tick_ms,
        findings: Findings::judge(problems),
    })
}

/// The ledger as the drill reads it, from outside the process that writes it.
pub(super) enum LedgerView {
    MySql(MySqlPool),
    Sqlite(PathBuf),
}

impl LedgerView {
    fn sqlite(path: &Path, read_only: bool) -> SqlitePool {
        let options = SqliteConnectOptions::new().filename(path).read_only(read_only);
        SqlitePoolOptions::new().max_connections(1).connect_lazy_with(options)
    }

    /// Rows in `events`, or `None` while the ledger does not answer.
    pub(super) async fn count(&self) -> Option<u64> {
        let (n,): (i64,) = match self {
            LedgerView::MySql(db) => sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(db).await.ok()?,
            LedgerView::Sqlite(path) => {
                let db = Self::sqlite(path, true);
                let n = sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(&db).await.ok()?;
                db.close().await;
                n
            }
        };
        u64::try_from(n).ok()
    }

    /// Every stored id, and whether the player records fold each stored event about a player once.
    async fn ids_and_records(&self) -> Result<(Vec<EventKey>, bool)> {
        const ABOUT_PLAYERS: &str = "SELECT COUNT(*) FROM events WHERE player <> 0";
        Ok(match self {
            LedgerView::MySql(db) => {
                let rows: Vec<EventKey> = sqlx::query_as("SELECT zone, epoch, tick, idx FROM events")
                    .fetch_all(db)
                    .await
                    .context("reading event ids")?;
                let (about,): (i64,) = sqlx::query_as(ABOUT_PLAYERS).fetch_one(db).await?;
                let (folded,): (i64,) = sqlx::query_as("SELECT CAST(COALESCE(SUM(events), 0) AS SIGNED) FROM players")
                    .fetch_one(db)
                    .await?;
                (rows, about == folded)
            }
            LedgerView::Sqlite(path) => {
                let db = Self::sqlite(path, true);
                let rows: Vec<(u32, i64, i64, u32)> = sqlx::query_as("SELECT zone, epoch, tick, idx FROM events")
                    .fetch_all(&db)
                    .await
                    .context("reading event ids")?;
                let (about,): (i64,) = sqlx::query_as(ABOUT_PLAYERS).fetch_one(&db).await?;
                let (folded,): (i64,) =
                    sqlx::query_as("SELECT COALESCE(SUM(events), 0) FROM players").fetch_one(&db).await?;
                db.close().await;
                let rows = rows.into_iter().map(|(z, e, t, i)| (z, e as u64, t as u64, i)).collect();
                (rows, about == folded)
            }
        })
    }

    /// Takes the embedded ledger's write lock and holds it until the
    /// connection is closed: every write of the zone server waits, then fails.
    async fn lock(&self) -> Result<SqliteConnection> {
        let LedgerView::Sqlite(path) = self else { bail!("only the embedded ledger can be locked") };
        let mut conn = SqliteConnectOptions::new().filename(path).connect().await?;
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.context("taking the ledger's write lock")?;
        Ok(conn)
    }
}

pub(super) struct Comparison {
    pub rows: u64,
    pub distinct_rows: u64,
    records_consistent: bool,
    topic: Option<TopicComparison>,
}

struct TopicComparison {
    records: u64,
    ids: u64,
    missing_from_ledger: u64,
    extra_in_ledger: u64,
}

async fn compare(db: &LedgerView, brokers: Option<&str>) -> Result<Comparison> {
    let in_topic = match brokers {
        Some(b) => Some(topic_ids(b.to_owned()).await?),
        None => None,
    };
    let (rows, records_consistent) = db.ids_and_records().await?;
    let stored: HashSet<EventKey> = rows.iter().copied().collect();
    Ok(Comparison {
        rows: rows.len() as u64,
        distinct_rows: stored.len() as u64,
        records_consistent,
        topic: in_topic.map(|(records, ids)| TopicComparison {
            records,
            ids: ids.len() as u64,
            missing_from_ledger: ids.difference(&stored).count() as u64,
            extra_in_ledger: stored.difference(&ids).count() as u64,
        }),
    })
}

/// Every record of the topic, read from the beginning to the end of each partition.
async fn topic_ids(brokers: String) -> Result<(u64, HashSet<EventKey>)> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "respawn-drill-check")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut ends = Vec::new();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS as i32 {
            let (low, high) = consumer.fetch_watermarks(TOPIC, partition, Duration::from_secs(10))?;
            if high > low {
                assignment.add_partition_offset(TOPIC, partition, Offset::Beginning)?;
                ends.push((partition, high));
            }
        }
        consumer.assign(&assignment)?;
        let (mut records, mut ids) = (0u64, HashSet::new());
        let mut done: HashSet<i32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < ends.len() {
            if Instant::now() > deadline {
                bail!("reading the topic back took over 60 s");
            }
            let Some(msg) = consumer.poll(Duration::from_millis(500)) else { continue };
            let msg = msg?;
            records += 1;
            if let Ok(e) = Event::decode_checked(msg.payload().unwrap_or_default()) {
                ids.insert((e.zone, e.epoch, e.tick, e.index));
            }
            if ends.iter().any(|&(p, high)| p == msg.partition() && msg.offset() + 1 >= high) {
                done.insert(msg.partition());
            }
        }
        Ok((records, ids))
    })
    .await?
}

pub(super) fn print_report(r: &PipelineReport) {
    let deployment = if r.real_services {
        "Tansu broker, MariaDB, platform server; real processes"
    } else {
        "embedded ledger (SQLite) in the zone server"
    };
    println!("Drill {} ({deployment})", r.scenario.name());
    println!();
    r.findings.print_timeline();
    println!("Figures                                                      target");
    println!("  outage               {:>9.0} ms", r.outage_ms);
    println!("  catch-up             {:>9.0} ms (healed service to backlog stored)", r.catch_up_ms);
    println!("  events generated     {:>9}", r.events_generated);
    println!("  events persisted     {:>9}                               = generated", r.events_persisted);
    println!("  events lost          {:>9}                               0", r.events_lost);
    println!("  events duplicated    {:>9}                               0", r.events_duplicated);
    println!("  redeliveries absorbed{:>9}", r.redelivered_absorbed);
    println!("  backlog peak         {:>9} events", r.backlog_peak);
    println!("  player records       {:>9}                               consistent", consistent(r.records_consistent));
    println!(
        "  players              {:>3} before, {:>3} at least during, {:>3} after   unchanged",
        r.players_before, r.players_min_during_fault, r.players_after
    );
    println!("  max tick             {:>9} ms                            < 50 ms", r.max_tick_ms);
    r.findings.print_verdict();
}

fn consistent(ok: bool) -> &'static str {
    if ok {
        "consistent"
    } else {
        "DIFFER"
    }
}
