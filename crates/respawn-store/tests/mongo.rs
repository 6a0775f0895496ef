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
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let database = format!("respawn_test_{}_{nanos}", std::process::id());
    let store = MongoColdSnapshots::new(&mongo_uri(), &database).await.expect("uri");
    contract::cold_snapshots(&store, 1).await.expect("cold snapshots");
}

#[tokio::test]
async fn a_dead_mongodb_is_unavailable_quickly_not_a_hang() {
    let store = MongoColdSnapshots::new("mongodb://127.0.0.1:1/?directConnection=true", "dead").await.expect("uri");
    let started = std::time::Instant::now();
    let result = store.list(1).await;
    assert!(matches!(result, Err(StoreError::Unavailable { .. })), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded by the call timeout");
}
