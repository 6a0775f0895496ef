//! Kafka → the ledger (MySQL): batch, store in one transaction, then commit offsets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{ClientContext, Message, Statistics};
use respawn_proto::events::Event;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::metrics::{ErrorKind, PlatformMetrics};
use crate::PlatformError;

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

/// Turns librdkafka's statistics into the consumer-lag gauges.
struct LagContext {
    metrics: Arc<PlatformMetrics>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            // Partition -1 is librdkafka's internal one; `desired` marks the ones assigned to us.
            for (&partition, p) in t.partitions.iter().filter(|(&id, p)| id >= 0 && p.desired) {
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.hi_offset >= 0 {
                    // Nothing committed yet: everything from the start is still to store.
                    p.hi_offset - p.lo_offset.max(0)
                } else {
                    continue;
                };
                self.metrics.lag(topic, partition, lag);
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// Consumes until `stop`. While MySQL fails the same batch is retried with
/// backoff and nothing more is consumed or committed.
pub async fn run_consumer(
    ledger: Arc<dyn Ledger>,
    config: ConsumerConfig,
    metrics: Arc<PlatformMetrics>,
    stop: CancellationToken,
) -> Result<(), PlatformError> {
    let consumer: Arc<StreamConsumer<LagContext>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000")
            // Reconnect to a healed broker within a second, not librdkafka's default 10 s.
            .set("reconnect.backoff.max.ms", "1000")
            // A killed instance's partitions go to the others (or its restart) after this long.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            // A fetch the broker holds while the topic is idle returns after this
            // long at most (librdkafka's default is 500 ms); a broker that does
            // not answer a held fetch as soon as records arrive then delays each
            // event by up to this much.
            .set("fetch.wait.max.ms", "20")
            .create_with_context(LagContext { metrics: metrics.clone() })?,
    );
    consumer.subscribe(&[&config.topic])?;
    while !stop.is_cancelled() {
        let Some(events) = next_batch(&consumer, &config, &metrics, &stop).await else { break };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match store_batch(ledger.as_ref(), &events, &metrics).await {
                Ok(()) => break,
                Err(e) => {
                    metrics.error(ErrorKind::Store);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "storing events failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // A failed commit is covered by the next one; until then a restart
        // redelivers the batch, which the event ids absorb.
        // A synchronous commit waits for the broker: off the async workers,
        // whose other tasks (the HTTP API, or whatever proxies the broker) go on.
        let committer = consumer.clone();
        let committed = tokio::task::spawn_blocking(move || committer.commit_consumer_state(CommitMode::Sync)).await;
        let failed = match committed {
            Ok(result) => result.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            metrics.error(ErrorKind::Commit);
            tracing::warn!(error = %e, "committing offsets failed; the next batch's commit covers them");
        }
        metrics.batch_duration.observe(started.elapsed().as_secs_f64());
        tracing::debug!(events = events.len(), "batch stored and committed");
    }
    Ok(())
}

/// Stores a batch. One event the database refuses for what it holds (not
/// for being down) would hold every event behind it forever: then the
/// events are stored one by one, and each refused one is kept in
/// `refused_events` with the reason. Any other failure is the caller's to retry.
async fn store_batch(ledger: &dyn Ledger, events: &[Event], metrics: &PlatformMetrics) -> Result<(), sqlx::Error> {
    let counted = |s: crate::ledger::Stored| {
        metrics.stored.inc_by(s.inserted);
        metrics.duplicates.inc_by(s.duplicates);
        metrics.stale_character_events.inc_by(s.stale);
        metrics.players_updated.inc_by(s.players);
    };
    match ledger.store(events).await {
        Ok(s) => {
            counted(s);
            return Ok(());
        }
        Err(e) if ledger.refuses_for_good(&e) => {
            tracing::warn!(error = %e, events = events.len(), "the database refuses this batch; storing it event by event")
        }
        Err(e) => return Err(e),
    }
    for event in events {
        match ledger.store(std::slice::from_ref(event)).await {
            Ok(s) => counted(s),
            Err(e) if ledger.refuses_for_good(&e) => {
                ledger.refuse(event, &e.to_string()).await?;
                metrics.refused_events.inc();
                tracing::error!(event = ?crate::ledger::key(event), error = %e, "event refused by the database; kept in refused_events");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits for a first record, then up to `batch_wait` for more; `None` once stopped.
async fn next_batch(
    consumer: &StreamConsumer<LagContext>,
    config: &ConsumerConfig,
    metrics: &PlatformMetrics,
    stop: &CancellationToken,
) -> Option<Vec<Event>> {
    let mut events = Vec::new();
    let mut consumed = 0usize;
    let mut deadline = None;
    while consumed < config.batch_max {
        let received = match deadline {
            None => tokio::select! {
                m = consumer.recv() => m,
                _ = stop.cancelled() => return None,
            },
            Some(at) => match tokio::time::timeout_at(at, consumer.recv()).await {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let msg = match received {
            Ok(msg) => msg,
            Err(e) => {
                metrics.error(ErrorKind::Consume);
                tracing::warn!(error = %e, "receiving from Kafka failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        consumed += 1;
        metrics.consumed.inc();
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.batch_wait);
        match Event::decode_checked(msg.payload().unwrap_or_default()) {
            Ok(e) => events.push(e),
            Err(e) => {
                metrics.error(ErrorKind::Malformed);
                tracing::error!(partition = msg.partition(), offset = msg.offset(), error = %e, "malformed event skipped");
            }
        }
    }
    Some(events)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;
    use futures_util::FutureExt as _;
    use respawn_store::ops::{AuditLog, AuditRecord};

    use super::*;
    use crate::ledger::{EventQuery, EventRow, PoolStats, Stored};
    use crate::projection::{Claim, PlayerRecord};

    /// A ledger whose database refuses any batch holding a tick-13 event
    /// (as MySQL refused a payload over its column) and is down while `down`.
    #[derive(Debug, Default)]
    struct Picky {
        stored: Mutex<Vec<u64>>,
        refused: Mutex<Vec<(u64, String)>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl Ledger for Picky {
        fn store<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Stored, sqlx::Error>> {
            async move {
                if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(sqlx::Error::PoolTimedOut);
                }
                if events.iter().any(|e| e.tick == 13) {
                    return Err(sqlx::Error::Protocol("Data too long for column 'payload'".into()));
                }
                self.stored.lock().expect("fake").extend(events.iter().map(|e| e.tick));
                Ok(Stored { inserted: events.len() as u64, ..Stored::default() })
            }
            .boxed()
        }
        fn refuses_for_good(&self, error: &sqlx::Error) -> bool {
            matches!(error, sqlx::Error::Protocol(_))
        }
        fn refuse<'a>(&'a self, event: &'a Event, reason: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
            async move {
                self.refused.lock().expect("fake").push((event.tick, reason.to_owned()));
                Ok(())
            }
            .boxed()
        }
        fn player(&self, _: u64) -> BoxFuture<'_, Result<Option<PlayerRecord>, sqlx::Error>> {
            unreachable!("not read here")
        }
        fn claim<'a>(
            &'a self,
            _: u64,
            _: &'a str,
            _: &'a str,
            _: u64,
        ) -> BoxFuture<'a, Result<(Claim, PlayerRecord), sqlx::Error>> {
            unreachable!("not claimed here")
        }
        fn event_count(&self) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
            unreachable!("not counted here")
        }
        fn search<'a>(&'a self, _: &'a EventQuery) -> BoxFuture<'a, Result<Vec<EventRow>, sqlx::Error>> {
            unreachable!("not searched here")
        }
        fn pool_stats(&self) -> PoolStats {
            PoolStats::default()
        }
        fn audit<'a>(&'a self, _: AuditLog, _: &'a AuditRecord) -> BoxFuture<'a, Result<(), sqlx::Error>> {
            unreachable!("not audited here")
        }
        fn audit_trail(&self, _: AuditLog, _: u64, _: u32) -> BoxFuture<'_, Result<Vec<AuditRecord>, sqlx::Error>> {
            unreachable!("not audited here")
        }
        fn kind(&self) -> &'static str {
            "picky"
        }
    }

    fn events(ticks: std::ops::Range<u64>) -> Vec<Event> {
        ticks.map(|tick| Event { zone: 1, epoch: 1, tick, player: 7, ..Event::default() }).collect()
    }

    #[tokio::test]
    async fn an_event_the_database_refuses_is_kept_apart_and_the_rest_are_stored() {
        let (ledger, metrics) = (Picky::default(), PlatformMetrics::new());
        store_batch(&ledger, &events(10..16), &metrics).await.expect("stored");
        assert_eq!(*ledger.stored.lock().expect("fake"), [10, 11, 12, 14, 15]);
        let refused = ledger.refused.lock().expect("fake").clone();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].0 == 13 && refused[0].1.contains("Data too long"), "{refused:?}");
        assert_eq!((metrics.refused_events.get(), metrics.stored.get()), (1, 5));
    }

    #[tokio::test]
    async fn a_database_that_is_down_refuses_nothing_for_good() {
        let (ledger, metrics) = (Picky::default(), PlatformMetrics::new());
        ledger.down.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(store_batch(&ledger, &events(10..16), &metrics).await.is_err(), "the caller retries the batch");
        assert!(ledger.refused.lock().expect("fake").is_empty());
        assert_eq!(metrics.refused_events.get(), 0);
    }
}
