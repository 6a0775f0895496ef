//! Real implementations on Redis: hot snapshots (a two-element list per
//! zone), the journal (a stream per zone, entry id = tick) and resume tokens
//! (keys with a time to live). The connection is made lazily and re-made by
//! the driver, so a zone server starts and keeps ticking while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::{
    bounded, valid_resume_token, HotSnapshots, Journal, JournalEntry, Registry, ResumeSession, ServerEntry,
    ServerState, Sessions, SnapshotMeta, StoreError, StoreResult, StoredSnapshot, CALL_TIMEOUT,
};

const BACKEND: &str = "redis";

fn err(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        StoreError::Unavailable { backend: BACKEND, message: e.to_string() }
    } else {
        StoreError::Backend { backend: BACKEND, message: e.to_string() }
    }
}

/// A shared, lazily made connection and the key prefix of this deployment.
#[derive(Clone)]
pub struct RedisConn {
    client: redis::Client,
    manager: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
    /// When connecting last failed: calls fail fast for a moment after, so a
    /// dead Redis costs one attempt, not one per call.
    failed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    prefix: String,
}

/// How long calls fail fast after a failed connection attempt.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn").field("prefix", &self.prefix).finish()
    }
}

impl RedisConn {
    /// Parses `url` (`redis://host:port/db`); connects on first use.
    pub fn new(url: &str, prefix: &str) -> StoreResult<Self> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Invalid(format!("redis url {url:?}: {e}")))?;
        Ok(Self { client, manager: Arc::default(), failed_at: Arc::default(), prefix: prefix.to_owned() })
    }

    async fn conn(&self) -> StoreResult<ConnectionManager> {
        let mut slot = self.manager.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let recently_failed =
            self.failed_at.lock().ok().and_then(|f| *f).is_some_and(|t| t.elapsed() < RECONNECT_AFTER);
        if recently_failed {
            return Err(StoreError::Unavailable { backend: BACKEND, message: "connection failed moments ago".into() });
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(0);
        let manager = bounded(BACKEND, async {
            ConnectionManager::new_with_config(self.client.clone(), config).await.map_err(err)
        })
        .await;
        if let Ok(mut failed) = self.failed_at.lock() {
            *failed = manager.is_err().then(std::time::Instant::now);
        }
        let manager = manager?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    fn key(&self, parts: &str) -> String {
        format!("{}:{parts}", self.prefix)
    }
}

/// Snapshot bytes stored behind a 16-byte header: tick, then taken-at.
fn pack(s: &StoredSnapshot) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + s.bytes.len());
    v.extend_from_slice(&s.meta.tick.to_le_bytes());
    v.extend_from_slice(&s.meta.taken_at_ms.to_le_bytes());
    v.extend_from_slice(&s.bytes);
    v
}

fn unpack(zone: u32, v: Vec<u8>) -> StoreResult<StoredSnapshot> {
    if v.len() < 16 {
        return Err(StoreError::Corrupt(format!("hot snapshot of zone {zone} is {} bytes", v.len())));
    }
    let tick = u64::from_le_bytes(v[0..8].try_into().unwrap_or_default());
    let taken_at_ms = u64::from_le_bytes(v[8..16].try_into().unwrap_or_default());
    Ok(StoredSnapshot { meta: SnapshotMeta { zone, tick, taken_at_ms }, bytes: v[16..].to_vec() })
}

#[derive(Debug, Clone)]
pub struct RedisHotSnapshots {
    redis: RedisConn,
}

impl RedisHotSnapshots {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis }
    }
}

impl HotSnapshots for RedisHotSnapshots {
    fn put(&self, snapshot: StoredSnapshot) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let key = self.redis.key(&format!("hot:{}", snapshot.meta.zone));
            let mut c = self.redis.conn().await?;
            bounded(BACKEND, async {
                redis::pipe()
                    .atomic()
                    .lpush(&key, pack(&snapshot))
                    .ltrim(&key, 0, 1)
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(err)
            })
            .await
        }
        .boxed()
    }

    fn recent(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<StoredSnapshot>>> {
        async move {
            let key = self.redis.key(&format!("hot:{zone}"));
            let mut c = self.redis.conn().await?;
            let raw: Vec<Vec<u8>> = bounded(BACKEND, async { c.lrange(&key, 0, 1).await.map_err(err) }).await?;
            raw.into_iter().map(|v| unpack(zone, v)).collect()
        }
        .boxed()
    }

    fn clear(&self, zone: u32) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let key = self.redis.key(&format!("hot:{zone}"));
            let mut c = self.redis.conn().await?;
            bounded(BACKEND, async { c.del::<_, ()>(&key).await.map_err(err) }).await
        }
        .boxed()
    }
}

#[derive(Debug, Clone)]
pub struct RedisJournal {
    redis: RedisConn,
}

impl RedisJournal {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis }
    }

    fn key(&self, zone: u32) -> String {
        self.redis.key(&format!("journal:{zone}"))
    }
}

impl Journal for RedisJournal {
    fn append(&self, zone: u32, entries: Vec<JournalEntry>) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            if entries.is_empty() {
                return Ok(());
            }
            let key = self.key(zone);
            let mut c = self.redis.conn().await?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            for e in &entries {
                pipe.xadd(&key, format!("{}-1", e.tick), &[("b", e.batch.as_slice())]).ignore();
            }
            bounded(BACKEND, async {
                pipe.query_async::<()>(&mut c).await.map_err(|e| {
                    // Redis refuses an id at or below the stream's last one.
                    if e.to_string().contains("equal or smaller") {
                        StoreError::Invalid(format!("journal tick is not above the last stored: {e}"))
                    } else {
                        err(e)
                    }
                })
            })
            .await
        }
        .boxed()
    }

    fn read_after(&self, zone: u32, after: u64) -> BoxFuture<'_, StoreResult<Vec<JournalEntry>>> {
        async move {
            let key = self.key(zone);
            let mut c = self.redis.conn().await?;
            let reply: redis::streams::StreamRangeReply = bounded(BACKEND, async {
                c.xrange(&key, format!("{}-0", after.saturating_add(1)), "+").await.map_err(err)
            })
            .await?;
            reply
                .ids
                .into_iter()
                .map(|id| {
                    let tick = id
                        .id
                        .split_once('-')
                        .and_then(|(t, _)| t.parse().ok())
                        .ok_or_else(|| StoreError::Corrupt(format!("journal id {}", id.id)))?;
                    let batch: Vec<u8> = id
                        .get("b")
                        .ok_or_else(|| StoreError::Corrupt(format!("journal entry {} has no batch", id.id)))?;
                    Ok(JournalEntry { tick, batch })
                })
                .collect()
        }
        .boxed()
    }

    fn trim_through(&self, zone: u32, through: u64) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let key = self.key(zone);
            let mut c = self.redis.conn().await?;
            bounded(BACKEND, async {
                redis::cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg(format!("{}-0", through.saturating_add(1)))
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(err)
            })
            .await
        }
        .boxed()
    }

    fn reset(&self, zone: u32) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let key = self.key(zone);
            let mut c = self.redis.conn().await?;
            bounded(BACKEND, async { c.del::<_, ()>(&key).await.map_err(err) }).await
        }
        .boxed()
    }

    fn len(&self, zone: u32) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            let key = self.key(zone);
            let mut c = self.redis.conn().await?;
            bounded(BACKEND, async { c.xlen(&key).await.map_err(err) }).await
        }
        .boxed()
    }
}

#[derive(Debug, Clone)]
pub struct RedisSessions {
    redis: RedisConn,
}

impl RedisSessions {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis }
    }
}

impl Sessions for RedisSessions {
    fn put(&self, token: &str, session: ResumeSession, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        let token = token.to_owned();
        async move {
            if !valid_resume_token(&token) {
                return Err(StoreError::Invalid("malformed resume token".into()));
            }
            let key = self.redis.key(&format!("session:{token}"));
            let value = format!("{}\n{}\n{}", session.player_id, session.zone, session.name);
            let mut c = self.redis.conn().await?;
            let ms = ttl.as_millis().max(1) as u64;
            bounded(BACKEND, async { c.pset_ex::<_, _, ()>(&key, value, ms).await.map_err(err) }).await
        }
        .boxed()
    }

    fn get(&self, token: &str) -> BoxFuture<'_, StoreResult<Option<ResumeSession>>> {
        let token = token.to_owned();
        async move {
            if !valid_resume_token(&token) {
                return Ok(None);
            }
            let key = self.redis.key(&format!("session:{token}"));
            let mut c = self.redis.conn().await?;
            let value: Option<String> = bounded(BACKEND, async { c.get(&key).await.map_err(err) }).await?;
            let Some(value) = value else { return Ok(None) };
            let mut parts = value.splitn(3, '\n');
            let corrupt = || StoreError::Corrupt(format!("session {token}"));
            let player_id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(corrupt)?;
            let zone = parts.next().ok_or_else(corrupt)?.to_owned();
            let name = parts.next().ok_or_else(corrupt)?.to_owned();
            Ok(Some(ResumeSession { player_id, name, zone }))
        }
        .boxed()
    }
}

/// The server registry in Redis: a key per server (`server:<id>`, expiring
/// with the heartbeat's time to live) and a set of the ids ever seen, pruned
/// of expired ones as they are listed.
#[derive(Debug, Clone)]
pub struct RedisRegistry {
    redis: RedisConn,
}

impl RedisRegistry {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis }
    }
}

/// `address`, `state`, `version`, `zones` (comma-separated), one a line; validation keeps newlines out.
fn encode_entry(e: &ServerEntry) -> String {
    format!("{}\n{}\n{}\n{}", e.address, e.state.as_str(), e.version, e.zones.join(","))
}

fn decode_entry(id: &str, value: &str) -> StoreResult<ServerEntry> {
    let corrupt = || StoreError::Corrupt(format!("registry entry {id}"));
    let mut lines = value.splitn(4, '\n');
    let address = lines.next().ok_or_else(corrupt)?.to_owned();
    let state = lines.next().and_then(ServerState::parse).ok_or_else(corrupt)?;
    let version = lines.next().ok_or_else(corrupt)?.to_owned();
    let zones = lines.next().ok_or_else(corrupt)?;
    let zones = if zones.is_empty() { Vec::new() } else { zones.split(',').map(str::to_owned).collect() };
    Ok(ServerEntry { id: id.to_owned(), address, zones, state, version })
}

impl Registry for RedisRegistry {
    fn heartbeat(&self, entry: ServerEntry, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            entry.validate()?;
            let key = self.redis.key(&format!("server:{}", entry.id));
            let ids = self.redis.key("servers");
            let mut c = self.redis.conn().await?;
            let ms = ttl.as_millis().max(1) as u64;
            bounded(BACKEND, async {
                redis::pipe()
                    .atomic()
                    .pset_ex(&key, encode_entry(&entry), ms)
                    .sadd(&ids, &entry.id)
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(err)
            })
            .await
        }
        .boxed()
    }

    fn servers(&self) -> BoxFuture<'_, StoreResult<Vec<ServerEntry>>> {
        async move {
            let ids_key = self.redis.key("servers");
            let mut c = self.redis.conn().await?;
            let mut ids: Vec<String> = bounded(BACKEND, async { c.smembers(&ids_key).await.map_err(err) }).await?;
            ids.sort();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = ids.iter().map(|id| self.redis.key(&format!("server:{id}"))).collect();
            let values: Vec<Option<String>> = bounded(BACKEND, async { c.mget(&keys).await.map_err(err) }).await?;
            let mut live = Vec::new();
            let mut expired = Vec::new();
            for (id, value) in ids.iter().zip(values) {
                match value {
                    Some(v) => live.push(decode_entry(id, &v)?),
                    None => expired.push(id.clone()),
                }
            }
            if !expired.is_empty() {
                bounded(BACKEND, async { c.srem::<_, _, ()>(&ids_key, &expired).await.map_err(err) }).await?;
            }
            Ok(live)
        }
        .boxed()
    }

    fn remove(&self, id: &str) -> BoxFuture<'_, StoreResult<()>> {
        let id = id.to_owned();
        async move {
            let key = self.redis.key(&format!("server:{id}"));
            let ids = self.redis.key("servers");
            let mut c = self.redis.conn().await?;
            bounded(BACKEND, async {
                redis::pipe().atomic().del(&key).srem(&ids, &id).query_async::<()>(&mut c).await.map_err(err)
            })
            .await
        }
        .boxed()
    }
}
