//! Events reach Kafka: a player's join, published from the zone server's
//! outbox to a real Kafka-wire-compatible broker started by `scripts/services`.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use respawn_proto::events::{event::Kind, Event, TOPIC};
use support::{Client, ZoneProcess, TEST_CONFIG};

#[tokio::test]
async fn a_join_is_published_to_kafka_and_leaves_the_outbox() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS")
        .expect("RESPAWN_TEST_KAFKA_BROKERS is not set: run the tests through scripts/test");
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--kafka-brokers", &brokers])?;
    let player = 7_000_000 + u64::from(std::process::id());
    let (_client, _) = Client::join(&zone.ws_url(), player, "kafkaesque", "meadow").await?;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("respawn-events-test-{player}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = loop {
        if Instant::now() > deadline {
            bail!("no player_joined event for {player} on {TOPIC}");
        }
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await else { continue };
        let event = Event::decode(msg.payload().unwrap_or_default())?;
        if event.player == player {
            if let Some(Kind::PlayerJoined(j)) = &event.kind {
                assert_eq!(msg.key(), Some(&player.to_be_bytes()[..]), "keyed by player");
                break (event.clone(), j.name.clone());
            }
        }
    };
    assert_eq!(joined.1, "kafkaesque");
    assert_eq!(joined.0.zone, 1);
    assert!(joined.0.tick > 0);

    // The broker acknowledged it, so the outbox let it go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = support::scrape(zone.addr).await?;
        let pending = support::metric(&m, r#"respawn_zone_outbox_pending_events{zone="meadow"}"#);
        let published = support::metric(&m, r#"respawn_zone_events_published_total{zone="meadow"}"#).unwrap_or(0.0);
        if pending == Some(0.0) && published >= 1.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("outbox not drained: pending {pending:?}, published {published}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
