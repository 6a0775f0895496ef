//! One contract test suite per storage role. Every implementation, embedded
//! or real, must pass its suite; the crate's integration tests run them.
//! Each suite takes a zone id of its own so runs never collide on a shared server.

use std::time::Duration;

use crate::{
    ColdSnapshots, HotSnapshots, Journal, JournalEntry, Registry, ResumeSession, ServerEntry, ServerState, Sessions,
    SnapshotMeta, StoreError, StoredSnapshot,
};

pub type ContractResult = Result<(), String>;

fn check(ok: bool, what: &str) -> ContractResult {
    if ok {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

fn snap(zone: u32, tick: u64, len: usize) -> StoredSnapshot {
    let bytes = (0..len).map(|i| (i as u64).wrapping_mul(tick).wrapping_add(tick) as u8).collect();
    StoredSnapshot { meta: SnapshotMeta { zone, tick, taken_at_ms: 1_000 + tick }, bytes }
}

fn e(e: StoreError) -> String {
    e.to_string()
}

pub async fn hot_snapshots(store: &dyn HotSnapshots, zone: u32) -> ContractResult {
    check(store.recent(zone).await.map_err(e)?.is_empty(), "a new zone has no hot snapshot")?;
    for tick in [10, 20, 30] {
        store.put(snap(zone, tick, 64)).await.map_err(e)?;
    }
    let recent = store.recent(zone).await.map_err(e)?;
    check(recent == vec![snap(zone, 30, 64), snap(zone, 20, 64)], "recent() is the two newest, newest first")?;
    check(store.recent(zone + 1).await.map_err(e)?.is_empty(), "zones are separate")?;
    let big = snap(zone, 40, 2 * 1024 * 1024);
    store.put(big.clone()).await.map_err(e)?;
    check(store.recent(zone).await.map_err(e)?.first() == Some(&big), "a 2 MiB snapshot round-trips")?;
    store.clear(zone).await.map_err(e)?;
    check(store.recent(zone).await.map_err(e)?.is_empty(), "clear() forgets the zone's snapshots")?;
    Ok(())
}

pub async fn cold_snapshots(store: &dyn ColdSnapshots, zone: u32) -> ContractResult {
    check(store.list(zone).await.map_err(e)?.is_empty(), "a new zone has no cold snapshot")?;
    // Written out of tick order: the newest must still be found by tick.
    for tick in [5, 30, 10] {
        store.put(snap(zone, tick, 128)).await.map_err(e)?;
    }
    let ticks: Vec<u64> = store.list(zone).await.map_err(e)?.iter().map(|m| m.tick).collect();
    check(ticks == vec![30, 10, 5], &format!("list() is newest tick first, got {ticks:?}"))?;
    check(store.get(zone, 10).await.map_err(e)? == Some(snap(zone, 10, 128)), "get() returns the bytes")?;
    check(store.get(zone, 11).await.map_err(e)?.is_none(), "get() of a missing tick is None")?;
    check(store.prune(zone, 2).await.map_err(e)? == 1, "prune(2) deletes the one oldest")?;
    let ticks: Vec<u64> = store.list(zone).await.map_err(e)?.iter().map(|m| m.tick).collect();
    check(ticks == vec![30, 10], &format!("prune keeps the newest, got {ticks:?}"))?;
    check(store.list(zone + 1).await.map_err(e)?.is_empty(), "zones are separate")?;
    let big = snap(zone, 50, 2 * 1024 * 1024);
    store.put(big.clone()).await.map_err(e)?;
    check(store.get(zone, 50).await.map_err(e)? == Some(big), "a 2 MiB snapshot round-trips")?;
    check(store.delete_after(zone, 10).await.map_err(e)? == 2, "delete_after(10) deletes ticks 30 and 50")?;
    let ticks: Vec<u64> = store.list(zone).await.map_err(e)?.iter().map(|m| m.tick).collect();
    check(ticks == vec![10], &format!("only tick 10 is left, got {ticks:?}"))?;
    Ok(())
}

fn entry(tick: u64) -> JournalEntry {
    JournalEntry { tick, batch: vec![tick as u8; (tick % 7) as usize] }
}

pub async fn journal(store: &dyn Journal, zone: u32) -> ContractResult {
    check(store.len(zone).await.map_err(e)? == 0, "a new zone has an empty journal")?;
    store.append(zone, vec![entry(1), entry(2), entry(3)]).await.map_err(e)?;
    check(store.read_after(zone, 0).await.map_err(e)? == vec![entry(1), entry(2), entry(3)], "read_after(0) is all")?;
    check(store.read_after(zone, 2).await.map_err(e)? == vec![entry(3)], "read_after(2) is tick 3 only")?;
    let again = store.append(zone, vec![entry(3)]).await;
    check(matches!(again, Err(StoreError::Invalid(_))), &format!("a repeated tick is refused, got {again:?}"))?;
    store.append(zone, vec![entry(4), entry(5)]).await.map_err(e)?;
    store.trim_through(zone, 3).await.map_err(e)?;
    check(store.read_after(zone, 0).await.map_err(e)? == vec![entry(4), entry(5)], "trim drops ticks <= 3")?;
    check(store.len(zone).await.map_err(e)? == 2, "len after trim")?;
    check(store.read_after(zone + 1, 0).await.map_err(e)?.is_empty(), "zones are separate")?;
    store.reset(zone).await.map_err(e)?;
    check(store.len(zone).await.map_err(e)? == 0, "reset empties the journal")?;
    store.append(zone, vec![entry(1)]).await.map_err(e)?;
    check(store.read_after(zone, 0).await.map_err(e)? == vec![entry(1)], "after reset ticks start over")?;
    Ok(())
}

pub async fn sessions(store: &dyn Sessions, seed: u32) -> ContractResult {
    let token = format!("{seed:08x}{:024x}", 0xabcdef_u64);
    let session = ResumeSession { player_id: 42, name: "ann".into(), zone: "meadow".into() };
    check(store.get(&token).await.map_err(e)?.is_none(), "unknown token")?;
    check(store.get("../../etc/passwd").await.map_err(e)?.is_none(), "malformed token is unknown")?;
    check(store.put("not-a-token", session.clone(), Duration::from_secs(60)).await.is_err(), "malformed put refused")?;
    store.put(&token, session.clone(), Duration::from_secs(60)).await.map_err(e)?;
    check(store.get(&token).await.map_err(e)? == Some(session.clone()), "put then get")?;
    let short = format!("{seed:08x}{:024x}", 0x123_u64);
    store.put(&short, session, Duration::from_millis(200)).await.map_err(e)?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    check(store.get(&short).await.map_err(e)?.is_none(), "expired tokens are gone")?;
    Ok(())
}

pub async fn registry(store: &dyn Registry, seed: u32) -> ContractResult {
    let entry = |id: &str, state| ServerEntry {
        id: format!("{id}-{seed}"),
        address: format!("ws://127.0.0.1:{}/ws", 7_000 + seed),
        zones: vec!["meadow".into(), "caverns".into()],
        state,
        version: "0.1.0".into(),
    };
    let long = Duration::from_secs(60);
    check(store.servers().await.map_err(e)?.is_empty(), "no servers at first")?;
    store.heartbeat(entry("a", ServerState::Ready), long).await.map_err(e)?;
    store.heartbeat(entry("b", ServerState::Ready), Duration::from_millis(200)).await.map_err(e)?;
    let both = store.servers().await.map_err(e)?;
    check(both == vec![entry("a", ServerState::Ready), entry("b", ServerState::Ready)], "both, by id, as sent")?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    check(store.servers().await.map_err(e)? == vec![entry("a", ServerState::Ready)], "a missed heartbeat is gone")?;
    store.heartbeat(entry("a", ServerState::Draining), long).await.map_err(e)?;
    check(store.servers().await.map_err(e)? == vec![entry("a", ServerState::Draining)], "a heartbeat renews")?;
    let no_zones = ServerEntry { zones: Vec::new(), ..entry("c", ServerState::Ready) };
    store.heartbeat(no_zones.clone(), long).await.map_err(e)?;
    check(store.servers().await.map_err(e)?.contains(&no_zones), "a server with no zones yet")?;
    store.remove(&no_zones.id).await.map_err(e)?;
    store.remove(&entry("a", ServerState::Ready).id).await.map_err(e)?;
    check(store.servers().await.map_err(e)?.is_empty(), "removed at once")?;
    for (bad, what) in [
        (ServerEntry { id: "../x".into(), ..entry("d", ServerState::Ready) }, "a path-like id"),
        (ServerEntry { id: String::new(), ..entry("d", ServerState::Ready) }, "an empty id"),
        (ServerEntry { address: "ws://a\nb".into(), ..entry("d", ServerState::Ready) }, "a newline"),
        (ServerEntry { zones: vec!["a,b".into()], ..entry("d", ServerState::Ready) }, "a comma in a zone"),
        (ServerEntry { version: "v".repeat(300), ..entry("d", ServerState::Ready) }, "an oversized version"),
    ] {
        check(matches!(store.heartbeat(bad, long).await, Err(StoreError::Invalid(_))), what)?;
    }
    check(store.servers().await.map_err(e)?.is_empty(), "nothing invalid was stored")?;
    Ok(())
}
