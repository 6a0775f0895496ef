//! One contract test suite per storage role. Every implementation, embedded
//! or real, must pass its suite; the crate's integration tests run them.
//! Each suite takes a zone id of its own so runs never collide on a shared server.

use std::time::Duration;

use crate::lease::Leases;
use crate::ops::{AuditLog, AuditRecord, Ban, Login, OperatorToken, OpsStore, Role};
use crate::ratelimit::{Decision, Quota, RateLimiter};
use crate::{
    ColdSnapshots, Fence, HotSnapshots, Journal, JournalEntry, Registry, ResumeSession, ServerEntry, ServerState,
    Sessions, SnapshotMeta, StoreError, StoreResult, StoredSnapshot,
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
        store.put(snap(zone, tick, 64), Fence::NONE).await.map_err(e)?;
    }
    let recent = store.recent(zone).await.map_err(e)?;
    check(recent == vec![snap(zone, 30, 64), snap(zone, 20, 64)], "recent() is the two newest, newest first")?;
    check(store.recent(zone + 1).await.map_err(e)?.is_empty(), "zones are separate")?;
    let big = snap(zone, 40, 2 * 1024 * 1024);
    store.put(big.clone(), Fence::NONE).await.map_err(e)?;
    check(store.recent(zone).await.map_err(e)?.first() == Some(&big), "a 2 MiB snapshot round-trips")?;
    store.clear(zone).await.map_err(e)?;
    check(store.recent(zone).await.map_err(e)?.is_empty(), "clear() forgets the zone's snapshots")?;
    Ok(())
}

pub async fn cold_snapshots(store: &dyn ColdSnapshots, zone: u32) -> ContractResult {
    check(store.list(zone).await.map_err(e)?.is_empty(), "a new zone has no cold snapshot")?;
    // Written out of tick order: the newest must still be found by tick.
    for tick in [5, 30, 10] {
        store.put(snap(zone, tick, 128), Fence::NONE).await.map_err(e)?;
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
    store.put(big.clone(), Fence::NONE).await.map_err(e)?;
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
    store.append(zone, vec![entry(1), entry(2), entry(3)], Fence::NONE).await.map_err(e)?;
    check(store.read_after(zone, 0).await.map_err(e)? == vec![entry(1), entry(2), entry(3)], "read_after(0) is all")?;
    check(store.read_after(zone, 2).await.map_err(e)? == vec![entry(3)], "read_after(2) is tick 3 only")?;
    let again = store.append(zone, vec![entry(3)], Fence::NONE).await;
    check(matches!(again, Err(StoreError::Invalid(_))), &format!("a repeated tick is refused, got {again:?}"))?;
    let torn = store.append(zone, vec![entry(4), entry(4)], Fence::NONE).await;
    check(matches!(torn, Err(StoreError::Invalid(_))), &format!("ticks out of order are refused, got {torn:?}"))?;
    check(store.len(zone).await.map_err(e)? == 3, "a refused append stores none of its entries")?;
    store.append(zone, vec![entry(4), entry(5)], Fence::NONE).await.map_err(e)?;
    store.trim_through(zone, 3).await.map_err(e)?;
    check(store.read_after(zone, 0).await.map_err(e)? == vec![entry(4), entry(5)], "trim drops ticks <= 3")?;
    check(store.len(zone).await.map_err(e)? == 2, "len after trim")?;
    check(store.read_after(zone + 1, 0).await.map_err(e)?.is_empty(), "zones are separate")?;
    store.reset(zone, Fence::NONE).await.map_err(e)?;
    check(store.len(zone).await.map_err(e)? == 0, "reset empties the journal")?;
    store.append(zone, vec![entry(1)], Fence::NONE).await.map_err(e)?;
    check(store.read_after(zone, 0).await.map_err(e)? == vec![entry(1)], "after reset ticks start over")?;
    Ok(())
}

/// Zones `zone` and `zone + 1` must never have been leased in this store.
pub async fn leases(store: &dyn Leases, zone: u32) -> ContractResult {
    let ttl = Duration::from_secs(5);
    check(store.holder(zone).await.map_err(e)?.is_none(), "a new zone has no holder")?;
    let a = store.acquire(zone, "server-a", ttl).await.map_err(e)?.ok_or("a free lease is granted")?;
    check(a.token > 0 && a.owner == "server-a" && a.zone == zone, &format!("the lease granted: {a:?}"))?;
    check(store.holder(zone).await.map_err(e)? == Some(("server-a".into(), a.token)), "holder() names it")?;
    check(store.acquire(zone, "server-b", ttl).await.map_err(e)?.is_none(), "a held lease is not granted to another")?;
    let renewed = store.renew(&a, ttl).await.map_err(e)?.ok_or("the holder renews its lease")?;
    check(renewed.token == a.token, "a renewal keeps the token")?;
    // A restarted holder takes the lease again, fencing its former self.
    let again = store.acquire(zone, "server-a", ttl).await.map_err(e)?.ok_or("the same owner takes it again")?;
    check(again.token > a.token, &format!("a new grant has a larger token: {} then {}", a.token, again.token))?;
    check(store.renew(&a, ttl).await.map_err(e)?.is_none(), "the superseded lease cannot be renewed")?;
    store.release(&a).await.map_err(e)?;
    check(store.holder(zone).await.map_err(e)?.is_some(), "releasing a superseded lease changes nothing")?;
    store.release(&again).await.map_err(e)?;
    check(store.holder(zone).await.map_err(e)?.is_none(), "a released lease has no holder")?;
    let back = store.renew(&again, ttl).await.map_err(e)?.ok_or("a released lease nobody took is taken back")?;
    check(back.token == again.token, "with its token")?;
    store.release(&back).await.map_err(e)?;
    let b = store.acquire(zone, "server-b", ttl).await.map_err(e)?.ok_or("a released lease is granted")?;
    check(b.token > again.token, "tokens only grow")?;
    store.release(&b).await.map_err(e)?;
    // Expiry: a lease not renewed is free once its time to live has passed.
    let other = zone + 1;
    let short = store.acquire(other, "server-a", Duration::from_millis(200)).await.map_err(e)?.ok_or("granted")?;
    check(store.acquire(other, "server-b", ttl).await.map_err(e)?.is_none(), "not before it expires")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check(store.holder(other).await.map_err(e)?.is_none(), "an expired lease has no holder")?;
    // Its holder, out of reach of the store for longer than that, takes it
    // back: nobody else was granted it meanwhile, so none of its writes was refused.
    let back =
        store.renew(&short, Duration::from_millis(200)).await.map_err(e)?.ok_or("an expired lease is renewed")?;
    check(back.token == short.token, "with its token")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = store.acquire(other, "server-b", ttl).await.map_err(e)?.ok_or("an expired lease is granted")?;
    check(taken.token > short.token, "with a larger token")?;
    check(store.renew(&short, ttl).await.map_err(e)?.is_none(), "an expired lease another took is not renewed")?;
    store.release(&taken).await.map_err(e)?;
    let refused = store.acquire(zone, "not an id", ttl).await;
    check(matches!(refused, Err(StoreError::Invalid(_))), &format!("a malformed owner is refused: {refused:?}"))?;
    Ok(())
}

/// Writes for `zone` (never leased nor written in these stores) after a newer
/// lease was granted are refused, whole, and the newer owner's go through.
pub async fn fencing(leases: &dyn Leases, hot: &dyn HotSnapshots, journal: &dyn Journal, zone: u32) -> ContractResult {
    let ttl = Duration::from_secs(5);
    let fenced = |r: &StoreResult<()>| matches!(r, Err(StoreError::Fenced { .. }));
    let old = leases.acquire(zone, "server-old", ttl).await.map_err(e)?.ok_or("granted")?;
    hot.put(snap(zone, 10, 64), old.fence()).await.map_err(e)?;
    journal.append(zone, vec![entry(11)], old.fence()).await.map_err(e)?;
    // The old owner loses its lease; a new owner takes the zone.
    leases.release(&old).await.map_err(e)?;
    let new = leases.acquire(zone, "server-new", ttl).await.map_err(e)?.ok_or("granted")?;
    let late_snapshot = hot.put(snap(zone, 20, 64), old.fence()).await;
    check(fenced(&late_snapshot), &format!("the old owner's snapshot is refused: {late_snapshot:?}"))?;
    let late_batch = journal.append(zone, vec![entry(12), entry(13)], old.fence()).await;
    check(fenced(&late_batch), &format!("the old owner's journal append is refused: {late_batch:?}"))?;
    let unleased = journal.append(zone, vec![entry(12)], Fence::NONE).await;
    check(fenced(&unleased), "a write without a lease is refused once the zone was leased")?;
    check(hot.recent(zone).await.map_err(e)? == vec![snap(zone, 10, 64)], "no refused snapshot was stored")?;
    check(journal.read_after(zone, 0).await.map_err(e)? == vec![entry(11)], "no refused entry was stored")?;
    let late_reset = journal.reset(zone, old.fence()).await;
    check(fenced(&late_reset), &format!("the old owner's journal reset is refused: {late_reset:?}"))?;
    check(journal.read_after(zone, 0).await.map_err(e)? == vec![entry(11)], "the refused reset left it whole")?;
    hot.put(snap(zone, 20, 64), new.fence()).await.map_err(e)?;
    journal.append(zone, vec![entry(12)], new.fence()).await.map_err(e)?;
    check(journal.read_after(zone, 0).await.map_err(e)? == vec![entry(11), entry(12)], "the new owner writes on")?;
    leases.release(&new).await.map_err(e)?;
    Ok(())
}

/// Cold snapshots of `zone` (never leased nor written in these stores) put
/// by an owner whose lease was granted to another since, once the new owner
/// fenced the store, are refused whole: never listed nor read.
pub async fn cold_fencing(leases: &dyn Leases, cold: &dyn ColdSnapshots, zone: u32) -> ContractResult {
    let ttl = Duration::from_secs(5);
    let old = leases.acquire(zone, "server-old", ttl).await.map_err(e)?.ok_or("granted")?;
    cold.fence(zone, old.fence()).await.map_err(e)?;
    cold.put(snap(zone, 10, 64), old.fence()).await.map_err(e)?;
    leases.release(&old).await.map_err(e)?;
    let new = leases.acquire(zone, "server-new", ttl).await.map_err(e)?.ok_or("granted")?;
    cold.fence(zone, new.fence()).await.map_err(e)?;
    let late = cold.put(snap(zone, 20, 64), old.fence()).await;
    check(matches!(late, Err(StoreError::Fenced { .. })), &format!("the old owner's snapshot is refused: {late:?}"))?;
    let ticks: Vec<u64> = cold.list(zone).await.map_err(e)?.iter().map(|m| m.tick).collect();
    check(ticks == vec![10], &format!("the refused snapshot is not listed: {ticks:?}"))?;
    check(cold.get(zone, 20).await.map_err(e)?.is_none(), "nor read")?;
    cold.put(snap(zone, 20, 32), new.fence()).await.map_err(e)?;
    check(cold.get(zone, 20).await.map_err(e)? == Some(snap(zone, 20, 32)), "the new owner's is")?;
    let ticks: Vec<u64> = cold.list(zone).await.map_err(e)?.iter().map(|m| m.tick).collect();
    check(ticks == vec![20, 10], &format!("both owners' stored snapshots are listed: {ticks:?}"))?;
    check(cold.prune(zone, 1).await.map_err(e)? >= 1, "prune deletes the older")?;
    let ticks: Vec<u64> = cold.list(zone).await.map_err(e)?.iter().map(|m| m.tick).collect();
    check(ticks == vec![20], &format!("after prune(1): {ticks:?}"))?;
    leases.release(&new).await.map_err(e)?;
    Ok(())
}

pub async fn sessions(store: &dyn Sessions, seed: u32) -> ContractResult {
    let player = 1_000 + u64::from(seed);
    let hash = |c: char| c.to_string().repeat(64);
    let in_a_minute = crate::unix_ms() + 60_000;
    let session = |secret: char, expires_at_ms| ResumeSession {
        player_id: player,
        name: "ann".into(),
        zone: "meadow".into(),
        secret_hash: hash(secret),
        expires_at_ms,
    };
    check(store.take(player, &hash('a')).await.map_err(e)?.is_none(), "no session yet")?;
    for (bad, what) in [
        (ResumeSession { secret_hash: "../etc".into(), ..session('a', in_a_minute) }, "a malformed hash"),
        (ResumeSession { name: "a\nb".into(), ..session('a', in_a_minute) }, "a newline in the name"),
        (ResumeSession { zone: String::new(), ..session('a', in_a_minute) }, "an empty zone"),
    ] {
        check(store.put(bad).await.is_err(), &format!("{what} is refused"))?;
    }
    store.put(session('a', in_a_minute)).await.map_err(e)?;
    check(store.take(player, &hash('b')).await.map_err(e)?.is_none(), "another secret takes nothing")?;
    check(store.take(player, &hash('a')).await.map_err(e)? == Some(session('a', in_a_minute)), "put then take")?;
    check(store.take(player, &hash('a')).await.map_err(e)?.is_none(), "a token is used once")?;
    store.put(session('a', in_a_minute)).await.map_err(e)?;
    store.put(session('c', in_a_minute)).await.map_err(e)?;
    check(store.take(player, &hash('a')).await.map_err(e)?.is_none(), "a new token replaces the old: one per player")?;
    check(store.take(player, &hash('c')).await.map_err(e)?.is_some(), "the new one works")?;
    store.put(session('d', crate::unix_ms() + 200)).await.map_err(e)?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    check(store.take(player, &hash('d')).await.map_err(e)?.is_none(), "past its end it is gone")?;
    Ok(())
}

pub async fn registry(store: &dyn Registry, seed: u32) -> ContractResult {
    let entry = |id: &str, state| ServerEntry {
        id: format!("{id}-{seed}"),
        address: format!("ws://127.0.0.1:{}/ws", 7_000 + seed),
        zones: vec!["meadow".into(), "caverns".into()],
        state,
        version: "0.1.0".into(),
        admin_address: None,
        fences: [("meadow".to_owned(), 7), ("caverns".to_owned(), u64::MAX)].into(),
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
    let no_zones = ServerEntry { zones: Vec::new(), fences: Default::default(), ..entry("c", ServerState::Ready) };
    store.heartbeat(no_zones.clone(), long).await.map_err(e)?;
    check(store.servers().await.map_err(e)?.contains(&no_zones), "a server with no zones yet")?;
    store.remove(&no_zones.id).await.map_err(e)?;
    let admin = ServerEntry { admin_address: Some("10.0.0.5:7352".into()), ..entry("e", ServerState::Ready) };
    store.heartbeat(admin.clone(), long).await.map_err(e)?;
    check(store.servers().await.map_err(e)?.contains(&admin), "an admin address kept")?;
    store.remove(&admin.id).await.map_err(e)?;
    store.remove(&entry("a", ServerState::Ready).id).await.map_err(e)?;
    check(store.servers().await.map_err(e)?.is_empty(), "removed at once")?;
    for (bad, what) in [
        (ServerEntry { id: "../x".into(), ..entry("d", ServerState::Ready) }, "a path-like id"),
        (ServerEntry { id: String::new(), ..entry("d", ServerState::Ready) }, "an empty id"),
        (ServerEntry { address: "ws://a\nb".into(), ..entry("d", ServerState::Ready) }, "a newline"),
        (ServerEntry { zones: vec!["a,b".into()], ..entry("d", ServerState::Ready) }, "a comma in a zone"),
        (ServerEntry { version: "v".repeat(300), ..entry("d", ServerState::Ready) }, "an oversized version"),
        (ServerEntry { admin_address: Some("x/y:1".into()), ..entry("d", ServerState::Ready) }, "an admin path"),
        (ServerEntry { admin_address: Some("host".into()), ..entry("d", ServerState::Ready) }, "no admin port"),
        (
            ServerEntry { zones: vec!["meadow".into()], ..entry("d", ServerState::Ready) },
            "a fence of a zone not hosted",
        ),
    ] {
        check(matches!(store.heartbeat(bad, long).await, Err(StoreError::Invalid(_))), what)?;
    }
    check(store.servers().await.map_err(e)?.is_empty(), "nothing invalid was stored")?;
    Ok(())
}

/// `seed` keeps player ids and names apart from other runs on a shared server.
pub async fn ops(store: &dyn OpsStore, seed: u64) -> ContractResult {
    let p = |n: u64| seed * 1_000 + n;
    let (v0, bans) = store.bans().await.map_err(e)?;
    check(bans.is_empty(), "no bans at first")?;
    let ban = |player, reason: &str| Ban { player, reason: reason.into(), by: "alice".into(), at_ms: 7 };
    store.ban(ban(p(1), "botting")).await.map_err(e)?;
    store.ban(ban(p(2), "it's; DROP TABLE players; --")).await.map_err(e)?;
    let (v1, bans) = store.bans().await.map_err(e)?;
    check(v1 > v0 && store.bans_version().await.map_err(e)? == v1, "every ban bumps the version")?;
    check(bans == vec![ban(p(1), "botting"), ban(p(2), "it's; DROP TABLE players; --")], "bans by player, as given")?;
    check(store.is_banned(p(1)).await.map_err(e)? && !store.is_banned(p(3)).await.map_err(e)?, "is_banned")?;
    check(store.unban(p(1)).await.map_err(e)?, "unban says it lifted a ban")?;
    check(!store.unban(p(1)).await.map_err(e)?, "a second unban finds none")?;
    let (v2, bans) = store.bans().await.map_err(e)?;
    check(v2 > v1 && bans.len() == 1 && !store.is_banned(p(1)).await.map_err(e)?, "unban bumps, lifts")?;
    let bad_ban = Ban { reason: "a\nb".into(), ..ban(p(4), "") };
    check(matches!(store.ban(bad_ban).await, Err(StoreError::Invalid(_))), "control characters refused")?;

    let token = |name: &str, role, fill: char| OperatorToken {
        name: format!("{name}-{seed}"),
        role,
        hash: fill.to_string().repeat(64),
        created_ms: 9,
        expires_ms: (role == Role::Admin).then_some(1_000),
    };
    store.put_operator(token("ann", Role::Viewer, 'a')).await.map_err(e)?;
    store.put_operator(token("bob", Role::Admin, 'b')).await.map_err(e)?;
    let found = store.operator_by_hash(&"b".repeat(64)).await.map_err(e)?;
    check(found == Some(token("bob", Role::Admin, 'b')), "found by hash")?;
    check(store.operator_by_hash(&"c".repeat(64)).await.map_err(e)?.is_none(), "unknown hash")?;
    store.put_operator(token("ann", Role::Operator, 'd')).await.map_err(e)?;
    check(store.operator_by_hash(&"a".repeat(64)).await.map_err(e)?.is_none(), "a replaced token's old hash is dead")?;
    let ours: Vec<OperatorToken> =
        store.operators().await.map_err(e)?.into_iter().filter(|t| t.name.ends_with(&format!("-{seed}"))).collect();
    check(ours == vec![token("ann", Role::Operator, 'd'), token("bob", Role::Admin, 'b')], "listed by name")?;
    check(store.revoke_operator(&format!("bob-{seed}")).await.map_err(e)?, "revoked")?;
    check(store.operator_by_hash(&"b".repeat(64)).await.map_err(e)?.is_none(), "a revoked token is dead")?;
    check(!store.revoke_operator(&format!("bob-{seed}")).await.map_err(e)?, "revoked once")?;
    for bad in [
        OperatorToken { name: "Bad Name".into(), ..token("x", Role::Viewer, 'e') },
        OperatorToken { hash: "zz".into(), ..token("x", Role::Viewer, 'e') },
    ] {
        check(matches!(store.put_operator(bad).await, Err(StoreError::Invalid(_))), "bad operator token refused")?;
    }

    let record = |n: u64| AuditRecord {
        at_ms: n,
        actor: "alice".into(),
        action: "kick".into(),
        target: format!("player {}", p(n)),
        result: "ok".into(),
    };
    for n in 1..=5 {
        store.audit(AuditLog::Actions, record(n)).await.map_err(e)?;
    }
    let actions = |skip, limit| store.audit_log(AuditLog::Actions, skip, limit);
    check(actions(0, 2).await.map_err(e)? == vec![record(5), record(4)], "newest first")?;
    check(actions(2, 2).await.map_err(e)? == vec![record(3), record(2)], "paged")?;
    check(actions(0, 0).await.map_err(e)?.is_empty(), "limit 0")?;
    // Any skip a client sends is a page past the end, never an overflow or
    // (as a negative Redis index) the oldest records.
    for skip in [5, usize::MAX, isize::MAX as usize - 1, isize::MAX as usize] {
        check(actions(skip, 2).await.map_err(e)?.is_empty(), "a page past the end is empty")?;
    }
    // Refusals go to their own list, trimmed there: they push no action out.
    let refused = AuditRecord { result: "refused: role viewer".into(), ..record(6) };
    for _ in 0..3 {
        store.audit(AuditLog::Refusals, refused.clone()).await.map_err(e)?;
    }
    check(actions(0, 10).await.map_err(e)?.len() == 5, "refusals are not among the actions")?;
    check(store.audit_log(AuditLog::Refusals, 0, 1).await.map_err(e)? == vec![refused], "refusals kept apart")?;

    let login = Login { player: p(5), name: "ann".into(), zone: "meadow".into(), server: "s1".into(), at_ms: 11 };
    store.put_login(login.clone(), Duration::from_secs(60)).await.map_err(e)?;
    store.put_login(Login { player: p(6), ..login.clone() }, Duration::from_millis(100)).await.map_err(e)?;
    check(store.login(p(5)).await.map_err(e)? == Some(login), "login kept")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check(store.login(p(6)).await.map_err(e)?.is_none(), "an expired login is gone")?;
    check(store.login(p(7)).await.map_err(e)?.is_none(), "no login")?;

    let claim = format!("zone-claim:meadow-{seed}");
    check(store.claim(&claim, Duration::from_millis(200)).await.map_err(e)?, "the first claim wins")?;
    check(!store.claim(&claim, Duration::from_millis(200)).await.map_err(e)?, "a second claim loses")?;
    check(store.claim(&format!("{claim}-b"), Duration::from_secs(5)).await.map_err(e)?, "other keys are separate")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check(store.claim(&claim, Duration::from_millis(200)).await.map_err(e)?, "claimable again after its ttl")?;

    let (down, slow) = (format!("GameServerDown|s-{seed}"), format!("TickOver100ms|meadow-{seed}"));
    check(!store.alert_transition(&down, false, "r0").await.map_err(e)?, "never fired: nothing to resolve")?;
    check(store.alert_transition(&down, true, "f1").await.map_err(e)?, "the first to see it fire tells")?;
    check(!store.alert_transition(&down, true, "f1 again").await.map_err(e)?, "a second instance does not")?;
    check(store.alert_transition(&slow, true, "f2").await.map_err(e)?, "other alerts are separate")?;
    let records = store.alerts().await.map_err(e)?;
    check(records.feed == ["f2", "f1"], "the feed, newest first, without the refused")?;
    let mut firing = records.firing.clone();
    firing.sort();
    check(firing == ["f1", "f2"], "both firing, as recorded")?;
    check(store.alert_transition(&down, false, "r1").await.map_err(e)?, "resolved once")?;
    check(!store.alert_transition(&down, false, "r1 again").await.map_err(e)?, "and once only")?;
    check(store.alert_transition(&down, true, "f3").await.map_err(e)?, "it may fire again after")?;
    let records = store.alerts().await.map_err(e)?;
    check(records.feed[..3] == ["f3", "r1", "f2"], "every transition in the feed")?;
    check(records.firing.len() == 2 && records.firing.contains(&"f3".to_owned()), "the newest record while firing")?;
    for (id, record) in [("", "r"), ("a\nb", "r")] {
        check(matches!(store.alert_transition(id, true, record).await, Err(StoreError::Invalid(_))), "a bad id")?;
    }
    let huge = "x".repeat(9 * 1024);
    check(matches!(store.alert_transition(&down, false, &huge).await, Err(StoreError::Invalid(_))), "a huge record")?;
    for i in 0..crate::ops::ALERT_FEED_KEEP {
        store.alert_transition(&format!("Flap|{seed}"), i % 2 == 0, "flap").await.map_err(e)?;
    }
    check(store.alerts().await.map_err(e)?.feed.len() == crate::ops::ALERT_FEED_KEEP, "the feed is capped")?;
    Ok(())
}

/// A store with no rollout yet: one runner at a time, writes only by the
/// lease's holder, the lease lost when its time runs out.
pub async fn rollouts(store: &dyn OpsStore) -> ContractResult {
    use crate::ops::RolloutPut;
    let put = |current, succeeded, done| RolloutPut { current, succeeded, done };
    check(store.rollouts().await.map_err(e)? == Default::default(), "no rollout at first")?;
    check(!store.rollout_put("a", put("r1", None, false)).await.map_err(e)?, "no lease, no write")?;
    check(store.rollout_lease("a", Duration::from_millis(300)).await.map_err(e)?, "the first runner takes it")?;
    check(!store.rollout_lease("b", Duration::from_secs(5)).await.map_err(e)?, "a second runner is refused")?;
    check(store.rollout_put("a", put("r1", None, false)).await.map_err(e)?, "the holder writes")?;
    check(!store.rollout_put("b", put("r2", None, false)).await.map_err(e)?, "another does not")?;
    let records = store.rollouts().await.map_err(e)?;
    let want = |current: &str, runner: Option<&str>, last: Option<&str>| crate::ops::RolloutRecords {
        current: Some(current.to_owned()),
        runner: runner.map(str::to_owned),
        last_succeeded: last.map(str::to_owned),
    };
    check(records == want("r1", Some("a"), None), "the record and its runner")?;
    check(store.rollout_lease("a", Duration::from_millis(300)).await.map_err(e)?, "the holder renews")?;
    tokio::time::sleep(Duration::from_millis(450)).await;
    check(store.rollouts().await.map_err(e)?.runner.is_none(), "a lease not renewed runs out")?;
    check(store.rollouts().await.map_err(e)? == want("r1", None, None), "its record stays, runnerless")?;
    check(!store.rollout_put("a", put("r1 late", None, true)).await.map_err(e)?, "a runner past its lease is refused")?;
    check(store.rollout_lease("b", Duration::from_secs(5)).await.map_err(e)?, "another runner takes over")?;
    check(store.rollout_put("b", put("r1 done", Some("r1 done"), true)).await.map_err(e)?, "and finishes it")?;
    check(store.rollouts().await.map_err(e)? == want("r1 done", None, Some("r1 done")), "done frees the lease")?;
    check(store.rollout_lease("a", Duration::from_secs(5)).await.map_err(e)?, "free for the next rollout")?;
    check(store.rollout_put("a", put("r2", None, false)).await.map_err(e)?, "which writes")?;
    check(store.rollouts().await.map_err(e)? == want("r2", Some("a"), Some("r1 done")), "the last success kept")?;
    let huge = "x".repeat(257 * 1024);
    for (runner, current) in [("", "r"), ("a\nb", "r"), ("a", huge.as_str())] {
        let bad = store.rollout_put(runner, put(current, None, false)).await;
        check(matches!(bad, Err(StoreError::Invalid(_))), "a bad runner name or a huge record")?;
    }
    Ok(())
}

/// `key` must be new to the limiter.
pub async fn rate_limiter(limiter: &dyn RateLimiter, key: &str) -> ContractResult {
    let quota = Quota { burst: 3, period: Duration::from_millis(600) };
    for n in 1..=5 {
        check(limiter.peek(key, quota).await.map_err(e)? == Decision::Allowed, &format!("peek {n} counts nothing"))?;
    }
    for n in 1..=3 {
        check(limiter.check(key, quota).await.map_err(e)? == Decision::Allowed, &format!("burst request {n}"))?;
    }
    let Decision::Limited { retry_after } = limiter.check(key, quota).await.map_err(e)? else {
        return Err("the request after the burst is limited".into());
    };
    check(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200), "retry after one interval")?;
    check(matches!(limiter.peek(key, quota).await.map_err(e)?, Decision::Limited { .. }), "a peek sees the limit")?;
    check(
        limiter.check(&format!("{key}-other"), quota).await.map_err(e)? == Decision::Allowed,
        "other keys are separate",
    )?;
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    check(limiter.check(key, quota).await.map_err(e)? == Decision::Allowed, "allowed again after retry_after")?;
    check(matches!(limiter.check("", quota).await, Err(StoreError::Invalid(_))), "an empty key is refused")?;
    check(matches!(limiter.check(&"k".repeat(300), quota).await, Err(StoreError::Invalid(_))), "a long key too")?;
    Ok(())
}
