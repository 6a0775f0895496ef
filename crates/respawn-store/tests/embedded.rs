//! The contract suites against the embedded implementations (files, memory).

use respawn_harness::TempDir;
use respawn_store::{contract, file, ColdSnapshots};

#[tokio::test]
async fn files_honour_every_contract() {
    let temp = TempDir::new("store-contract").expect("temp dir");
    let dir = temp.path();
    contract::hot_snapshots(&file::FileHotSnapshots::new(dir), 1).await.expect("hot snapshots");
    contract::cold_snapshots(&file::FileColdSnapshots::new(dir), 1).await.expect("cold snapshots");
    contract::journal(&file::FileJournal::new(dir), 1).await.expect("journal");
    contract::leases(&file::FileLeases::new(dir), 10).await.expect("leases");
    let (hot, journal) = (file::FileHotSnapshots::new(dir), file::FileJournal::new(dir));
    contract::fencing(&file::FileLeases::new(dir), &hot, &journal, 20).await.expect("fencing");
    contract::cold_fencing(&file::FileLeases::new(dir), &file::FileColdSnapshots::new(dir), 30)
        .await
        .expect("cold fencing");
    // The zones' history: the same contract, in a directory of its own.
    let history = file::FileColdSnapshots::history(dir);
    assert!(history.list(1).await.expect("list").is_empty(), "the cold snapshots are not in the history");
    contract::cold_snapshots(&history, 2).await.expect("history segments");
    contract::cold_fencing(&file::FileLeases::new(dir), &history, 31).await.expect("history fencing");
    assert!(file::FileColdSnapshots::new(dir).list(2).await.expect("list").is_empty(), "nor the reverse");
    contract::sessions(&file::FileSessions::new(dir), 1).await.expect("sessions");
    contract::registry(&respawn_store::memory::MemoryRegistry::new(), 1).await.expect("registry");
    contract::ops(&respawn_store::memory::MemoryOps::new(), 1).await.expect("operations state");
    contract::rollouts(&respawn_store::memory::MemoryOps::new()).await.expect("rollouts");
    let limiter = respawn_store::ratelimit::MemoryRateLimiter::default();
    contract::rate_limiter(&limiter, "ip:127.0.0.1").await.expect("rate limiter");
}

#[tokio::test]
async fn a_torn_journal_tail_is_ignored_and_appends_continue() {
    use respawn_store::{Journal, JournalEntry};
    let temp = TempDir::new("store-torn").expect("temp dir");
    let dir = temp.path();
    let journal = file::FileJournal::new(dir);
    let entry = |tick| JournalEntry { tick, batch: vec![1, 2, 3] };
    journal.append(7, vec![entry(1), entry(2)], respawn_store::Fence::NONE).await.expect("append");
    // A crash mid-write leaves half a record behind.
    let path = dir.join("journal/zone-7.log");
    let mut bytes = std::fs::read(&path).expect("journal file");
    bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 99]);
    std::fs::write(&path, bytes).expect("write");
    let reopened = file::FileJournal::new(dir);
    assert_eq!(reopened.read_after(7, 0).await.expect("read"), vec![entry(1), entry(2)]);
    // The fragment is cut before the next append, which would otherwise follow it unread.
    reopened.append(7, vec![entry(3)], respawn_store::Fence::NONE).await.expect("append");
    assert_eq!(file::FileJournal::new(dir).read_after(7, 0).await.expect("read"), vec![entry(1), entry(2), entry(3)]);
}

/// A process stopped in the middle of a fenced write keeps the zone's lock
/// (the test holds it as such a process would): another server asking for
/// the lease, or writing, is told the store is unavailable after a bounded
/// wait instead of waiting forever, and goes on once the lock is let go.
#[tokio::test]
async fn a_lock_held_by_a_stalled_process_makes_the_zone_unavailable_not_blocked() {
    use respawn_store::{lease::Leases, Journal, JournalEntry, StoreError};
    let temp = TempDir::new("store-stalled").expect("temp dir");
    let dir = temp.path();
    let leases = file::FileLeases::new(dir);
    let ttl = std::time::Duration::from_secs(5);
    let lease = leases.acquire(3, "server-a", ttl).await.expect("acquire").expect("free");
    let stalled = std::fs::File::open(dir.join("leases/zone-3.lock")).expect("the zone's lock file");
    stalled.lock_shared().expect("a writer's shared lock");

    let started = std::time::Instant::now();
    let taken = leases.acquire(3, "server-b", ttl).await;
    assert!(matches!(taken, Err(StoreError::Unavailable { .. })), "{taken:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "waited {:?}", started.elapsed());
    let renewed = leases.renew(&lease, ttl).await;
    assert!(matches!(renewed, Err(StoreError::Unavailable { .. })), "{renewed:?}");
    // Writers share the lock: the owner's journal goes on meanwhile.
    let journal = file::FileJournal::new(dir);
    let entry = JournalEntry { tick: 1, batch: vec![1] };
    journal.append(3, vec![entry], respawn_store::Fence(lease.token)).await.expect("a shared lock admits writers");

    drop(stalled);
    assert!(leases.renew(&lease, ttl).await.expect("renew").is_some(), "renewed once the lock is free");
}
