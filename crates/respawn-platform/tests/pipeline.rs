//! Kafka → MySQL through the real consumer, against a real broker and a real
//! MariaDB started by `scripts/services`: every event stored once whatever is
//! redelivered, malformed ones skipped, and offsets committed after storing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use respawn_harness::gate::Gate;
use respawn_platform::metrics::ErrorKind;
use respawn_platform::{connect, run_consumer, ConsumerConfig, PlatformMetrics};
use respawn_proto::events::{event::Kind, Event, LevelUp, EVENT_SCHEMA_VERSION};
use respawn_store::kafka::{EventLog, KafkaEventLog, KeyedRecord};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

fn event(zone: u32, tick: u64, player: u64) -> KeyedRecord {
    let e = Event {
        schema_version: EVENT_SCHEMA_VERSION,
        zone,
        tick,
        index: 0,
        player,
        epoch: 1,
        incarnation: 0,
        kind: Some(Kind::LevelUp(LevelUp { level: 2 })),
    };
    KeyedRecord { key: player.to_be_bytes(), payload: e.encode_to_vec() }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    respawn_harness::wait_until(what, Duration::from_secs(30), || std::future::ready(Ok(done()))).await
}

#[tokio::test]
async fn events_are_stored_once_and_offsets_follow_the_commit() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let server = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
    let database = format!("respawn_test_{}", respawn_harness::unique_suffix());
    let mut admin_db = sqlx::MySqlConnection::connect(&server).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin_db).await?;
    let ledger = connect(&format!("{server}/{database}"), Duration::from_secs(10)).await?;
    let pool = ledger.pool.clone();

    let topic = format!("respawn-pipeline-{}", respawn_harness::unique_suffix());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    for r in admin.create_topics(&[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("topic {t}: {e}"))?;
    }
    let log = KafkaEventLog::new(&brokers, &topic, Duration::from_secs(20))?;
    let events: Vec<KeyedRecord> = (1..=500u64).map(|t| event((t % 3) as u32 + 1, t, t % 7)).collect();
    log.publish(events.clone()).await?;
    // Redelivery (a publisher retry) and one record that is not an event.
    log.publish(events[..100].to_vec()).await?;
    log.publish(vec![KeyedRecord { key: [0; 8], payload: vec![0xff, 0xff, 0xff] }]).await?;

    let config = ConsumerConfig {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group: format!("platform-test-{}", respawn_harness::unique_suffix()),
        batch_max: 200,
        batch_wait: Duration::from_millis(50),
    };
    let stats = Arc::new(PlatformMetrics::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_consumer(Arc::new(ledger.clone()), config.clone(), stats.clone(), stop.clone()));
    wait_for("500 stored, 100 duplicates, 1 malformed", || {
        stats.stored.get() == 500 && stats.duplicates.get() == 100 && stats.errors(ErrorKind::Malformed) == 1
    })
    .await?;
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(&pool).await?;
    assert_eq!(rows, 500, "each event once");
    let (about_players,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE player <> 0").fetch_one(&pool).await?;
    let (folded,): (i64,) = sqlx::query_as("SELECT CAST(SUM(events) AS SIGNED) FROM players").fetch_one(&pool).await?;
    assert_eq!(folded, about_players, "player records folded each stored event once");
    stop.cancel();
    task.await??;

    // A new consumer in the same group starts after the committed offsets.
    log.publish(vec![event(1, 10_000, 1)]).await?;
    let stats = Arc::new(PlatformMetrics::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_consumer(Arc::new(ledger.clone()), config, stats.clone(), stop.clone()));
    wait_for("the new event", || stats.stored.get() == 1).await?;
    assert_eq!(stats.duplicates.get(), 0, "nothing before the commit was delivered again");
    stop.cancel();
    task.await??;
    sqlx::query(&format!("DROP DATABASE {database}")).execute(&mut admin_db).await?;
    Ok(())
}

#[tokio::test]
async fn while_mysql_is_down_nothing_is_committed_and_it_catches_up_after() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let server = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
    let database = format!("respawn_down_{}", respawn_harness::unique_suffix());
    let mut admin_db = sqlx::MySqlConnection::connect(&server).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin_db).await?;
    let upstream = server.trim_start_matches("mysql://root@").parse()?;
    let mut gate = Gate::open(0, upstream).await?;
    let via_proxy = format!("mysql://root@127.0.0.1:{}/{database}", gate.port);
    let ledger = connect(&via_proxy, Duration::from_secs(10)).await?;

    let topic = format!("respawn-down-{}", respawn_harness::unique_suffix());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    for r in admin.create_topics(&[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("topic {t}: {e}"))?;
    }
    let log = KafkaEventLog::new(&brokers, &topic, Duration::from_secs(20))?;
    let config = ConsumerConfig {
        brokers: brokers.clone(),
        topic,
        group: format!("platform-down-{}", respawn_harness::unique_suffix()),
        batch_max: 100,
        batch_wait: Duration::from_millis(20),
    };
    let stats = Arc::new(PlatformMetrics::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_consumer(Arc::new(ledger.clone()), config, stats.clone(), stop.clone()));
    log.publish((1..=100u64).map(|t| event(1, t, t)).collect()).await?;
    wait_for("the first 100", || stats.stored.get() == 100).await?;

    // MySQL goes away; events keep coming; the consumer retries, stores nothing, does not crash.
    gate.cut();
    log.publish((101..=300u64).map(|t| event(1, t, t)).collect()).await?;
    wait_for("failed store attempts", || stats.errors(ErrorKind::Store) >= 2).await?;
    assert_eq!(stats.stored.get(), 100);
    assert!(!task.is_finished(), "no crash");

    // MySQL is back on the same address: it catches up by itself, each event once.
    gate.reopen().await?;
    wait_for("the backlog", || stats.stored.get() == 300).await?;
    let direct = connect(&format!("{server}/{database}"), Duration::from_secs(5)).await?;
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events").fetch_one(&direct.pool).await?;
    assert_eq!(rows, 300);
    stop.cancel();
    task.await??;
    sqlx::query(&format!("DROP DATABASE {database}")).execute(&mut admin_db).await?;
    Ok(())
}
