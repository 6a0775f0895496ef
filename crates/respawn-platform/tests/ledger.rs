//! One contract for every event ledger, run against real MariaDB (started by
//! `scripts/services`) and a real SQLite file: events stored once whatever
//! is redelivered, and player records that fold each stored event once, in
//! the same transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use respawn_platform::ledger::{EventCursor, EventQuery};
use respawn_platform::projection::fold;
use respawn_platform::{connect, Ledger, SqliteLedger};
use respawn_proto::events::{self as ev, event::Kind, Event, EVENT_SCHEMA_VERSION};
use sqlx::Connection;

fn session(player: u64, zone: u32, first_tick: u64) -> Vec<Event> {
    let kinds = [
        Kind::PlayerJoined(ev::PlayerJoined { name: "ada".into(), entity: 1, character: None }),
        Kind::ItemAcquired(ev::ItemAcquired { item: 3, count: 1 }),
        Kind::GoldChanged(ev::GoldChanged { delta: 5, total: 5 }),
        Kind::ItemAcquired(ev::ItemAcquired { item: 3, count: 1 }),
        Kind::XpGained(ev::XpGained { amount: 120, total: 120 }),
        Kind::LevelUp(ev::LevelUp { level: 2 }),
        Kind::ItemAcquired(ev::ItemAcquired { item: 2, count: 1 }),
        Kind::GoldChanged(ev::GoldChanged { delta: 7, total: 12 }),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            schema_version: EVENT_SCHEMA_VERSION,
            zone,
            tick: first_tick + i as u64,
            index: 0,
            player,
            // A real epoch is a nanosecond timestamp: past 2^32, within 2^63.
            epoch: 1_795_000_000_000_000_000,
            incarnation: 0,
            kind: Some(kind),
        })
        .collect()
}

/// One stay of a kept character in `zone`: it comes in with `gold`, picks
/// up 5 more and a gem, and leaves.
fn stay(player: u64, zone: u32, epoch: u64, incarnation: u64, gold: u64) -> Vec<Event> {
    let character = |gold: u64, gems: u32| ev::Character {
        incarnation,
        level: 3,
        xp: 400,
        gold,
        inventory: vec![ev::ItemStack { item: 3, count: gems }],
        zone: format!("zone-{zone}"),
        x: 1_000,
        y: -20,
    };
    let left = character(gold + 5, 2);
    let kinds = [
        Kind::PlayerJoined(ev::PlayerJoined { name: "bea".into(), entity: 4, character: Some(character(gold, 1)) }),
        Kind::GoldChanged(ev::GoldChanged { delta: 5, total: gold + 5 }),
        Kind::ItemAcquired(ev::ItemAcquired { item: 3, count: 1 }),
        Kind::PlayerLeft(ev::PlayerLeft {
            level: 3,
            xp: 400,
            gold: left.gold,
            character: Some(left),
            travel: String::new(),
        }),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            schema_version: EVENT_SCHEMA_VERSION,
            zone,
            tick: 10 + i as u64,
            index: 0,
            player,
            epoch,
            incarnation,
            kind: Some(kind),
        })
        .collect()
}

/// Kept characters: claims at the store, and a stale writer's events kept
/// in the ledger but out of the record.
async fn characters(ledger: &dyn Ledger) -> Result<()> {
    use respawn_platform::projection::{Claim, Hold};
    let bea = u64::MAX - 7;
    let (claim, record) = ledger.claim(bea, "bea", "meadow", 1_000).await?;
    assert_eq!((claim, record.name.as_str(), record.level), (Claim::Granted { incarnation: 1 }, "bea", 1));
    let (claim, _) = ledger.claim(bea, "bea", "forest", 1_001).await?;
    assert_eq!(claim, Claim::Elsewhere { zone: "meadow".into() }, "claimed for meadow");

    let first = ledger.store(&stay(bea, 1, 50, 1, 20)).await?;
    assert_eq!((first.inserted, first.stale), (4, 0));
    let at_rest = ledger.player(bea).await?.expect("a record");
    assert_eq!((at_rest.hold.clone(), at_rest.incarnation, at_rest.gold), (Hold::AtRest, 1, 25));
    assert_eq!((at_rest.place.clone(), at_rest.inventory_text()), (Some(("zone-1".into(), 1_000, -20)), "3:2".into()));

    let (claim, record) = ledger.claim(bea, "ignored", "forest", 2_000).await?;
    assert_eq!((claim, record.gold, record.name.as_str()), (Claim::Granted { incarnation: 2 }, 25, "bea"));
    // The first stay again from a zone that went back in time (a new epoch): stored, not taken.
    let replayed = ledger.store(&stay(bea, 1, 51, 1, 20)).await?;
    assert_eq!((replayed.inserted, replayed.stale), (4, 4));
    let record = ledger.player(bea).await?.expect("a record");
    assert_eq!((record.gold, record.incarnation), (25, 2));
    assert_eq!(record.hold, Hold::Claimed { zone: "forest".into(), at_ms: 2_000 });
    Ok(())
}

async fn contract(ledger: &dyn Ledger) -> Result<()> {
    // A player id with the top bit set survives a signed 64-bit column.
    let player = u64::MAX - 41;
    let events = session(player, 2, 100);
    // The first half, then everything again (a redelivery overlapping new
    // events), then the tail again; one batch holds an event twice.
    let first = ledger.store(&events[..4]).await?;
    assert_eq!((first.inserted, first.duplicates, first.players), (4, 0, 1));
    let stored = ledger.store(&events).await?;
    assert_eq!((stored.inserted, stored.duplicates), (4, 4));
    let again = ledger.store(&events[6..]).await?;
    assert_eq!((again.inserted, again.duplicates, again.players), (0, 2, 0));
    let twice = session(7, 1, 500);
    let in_one_batch = [twice[0].clone(), twice[1].clone(), twice[0].clone()];
    let s = ledger.store(&in_one_batch).await?;
    assert_eq!((s.inserted, s.duplicates), (2, 1));
    assert_eq!(ledger.event_count().await?, 10);

    let mut expected = BTreeMap::new();
    fold(&mut expected, &events.iter().collect::<Vec<_>>());
    fold(&mut expected, &twice[..2].iter().collect::<Vec<_>>());
    let record = ledger.player(player).await?.expect("a record");
    assert_eq!(record, expected[&player]);
    assert_eq!(record.inventory_text(), "2:1,3:2");
    assert_eq!((record.level, record.xp, record.gold, record.events), (2, 120, 12, 8));
    assert_eq!(ledger.player(7).await?.expect("a record").events, 2, "the event stored twice in a batch folds once");
    assert_eq!(ledger.player(43).await?, None);
    assert!(ledger.pool_stats().max >= 1);
    audit_trail(ledger).await?;
    // An event the database refuses is kept apart, once however often it comes.
    for _ in 0..2 {
        ledger.refuse(&events[0], "Data too long for column 'payload'").await?;
    }
    assert_eq!(ledger.event_count().await?, 10, "refused events are not events");
    search(ledger, player).await?;
    characters(ledger).await
}

/// The append-only audit trail: both lists apart, newest first, paged.
async fn audit_trail(ledger: &dyn Ledger) -> Result<()> {
    use respawn_store::ops::{AuditLog, AuditRecord};
    let record = |n: u64| AuditRecord {
        at_ms: 1_700_000_000_000 + n,
        actor: "ann".into(),
        action: "kick".into(),
        target: format!("player {n} «é»"),
        result: "ok".into(),
    };
    for (log, n) in [(AuditLog::Actions, 1), (AuditLog::Refusals, 2), (AuditLog::Actions, 3)] {
        ledger.audit(log, &record(n)).await?;
    }
    assert_eq!(ledger.audit_trail(AuditLog::Actions, 0, 10).await?, vec![record(3), record(1)]);
    assert_eq!(ledger.audit_trail(AuditLog::Actions, 1, 1).await?, vec![record(1)]);
    assert_eq!(ledger.audit_trail(AuditLog::Refusals, 0, 10).await?, vec![record(2)]);
    assert!(ledger.audit_trail(AuditLog::Actions, u64::MAX, 10).await?.is_empty());
    Ok(())
}

/// Event search: filters, newest first, pages that neither skip nor repeat.
async fn search(ledger: &dyn Ledger, player: u64) -> Result<()> {
    let all = ledger.search(&EventQuery { limit: 100, ..EventQuery::default() }).await?;
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| (w[0].stored_at_ms, w[0].key) > (w[1].stored_at_ms, w[1].key)), "newest first");
    let theirs = ledger.search(&EventQuery { player: Some(player), limit: 100, ..EventQuery::default() }).await?;
    assert_eq!(theirs.len(), 8);
    assert!(theirs.iter().all(|r| r.player == player));
    let gold =
        EventQuery { player: Some(player), kind: Some("gold_changed".into()), limit: 100, ..EventQuery::default() };
    let gold = ledger.search(&gold).await?;
    assert_eq!(gold.iter().map(|r| r.key.2).collect::<Vec<_>>(), vec![107, 102], "gold changes, newest first");
    let event = <Event as prost::Message>::decode(gold[0].payload.as_slice())?;
    assert!(matches!(event.kind, Some(Kind::GoldChanged(ev::GoldChanged { total: 12, .. }))));
    let injection = EventQuery { kind: Some("x' OR '1'='1".into()), limit: 100, ..EventQuery::default() };
    assert!(ledger.search(&injection).await?.is_empty(), "filters are bound, not spliced");

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = ledger.search(&EventQuery { limit: 3, after, ..EventQuery::default() }).await?;
        let Some(last) = page.last() else { break };
        after = Some(EventCursor::decode(&last.cursor().encode()).expect("a cursor reads back"));
        pages.extend(page);
    }
    assert_eq!(pages, all, "pages of 3 add up to the whole, in order");

    let now_ms = respawn_api::clock::unix_ms();
    let recent = EventQuery { since_ms: Some(now_ms - 600_000), limit: 100, ..EventQuery::default() };
    assert_eq!(ledger.search(&recent).await?.len(), 10, "stored in the last ten minutes");
    let future = EventQuery { since_ms: Some(now_ms + 600_000), limit: 100, ..EventQuery::default() };
    assert!(ledger.search(&future).await?.is_empty());
    let past = EventQuery { until_ms: Some(now_ms - 600_000), limit: 100, ..EventQuery::default() };
    assert!(ledger.search(&past).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_mysql_ledger_keeps_the_contract() -> Result<()> {
    let server = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
    let database = format!("respawn_ledger_{}", respawn_harness::unique_suffix());
    let mut admin = sqlx::MySqlConnection::connect(&server).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await?;
    let ledger = connect(&format!("{server}/{database}"), Duration::from_secs(10)).await?;
    contract(&ledger).await?;
    sqlx::query(&format!("DROP DATABASE {database}")).execute(&mut admin).await?;
    Ok(())
}

#[tokio::test]
async fn the_sqlite_ledger_keeps_the_contract_and_its_data_across_reopening() -> Result<()> {
    let dir = respawn_harness::TempDir::new("ledger-test")?;
    let path = dir.path().join("events.sqlite");
    contract(&SqliteLedger::open(&path).await?).await?;
    let reopened = SqliteLedger::open(&path).await?;
    assert_eq!(reopened.event_count().await?, 18, "the migration runs again harmlessly and the data stays");
    Ok(())
}
