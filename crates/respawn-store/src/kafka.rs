//! Publishing events to Kafka with an idempotent producer (acks=all), keyed
//! by player, in order. A call returns only when the broker acknowledged
//! every record, or fails as a whole (the caller sends the batch again; event
//! ids make the repeat harmless downstream).

use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{StoreError, StoreResult};

const BACKEND: &str = "kafka";

/// One record to publish: the partition key and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    pub key: [u8; 8],
    pub payload: Vec<u8>,
}

/// Where the zone server's events go.
pub trait EventLog: Send + Sync + std::fmt::Debug {
    /// Publishes `records` in order; `Ok` once all are acknowledged.
    fn publish(&self, records: Vec<KeyedRecord>) -> BoxFuture<'_, StoreResult<()>>;
}

pub struct KafkaEventLog {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEventLog").field("topic", &self.topic).finish()
    }
}

impl KafkaEventLog {
    /// `brokers` like `127.0.0.1:9092`. Messages not acknowledged within
    /// `delivery_timeout` fail, so a dead broker surfaces as an error the
    /// caller retries, not as an endless wait.
    pub fn new(brokers: &str, topic: &str, delivery_timeout: Duration) -> StoreResult<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
            .set("socket.connection.setup.timeout.ms", "2000")
            // librdkafka backs off reconnects up to 10 s by default; a healed broker should see us within 1 s.
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .map_err(|e| StoreError::Invalid(format!("kafka producer for {brokers}: {e}")))?;
        Ok(Self { producer, topic: topic.to_owned() })
    }
}

impl EventLog for KafkaEventLog {
    fn publish(&self, records: Vec<KeyedRecord>) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut deliveries = Vec::with_capacity(records.len());
            for r in &records {
                let record = FutureRecord::to(&self.topic).key(&r.key[..]).payload(&r.payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((e, _)) => {
                        return Err(StoreError::Unavailable { backend: BACKEND, message: format!("enqueue: {e}") })
                    }
                }
            }
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        return Err(StoreError::Unavailable { backend: BACKEND, message: e.to_string() })
                    }
                    Err(_) => {
                        return Err(StoreError::Unavailable { backend: BACKEND, message: "delivery cancelled".into() })
                    }
                }
            }
            Ok(())
        }
        .boxed()
    }
}
