//! The platform server's event consumer: Kafka topic `game.events.player`
//! (consumer group `platform-server-group`) into MySQL, exactly once in
//! effect. Offsets are committed only after the MySQL transaction that
//! stored the batch committed; a redelivered event hits the primary key on
//! its deterministic id and is ignored. While MySQL is down the consumer
//! stops consuming and retries the same batch with backoff.

use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use respawn_proto::events::{event::Kind, Event};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use tokio_util::sync::CancellationToken;

/// The consumer group every platform server instance joins.
pub const GROUP: &str = "platform-server-group";

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("mysql: {0}")]
    Mysql(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Most events stored in one transaction.
    pub batch_max: usize,
    /// How long a batch waits to fill after its first event.
    pub batch_wait: Duration,
}

/// Connects to MySQL (waiting for it up to `patience`) and migrates the schema.
pub async fn connect(url: &str, patience: Duration) -> Result<MySqlPool, PlatformError> {
    let started = Instant::now();
    let pool = loop {
        match MySqlPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(2)).connect(url).await {
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

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::PlayerJoined(_) => "player_joined",
        Kind::PlayerLeft(_) => "player_left",
        Kind::ItemAcquired(_) => "item_acquired",
        Kind::GoldChanged(_) => "gold_changed",
        Kind::LevelUp(_) => "level_up",
        Kind::PlayerKilled(_) => "player_killed",
        Kind::NpcKilled(_) => "npc_killed",
        Kind::PlayerRespawned(_) => "player_respawned",
        Kind::CheatRejected(_) => "cheat_rejected",
    }
}

/// What storing one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub inserted: u64,
    pub duplicates: u64,
}

/// Stores events in one transaction; events already stored are ignored.
pub async fn store(pool: &MySqlPool, events: &[Event]) -> Result<Stored, sqlx::Error> {
    if events.is_empty() {
        return Ok(Stored::default());
    }
    let batch_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64 >> 1);
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in events.chunks(1_000) {
        let mut query = sqlx::QueryBuilder::new(
            "INSERT IGNORE INTO events (zone, epoch, tick, idx, player, kind, payload, batch_id) ",
        );
        query.push_values(chunk, |mut row, e| {
            row.push_bind(e.zone)
                .push_bind(e.epoch)
                .push_bind(e.tick)
                .push_bind(e.index)
                .push_bind(e.player)
                .push_bind(e.kind.as_ref().map_or("unknown", kind_name))
                .push_bind(e.encode_to_vec())
                .push_bind(batch_id);
        });
        inserted += query.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(Stored { inserted, duplicates: events.len() as u64 - inserted })
}

/// Totals since the consumer started.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub stored: std::sync::atomic::AtomicU64,
    pub duplicates: std::sync::atomic::AtomicU64,
    pub malformed: std::sync::atomic::AtomicU64,
    pub store_failures: std::sync::atomic::AtomicU64,
}

/// Consumes until `stop`: batch, store, then commit offsets.
pub async fn run_consumer(
    pool: MySqlPool,
    config: ConsumerConfig,
    stats: std::sync::Arc<ConsumerStats>,
    stop: CancellationToken,
) -> Result<(), PlatformError> {
    use std::sync::atomic::Ordering::Relaxed;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&config.topic])?;
    while !stop.is_cancelled() {
        // Gather a batch: wait for the first event, then briefly for more.
        let mut events = Vec::new();
        let mut consumed = 0usize;
        let first = tokio::select! {
            m = consumer.recv() => Some(m),
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + config.batch_wait;
        while let Some(msg) = next.take() {
            let msg = msg?;
            consumed += 1;
            match Event::decode_checked(msg.payload().unwrap_or_default()) {
                Ok(e) => events.push(e),
                Err(e) => {
                    stats.malformed.fetch_add(1, Relaxed);
                    tracing::error!(partition = msg.partition(), offset = msg.offset(), error = %e, "malformed event skipped");
                }
            }
            if consumed < config.batch_max {
                if let Ok(m) = tokio::time::timeout_at(deadline, consumer.recv()).await {
                    next = Some(m);
                }
            }
        }
        // Store, retrying the same batch while MySQL fails; nothing is committed meanwhile.
        let mut backoff = Duration::from_millis(100);
        loop {
            match store(&pool, &events).await {
                Ok(s) => {
                    stats.stored.fetch_add(s.inserted, Relaxed);
                    stats.duplicates.fetch_add(s.duplicates, Relaxed);
                    break;
                }
                Err(e) => {
                    stats.store_failures.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "storing events failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        consumer.commit_consumer_state(CommitMode::Sync)?;
        tracing::debug!(events = events.len(), consumed, "batch stored and committed");
    }
    Ok(())
}
