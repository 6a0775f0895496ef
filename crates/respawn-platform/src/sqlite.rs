//! The embedded ledger in SQLite: the same tables and the same one
//! transaction per batch as [`crate::mysql`], for `respawn up` and any zone
//! server run without Kafka. One writer connection (SQLite has one writer
//! anyway), WAL journal, `synchronous = FULL`: a batch the outbox lets go of
//! is on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use prost::Message as _;
use respawn_proto::events::Event;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::ledger::{
    fresh, new_batch_id, players_of, EventKey, EventQuery, EventRow, Ledger, PoolStats, Stored, PLAYER_COLUMNS,
    PLAYER_UPDATED, ROWS_PER_STATEMENT,
};
use crate::projection::{claim_stored, fold, Claim, Hold, PlayerRecord};
use crate::PlatformError;

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    /// Opens (creating it if needed) the ledger file and migrates its schema.
    pub async fn open(path: &Path) -> Result<Self, PlatformError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        sqlx::migrate!("./migrations-sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The players' accounts in the same file.
    pub fn accounts(&self) -> crate::accounts::SqliteAccounts {
        crate::accounts::SqliteAccounts::new(self.pool.clone())
    }
}

/// SQLite integers are signed: 64-bit unsigned values keep their bits.
fn signed(v: u64) -> i64 {
    v as i64
}

fn unsigned(v: i64) -> u64 {
    v as u64
}

impl Ledger for SqliteLedger {
    fn store<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Stored, sqlx::Error>> {
        async move {
            if events.is_empty() {
                return Ok(Stored::default());
            }
            let batch_id = signed(new_batch_id());
            let mut tx = self.pool.begin().await?;
            let mut inserted = 0;
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(
                    "INSERT OR IGNORE INTO events (zone, epoch, tick, idx, player, kind, payload, batch_id) ",
                );
                query.push_values(chunk, |mut row, e| {
                    row.push_bind(e.zone)
                        .push_bind(signed(e.epoch))
                        .push_bind(signed(e.tick))
                        .push_bind(e.index)
                        .push_bind(signed(e.player))
                        .push_bind(e.kind.as_ref().map_or("unknown", |k| k.name()))
                        .push_bind(e.encode_to_vec())
                        .push_bind(batch_id);
                });
                inserted += query.build().execute(&mut *tx).await?.rows_affected();
            }
            let fresh: Vec<&Event> = if inserted == events.len() as u64 {
                events.iter().collect()
            } else {
                let rows: Vec<(u32, i64, i64, u32)> =
                    sqlx::query_as("SELECT zone, epoch, tick, idx FROM events WHERE batch_id = ?")
                        .bind(batch_id)
                        .fetch_all(&mut *tx)
                        .await?;
                let ids = rows.into_iter().map(|(z, e, t, i)| -> EventKey { (z, unsigned(e), unsigned(t), i) });
                fresh(events, ids.collect())
            };
            let (players, stale) = project(&mut tx, &fresh).await?;
            tx.commit().await?;
            Ok(Stored { inserted, duplicates: events.len() as u64 - inserted, players, stale })
        }
        .boxed()
    }

    fn player(&self, id: u64) -> BoxFuture<'_, Result<Option<PlayerRecord>, sqlx::Error>> {
        async move {
            let row = sqlx::query(&format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player = ?"))
                .bind(signed(id))
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(record_from).transpose()
        }
        .boxed()
    }

    fn search<'a>(&'a self, q: &'a EventQuery) -> BoxFuture<'a, Result<Vec<EventRow>, sqlx::Error>> {
        async move {
            // stored_at is 'YYYY-MM-DD HH:MM:SS.SSS' (UTC): seconds from strftime, milliseconds from the text.
            const MS: &str =
                "(CAST(strftime('%s', stored_at) AS INTEGER) * 1000 + CAST(substr(stored_at, 21, 3) AS INTEGER))";
            let mut query = QueryBuilder::<Sqlite>::new(format!(
                "SELECT zone, epoch, tick, idx, player, kind, payload, {MS} AS ms FROM events WHERE 1"
            ));
            if let Some(player) = q.player {
                query.push(" AND player = ").push_bind(signed(player));
            }
            if let Some(kind) = &q.kind {
                query.push(" AND kind = ").push_bind(kind.clone());
            }
            if let Some(since) = q.since_ms {
                query.push(format!(" AND {MS} >= ")).push_bind(signed(since));
            }
            if let Some(until) = q.until_ms {
                query.push(format!(" AND {MS} < ")).push_bind(signed(until));
            }
            if let Some(c) = q.after {
                let (zone, epoch, tick, idx) = c.key;
                query.push(format!(" AND ({MS}, zone, epoch, tick, idx) < ("));
                let mut row = query.separated(", ");
                row.push_bind(signed(c.stored_at_ms))
                    .push_bind(zone)
                    .push_bind(signed(epoch))
                    .push_bind(signed(tick))
                    .push_bind(idx);
                query.push(")");
            }
            query
                .push(" ORDER BY stored_at DESC, zone DESC, epoch DESC, tick DESC, idx DESC LIMIT ")
                .push_bind(q.limit);
            let rows = query.build().fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(EventRow {
                        key: (r.try_get(0)?, unsigned(r.try_get(1)?), unsigned(r.try_get(2)?), r.try_get(3)?),
                        player: unsigned(r.try_get(4)?),
                        kind: r.try_get(5)?,
                        payload: r.try_get(6)?,
                        stored_at_ms: unsigned(r.try_get(7)?),
                    })
                })
                .collect()
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
        async move {
            // IMMEDIATE: the write lock first, so the row read is the row written over.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let row = sqlx::query(&format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player = ?"))
                .bind(signed(player))
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
        .boxed()
    }

    fn event_count(&self) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(&self.pool).await?;
            Ok(n.unsigned_abs())
        }
        .boxed()
    }

    crate::ledger::audit_trail_methods!();
    crate::ledger::refuse_method!("INSERT OR IGNORE", signed);

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats { size: self.pool.size(), idle: self.pool.num_idle() as u32, max: 1 }
    }
}

/// Loads the records `events` touch, folds the events in, writes them back
/// (the transaction holds SQLite's write lock); answers the records written
/// and the events not taken.
async fn project(tx: &mut Transaction<'_, Sqlite>, events: &[&Event]) -> Result<(u64, u64), sqlx::Error> {
    let ids = players_of(events);
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let mut records = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new(format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player IN "));
        query.push_tuples(chunk, |mut t, id| {
            t.push_bind(signed(*id));
        });
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

async fn write_records(tx: &mut Transaction<'_, Sqlite>, records: &[PlayerRecord]) -> Result<(), sqlx::Error> {
    let updates: Vec<String> = PLAYER_UPDATED.iter().map(|c| format!("{c} = excluded.{c}")).collect();
    for chunk in records.chunks(ROWS_PER_STATEMENT / 2) {
        let mut query = QueryBuilder::new(format!("INSERT INTO players ({PLAYER_COLUMNS}) "));
        query.push_values(chunk, |mut row, r| {
            let (place_zone, place_x, place_y) = r.place.clone().unwrap_or_default();
            let (hold, hold_zone, hold_at_ms) = r.hold.to_columns();
            row.push_bind(signed(r.player))
                .push_bind(r.name.clone())
                .push_bind(r.level)
                .push_bind(signed(r.xp))
                .push_bind(signed(r.gold))
                .push_bind(r.inventory_text())
                .push_bind(r.last_zone)
                .push_bind(r.online)
                .push_bind(signed(r.events))
                .push_bind(place_zone)
                .push_bind(place_x)
                .push_bind(place_y)
                .push_bind(signed(r.incarnation))
                .push_bind(hold)
                .push_bind(hold_zone.to_owned())
                .push_bind(signed(hold_at_ms));
        });
        query.push(format!(
            " ON CONFLICT (player) DO UPDATE SET {}, last_seen = strftime('%Y-%m-%d %H:%M:%f', 'now')",
            updates.join(", ")
        ));
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn record_from(row: &SqliteRow) -> Result<PlayerRecord, sqlx::Error> {
    let place_zone: String = row.try_get(9)?;
    Ok(PlayerRecord {
        player: unsigned(row.try_get(0)?),
        name: row.try_get(1)?,
        level: row.try_get(2)?,
        xp: unsigned(row.try_get(3)?),
        gold: unsigned(row.try_get(4)?),
        inventory: PlayerRecord::parse_inventory(row.try_get(5)?),
        last_zone: row.try_get(6)?,
        online: row.try_get(7)?,
        events: unsigned(row.try_get(8)?),
        place: if place_zone.is_empty() { None } else { Some((place_zone, row.try_get(10)?, row.try_get(11)?)) },
        incarnation: unsigned(row.try_get(12)?),
        hold: Hold::from_columns(row.try_get(13)?, row.try_get(14)?, unsigned(row.try_get(15)?)),
    })
}
