//! Counting a drill's events where they end up: the ledger (MariaDB, or the
//! zone server's embedded SQLite ledger) and the topic, once the load has
//! stopped and everything settled.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use respawn_proto::events::{Event, TOPIC};
use sqlx::mysql::MySqlPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::ConnectOptions;
use std::path::{Path, PathBuf};

use crate::services::{pool, Pipeline, PARTITIONS};

/// How long the pipeline may take to settle once the bots stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

type EventKey = (u32, u64, u64, u32);

/// The zone servers' event counts, for [`settle`].
pub(crate) trait EventCounts {
    /// Events generated so far.
    async fn generated(&self) -> Result<u64>;
    /// Events in the outboxes, not yet in the event log.
    async fn outbox_pending(&self) -> Result<u64>;
}

/// Once the load has stopped: waits until every event generated is stored,
/// the outboxes are empty and nothing changed for a second ([`SETTLE_LIMIT`]
/// at most), then compares the ledger (and the topic at `brokers`).
/// `gone`: events known never to arrive (lost with a site), not waited for.
/// Returns (generated, stored, comparison).
pub(crate) async fn settle(
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

/// The ledger as the drill reads it, from outside the process that writes it.
pub(crate) enum LedgerView {
    MySql(MySqlPool),
    Sqlite(PathBuf),
}

impl LedgerView {
    /// The pipeline's MariaDB.
    pub(crate) fn of(pipeline: &Pipeline) -> Result<Self> {
        Ok(LedgerView::MySql(pool(&pipeline.mysql_url)?))
    }

    fn sqlite(path: &Path, read_only: bool) -> SqlitePool {
        let options = SqliteConnectOptions::new().filename(path).read_only(read_only);
        SqlitePoolOptions::new().max_connections(1).connect_lazy_with(options)
    }

    /// Rows in `events`, or `None` while the ledger does not answer.
    pub(crate) async fn count(&self) -> Option<u64> {
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
    pub(crate) async fn lock(&self) -> Result<SqliteConnection> {
        let LedgerView::Sqlite(path) = self else { bail!("only the embedded ledger can be locked") };
        let mut conn = SqliteConnectOptions::new().filename(path).connect().await?;
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.context("taking the ledger's write lock")?;
        Ok(conn)
    }
}

pub(crate) struct Comparison {
    pub rows: u64,
    pub distinct_rows: u64,
    pub(crate) records_consistent: bool,
    pub(crate) topic: Option<TopicComparison>,
}

pub(crate) struct TopicComparison {
    pub(crate) records: u64,
    pub(crate) ids: u64,
    pub(crate) missing_from_ledger: u64,
    pub(crate) extra_in_ledger: u64,
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
