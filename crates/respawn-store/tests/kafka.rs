//! The Kafka event log against a real Kafka-wire-compatible broker started by
//! `scripts/services` (which exports RESPAWN_TEST_KAFKA_BROKERS).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use respawn_store::kafka::{EventLog, KafkaEventLog, KeyedRecord};
use respawn_store::StoreError;

fn brokers() -> String {
    std::env::var("RESPAWN_TEST_KAFKA_BROKERS")
        .expect("RESPAWN_TEST_KAFKA_BROKERS is not set: run the tests through scripts/test or scripts/services run")
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let results = admin
        .create_topics(&[NewTopic::new(topic, 3, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// A consumer of `topic` in its own group, from the beginning.
fn subscribe(brokers: &str, topic: &str, group: String) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

#[tokio::test]
async fn every_record_arrives_once_in_order_per_key() {
    let brokers = brokers();
    let topic = format!("respawn-test-{}", respawn_harness::unique_suffix());
    create_topic(&brokers, &topic).await;
    let log = KafkaEventLog::new(&brokers, &topic, Duration::from_secs(20)).expect("producer");
    let records: Vec<KeyedRecord> = (0u32..2_000)
        .map(|i| KeyedRecord { key: u64::from(i % 10).to_be_bytes(), payload: i.to_le_bytes().to_vec() })
        .collect();
    for chunk in records.chunks(500) {
        log.publish(chunk.to_vec()).await.expect("published");
    }

    let consumer = subscribe(&brokers, &topic, format!("respawn-test-{}", respawn_harness::unique_suffix()));
    let mut by_key: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count < 2_000 && Instant::now() < deadline {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await else { continue };
        let payload = msg.payload().expect("payload");
        let value = u32::from_le_bytes(payload.try_into().expect("4 bytes"));
        by_key.entry(msg.key().expect("key").to_vec()).or_default().push(value);
        count += 1;
    }
    assert_eq!(count, 2_000, "every record arrived, none twice");
    for (key, values) in by_key {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "key {key:?} in order");
        assert_eq!(values.len(), 200);
    }
}

#[tokio::test]
async fn a_dead_broker_is_an_error_not_a_hang() {
    let log = KafkaEventLog::new("127.0.0.1:1", "nowhere", Duration::from_secs(2)).expect("producer");
    let started = Instant::now();
    let result = log.publish(vec![KeyedRecord { key: [0; 8], payload: vec![1] }]).await;
    assert!(matches!(result, Err(StoreError::Unavailable { .. })), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by the delivery timeout");
}

#[tokio::test]
async fn a_consumer_that_caught_up_gets_new_records() {
    let brokers = brokers();
    let topic = format!("respawn-tail-{}", respawn_harness::unique_suffix());
    create_topic(&brokers, &topic).await;
    let log = KafkaEventLog::new(&brokers, &topic, Duration::from_secs(20)).expect("producer");
    log.publish(vec![KeyedRecord { key: [1; 8], payload: vec![1] }]).await.expect("published");
    let consumer = subscribe(&brokers, &topic, format!("respawn-tail-{}", respawn_harness::unique_suffix()));
    let first = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await;
    assert!(matches!(first, Ok(Ok(_))), "backlog record");
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync).expect("commit");
    // New records on every partition, including ones that were empty before.
    let fresh: Vec<KeyedRecord> = (2u8..12).map(|k| KeyedRecord { key: [k; 8], payload: vec![k] }).collect();
    log.publish(fresh).await.expect("published");
    let mut got = Vec::new();
    while got.len() < 10 {
        match tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await {
            Ok(Ok(m)) => got.push(m.payload().map(|p| p[0]).unwrap_or_default()),
            _ => break,
        }
    }
    got.sort_unstable();
    assert_eq!(got, (2u8..12).collect::<Vec<_>>(), "every live record, on every partition");
}
