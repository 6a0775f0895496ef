//! The platform server: the event side (Kafka topic `game.events.player`,
//! consumer group `platform-server-group`, into MySQL, exactly once in
//! effect, with player records projected in the same transaction; and the
//! embedded ledger, SQLite, a zone server publishes into without Kafka), the
//! server registry and login, the fleet view and built-in alerting, the
//! operations API and dashboard, and rolling updates. [`PlatformServer`]
//! assembles them.
//!
//! Offsets are committed only after the MySQL transaction that stored the
//! batch committed; a redelivered event hits the primary key on its
//! deterministic id and is ignored, and only newly stored events reach the
//! player records. While MySQL is down the consumer stops consuming and
//! retries the same batch with backoff.

pub mod accounts;
pub mod alerts;
pub mod consumer;
pub mod fleet;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod mysql;
pub mod notify;
pub mod projection;
pub mod rollout;
pub mod server;
pub mod sqlite;
pub mod trends;

pub use consumer::{run_consumer, ConsumerConfig};
pub use ledger::{event_log, Ledger, LedgerEventLog, Stored};
pub use metrics::PlatformMetrics;
pub use mysql::{connect, MySqlLedger};
pub use server::{MySqlConsumer, PlatformServer, RunningPlatform, Service};
pub use sqlite::SqliteLedger;

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
