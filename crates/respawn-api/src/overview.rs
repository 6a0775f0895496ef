//! The platform's overview of the whole system, as the dashboard and
//! `respawn ctl status` read it: the status of the moment ([`Status`]) and
//! the last hour's trends the dashboard charts ([`Trends`]).

use serde::{Deserialize, Serialize};

/// How game events reach the ledger, which decides what the event figures mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventPath {
    /// Zone servers publish to Kafka; the platform's consumer stores them in
    /// the ledger (MySQL in production).
    Kafka,
    /// Zone servers write straight into the embedded ledger (SQLite, `respawn up`).
    Embedded,
}

impl EventPath {
    /// What an operator calls it, naming the stores really there.
    pub fn describe(self, ledger: &str) -> String {
        match self {
            EventPath::Kafka => format!("Kafka → {ledger}"),
            EventPath::Embedded => format!("embedded ledger ({ledger})"),
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub servers: usize,
    pub zones: usize,
    pub players: u64,
    /// Why the registry could not be read, when it could not.
    pub registry_error: Option<String>,
    /// The event ledger: `mysql`, `sqlite`, or `unavailable`.
    pub ledger: String,
    pub events: EventsStatus,
    pub db_pool: DbPool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsStatus {
    pub path: EventPath,
    /// Records this process's Kafka consumer took per second (none without one).
    pub consumed_per_second: Option<f64>,
    /// Events stored for the first time by this process's consumer (none without one).
    pub stored_total: Option<u64>,
    /// Records between the committed offsets and the ends of this process's
    /// partitions (none without a consumer).
    pub consumer_lag: Option<i64>,
    /// Events the zone servers recorded and the broker (or the embedded
    /// ledger) has not acknowledged yet, summed over the zones.
    pub outbox_pending: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbPool {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// `GET /v1/trends`: the last hour, one point every [`Trends::period_secs`],
/// as columns (one entry per point in each), ready to chart. A figure that
/// was not measured at a point (no zone server answered, no consumer in
/// this process, no request in the interval) is `null` there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trends {
    pub period_secs: u64,
    pub path: EventPath,
    /// When each point was taken, unix seconds.
    pub times: Vec<u64>,
    /// Events stored per second: by this process's consumer (Kafka), or by
    /// the zone servers in the embedded ledger.
    pub events_stored_per_second: Vec<Option<f64>>,
    /// Events the zone servers had Kafka acknowledge per second (Kafka only).
    pub events_published_per_second: Vec<Option<f64>>,
    /// This process's consumer lag in records (Kafka only).
    pub consumer_lag: Vec<Option<i64>>,
    /// Events recorded by the zone servers and not yet acknowledged by the
    /// broker or the embedded ledger.
    pub outbox_pending: Vec<Option<u64>>,
    /// The platform API's response time over each interval, every route.
    pub api_p50_ms: Vec<Option<f64>>,
    pub api_p99_ms: Vec<Option<f64>>,
    pub api_requests_per_second: Vec<Option<f64>>,
    /// Responses with a 5xx status per second.
    pub api_errors_per_second: Vec<Option<f64>>,
    pub zones: Vec<ZoneTrend>,
}

/// One zone's columns, aligned with [`Trends::times`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneTrend {
    pub name: String,
    pub ccu: Vec<Option<u64>>,
    /// Over each interval.
    pub tick_p50_ms: Vec<Option<f64>>,
    pub tick_p99_ms: Vec<Option<f64>>,
}
