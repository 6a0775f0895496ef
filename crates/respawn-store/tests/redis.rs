//! The contract suites against a real Redis started by `scripts/services`
//! (which exports RESPAWN_TEST_REDIS_URL).

use respawn_store::redis_store::{
    RedisConn, RedisHotSnapshots, RedisJournal, RedisLeases, RedisOps, RedisRateLimiter, RedisRegistry, RedisSessions,
};
use respawn_store::{contract, HotSnapshots, StoreError};

fn redis_url() -> String {
    std::env::var("RESPAWN_TEST_REDIS_URL")
        .expect("RESPAWN_TEST_REDIS_URL is not set: run the tests through scripts/test or scripts/services run")
}

fn unique_prefix() -> String {
    format!("test-{}", respawn_harness::unique_suffix())
}

#[tokio::test]
async fn redis_honours_every_contract() {
    let conn = RedisConn::new(&redis_url(), &unique_prefix()).expect("url");
    contract::hot_snapshots(&RedisHotSnapshots::new(conn.clone()), 1).await.expect("hot snapshots");
    contract::journal(&RedisJournal::new(conn.clone()), 1).await.expect("journal");
    contract::leases(&RedisLeases::new(conn.clone()), 10).await.expect("leases");
    let (hot, journal) = (RedisHotSnapshots::new(conn.clone()), RedisJournal::new(conn.clone()));
    contract::fencing(&RedisLeases::new(conn.clone()), &hot, &journal, 20).await.expect("fencing");
    contract::sessions(&RedisSessions::new(conn.clone()), 1).await.expect("sessions");
    contract::registry(&RedisRegistry::new(conn.clone()), 1).await.expect("registry");
    contract::ops(&RedisOps::new(conn.clone()), 1).await.expect("operations state");
    contract::rollouts(&RedisOps::new(conn.clone())).await.expect("rollouts");
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

/// Operator tokens are found through an index by hash; tokens stored before
/// the index existed are indexed at the first lookup, not lost.
#[tokio::test]
async fn operator_tokens_stored_before_the_index_are_still_found() {
    use respawn_store::ops::{OpsStore, Role};
    let prefix = unique_prefix();
    let mut raw =
        redis::Client::open(redis_url()).expect("url").get_multiplexed_async_connection().await.expect("redis");
    let hash = "e".repeat(64);
    // The layout before: the token alone, in `<prefix>:operators`.
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:operators"))
        .arg("old-admin")
        .arg(format!("admin\n{hash}\n1\n-"))
        .query_async(&mut raw)
        .await
        .expect("hset");
    let ops = RedisOps::new(RedisConn::new(&redis_url(), &prefix).expect("url"));
    let found = ops.operator_by_hash(&hash).await.expect("lookup").expect("the old token");
    assert_eq!((found.name.as_str(), found.role), ("old-admin", Role::Admin));
    let indexed: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}:operators-by-hash"))
        .arg(&hash)
        .query_async(&mut raw)
        .await
        .expect("hget");
    assert_eq!(indexed.as_deref(), Some("old-admin"), "indexed once found");
    assert!(ops.operator_by_hash(&"f".repeat(64)).await.expect("lookup").is_none());
}
