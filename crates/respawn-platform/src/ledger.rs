//! The event ledger: where events are stored once each, with the player
//! records they imply, in one transaction per batch. MySQL/MariaDB behind
//! the platform server in production ([`crate::mysql`]), SQLite inside the
//! zone server for the embedded default ([`crate::sqlite`]).

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use respawn_proto::events::Event;
use respawn_store::kafka::{EventLog, KeyedRecord};
use respawn_store::ops::{AuditLog, AuditRecord};
use respawn_store::{StoreError, StoreResult};

use crate::projection::{Claim, PlayerRecord};

/// What storing one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub inserted: u64,
    pub duplicates: u64,
    pub players: u64,
    /// Events of a character's stay that is not its current one (a stale
    /// writer's): stored in the ledger, left out of the record.
    pub stale: u64,
}

/// A connection pool's state, for the DB-pool metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The ledger once connected; empty while the platform server waits for MySQL.
pub type LedgerSlot = Arc<OnceLock<Arc<dyn Ledger>>>;

pub trait Ledger: Send + Sync + Debug {
    /// Stores `events` in one transaction: those already stored are ignored,
    /// the others are folded into the player records in the same transaction.
    fn store<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Stored, sqlx::Error>>;

    /// A player's record.
    fn player(&self, id: u64) -> BoxFuture<'_, Result<Option<PlayerRecord>, sqlx::Error>>;

    /// Claims `player`'s character (named `name` if it is new) for `zone`
    /// at `now_ms` ([`PlayerRecord::claim`]), in one transaction holding
    /// its row; answers the claim and the record after it.
    fn claim<'a>(
        &'a self,
        player: u64,
        name: &'a str,
        zone: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(Claim, PlayerRecord), sqlx::Error>>;

    /// Events stored.
    fn event_count(&self) -> BoxFuture<'_, Result<u64, sqlx::Error>>;

    /// Stored events matching `query`, newest stored first.
    fn search<'a>(&'a self, query: &'a EventQuery) -> BoxFuture<'a, Result<Vec<EventRow>, sqlx::Error>>;

    fn pool_stats(&self) -> PoolStats;

    /// Keeps an event the database refused for what it holds (with the
    /// reason) apart from the events, so the ones behind it are stored.
    fn refuse<'a>(&'a self, event: &'a Event, reason: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Whether a failure to store is the events' own (a value the database
    /// will never take) rather than the database's (down, busy, deadlocked).
    fn refuses_for_good(&self, error: &sqlx::Error) -> bool {
        let code = match error {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
            _ => return false,
        };
        // SQLSTATE class 22, data exceptions (MySQL); SQLITE_TOOBIG (18).
        code.starts_with("22") || code == "18"
    }

    /// Appends an audit record to the trail, which nothing changes or trims.
    fn audit<'a>(&'a self, log: AuditLog, record: &'a AuditRecord) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// The trail's newest `limit` records of `log`, newest first, skipping the `skip` newest.
    fn audit_trail(&self, log: AuditLog, skip: u64, limit: u32)
        -> BoxFuture<'_, Result<Vec<AuditRecord>, sqlx::Error>>;

    /// `mysql` or `sqlite`.
    fn kind(&self) -> &'static str;
}

/// An event search: every filter optional, pages of `limit` rows, each page
/// continuing after the last row of the one before (`after`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub player: Option<u64>,
    /// An event kind's name, e.g. `gold_changed`.
    pub kind: Option<String>,
    /// Stored at or after, Unix milliseconds.
    pub since_ms: Option<u64>,
    /// Stored before, Unix milliseconds.
    pub until_ms: Option<u64>,
    pub limit: u32,
    pub after: Option<EventCursor>,
}

/// Where a page ended: rows are ordered by (stored time, event id), descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub stored_at_ms: u64,
    pub key: EventKey,
}

impl EventCursor {
    /// `ms.zone.epoch.tick.index`: opaque to callers, checked when read back.
    pub fn encode(&self) -> String {
        let (z, e, t, i) = self.key;
        format!("{}.{z}.{e}.{t}.{i}", self.stored_at_ms)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let mut next = || parts.next()?.parse::<u64>().ok();
        let (ms, z, e, t, i) = (next()?, next()?, next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self { stored_at_ms: ms, key: (u32::try_from(z).ok()?, e, t, u32::try_from(i).ok()?) })
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub key: EventKey,
    pub player: u64,
    pub kind: String,
    pub stored_at_ms: u64,
    /// The event as published (protobuf).
    pub payload: Vec<u8>,
}

impl EventRow {
    pub fn cursor(&self) -> EventCursor {
        EventCursor { stored_at_ms: self.stored_at_ms, key: self.key }
    }
}

/// The event id as the ledgers key it.
pub type EventKey = (u32, u64, u64, u32);

pub fn key(e: &Event) -> EventKey {
    (e.zone, e.epoch, e.tick, e.index)
}

/// A batch id no other batch will pick: the rows a batch inserted are found by it.
/// The trail's statements, the same in MySQL and SQLite.
pub(crate) const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (at_ms, actor, action, target, result, refused) VALUES (?, ?, ?, ?, ?, ?)";
pub(crate) const AUDIT_SELECT: &str = "SELECT at_ms, actor, action, target, result FROM audit_log \
     WHERE refused = ? ORDER BY id DESC LIMIT ? OFFSET ?";

/// [`Ledger::audit`] and [`Ledger::audit_trail`] for a ledger whose `pool`
/// is a sqlx pool: the statements are the same in MySQL and SQLite.
macro_rules! audit_trail_methods {
    () => {
        fn audit<'a>(
            &'a self,
            log: respawn_store::ops::AuditLog,
            record: &'a respawn_store::ops::AuditRecord,
        ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
            async move {
                sqlx::query($crate::ledger::AUDIT_INSERT)
                    .bind(record.at_ms as i64)
                    .bind(&record.actor)
                    .bind(&record.action)
                    .bind(&record.target)
                    .bind(&record.result)
                    .bind(log == respawn_store::ops::AuditLog::Refusals)
                    .execute(&self.pool)
                    .await
                    .map(drop)
            }
            .boxed()
        }

        fn audit_trail(
            &self,
            log: respawn_store::ops::AuditLog,
            skip: u64,
            limit: u32,
        ) -> BoxFuture<'_, Result<Vec<respawn_store::ops::AuditRecord>, sqlx::Error>> {
            async move {
                let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as($crate::ledger::AUDIT_SELECT)
                    .bind(log == respawn_store::ops::AuditLog::Refusals)
                    .bind(i64::from(limit))
                    .bind(i64::try_from(skip).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map($crate::ledger::audit_row).collect())
            }
            .boxed()
        }
    };
}
pub(crate) use audit_trail_methods;

/// [`Ledger::refuse`] for a ledger whose `pool` is a sqlx pool, with its
/// insert-or-ignore statement and its conversion of 64-bit numbers.
macro_rules! refuse_method {
    ($insert:literal, $number:path) => {
        fn refuse<'a>(
            &'a self,
            event: &'a respawn_proto::events::Event,
            reason: &'a str,
        ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
            async move {
                let reason: String = reason.chars().take(500).collect();
                sqlx::query(concat!(
                    $insert,
                    " INTO refused_events (zone, epoch, tick, idx, player, reason, payload) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ))
                .bind(event.zone)
                .bind($number(event.epoch))
                .bind($number(event.tick))
                .bind(event.index)
                .bind($number(event.player))
                .bind(reason)
                .bind(prost::Message::encode_to_vec(event))
                .execute(&self.pool)
                .await
                .map(drop)
            }
            .boxed()
        }
    };
}
pub(crate) use refuse_method;

/// A row of [`AUDIT_SELECT`].
pub(crate) fn audit_row(row: (i64, String, String, String, String)) -> AuditRecord {
    let (at_ms, actor, action, target, result) = row;
    AuditRecord { at_ms: at_ms.unsigned_abs(), actor, action, target, result }
}

pub(crate) fn new_batch_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(respawn_api::clock::unix_nanos());
    h.finish() >> 1 // under 2^63: it fits a signed 64-bit column too
}

/// The events of a batch its transaction inserted, given the ids it
/// inserted; a batch can hold an event and its redelivery, and only the
/// first of them counts.
pub(crate) fn fresh(events: &[Event], mut inserted: HashSet<EventKey>) -> Vec<&Event> {
    events.iter().filter(|e| inserted.remove(&key(e))).collect()
}

/// The players `events` are about, each once (0, no player, left out).
pub(crate) fn players_of(events: &[&Event]) -> Vec<u64> {
    let ids: HashSet<u64> = events.iter().map(|e| e.player).filter(|&p| p != 0).collect();
    ids.into_iter().collect()
}

/// The columns of `players` a record is made of, in this order.
pub(crate) const PLAYER_COLUMNS: &str = "player, name, level, xp, gold, inventory, last_zone, online, events, \
     place_zone, place_x, place_y, incarnation, hold, hold_zone, hold_at_ms";

/// The columns a projection or a claim rewrites (all but the key), for the
/// upserts' update lists.
pub(crate) const PLAYER_UPDATED: [&str; 15] = [
    "name",
    "level",
    "xp",
    "gold",
    "inventory",
    "last_zone",
    "online",
    "events",
    "place_zone",
    "place_x",
    "place_y",
    "incarnation",
    "hold",
    "hold_zone",
    "hold_at_ms",
];

/// Rows per multi-row statement.
pub(crate) const ROWS_PER_STATEMENT: usize = 1_000;

/// Where zone outboxes publish: Kafka at `brokers`, else the embedded ledger
/// (SQLite) in the file `events_db`.
pub async fn event_log(brokers: Option<&str>, events_db: &std::path::Path) -> Result<Arc<dyn EventLog>, String> {
    Ok(match brokers {
        // The idempotent producer keeps retrying in order this long; a
        // delivery that times out makes librdkafka bump the producer
        // epoch, which some Kafka-compatible brokers handle badly.
        Some(brokers) => Arc::new(
            respawn_store::kafka::KafkaEventLog::new(
                brokers,
                respawn_proto::events::TOPIC,
                std::time::Duration::from_secs(300),
            )
            .map_err(|e| format!("kafka: {e}"))?,
        ),
        None => {
            if let Some(dir) = events_db.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let ledger = crate::SqliteLedger::open(events_db)
                .await
                .map_err(|e| format!("cannot open the event ledger {}: {e}", events_db.display()))?;
            Arc::new(LedgerEventLog::new(ledger))
        }
    })
}

/// The embedded pipeline: a zone's outbox publishes straight into a ledger,
/// through the same [`EventLog`] role the Kafka producer plays.
#[derive(Debug)]
pub struct LedgerEventLog<L> {
    ledger: L,
}

impl<L: Ledger> LedgerEventLog<L> {
    pub fn new(ledger: L) -> Self {
        Self { ledger }
    }
}

impl<L: Ledger> EventLog for LedgerEventLog<L> {
    fn publish(&self, records: Vec<KeyedRecord>) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut events = Vec::with_capacity(records.len());
            for r in &records {
                match Event::decode_checked(&r.payload) {
                    Ok(e) => events.push(e),
                    // The outbox holds what this build wrote; anything else is logged and left out.
                    Err(e) => tracing::error!(error = %e, "malformed event in the outbox skipped"),
                }
            }
            self.ledger
                .store(&events)
                .await
                .map(|stored| {
                    if stored.stale > 0 {
                        tracing::info!(events = stored.stale, "events of an ended stay left out of their characters");
                    }
                })
                .map_err(|e| StoreError::Unavailable { backend: "ledger", message: e.to_string() })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_proto::events::{event::Kind, LevelUp, EVENT_SCHEMA_VERSION};

    fn event(tick: u64, player: u64) -> Event {
        Event {
            schema_version: EVENT_SCHEMA_VERSION,
            zone: 1,
            epoch: 1,
            incarnation: 0,
            tick,
            index: 0,
            player,
            kind: Some(Kind::LevelUp(LevelUp { level: 2 })),
        }
    }

    #[test]
    fn only_the_first_copy_of_an_inserted_event_is_fresh() {
        let events = [event(1, 7), event(2, 7), event(1, 7), event(3, 0)];
        let inserted = HashSet::from([key(&events[0]), key(&events[3])]);
        let fresh = fresh(&events, inserted);
        assert_eq!(fresh.iter().map(|e| e.tick).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(players_of(&fresh), [7]);
    }
}
