//! The publisher: drains a zone's outbox to the event log (Kafka) in order
//! and acknowledges only what the broker took. While the broker is away the
//! events wait in the outbox and the publisher retries with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use respawn_proto::events::Event;
use respawn_store::kafka::{EventLog, KeyedRecord};
use respawn_store::outbox::Outbox;
use tokio_util::sync::CancellationToken;

use crate::metrics::PersistMetrics;

/// Records per publish call.
const BATCH: usize = 5_000;

/// The partition key of an outbox record: its player, big-endian.
fn keyed(payload: Vec<u8>) -> KeyedRecord {
    let player = Event::decode(payload.as_slice()).map_or(0, |e| e.player);
    KeyedRecord { key: player.to_be_bytes(), payload }
}

/// Runs until `stop`, then tries for up to `final_flush` to empty the outbox.
pub async fn run_publisher(
    zone: String,
    outbox: Arc<Outbox>,
    log: Arc<dyn EventLog>,
    metrics: PersistMetrics,
    stop: CancellationToken,
    final_flush: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    let mut flush_deadline: Option<Instant> = None;
    loop {
        if stop.is_cancelled() {
            let deadline = *flush_deadline.get_or_insert_with(|| Instant::now() + final_flush);
            if Instant::now() >= deadline {
                break;
            }
        }
        let (reader, from) = (outbox.clone(), outbox.acked());
        let batch = match tokio::task::spawn_blocking(move || reader.read(from, BATCH)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::error!(zone = %zone, error = %e, "cannot read the outbox");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let Some(&(last, _)) = batch.last() else {
            if stop.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.cancelled() => {}
            }
            continue;
        };
        let count = batch.len() as u64;
        let records: Vec<KeyedRecord> = batch.into_iter().map(|(_, payload)| keyed(payload)).collect();
        match log.publish(records).await {
            Ok(()) => {
                let acker = outbox.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || acker.ack(last)).await {
                    tracing::error!(zone = %zone, error = %e, "cannot record the outbox acknowledgement");
                }
                metrics.published(count);
                backoff = Duration::from_millis(100);
                if let Some(since) = down_since.take() {
                    tracing::info!(zone = %zone, down_ms = since.elapsed().as_millis() as u64, "event publishing resumed");
                }
            }
            Err(e) => {
                metrics.publish_failed();
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::warn!(zone = %zone, error = %e, "event log unavailable; events wait in the outbox");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        metrics.outbox(outbox.stats());
    }
}
