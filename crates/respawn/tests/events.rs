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

/// A consumer of the events topic in its own group, from the beginning.
fn subscribe(brokers: &str, group: String) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    Ok(consumer)
}

#[tokio::test]
async fn a_join_is_published_to_kafka_and_leaves_the_outbox() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS")
        .expect("RESPAWN_TEST_KAFKA_BROKERS is not set: run the tests through scripts/test");
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--kafka-brokers", &brokers])?;
    let player = 7_000_000 + u64::from(std::process::id());
    let (_client, _) = Client::join(&zone.ws_url(), player, "kafkaesque", "meadow").await?;

    let consumer = subscribe(&brokers, format!("respawn-events-test-{player}"))?;
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

/// A Tansu broker this test owns: started late, on a port chosen up front.
struct Broker {
    child: std::process::Child,
    _dir: support::TempDir,
}

impl Broker {
    fn start(port: u16) -> Result<Self> {
        let tansu =
            std::env::var("RESPAWN_TANSU").expect("RESPAWN_TANSU is not set: run the tests through scripts/test");
        let dir = support::TempDir::new("broker")?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://events.db"])
            .current_dir(&dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let made = std::process::Command::new(&tansu)
                .args(["topic", "create", TOPIC, "--broker", &url, "--partitions", "3"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?;
            if made.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the broker did not take the topic");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { child, _dir: dir })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn events_wait_out_a_kafka_outage_and_a_crash_then_arrive() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let brokers = format!("127.0.0.1:{port}");
    let keep = support::TempDir::new("outage")?;
    let data = keep.0.join("data");
    let args = ["--kafka-brokers", brokers.as_str()];
    let player = 8_000_000 + u64::from(std::process::id());

    // Kafka is down: the game goes on, the events wait in the outbox.
    let zone = ZoneProcess::start_full_with(TEST_CONFIG, &data, &args)?;
    let (client, _) = Client::join(&zone.ws_url(), player, "patient", "meadow").await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m = support::scrape(zone.addr).await?;
    let waiting = support::metric(&m, r#"respawn_zone_outbox_pending_events{zone="meadow"}"#).unwrap_or(0.0);
    assert!(waiting >= 1.0, "the join waits in the outbox");
    drop(client);

    // The zone server is killed (SIGKILL) with the events still in its outbox.
    drop(zone);
    let _broker = Broker::start(port)?;
    let zone = ZoneProcess::start_full_with(TEST_CONFIG, &data, &args)?;

    let consumer = subscribe(&brokers, format!("respawn-outage-test-{player}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await else {
            if ids.iter().any(|(_, joined)| *joined) {
                break;
            }
            continue;
        };
        let event = Event::decode(msg.payload().unwrap_or_default())?;
        if event.player == player {
            ids.push((event.id(), matches!(event.kind, Some(Kind::PlayerJoined(_)))));
        }
    }
    assert!(ids.iter().any(|(_, joined)| *joined), "the join made it after the outage and the crash: {ids:?}");
    let m = support::scrape(zone.addr).await?;
    assert_eq!(support::metric(&m, r#"respawn_zone_outbox_dropped_events{zone="meadow"}"#), Some(0.0));
    Ok(())
}

#[tokio::test]
async fn a_join_travels_from_the_zone_through_kafka_into_mysql() -> Result<()> {
    use sqlx::Connection;
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let server = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
    let database = format!("respawn_e2e_{}", std::process::id());
    let mut db = sqlx::MySqlConnection::connect(&server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database}")).execute(&mut db).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut db).await?;
    let url = format!("{server}/{database}");

    let log_dir = support::TempDir::new("platform")?;
    let log_path = log_dir.0.join("platform.log");
    let platform_addr: std::net::SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut platform = std::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["platform", "--listen", &platform_addr.to_string()])
        .env("RESPAWN_KAFKA_BROKERS", &brokers)
        .env("RESPAWN_MYSQL_URL", &url)
        .env("RESPAWN_CONSUMER_GROUP", format!("platform-e2e-{}", std::process::id()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--kafka-brokers", &brokers])?;
    let player = 9_000_000 + u64::from(std::process::id());
    let (_client, _) = Client::join(&zone.ws_url(), player, "recorded", "meadow").await?;

    let mut db = sqlx::MySqlConnection::connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        if let Ok(conn) = db.as_mut() {
            let row: Result<(i64,), _> =
                sqlx::query_as("SELECT COUNT(*) FROM events WHERE player = ? AND kind = 'player_joined'")
                    .bind(player)
                    .fetch_one(&mut *conn)
                    .await;
            if let Ok((n,)) = row {
                if n > 0 {
                    break n;
                }
            }
        } else {
            db = sqlx::MySqlConnection::connect(&url).await;
        }
        if Instant::now() > deadline {
            let _ = platform.kill();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the join never reached MySQL; platform log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found, 1, "stored exactly once");
    let (name, online): (String, bool) =
        sqlx::query_as("SELECT name, online FROM players WHERE player = ?").bind(player).fetch_one(&mut db?).await?;
    assert_eq!((name.as_str(), online), ("recorded", true), "the player record follows, in the same transaction");

    let m = support::scrape(platform_addr).await?;
    let stored = support::metric(&m, "respawn_platform_events_stored_total").unwrap_or(0.0);
    assert!(stored >= 1.0, "events stored counted: {stored}");
    assert_eq!(support::metric(&m, r#"respawn_platform_db_connections{state="max"}"#), Some(8.0));
    assert!(m.contains("respawn_platform_batch_duration_seconds_count"), "batch latency exported");
    for partition in 0..3 {
        let series = format!(r#"respawn_platform_consumer_lag{{partition="{partition}",topic="{TOPIC}"}}"#);
        support::wait_metric(platform_addr, &series, 0.0).await?;
    }
    std::process::Command::new("kill").args(["-TERM", &platform.id().to_string()]).status()?;
    let status = platform.wait()?;
    assert!(status.success(), "the platform consumer stops cleanly on SIGTERM");
    Ok(())
}
