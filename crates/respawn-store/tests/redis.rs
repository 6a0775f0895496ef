//! The contract suites against a real Redis started by `scripts/services`
//! (which exports RESPAWN_TEST_REDIS_URL).

use respawn_store::redis_store::{
    RedisConn, RedisHotSnapshots, RedisJournal, RedisOps, RedisRateLimiter, RedisRegistry, RedisSessions,
};
use respawn_store::{contract, HotSnapshots, StoreError};

fn redis_url() -> String {
    std::env::var("RESPAWN_TEST_REDIS_URL")
        .expect("RESPAWN_TEST_REDIS_URL is not set: run the tests through scripts/test or scripts/services run")
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("test-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn redis_honours_every_contract() {
    let conn = RedisConn::new(&redis_url(), &unique_prefix()).expect("url");
    contract::hot_snapshots(&RedisHotSnapshots::new(conn.clone()), 1).await.expect("hot snapshots");
    contract::journal(&RedisJournal::new(conn.clone()), 1).await.expect("journal");
    contract::sessions(&RedisSessions::new(conn.clone()), 1).await.expect("sessions");
    contract::registry(&RedisRegistry::new(conn.clone()), 1).await.expect("registry");
    contract::ops(&RedisOps::new(conn.clone()), 1).await.expect("operations state");
    contract::rate_limiter(&RedisRateLimiter::new(conn), "ip:127.0.0.1").await.expect("rate limiter");
}

#[tokio::test]
async fn a_dead_redis_is_unavailable_quickly_not_a_hang() {
    // Nothing listens on port 1.
    let conn = RedisConn::new("redis://127.0.0.1:1/0", "dead").expect("url");
    let started = std::time::Instant::now();
    let result = RedisHotSnapshots::new(conn).recent(1).await;
    assert!(matches!(result, Err(StoreError::Unavailable { .. })), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded by the call timeout");
}
