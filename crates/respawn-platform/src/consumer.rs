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
            match ledger.store(&events).await {
                Ok(s) => {
                    metrics.stored.inc_by(s.inserted);
                    metrics.duplicates.inc_by(s.duplicates);
                    metrics.stale_character_events.inc_by(s.stale);
                    metrics.players_updated.inc_by(s.players);
                    break;
                }
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
