//! Events reach Kafka and MySQL: published from the zone server's outbox to a
//! real Kafka-wire-compatible broker, stored by `respawn platform` in a real
//! MariaDB (both started by `scripts/services`), including events that waited
//! out a Kafka outage in the outbox of a zone server killed with `kill -9`.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use respawn_proto::events::{event::Kind, Event, TOPIC};
use support::{Client, Database, Platform, ZoneProcess, TEST_CONFIG};

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
            .current_dir(dir.path())
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

/// The ids of the events waiting in a zone's outbox under `data`.
fn outbox_ids(data: &std::path::Path, zone: u32) -> Result<std::collections::BTreeSet<String>> {
    let outbox = respawn_store::outbox::Outbox::open(&data.join(format!("outbox/zone-{zone}")), 1 << 30, 1 << 20)?;
    let records = outbox.read(outbox.acked(), usize::MAX)?;
    records.iter().map(|(_, bytes)| Ok(Event::decode_checked(bytes)?.id())).collect()
}

#[tokio::test]
async fn events_in_the_outbox_of_a_killed_zone_server_reach_mysql_once() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let brokers = format!("127.0.0.1:{port}");
    let keep = support::TempDir::new("outage")?;
    let data = keep.path().join("data");
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
    let waited = outbox_ids(&data, 1)?;
    assert!(!waited.is_empty(), "events were waiting at the kill");

    // Kafka, the platform server and the zone server come back.
    let _broker = Broker::start(port)?;
    let db = Database::create("outbox").await?;
    let platform = Platform::start(&brokers, &db.url(), &format!("platform-outbox-{player}"))?;
    let zone = ZoneProcess::start_full_with(TEST_CONFIG, &data, &args)?;

    let pool = sqlx::mysql::MySqlPoolOptions::new().connect_lazy(&db.url())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let rows: Vec<(u32, u64, u64, u32)> =
            sqlx::query_as("SELECT zone, epoch, tick, idx FROM events").fetch_all(&pool).await.unwrap_or_default();
        let stored: Vec<String> = rows.iter().map(|(z, e, t, i)| format!("{z}-{e}-{t}-{i}")).collect();
        if waited.iter().all(|id| stored.contains(id)) {
            break stored;
        }
        if Instant::now() > deadline {
            bail!("not every waiting event reached MySQL: {waited:?} vs {stored:?}; platform log:\n{}", platform.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let distinct: std::collections::BTreeSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "each event once");
    let (joins,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events WHERE player = ? AND kind = 'player_joined'")
        .bind(player)
        .fetch_one(&pool)
        .await?;
    assert_eq!(joins, 1, "the join made it after the outage and the crash, once");
    let m = support::scrape(zone.addr).await?;
    assert_eq!(support::metric(&m, r#"respawn_zone_outbox_dropped_events{zone="meadow"}"#), Some(0.0));
    Ok(())
}

/// Events a zone generated in this process, by the zone server's count.
async fn zone_events(addr: std::net::SocketAddr, zone: &str) -> Result<f64> {
    let samples = respawn_api::prom::parse(&support::scrape(addr).await?);
    Ok(respawn_api::prom::sum(&samples, "respawn_zone_events_total", &[("zone", zone)]))
}

#[tokio::test]
async fn a_session_travels_from_the_zone_through_kafka_into_mysql_every_event_once() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let db = Database::create("e2e").await?;
    let mut platform = Platform::start(&brokers, &db.url(), &format!("platform-e2e-{}", std::process::id()))?;
    let platform_addr = platform.addr;
    // No NPCs in meadow: nothing happens there unless the test does it, so counts hold still.
    let quiet = TEST_CONFIG.replacen("npc_count = 5", "npc_count = 0", 1);
    let zone = ZoneProcess::start_with_args(&quiet, &["--kafka-brokers", &brokers])?;
    let player = 9_000_000 + u64::from(std::process::id());
    let (_client, _) = Client::join(&zone.ws_url(), player, "recorded", "meadow").await?;

    let pool = sqlx::mysql::MySqlPoolOptions::new().connect_lazy(&db.url())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let row: Result<(i64,), _> =
            sqlx::query_as("SELECT COUNT(*) FROM events WHERE player = ? AND kind = 'player_joined'")
                .bind(player)
                .fetch_one(&pool)
                .await;
        if let Ok((n,)) = row {
            if n > 0 {
                break n;
            }
        }
        if Instant::now() > deadline {
            bail!("the join never reached MySQL; platform log:\n{}", platform.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found, 1, "stored exactly once");
    let (name, online): (String, bool) =
        sqlx::query_as("SELECT name, online FROM players WHERE player = ?").bind(player).fetch_one(&pool).await?;
    assert_eq!((name.as_str(), online), ("recorded", true), "the player record follows, in the same transaction");

    // Every event of the zone in this process (its epoch), counted by the zone server,
    // is in MySQL once, and the ids are those the topic holds.
    let (epoch,): (u64,) = sqlx::query_as("SELECT epoch FROM events WHERE player = ? AND kind = 'player_joined'")
        .bind(player)
        .fetch_one(&pool)
        .await?;
    let generated = zone_events(zone.addr, "meadow").await?;
    assert!(generated >= 2.0, "at least the zone's start and the join: {generated}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored_ids = loop {
        let rows: Vec<(u64, u32)> = sqlx::query_as("SELECT tick, idx FROM events WHERE zone = 1 AND epoch = ?")
            .bind(epoch)
            .fetch_all(&pool)
            .await?;
        if rows.len() as f64 >= generated || Instant::now() > deadline {
            break rows.into_iter().collect::<std::collections::BTreeSet<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored_ids.len() as f64, generated, "as many events stored as the zone generated");
    let consumer = subscribe(&brokers, format!("respawn-e2e-ids-{player}"))?;
    let mut in_topic = std::collections::BTreeSet::new();
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        let e = Event::decode(msg.payload().unwrap_or_default())?;
        if e.zone == 1 && e.epoch == epoch {
            in_topic.insert((e.tick, e.index));
        }
    }
    assert_eq!(in_topic, stored_ids, "the ids in MySQL are the ids in the topic");

    let m = support::scrape(platform_addr).await?;
    let stored = support::metric(&m, "respawn_platform_events_stored_total").unwrap_or(0.0);
    assert!(stored >= 1.0, "events stored counted: {stored}");
    assert_eq!(support::metric(&m, r#"respawn_platform_db_connections{state="max"}"#), Some(8.0));
    assert!(m.contains("respawn_platform_batch_duration_seconds_count"), "batch latency exported");
    for partition in 0..3 {
        let series = format!(r#"respawn_platform_consumer_lag{{partition="{partition}",topic="{TOPIC}"}}"#);
        support::wait_metric(platform_addr, &series, 0.0).await?;
    }
    std::process::Command::new("kill").args(["-TERM", &platform.child.id().to_string()]).status()?;
    let status = platform.child.wait()?;
    assert!(status.success(), "the platform consumer stops cleanly on SIGTERM");
    Ok(())
}

#[tokio::test]
async fn without_kafka_a_join_lands_once_in_the_embedded_ledger() -> Result<()> {
    let keep = support::TempDir::new("ledger")?;
    let data = keep.path().join("data");
    let zone = ZoneProcess::start_full_with(TEST_CONFIG, &data, &[])?;
    let player = 10_000_000 + u64::from(std::process::id());
    let (_client, _) = Client::join(&zone.ws_url(), player, "embedded", "meadow").await?;

    // The zone server writes the ledger; this test reads it as a second process would.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("events.sqlite")).read_only(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_lazy_with(options);
    let deadline = Instant::now() + Duration::from_secs(20);
    let joins = loop {
        let row: Result<(i64,), _> =
            sqlx::query_as("SELECT COUNT(*) FROM events WHERE player = ? AND kind = 'player_joined'")
                .bind(player as i64)
                .fetch_one(&pool)
                .await;
        match row {
            Ok((n,)) if n > 0 => break n,
            _ if Instant::now() > deadline => bail!("the join never reached the embedded ledger: {row:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(joins, 1);
    let (name, online): (String, bool) = sqlx::query_as("SELECT name, online FROM players WHERE player = ?")
        .bind(player as i64)
        .fetch_one(&pool)
        .await?;
    assert_eq!((name.as_str(), online), ("embedded", true), "the record follows in the same transaction");
    let (started,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE zone = 1 AND kind = 'zone_started'").fetch_one(&pool).await?;
    assert_eq!(started, 1, "the zone's start in this process is recorded once");

    // The same player on a second connection takes the character over: a resumed session.
    let (_second, welcome) = Client::join(&zone.ws_url(), player, "embedded", "meadow").await?;
    assert!(welcome.resumed);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events WHERE player = ? AND kind = 'session_resumed'")
            .bind(player as i64)
            .fetch_one(&pool)
            .await?;
        if n == 1 {
            break;
        }
        if Instant::now() > deadline {
            bail!("no session_resumed event in the ledger ({n})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = support::scrape(zone.addr).await?;
    assert!(support::metric(&m, r#"respawn_zone_events_published_total{zone="meadow"}"#).unwrap_or(0.0) >= 1.0);
    Ok(())
}

#[tokio::test]
async fn the_platform_server_serves_without_mysql_and_consumes_once_it_answers() -> Result<()> {
    use respawn_api::http;
    use respawn_harness::gate::Gate;
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let db = Database::create("late").await?;
    // MySQL unreachable at start: a gate in front of it, closed.
    let mut gate = Gate::open(0, db.server.trim_start_matches("mysql://root@").parse()?).await?;
    gate.cut();
    let via_gate = format!("mysql://root@127.0.0.1:{}/{}", gate.port, db.name);
    let platform = Platform::start(&brokers, &via_gate, &format!("platform-late-{}", std::process::id()))?;
    let addr = platform.addr.to_string();
    platform.wait_healthy().await?;
    let (code, body) = http::request(&addr, "GET", "/readyz", None).await?;
    assert_eq!(code, 503, "not ready while MySQL is away: {body}");
    assert!(body.contains("waiting for MySQL"), "{body}");
    assert!(http::scrape(&addr).await?.contains("respawn_platform_events_stored_total 0"));

    // A player joins meanwhile; then MySQL becomes reachable.
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--kafka-brokers", &brokers])?;
    let player = 11_000_000 + u64::from(std::process::id());
    let (_client, _) = Client::join(&zone.ws_url(), player, "patient", "meadow").await?;
    gate.reopen().await?;
    let pool = sqlx::mysql::MySqlPoolOptions::new().connect_lazy(&db.url())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http::request(&addr, "GET", "/readyz", None).await.map(|(code, _)| code).unwrap_or(0) == 200;
        let stored: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events WHERE player = ? AND kind = 'player_joined'")
            .bind(player)
            .fetch_one(&pool)
            .await
            .unwrap_or((0,));
        if ready && stored.0 == 1 {
            break;
        }
        if Instant::now() > deadline {
            bail!("ready {ready}, join stored {}; platform log:\n{}", stored.0, platform.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
