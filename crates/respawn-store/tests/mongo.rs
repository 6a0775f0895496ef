//! The cold-snapshot contract against a real MongoDB-wire-compatible server
//! started by `scripts/services` (which exports RESPAWN_TEST_MONGO_URI).

use respawn_store::mongo::MongoColdSnapshots;
use respawn_store::{contract, ColdSnapshots, StoreError};

fn mongo_uri() -> String {
    std::env::var("RESPAWN_TEST_MONGO_URI")
        .expect("RESPAWN_TEST_MONGO_URI is not set: run the tests through scripts/test or scripts/services run")
}

#[tokio::test]
async fn mongodb_honours_the_cold_snapshot_contract() {
    let database = format!("respawn_test_{}", respawn_harness::unique_suffix());
    let store = MongoColdSnapshots::new(&mongo_uri(), &database).await.expect("uri");
    contract::cold_snapshots(&store, 1).await.expect("cold snapshots");
    // The leases from files here: the cold store keeps a fence of its own.
    let leases_dir = respawn_harness::TempDir::new("mongo-leases").expect("temp dir");
    let leases = respawn_store::file::FileLeases::new(leases_dir.path());
    contract::cold_fencing(&leases, &store, 20).await.expect("cold fencing");
    // The zones' history: the same contract, in collections of its own.
    let history = MongoColdSnapshots::history(&mongo_uri(), &database).await.expect("uri");
    assert!(history.list(1).await.expect("list").is_empty(), "the cold snapshots are not in the history");
    contract::cold_snapshots(&history, 2).await.expect("history segments");
    contract::cold_fencing(&leases, &history, 21).await.expect("history fencing");
    assert!(store.list(2).await.expect("list").is_empty(), "nor the history among the cold snapshots");
}

#[tokio::test]
async fn a_dead_mongodb_is_unavailable_quickly_not_a_hang() {
    let store = MongoColdSnapshots::new("mongodb://127.0.0.1:1/?directConnection=true", "dead").await.expect("uri");
    let started = std::time::Instant::now();
    let result = store.list(1).await;
    assert!(matches!(result, Err(StoreError::Unavailable { .. })), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded by the call timeout");
}

/// A private server (`RESPAWN_MONGOD`, exported by `scripts/services`) on a
/// free port over `dir`, and the URI to reach it once it listens.
fn start_private_server(dir: &std::path::Path) -> (std::process::Child, String) {
    let server = std::env::var("RESPAWN_MONGOD")
        .expect("RESPAWN_MONGOD is not set: run the tests through scripts/test or scripts/services run");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = std::process::Command::new(server)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the MongoDB-compatible server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the server did not listen within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
}

/// What `put` acknowledged is in the server's journal: killing the server
/// right after loses nothing (a server's default acknowledgement from memory
/// did, on the MongoDB-compatible server the tests use).
#[tokio::test]
async fn a_stored_snapshot_survives_the_server_killed_right_after() {
    let dir = std::env::temp_dir().join(format!("respawn-mongo-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let snapshot = respawn_store::StoredSnapshot {
        meta: respawn_store::SnapshotMeta { zone: 7, tick: 42, taken_at_ms: 1_000 },
        bytes: vec![9; 4096],
    };

    let (mut server, uri) = start_private_server(&dir);
    let store = MongoColdSnapshots::new(&uri, "kill_test").await.expect("uri");
    store.put(snapshot.clone(), respawn_store::Fence::NONE).await.expect("stored");
    server.kill().expect("kill -9");
    server.wait().expect("reaped");

    let (mut server, uri) = start_private_server(&dir);
    let store = MongoColdSnapshots::new(&uri, "kill_test").await.expect("uri");
    let listed = store.list(7).await;
    let got = store.get(7, 42).await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(listed.expect("list").iter().map(|m| m.tick).collect::<Vec<_>>(), vec![42]);
    assert_eq!(got.expect("get").map(|s| s.bytes), Some(snapshot.bytes));
}
