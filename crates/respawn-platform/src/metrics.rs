//! Prometheus metrics of the platform server: its event consumer and its API.

use prometheus::{
    register_histogram_with_registry, register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, Encoder, Histogram, IntCounter, IntCounterVec, IntGaugeVec, Registry,
    TextEncoder,
};

use crate::ledger::PoolStats;

#[derive(Debug, Clone)]
pub struct PlatformMetrics {
    registry: Registry,
    /// Records taken from Kafka, events or not.
    pub consumed: IntCounter,
    /// Events stored for the first time (rate = events/s persisted).
    pub stored: IntCounter,
    /// Redelivered events the event id absorbed.
    pub duplicates: IntCounter,
    pub stale_character_events: IntCounter,
    /// Events the database refused for what they hold, kept in `refused_events`.
    pub refused_events: IntCounter,
    /// Player records written.
    pub players_updated: IntCounter,
    /// Store, poll, commit and decode duration of whole batches.
    pub batch_duration: Histogram,
    errors: IntCounterVec,
    lag: IntGaugeVec,
    db_connections: IntGaugeVec,
    /// Zone joins granted (`POST /v1/play`).
    pub joins: IntCounter,
    /// Accounts made, with a password or as guests.
    pub sign_ups: IntCounter,
    sign_ins: IntCounterVec,
    rate_limited: IntCounterVec,
    http_duration: prometheus::HistogramVec,
    /// The listener guard's counters (per-IP cap, slow and idle connections).
    pub guard: respawn_net::GuardMetrics,
    http_responses: IntCounterVec,
    notifications: IntCounterVec,
    /// (when, records consumed then, rate since the look before) for [`Self::consumed_per_second`].
    consumed_rate: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, u64, f64)>>>,
}

/// Why the consumer counted an error (the `kind` label).
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    /// A record that is not an event this build reads; skipped.
    Malformed,
    /// Storing a batch failed; it is retried.
    Store,
    /// Receiving from Kafka failed.
    Consume,
    /// Committing offsets failed; the next commit covers them.
    Commit,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::Store => "store",
            ErrorKind::Consume => "consume",
            ErrorKind::Commit => "commit",
        }
    }
}

impl Default for PlatformMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PlatformMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let batch_buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        // The names and help texts are constants; registering them in a new registry cannot fail.
        #[allow(clippy::expect_used)]
        Self {
            consumed: register_int_counter_with_registry!(
                "respawn_platform_records_consumed_total",
                "Records received from Kafka.",
                r
            )
            .expect("metric"),
            stored: register_int_counter_with_registry!(
                "respawn_platform_events_stored_total",
                "Events stored in MySQL for the first time.",
                r
            )
            .expect("metric"),
            duplicates: register_int_counter_with_registry!(
                "respawn_platform_events_duplicate_total",
                "Redelivered events ignored because their id was already stored.",
                r
            )
            .expect("metric"),
            stale_character_events: register_int_counter_with_registry!(
                "respawn_platform_stale_character_events_total",
                "Stored events of a character's stay that is not its current one (a stale writer's), left out of its record.",
                r
            )
            .expect("metric"),
            refused_events: register_int_counter_with_registry!(
                "respawn_platform_events_refused_total",
                "Events the database refused for what they hold (not for being down), kept apart in refused_events.",
                r
            )
            .expect("metric"),
            players_updated: register_int_counter_with_registry!(
                "respawn_platform_player_records_written_total",
                "Player records written by the projection.",
                r
            )
            .expect("metric"),
            batch_duration: register_histogram_with_registry!(
                "respawn_platform_batch_duration_seconds",
                "Time to store one batch (events and player records, one transaction) and commit its offsets.",
                batch_buckets,
                r
            )
            .expect("metric"),
            errors: register_int_counter_vec_with_registry!(
                "respawn_platform_errors_total",
                "Errors by kind: malformed (record skipped), store (batch retried), consume, commit.",
                &["kind"],
                r
            )
            .expect("metric"),
            lag: register_int_gauge_vec_with_registry!(
                "respawn_platform_consumer_lag",
                "Records between the committed offset and the end of each assigned partition.",
                &["topic", "partition"],
                r
            )
            .expect("metric"),
            db_connections: register_int_gauge_vec_with_registry!(
                "respawn_platform_db_connections",
                "MySQL pool connections: in_use, idle, max.",
                &["state"],
                r
            )
            .expect("metric"),
            joins: register_int_counter_with_registry!(
                "respawn_platform_joins_total",
                "Zone joins granted by POST /v1/play: a ready server hosting the zone.",
                r
            )
            .expect("metric"),
            sign_ups: register_int_counter_with_registry!(
                "respawn_platform_sign_ups_total",
                "Accounts made by POST /v1/accounts and /v1/accounts/guest.",
                r
            )
            .expect("metric"),
            sign_ins: register_int_counter_vec_with_registry!(
                "respawn_platform_sign_ins_total",
                "Sign-ins by POST /v1/sessions, by result: ok, failed (wrong password, unknown user or device).",
                &["result"],
                r
            )
            .expect("metric"),
            rate_limited: register_int_counter_vec_with_registry!(
                "respawn_platform_rate_limited_total",
                "Requests refused with 429 by a rate limit: sign-up, sign-in, refresh, join (per IP), failed sign-in (per account and IP), api (per operator token).",
                &["limit"],
                r
            )
            .expect("metric"),
            http_duration: prometheus::register_histogram_vec_with_registry!(
                "respawn_platform_http_request_duration_seconds",
                "API response time, by route template.",
                &["route"],
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                r
            )
            .expect("metric"),
            http_responses: register_int_counter_vec_with_registry!(
                "respawn_platform_http_responses_total",
                "API responses by route template and status class (2xx, 3xx, 4xx, 5xx): the error rate's source.",
                &["route", "class"],
                r
            )
            .expect("metric"),
            notifications: register_int_counter_vec_with_registry!(
                "respawn_platform_alert_notifications_total",
                "Alert notifications to the webhook, by result: sent, retried (an attempt failed), failed (gave up).",
                &["result"],
                r
            )
            .expect("metric"),
            consumed_rate: std::sync::Arc::default(),
            guard: respawn_net::GuardMetrics::register(&r, "respawn_platform").expect("metric"),
            registry: r,
        }
        .initialise()
    }

    /// Every labelled series that has a fixed label set, at 0, so it exists before its first event.
    fn initialise(self) -> Self {
        for kind in [ErrorKind::Malformed, ErrorKind::Store, ErrorKind::Consume, ErrorKind::Commit] {
            self.errors.with_label_values(&[kind.label()]);
        }
        for limit in ["sign-up", "sign-in", "refresh", "join", "failed sign-in", "api"] {
            self.rate_limited.with_label_values(&[limit]);
        }
        for result in ["ok", "failed"] {
            self.sign_ins.with_label_values(&[result]);
        }
        for result in ["sent", "retried", "failed"] {
            self.notifications.with_label_values(&[result]);
        }
        self
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[kind.label()]).inc();
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors.with_label_values(&[kind.label()]).get()
    }

    /// One API response.
    pub fn http(&self, route: &str, status: u16, seconds: f64) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_duration.with_label_values(&[route]).observe(seconds);
        self.http_responses.with_label_values(&[route, class]).inc();
    }

    pub fn notification(&self, result: &str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    pub fn sign_in(&self, ok: bool) {
        self.sign_ins.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
    }

    pub fn rate_limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    /// Records consumed per second, over at least the last second.
    pub fn consumed_per_second(&self) -> f64 {
        let now = std::time::Instant::now();
        let count = self.consumed.get();
        let Ok(mut last) = self.consumed_rate.lock() else { return 0.0 };
        match *last {
            Some((at, _, rate)) if now.duration_since(at).as_secs_f64() < 1.0 => rate,
            Some((at, then, _)) => {
                let rate = count.saturating_sub(then) as f64 / now.duration_since(at).as_secs_f64();
                *last = Some((now, count, rate));
                rate
            }
            None => {
                *last = Some((now, count, 0.0));
                0.0
            }
        }
    }

    /// API responses so far: (all, 5xx).
    pub fn http_totals(&self) -> (f64, f64) {
        use prometheus::core::Collector;
        let mut totals = (0.0, 0.0);
        for m in self.http_responses.collect().iter().flat_map(|f| f.get_metric()) {
            let value = m.get_counter().get_value();
            totals.0 += value;
            if m.get_label().iter().any(|l| l.name() == "class" && l.value() == "5xx") {
                totals.1 += value;
            }
        }
        totals
    }

    /// Every API response's duration so far, all routes in one histogram.
    pub fn http_histogram(&self) -> respawn_api::prom::Histogram {
        use prometheus::core::Collector;
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let mut add = |le: f64, count: f64| match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some(slot) => slot.1 += count,
            None => buckets.push((le, count)),
        };
        for m in self.http_duration.collect().iter().flat_map(|f| f.get_metric()) {
            let h = m.get_histogram();
            for b in h.get_bucket().iter().filter(|b| b.upper_bound().is_finite()) {
                add(b.upper_bound(), b.cumulative_count() as f64);
            }
            // The +Inf bucket is every sample; the exposition adds it from the count.
            add(f64::INFINITY, h.get_sample_count() as f64);
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        respawn_api::prom::Histogram { buckets }
    }

    /// Consumer lag summed over the assigned partitions.
    pub fn lag_total(&self) -> i64 {
        use prometheus::core::Collector;
        self.lag.collect().iter().flat_map(|f| f.get_metric()).map(|m| m.get_gauge().get_value() as i64).sum()
    }

    pub fn lag(&self, topic: &str, partition: i32, records: i64) {
        self.lag.with_label_values(&[topic, &partition.to_string()]).set(records);
    }

    /// The text exposition, with the pool's state as given.
    pub fn render(&self, pool: PoolStats) -> String {
        let (size, idle) = (i64::from(pool.size), i64::from(pool.idle));
        self.db_connections.with_label_values(&["in_use"]).set(size - idle);
        self.db_connections.with_label_values(&["idle"]).set(idle);
        self.db_connections.with_label_values(&["max"]).set(i64::from(pool.max));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
