//! The event ledger in MySQL/MariaDB: `events` (one row per event id) and
//! `players` (records projected from them), written in one transaction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use prost::Message as _;
use respawn_proto::events::Event;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{MySql, QueryBuilder, Row, Transaction};
use tokio_util::sync::CancellationToken;

use crate::ledger::{
    fresh, new_batch_id, players_of, EventKey, EventQuery, EventRow, Ledger, PoolStats, Stored, PLAYER_COLUMNS,
    PLAYER_UPDATED, ROWS_PER_STATEMENT,
};
use crate::projection::{claim_stored, fold, Claim, Hold, PlayerRecord};
use crate::PlatformError;

/// Connections the consumer's pool may open.
pub const POOL_MAX: u32 = 8;

/// Connects to MySQL (waiting for it up to `patience`) and migrates the schema.
pub async fn connect(url: &str, patience: Duration) -> Result<MySqlLedger, PlatformError> {
    let started = Instant::now();
    let pool = loop {
        match MySqlPoolOptions::new()
            .max_connections(POOL_MAX)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
        {
            Ok(pool) => break pool,
            Err(e) if started.elapsed() < patience => {
                tracing::warn!(error = %e, "MySQL not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(MySqlLedger { pool })
}

/// [`connect`], retried with backoff (0.5 s doubling to 5 s) until it
/// succeeds or `stop` is cancelled (`None`): the platform server starts and
/// serves without MySQL and begins consuming once it answers.
pub async fn connect_until_stopped(url: &str, stop: &CancellationToken) -> Option<MySqlLedger> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match connect(url, Duration::ZERO).await {
            Ok(ledger) => return Some(ledger),
            Err(e) => tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MySQL not ready; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The ledger in MySQL/MariaDB.
#[derive(Debug, Clone)]
pub struct MySqlLedger {
    pub pool: MySqlPool,
}

impl MySqlLedger {
    /// The players' accounts in the same database.
    pub fn accounts(&self) -> crate::accounts::MySqlAccounts {
        crate::accounts::MySqlAccounts::new(self.pool.clone())
    }
}

impl Ledger for MySqlLedger {
    fn store<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Stored, sqlx::Error>> {
        retrying_conflicts(move || store(&self.pool, events)).boxed()
    }

    fn player(&self, id: u64) -> BoxFuture<'_, Result<Option<PlayerRecord>, sqlx::Error>> {
        async move {
            let row = sqlx::query(&format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(record_from).transpose()
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        player: u64,
        name: &'a str,
        zone: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(Claim, PlayerRecord), sqlx::Error>> {
        retrying_conflicts(move || claim(&self.pool, player, name, zone, now_ms)).boxed()
    }

    fn event_count(&self) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(&self.pool).await?;
            Ok(n.unsigned_abs())
        }
        .boxed()
    }

    fn search<'a>(&'a self, q: &'a EventQuery) -> BoxFuture<'a, Result<Vec<EventRow>, sqlx::Error>> {
        async move {
            const MS: &str = "CAST(ROUND(UNIX_TIMESTAMP(stored_at) * 1000) AS UNSIGNED)";
            let mut query = QueryBuilder::<MySql>::new(format!(
                "SELECT zone, epoch, tick, idx, player, kind, payload, {MS} AS ms FROM events WHERE TRUE"
            ));
            if let Some(player) = q.player {
                query.push(" AND player = ").push_bind(player);
            }
            if let Some(kind) = &q.kind {
                query.push(" AND kind = ").push_bind(kind.clone());
            }
            // Conditions on the column itself (not on an expression of it), so
            // the index by stored time serves them.
            if let Some(since) = q.since_ms {
                query.push(" AND stored_at >= FROM_UNIXTIME(").push_bind(since).push(" / 1000)");
            }
            if let Some(until) = q.until_ms {
                query.push(" AND stored_at < FROM_UNIXTIME(").push_bind(until).push(" / 1000)");
            }
            if let Some(c) = q.after {
                let (zone, epoch, tick, idx) = c.key;
                query.push(" AND (stored_at, zone, epoch, tick, idx) < (FROM_UNIXTIME(");
                query.push_bind(c.stored_at_ms).push(" / 1000), ");
                let mut row = query.separated(", ");
                row.push_bind(zone).push_bind(epoch).push_bind(tick).push_bind(idx);
                query.push(")");
            }
            query
                .push(" ORDER BY stored_at DESC, zone DESC, epoch DESC, tick DESC, idx DESC LIMIT ")
                .push_bind(q.limit);
            let rows = query.build().fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(EventRow {
                        key: (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?),
                        player: r.try_get(4)?,
                        kind: r.try_get(5)?,
                        payload: r.try_get(6)?,
                        stored_at_ms: r.try_get(7)?,
                    })
                })
                .collect()
        }
        .boxed()
    }

    crate::ledger::audit_trail_methods!();
    crate::ledger::refuse_method!("INSERT IGNORE", std::convert::identity);

    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }
}

async fn store(pool: &MySqlPool, events: &[Event]) -> Result<Stored, sqlx::Error> {
    if events.is_empty() {
        return Ok(Stored::default());
    }
    let batch_id = new_batch_id();
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            QueryBuilder::new("INSERT IGNORE INTO events (zone, epoch, tick, idx, player, kind, payload, batch_id) ");
        query.push_values(chunk, |mut row, e| {
            row.push_bind(e.zone)
                .push_bind(e.epoch)
                .push_bind(e.tick)
                .push_bind(e.index)
                .push_bind(e.player)
                .push_bind(e.kind.as_ref().map_or("unknown", |k| k.name()))
                .push_bind(e.encode_to_vec())
                .push_bind(batch_id);
        });
        inserted += query.build().execute(&mut *tx).await?.rows_affected();
    }
    let fresh: Vec<&Event> = if inserted == events.len() as u64 {
        events.iter().collect()
    } else {
        let rows: Vec<EventKey> = sqlx::query_as("SELECT zone, epoch, tick, idx FROM events WHERE batch_id = ?")
            .bind(batch_id)
            .fetch_all(&mut *tx)
            .await?;
        fresh(events, rows.into_iter().collect())
    };
    let (players, stale) = project(&mut tx, &fresh).await?;
    tx.commit().await?;
    Ok(Stored { inserted, duplicates: events.len() as u64 - inserted, players, stale })
}

/// Loads (and locks) the records `events` touch, folds the events in,
/// writes them back; answers the records written and the events not taken.
async fn project(tx: &mut Transaction<'_, MySql>, events: &[&Event]) -> Result<(u64, u64), sqlx::Error> {
    let ids = players_of(events);
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let mut records = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new(format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player IN "));
        query.push_tuples(chunk, |mut t, id| {
            t.push_bind(*id);
        });
        query.push(" FOR UPDATE");
        for row in query.build().fetch_all(&mut **tx).await? {
            let record = record_from(&row)?;
            records.insert(record.player, record);
        }
    }
    let stale = fold(&mut records, events);
    let records: Vec<PlayerRecord> = records.into_values().collect();
    write_records(tx, &records).await?;
    Ok((records.len() as u64, stale))
}

async fn write_records(tx: &mut Transaction<'_, MySql>, records: &[PlayerRecord]) -> Result<(), sqlx::Error> {
    let updates: Vec<String> = PLAYER_UPDATED.iter().map(|c| format!("{c} = VALUES({c})")).collect();
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new(format!("INSERT INTO players ({PLAYER_COLUMNS}) "));
        query.push_values(chunk, |mut row, r| {
            let (place_zone, place_x, place_y) = r.place.clone().unwrap_or_default();
            let (hold, hold_zone, hold_at_ms) = r.hold.to_columns();
            row.push_bind(r.player)
                .push_bind(r.name.clone())
                .push_bind(r.level)
                .push_bind(r.xp)
                .push_bind(r.gold)
                .push_bind(r.inventory_text())
                .push_bind(r.last_zone)
                .push_bind(r.online)
                .push_bind(r.events)
                .push_bind(place_zone)
                .push_bind(place_x)
                .push_bind(place_y)
                .push_bind(r.incarnation)
                .push_bind(hold)
                .push_bind(hold_zone.to_owned())
                .push_bind(hold_at_ms);
        });
        query.push(format!(" ON DUPLICATE KEY UPDATE {}, last_seen = CURRENT_TIMESTAMP(3)", updates.join(", ")));
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Transactions InnoDB chose to undo (a deadlock between a claim and a
/// batch, both locking player rows, or a lock wait that timed out) run again
/// a few times before the error is the caller's: each changed nothing.
const CONFLICT_RETRIES: u32 = 3;

async fn retrying_conflicts<T, F: std::future::Future<Output = Result<T, sqlx::Error>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, sqlx::Error> {
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if tries < CONFLICT_RETRIES && is_conflict(&e) => {
                tries += 1;
                tracing::debug!(error = %e, tries, "transaction undone by a lock conflict; running it again");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
            }
            other => return other,
        }
    }
}

/// MySQL's deadlock (1213) and lock wait timeout (1205).
fn is_conflict(e: &sqlx::Error) -> bool {
    let code =
        e.as_database_error().and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()).map(|d| d.number());
    matches!(code, Some(1213 | 1205))
}

async fn claim(
    pool: &MySqlPool,
    player: u64,
    name: &str,
    zone: &str,
    now_ms: u64,
) -> Result<(Claim, PlayerRecord), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player = ? FOR UPDATE"))
        .bind(player)
        .fetch_optional(&mut *tx)
        .await?;
    let (claim, record) = claim_stored(row.as_ref().map(record_from).transpose()?, player, name, zone, now_ms);
    // Held elsewhere, nothing changed.
    if let Claim::Granted { .. } = claim {
        write_records(&mut tx, std::slice::from_ref(&record)).await?;
    }
    tx.commit().await?;
    Ok((claim, record))
}

fn record_from(row: &MySqlRow) -> Result<PlayerRecord, sqlx::Error> {
    let place_zone: String = row.try_get(9)?;
    Ok(PlayerRecord {
        player: row.try_get(0)?,
        name: row.try_get(1)?,
        level: row.try_get(2)?,
        xp: row.try_get(3)?,
        gold: row.try_get(4)?,
        inventory: PlayerRecord::parse_inventory(row.try_get(5)?),
        last_zone: row.try_get(6)?,
        online: row.try_get(7)?,
        events: row.try_get(8)?,
        place: if place_zone.is_empty() { None } else { Some((place_zone, row.try_get(10)?, row.try_get(11)?)) },
        incarnation: row.try_get(12)?,
        hold: Hold::from_columns(row.try_get(13)?, row.try_get(14)?, row.try_get(15)?),
    })
}
