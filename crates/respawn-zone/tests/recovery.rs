//! Recovery proves itself: a zone that loses its process is rebuilt from the
//! newest snapshot plus the journal, byte for byte identical to the lost state
//! at the last durable tick. Runs on the embedded stores and, through
//! `scripts/services`, on real Redis and a MongoDB-wire-compatible server.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use respawn_proto::events::Event;
use respawn_sim::rng::Rng;
use respawn_sim::{Command, CommandKind, Point, Zone, ZoneConfig};
use respawn_store::history::{HistorySegment, StateHash};
use respawn_store::mongo::MongoColdSnapshots;
use respawn_store::outbox::Outbox;
use respawn_store::redis_store::{RedisConn, RedisHotSnapshots, RedisJournal, RedisLeases, RedisSessions};
use respawn_store::{Fence, SnapshotMeta, StoreResult, StoredSnapshot};
use respawn_zone::lease::{HeldLease, Taken};
use respawn_zone::metrics::Metrics;
use respawn_zone::persist::{self, PersistMsg, PersistSettings, PersistState, RestoreSource, Stores, ZonePersistence};

fn config() -> ZoneConfig {
    let mut c = ZoneConfig::standard(11, "recovery", 5).resized(4_000, 4_000);
    c.npc_count = 8;
    c
}

fn file_stores() -> (Stores, respawn_harness::TempDir) {
    let dir = respawn_harness::TempDir::new("recovery").expect("temp dir");
    (Stores::files(dir.path()), dir)
}

async fn real_stores() -> Stores {
    let url = std::env::var("RESPAWN_TEST_REDIS_URL").expect("RESPAWN_TEST_REDIS_URL: run through scripts/test");
    let uri = std::env::var("RESPAWN_TEST_MONGO_URI").expect("RESPAWN_TEST_MONGO_URI: run through scripts/test");
    let conn = RedisConn::new(&url, &format!("recovery-{}", respawn_harness::unique_suffix())).expect("redis url");
    let database = format!("recovery_{}", respawn_harness::unique_suffix());
    Stores {
        hot: Arc::new(RedisHotSnapshots::new(conn.clone())),
        cold: Arc::new(MongoColdSnapshots::new(&uri, &database).await.expect("mongo")),
        history: Arc::new(MongoColdSnapshots::history(&uri, &database).await.expect("mongo")),
        journal: Arc::new(RedisJournal::new(conn.clone())),
        sessions: Arc::new(RedisSessions::new(conn.clone())),
        leases: Arc::new(RedisLeases::new(conn)),
        description: "redis + mongodb".into(),
    }
}

/// What a played zone left behind.
struct Played {
    zone: Zone,
    /// `(tick, event id)` of every event the ticks produced.
    events: Vec<(u64, String)>,
    outbox: Arc<Outbox>,
}

/// Plays `ticks` ticks with a persister, snapshots every `snapshot_every`
/// ticks, then "crashes" (no final snapshot). Returns the zone as it was at
/// the crash, once everything written is durable.
async fn play_and_crash(stores: &Stores, ticks: u64, snapshot_every: u64) -> Zone {
    play(stores, ticks, snapshot_every).await.zone
}

/// A write as if by an owner newer than every lease granted so far.
const NEWEST: Fence = Fence(u64::MAX);

const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The zone's lease for `owner`, as a zone server takes it before it starts the zone.
async fn take_lease(stores: &Stores, owner: &str) -> (Arc<HeldLease>, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (lost, told) = tokio::sync::mpsc::unbounded_channel();
    match HeldLease::take(stores.leases.clone(), 11, "recovery", owner, LEASE_TTL, lost).await.expect("lease store") {
        Taken::Held(lease) => (lease, told),
        Taken::ByOther { owner } => panic!("the zone's lease is held by {owner}"),
    }
}

/// A running persister of zone 11, writing with `lease`'s fence.
struct Persisting {
    tx: tokio::sync::mpsc::Sender<PersistMsg>,
    state: Arc<PersistState>,
    outbox: Arc<Outbox>,
    task: tokio::task::JoinHandle<()>,
}

fn persist_with(stores: &Stores, lease: Arc<HeldLease>) -> Persisting {
    persist_with_settings(stores, lease, PersistSettings::default())
}

fn persist_with_settings(stores: &Stores, lease: Arc<HeldLease>, settings: PersistSettings) -> Persisting {
    let state = Arc::new(PersistState::default());
    let (tx, rx) = persist::queue();
    let outbox_dir = std::env::temp_dir().join(format!("respawn-recovery-outbox-{}", respawn_harness::unique_suffix()));
    let outbox = Arc::new(Outbox::open(&outbox_dir, 1 << 30, 1 << 20).expect("outbox"));
    let task = tokio::spawn(persist::run_persister(
        ZonePersistence {
            zone: 11,
            name: "recovery".into(),
            stores: stores.clone(),
            outbox: outbox.clone(),
            settings,
            state: state.clone(),
            metrics: Metrics::new("test").persist("recovery"),
            lease,
            epoch: 0,
        },
        rx,
    ));
    Persisting { tx, state, outbox, task }
}

async fn play(stores: &Stores, ticks: u64, snapshot_every: u64) -> Played {
    let (lease, _told) = take_lease(stores, "recovery-test").await;
    let Persisting { tx, state, outbox, task: persister } = persist_with(stores, lease.clone());
    let mut events = Vec::new();
    let mut zone = Zone::new(config()).expect("zone");
    let mut rng = Rng::new(9);
    for tick in 1..=ticks {
        let mut batch = Vec::new();
        if tick == 1 {
            for p in 1..=6 {
                batch.push(Command { player: p, seq: 0, kind: CommandKind::join_fresh(format!("p{p}")) });
            }
        }
        for p in 1..=6u64 {
            let kind = match rng.below(4) {
                0 => CommandKind::Move { velocity: Point::new(rng.range_i32(-30, 30), rng.range_i32(-20, 20)) },
                1 => CommandKind::Attack { target: rng.below(40) },
                2 => CommandKind::Pickup { item: rng.below(80) },
                _ => continue,
            };
            batch.push(Command { player: p, seq: tick as u32, kind });
        }
        let out = zone.tick(&batch);
        events.extend(out.events.iter().map(|e| (tick, e.id.to_string())));
        let encoded = respawn_zone::events::encode_all(&out.events);
        let msg = PersistMsg::Tick {
            tick,
            batch: respawn_sim::command::encode_batch(&batch),
            events: encoded,
            attended: true,
        };
        tx.send(msg).await.expect("persister");
        if tick % snapshot_every == 0 {
            tx.send(PersistMsg::Snapshot { tick, bytes: zone.encode_snapshot() }).await.expect("persister");
        }
        if tick % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    persister.await.expect("persister ends");
    assert_eq!(state.durable_tick.load(Ordering::Relaxed), ticks, "everything played is durable");
    lease.release().await;
    Played { zone, events, outbox }
}

fn ids(records: &[Vec<u8>]) -> Vec<String> {
    records.iter().map(|r| Event::decode_checked(r).expect("event decodes").id()).collect()
}

async fn restored_equals_lost(stores: Stores) {
    let lost = play_and_crash(&stores, 250, 100).await;
    let (restored, report) = persist::restore(&config(), &stores).await.expect("restore");
    assert_eq!(report.snapshot_tick, 200, "the newest snapshot");
    assert_eq!(report.replayed_ticks, 50, "the journal after it");
    assert_eq!(restored.tick_number(), lost.tick_number());
    assert_same_state(restored, &lost);
}

/// Byte-identical state, on a timeline of its own: events after a restore
/// must not take the ids of events the lost process may have published.
fn assert_same_state(mut restored: Zone, lost: &Zone) {
    assert_ne!(restored.epoch(), lost.epoch(), "a restored zone continues on a new timeline");
    restored.set_epoch(lost.epoch());
    assert!(restored.encode_snapshot() == lost.encode_snapshot(), "replayed state is byte-identical");
}

#[tokio::test]
async fn files_restore_the_exact_lost_state() {
    let (stores, _dir) = file_stores();
    restored_equals_lost(stores).await;
}

#[tokio::test]
async fn redis_and_mongodb_restore_the_exact_lost_state() {
    restored_equals_lost(real_stores().await).await;
}

/// What a zone played is archived as its history: every tick's batch in
/// order and its snapshots' hashes, from which the same state replays.
async fn the_history_replays_to_the_played_state(stores: Stores) {
    let played = play(&stores, 250, 100).await;
    let mut segments = Vec::new();
    for meta in stores.history.list(11).await.expect("history") {
        let stored = stores.history.get(11, meta.tick).await.expect("history").expect("listed");
        segments.push(HistorySegment::decode(&stored.bytes).expect("a segment"));
    }
    segments.sort_by_key(HistorySegment::first_tick);
    let mut zone = Zone::new(config()).expect("zone");
    zone.set_epoch(played.zone.epoch());
    let mut checked = Vec::new();
    for segment in &segments {
        for entry in &segment.entries {
            assert_eq!(entry.tick, zone.tick_number() + 1, "consecutive ticks");
            zone.tick(&respawn_sim::command::decode_batch(&entry.batch).expect("batch"));
            if let Some(hash) = segment.hashes.iter().find(|h| h.tick == entry.tick) {
                assert_eq!(Some(*hash), StateHash::of_snapshot(entry.tick, &zone.encode_snapshot()), "same state");
                checked.push(entry.tick);
            }
        }
    }
    assert_eq!(zone.tick_number(), 250, "every tick played is in the history");
    assert_eq!(checked, [100, 200], "each snapshot's hash is in it");
    assert!(zone.encode_snapshot() == played.zone.encode_snapshot(), "the replayed state is byte-identical");
}

#[tokio::test]
async fn files_keep_a_history_that_replays_the_zone() {
    let (stores, _dir) = file_stores();
    the_history_replays_to_the_played_state(stores).await;
}

#[tokio::test]
async fn mongodb_keeps_a_history_that_replays_the_zone() {
    the_history_replays_to_the_played_state(real_stores().await).await;
}

/// The zone's next owner (after a hand-over or a restart) archives on
/// after the history its predecessor kept, pruning none of it for want of
/// knowing its segments' sizes.
#[tokio::test]
async fn the_next_owner_keeps_the_history_archived_before_it() {
    let (stores, _dir) = file_stores();
    let mut zone = play(&stores, 250, 100).await.zone;
    let before = stores.history.list(11).await.expect("history");
    assert!(!before.is_empty(), "the first owner archived its ticks");
    let (lease, _told) = take_lease(&stores, "next-owner").await;
    let Persisting { tx, task: persister, .. } = persist_with(&stores, lease.clone());
    for tick in 251..=260 {
        zone.tick(&[]);
        let batch = respawn_sim::command::encode_batch(&[]);
        let msg = PersistMsg::Tick { tick, batch, events: Vec::new(), attended: !zone.players().is_empty() };
        tx.send(msg).await.expect("persister");
    }
    drop(tx);
    persister.await.expect("persister ends");
    let after = stores.history.list(11).await.expect("history");
    assert!(before.iter().all(|m| after.contains(m)), "the earlier history is kept: {before:?} then {after:?}");
    assert_eq!(after.len(), before.len() + 1, "and the next owner's segment after it: {after:?}");
}

/// A persister on files of its own whose unattended ticks wait `wait`,
/// with its lease and stores.
async fn empty_zone_persister(
    wait: std::time::Duration,
) -> (Persisting, Arc<HeldLease>, Stores, respawn_harness::TempDir) {
    let (stores, dir) = file_stores();
    let (lease, _told) = take_lease(&stores, "idle").await;
    let settings = PersistSettings { unattended_journal_every: wait, ..Default::default() };
    (persist_with_settings(&stores, lease.clone(), settings), lease, stores, dir)
}

/// An empty zone's ticks (no players, commands or events) wait for the
/// journal; the first attended tick takes them there with it at once, and
/// otherwise they go once the oldest has waited the setting's time.
#[tokio::test]
async fn an_empty_zones_ticks_wait_for_the_journal_and_go_with_the_first_attended_one() {
    let (Persisting { tx, state, task: persister, .. }, lease, stores, _dir) =
        empty_zone_persister(std::time::Duration::from_secs(3_600)).await;
    let mut zone = Zone::new(config()).expect("zone");
    let durable = || state.durable_tick.load(Ordering::Relaxed);
    let empty = |zone: &mut Zone, tick: u64| {
        zone.tick(&[]);
        PersistMsg::Tick { tick, batch: respawn_sim::command::encode_batch(&[]), events: Vec::new(), attended: false }
    };
    for tick in 1..=5 {
        tx.send(empty(&mut zone, tick)).await.expect("persister");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(durable(), 0, "the empty zone's ticks wait");
    assert!(stores.journal.read_after(11, 0).await.expect("journal").is_empty(), "nothing journaled yet");

    let join = vec![Command { player: 1, seq: 0, kind: CommandKind::join_fresh("p1".to_string()) }];
    zone.tick(&join);
    let batch = respawn_sim::command::encode_batch(&join);
    tx.send(PersistMsg::Tick { tick: 6, batch, events: Vec::new(), attended: true }).await.expect("persister");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while durable() < 6 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(durable(), 6, "an attended tick is journaled at once, with the ticks before it");
    let ticks: Vec<u64> = stores.journal.read_after(11, 0).await.expect("journal").iter().map(|e| e.tick).collect();
    assert_eq!(ticks, (1..=6).collect::<Vec<_>>());
    drop(tx);
    persister.await.expect("persister ends");
    lease.release().await;

    // With a short wait, empty ticks reach the journal on their own.
    let (Persisting { tx, state, task: persister, .. }, lease, _, _dir) =
        empty_zone_persister(std::time::Duration::from_millis(200)).await;
    let mut zone = Zone::new(config()).expect("zone");
    let mut tick = 0;
    while state.durable_tick.load(Ordering::Relaxed) == 0 && tick < 200 {
        tick += 1;
        tx.send(empty(&mut zone, tick)).await.expect("persister");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let journaled = state.durable_tick.load(Ordering::Relaxed);
    assert!(journaled >= 2, "the ticks of the wait went together (journaled through {journaled} of {tick})");
    drop(tx);
    persister.await.expect("persister ends");
    assert_eq!(state.durable_tick.load(Ordering::Relaxed), tick, "the rest is journaled at the end");
    lease.release().await;
}

/// A zone server that crashes archived its history only up to its last
/// segment; it kept its journal from there, and the next owner archives it.
#[tokio::test]
async fn a_crashed_zones_unarchived_ticks_reach_the_history_through_the_next_owner() {
    let (stores, _dir) = file_stores();
    let (lease, _told) = take_lease(&stores, "crashing").await;
    let Persisting { tx, task: persister, .. } = persist_with(&stores, lease.clone());
    let mut zone = Zone::new(config()).expect("zone");
    for tick in 1..=120u64 {
        let batch = match tick {
            1 => {
                (1..=3).map(|p| Command { player: p, seq: 0, kind: CommandKind::join_fresh(format!("p{p}")) }).collect()
            }
            _ => vec![Command {
                player: 1 + tick % 3,
                seq: tick as u32,
                kind: CommandKind::Move { velocity: Point::new(9, -4) },
            }],
        };
        zone.tick(&batch);
        let msg = PersistMsg::Tick {
            tick,
            batch: respawn_sim::command::encode_batch(&batch),
            events: Vec::new(),
            attended: true,
        };
        tx.send(msg).await.expect("persister");
        if tick == 100 {
            tx.send(PersistMsg::Snapshot { tick, bytes: zone.encode_snapshot() }).await.expect("persister");
        }
    }
    let (reply, durable) = tokio::sync::oneshot::channel();
    tx.send(PersistMsg::Flush(reply)).await.expect("persister");
    assert_eq!(durable.await.expect("answered"), 120);
    // The crash: no segment was due yet (every 30 s), none is written now.
    persister.abort();
    lease.release().await;
    assert!(stores.history.list(11).await.expect("history").is_empty(), "nothing archived before the crash");

    let (next, _told) = take_lease(&stores, "next-owner").await;
    let (restored, report) = persist::restore(&config(), &stores).await.expect("restore");
    assert_eq!((report.snapshot_tick, report.replayed_ticks), (100, 20));
    let tick_period = Some(std::time::Duration::from_millis(50));
    let state = PersistState::default();
    persist::checkpoint_after_restore(&restored, report.journal_epoch, &stores, &state, next.fence(), tick_period)
        .await;
    let metas = stores.history.list(11).await.expect("history");
    assert_eq!(metas.len(), 1, "{metas:?}");
    let stored = stores.history.get(11, metas[0].tick).await.expect("history").expect("listed");
    let segment = HistorySegment::decode(&stored.bytes).expect("a segment");
    assert_eq!((segment.first_tick(), segment.last_tick(), segment.epoch), (1, 120, zone.epoch()));
    let mut replayed = Zone::new(config()).expect("zone");
    replayed.set_epoch(segment.epoch);
    for entry in &segment.entries {
        replayed.tick(&respawn_sim::command::decode_batch(&entry.batch).expect("batch"));
    }
    assert!(replayed.encode_snapshot() == zone.encode_snapshot(), "the archived ticks replay to the lost state");
}

/// A persister whose zone another server took (its own lease ran out while
/// it was cut off) makes nothing more durable, and its server is told.
async fn a_superseded_persister_stores_nothing_more(stores: Stores) {
    let (old, mut told) = take_lease(&stores, "server-old").await;
    let Persisting { tx, task: persister, .. } = persist_with(&stores, old.clone());
    let mut zone = Zone::new(config()).expect("zone");
    let flush = || async {
        let (reply, durable) = tokio::sync::oneshot::channel();
        tx.send(PersistMsg::Flush(reply)).await.expect("persister");
        durable.await.expect("answered")
    };
    let play = |ticks: std::ops::RangeInclusive<u64>, zone: &mut Zone| {
        ticks
            .map(|tick| {
                let batch = respawn_sim::command::encode_batch(&[]);
                zone.tick(&[]);
                PersistMsg::Tick { tick, batch, events: Vec::new(), attended: false }
            })
            .collect::<Vec<_>>()
    };
    for msg in play(1..=20, &mut zone) {
        tx.send(msg).await.expect("persister");
    }
    assert_eq!(flush().await, 20, "the owner's ticks are durable");

    // Its lease runs out (released here, as if it had expired) and another server takes the zone.
    let new = loop {
        stores.leases.release(&old.lease()).await.expect("release");
        if let Some(new) = stores.leases.acquire(11, "server-new", LEASE_TTL).await.expect("acquire") {
            break new;
        }
    };
    for msg in play(21..=40, &mut zone) {
        tx.send(msg).await.expect("persister");
    }
    tx.send(PersistMsg::Snapshot { tick: 40, bytes: zone.encode_snapshot() }).await.expect("persister");
    assert_eq!(flush().await, 20, "nothing the old owner did since is durable, so nothing of it is acknowledged");
    let name = tokio::time::timeout(LEASE_TTL, told.recv()).await.expect("told in time").expect("told");
    assert_eq!(name, "recovery");
    assert!(old.is_lost());
    let journal = stores.journal.read_after(11, 0).await.expect("journal");
    assert!(journal.iter().all(|e| e.tick <= 20), "no journal entry of the old owner after tick 20");
    let hot = stores.hot.recent(11).await.expect("hot");
    assert!(hot.iter().all(|s| s.meta.tick <= 20), "no snapshot of the old owner after tick 20");
    drop(tx);
    persister.await.expect("persister ends");
    stores.leases.release(&new).await.expect("release");
}

#[tokio::test]
async fn files_refuse_a_superseded_owner() {
    let (stores, _dir) = file_stores();
    a_superseded_persister_stores_nothing_more(stores).await;
}

#[tokio::test]
async fn redis_refuses_a_superseded_owner() {
    a_superseded_persister_stores_nothing_more(real_stores().await).await;
}

#[tokio::test]
async fn a_corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let (stores, _dir) = file_stores();
    play_and_crash(&stores, 250, 100).await;
    // Tamper with the newest hot snapshot (tick 200): flip a payload byte.
    let mut newest = stores.hot.recent(11).await.expect("hot")[0].clone();
    let last = newest.bytes.len() - 1;
    newest.bytes[last] ^= 0xff;
    newest.meta.tick = 201;
    stores.hot.put(newest, NEWEST).await.expect("put");
    let (restored, report) = persist::restore(&config(), &stores).await.expect("restore");
    assert!(report.refused.iter().any(|r| r.contains("checksum")), "{:?}", report.refused);
    assert_eq!(report.snapshot_tick, 200, "the next-best snapshot is used");
    assert_eq!(restored.tick_number(), 250);
}

#[tokio::test]
async fn a_zone_never_starts_fresh_over_a_snapshot_format_it_cannot_read() {
    let (stores, _dir) = file_stores();
    let mut bytes = Zone::new(config()).expect("zone").encode_snapshot();
    bytes[4] = 77;
    let meta = SnapshotMeta { zone: 11, tick: 10, taken_at_ms: 1 };
    stores.hot.put(StoredSnapshot { meta, bytes }, Fence::NONE).await.expect("put");
    let started = std::time::Instant::now();
    let why = persist::restore(&config(), &stores).await.expect_err("a newer build's state is not discarded");
    assert!(why.contains("refusing to start zone recovery fresh") && why.contains("snapshot format 77"), "{why}");
    assert!(started.elapsed() < persist::RESTORE_PATIENCE, "refused at once, not retried like an outage");
}

#[tokio::test]
async fn a_fresh_zone_starts_when_every_snapshot_is_corrupt() {
    let (stores, _dir) = file_stores();
    let mut bytes = Zone::new(config()).expect("zone").encode_snapshot();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let meta = SnapshotMeta { zone: 11, tick: 10, taken_at_ms: 1 };
    stores.hot.put(StoredSnapshot { meta, bytes }, Fence::NONE).await.expect("put");
    let (zone, report) = persist::restore(&config(), &stores).await.expect("restore");
    assert!(report.refused.iter().any(|r| r.contains("checksum")), "{:?}", report.refused);
    assert_eq!((report.source, zone.tick_number()), (RestoreSource::Fresh, 0));
}

#[tokio::test]
async fn with_the_hot_store_empty_the_cold_snapshot_is_used() {
    let stores = real_stores().await;
    // Hot snapshots fail over to cold ones only on failure; write a cold one directly.
    let lost = play_and_crash(&stores, 120, 1_000).await;
    let snapshot =
        StoredSnapshot { meta: SnapshotMeta { zone: 11, tick: 120, taken_at_ms: 5 }, bytes: lost.encode_snapshot() };
    stores.cold.put(snapshot, NEWEST).await.expect("cold put");
    let (restored, report) = persist::restore(&config(), &stores).await.expect("restore");
    assert_eq!((report.source, report.snapshot_tick), (RestoreSource::Cold, 120));
    assert_same_state(restored, &lost);
}

#[tokio::test]
async fn with_the_journal_out_of_reach_a_restore_still_starts_a_new_timeline() {
    let (files, _dir) = file_stores();
    let lost = play_and_crash(&files, 120, 100).await;
    let dead = RedisConn::new("redis://127.0.0.1:1/0", "dead").expect("url");
    let stores = Stores { journal: Arc::new(RedisJournal::new(dead)), ..files };
    let (restored, report) = persist::restore(&config(), &stores).await.expect("restore");
    assert_eq!((report.snapshot_tick, report.replayed_ticks), (100, 0), "the snapshot, no journal");
    assert_ne!(restored.epoch(), lost.epoch(), "ticks 101-120 were published under the old epoch");
}

#[tokio::test]
async fn a_zone_refuses_to_start_fresh_while_its_stores_are_unreachable() {
    let dead = RedisConn::new("redis://127.0.0.1:1/0", "dead").expect("url");
    let (files, _dir) = file_stores();
    let stores = Stores { hot: Arc::new(RedisHotSnapshots::new(dead)), ..files };
    let started = std::time::Instant::now();
    let result = persist::restore(&config(), &stores).await;
    let why = result.expect_err("no fresh start");
    assert!(why.contains("refusing to start zone recovery fresh") && why.contains("hot snapshots"), "{why}");
    assert!(started.elapsed() >= persist::RESTORE_PATIENCE, "it kept trying first");
}

#[tokio::test]
async fn every_event_reaches_the_outbox_and_a_restore_resends_the_replayed_ones() {
    let (stores, _dir) = file_stores();
    let played = play(&stores, 250, 100).await;
    assert!(played.events.len() > 10, "the game produced events");
    let in_outbox: Vec<(u64, Vec<u8>)> = played.outbox.read(0, usize::MAX).expect("outbox");
    let stored: Vec<String> = ids(&in_outbox.into_iter().map(|r| r.1).collect::<Vec<_>>());
    let generated: Vec<String> = played.events.iter().map(|e| e.1.clone()).collect();
    assert_eq!(stored, generated, "every event, once, in order");

    // Had the crash beaten the outbox, the restore regenerates exactly the
    // replayed ticks' events, with the same ids.
    let (_, report) = persist::restore(&config(), &stores).await.expect("restore");
    let after_snapshot: Vec<String> =
        played.events.iter().filter(|(tick, _)| *tick > report.snapshot_tick).map(|e| e.1.clone()).collect();
    assert!(!after_snapshot.is_empty());
    assert_eq!(ids(&report.replayed_events), after_snapshot);
}

/// Cold snapshots that count how often they were listed.
#[derive(Debug)]
struct CountingCold {
    inner: Arc<dyn respawn_store::ColdSnapshots>,
    lists: std::sync::atomic::AtomicUsize,
}

impl respawn_store::ColdSnapshots for CountingCold {
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put(snapshot, fence)
    }
    fn fence(&self, zone: u32, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.fence(zone, fence)
    }
    fn list(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<SnapshotMeta>>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(zone)
    }
    fn get(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<Option<StoredSnapshot>>> {
        self.inner.get(zone, tick)
    }
    fn prune(&self, zone: u32, keep: usize) -> BoxFuture<'_, StoreResult<usize>> {
        self.inner.prune(zone, keep)
    }
    fn delete_after(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<usize>> {
        self.inner.delete_after(zone, tick)
    }
}

#[tokio::test]
async fn a_handed_over_zone_restores_from_the_hot_store_without_listing_cold_snapshots() {
    let (files, _dir) = file_stores();
    let cold = Arc::new(CountingCold { inner: files.cold.clone(), lists: Default::default() });
    let stores = Stores { cold: cold.clone(), ..files };
    let mut zone = Zone::new(config()).expect("zone");
    for _ in 0..30 {
        zone.tick(&[]);
    }
    let meta = SnapshotMeta { zone: 11, tick: 30, taken_at_ms: 1 };
    stores.hot.put(StoredSnapshot { meta, bytes: zone.encode_snapshot() }, Fence::NONE).await.expect("put");

    let format = respawn_sim::snapshot::FORMAT_VERSION;
    let (restored, report) = persist::restore_reading(&config(), &stores, format, Some(30)).await.expect("restore");
    assert_eq!((report.source, restored.tick_number()), (RestoreSource::Hot, 30));
    assert_eq!(cold.lists.load(Ordering::Relaxed), 0, "the hot snapshot at the released tick is the newest state");
    persist::restore(&config(), &stores).await.expect("restore");
    assert_eq!(cold.lists.load(Ordering::Relaxed), 1, "an ordinary start consults the cold store too");
}
