//! The event ledger in MySQL/MariaDB: `events` (one row per event id) and
//! `players` (records projected from them), written in one transaction.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use prost::Message as _;
use respawn_proto::events::Event;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{MySql, QueryBuilder, Row, Transaction};

use crate::projection::{fold, PlayerRecord};
use crate::PlatformError;

/// Connections the consumer's pool may open.
pub const POOL_MAX: u32 = 8;
/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 1_000;

/// Connects to MySQL (waiting for it up to `patience`) and migrates the schema.
pub async fn connect(url: &str, patience: Duration) -> Result<MySqlPool, PlatformError> {
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
    Ok(pool)
}

/// What storing one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub inserted: u64,
    pub duplicates: u64,
    pub players: u64,
}

/// A batch id no other batch will pick: the rows a batch inserted are found by it.
fn new_batch_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() >> 1 // BIGINT UNSIGNED holds it; keeping it under 2^63 keeps it printable as a signed value too.
}

/// Stores events in one transaction; events already stored are ignored,
/// and only the newly stored ones are folded into the player records.
pub async fn store(pool: &MySqlPool, events: &[Event]) -> Result<Stored, sqlx::Error> {
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
        let rows = sqlx::query("SELECT zone, epoch, tick, idx FROM events WHERE batch_id = ?")
            .bind(batch_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut ids: HashSet<(u32, u64, u64, u32)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        // `remove`: a batch can hold an event and its redelivery; the first one stored it.
        events.iter().filter(|e| ids.remove(&(e.zone, e.epoch, e.tick, e.index))).collect()
    };
    let players = project(&mut tx, &fresh).await?;
    tx.commit().await?;
    Ok(Stored { inserted, duplicates: events.len() as u64 - inserted, players })
}

/// Loads (and locks) the records `events` touch, folds the events in, writes them back.
async fn project(tx: &mut Transaction<'_, MySql>, events: &[&Event]) -> Result<u64, sqlx::Error> {
    let ids: Vec<u64> =
        events.iter().map(|e| e.player).filter(|&p| p != 0).collect::<HashSet<_>>().into_iter().collect();
    if ids.is_empty() {
        return Ok(0);
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
    fold(&mut records, events);
    let records: Vec<PlayerRecord> = records.into_values().collect();
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new(format!("INSERT INTO players ({PLAYER_COLUMNS}) "));
        query.push_values(chunk, |mut row, r| {
            row.push_bind(r.player)
                .push_bind(r.name.clone())
                .push_bind(r.level)
                .push_bind(r.xp)
                .push_bind(r.gold)
                .push_bind(r.inventory_text())
                .push_bind(r.last_zone)
                .push_bind(r.online)
                .push_bind(r.events);
        });
        query.push(
            " ON DUPLICATE KEY UPDATE name = VALUES(name), level = VALUES(level), xp = VALUES(xp), \
             gold = VALUES(gold), inventory = VALUES(inventory), last_zone = VALUES(last_zone), \
             online = VALUES(online), events = VALUES(events), last_seen = CURRENT_TIMESTAMP(3)",
        );
        query.build().execute(&mut **tx).await?;
    }
    Ok(records.len() as u64)
}

/// A player's record as stored.
pub async fn player(pool: &MySqlPool, id: u64) -> Result<Option<PlayerRecord>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {PLAYER_COLUMNS} FROM players WHERE player = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(record_from).transpose()
}

/// The columns of `players` a record is made of, in [`record_from`]'s order.
const PLAYER_COLUMNS: &str = "player, name, level, xp, gold, inventory, last_zone, online, events";

fn record_from(row: &MySqlRow) -> Result<PlayerRecord, sqlx::Error> {
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
    })
}
