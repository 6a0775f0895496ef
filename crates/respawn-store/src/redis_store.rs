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

use crate::lease::{self, Lease, Leases};
use crate::ops::{AuditLog, AuditRecord, Ban, Login, OperatorToken, OpsStore, Role};
use crate::ratelimit::{Counting, Decision, Quota, RateLimiter};
use crate::{
    bounded, Fence, HotSnapshots, Journal, JournalEntry, Registry, ResumeSession, ServerEntry, ServerState, Sessions,
    SnapshotMeta, StoreError, StoreResult, StoredSnapshot, CALL_TIMEOUT,
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

/// The fencing token a write checks against, in every fenced script's
/// KEYS[2]: the last lease token granted for the zone (no time to live).
fn fence_key(redis: &RedisConn, zone: u32) -> String {
    redis.key(&format!("fence:{zone}"))
}

/// What a fenced script answers: `ok`, `fenced <newer token>` or `stale <last tick>`.
fn fenced_reply(zone: u32, fence: Fence, reply: Vec<String>) -> StoreResult<()> {
    match reply.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["ok"] => Ok(()),
        ["fenced", newer] => Err(StoreError::Fenced { zone, mine: fence.0, newer: newer.parse().unwrap_or(u64::MAX) }),
        ["stale", last] => Err(StoreError::Invalid(format!("journal tick is not above the last stored, {last}"))),
        _ => Err(StoreError::Backend { backend: BACKEND, message: format!("unexpected script reply {reply:?}") }),
    }
}

/// KEYS[1] the zone's list, KEYS[2] its fence; ARGV the writer's token and the packed snapshot.
const PUT_HOT_LUA: &str = r"
local newer = tonumber(redis.call('GET', KEYS[2]) or '0')
if newer > tonumber(ARGV[1]) then return {'fenced', string.format('%d', newer)} end
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], 0, 1)
return {'ok'}
";

#[derive(Debug, Clone)]
pub struct RedisHotSnapshots {
    redis: RedisConn,
    put: Arc<redis::Script>,
}

impl RedisHotSnapshots {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis, put: Arc::new(redis::Script::new(PUT_HOT_LUA)) }
    }
}

impl HotSnapshots for RedisHotSnapshots {
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let zone = snapshot.meta.zone;
            let mut invocation = self.put.key(self.redis.key(&format!("hot:{zone}")));
            invocation.key(fence_key(&self.redis, zone)).arg(fence.0).arg(pack(&snapshot));
            let mut c = self.redis.conn().await?;
            let reply: Vec<String> =
                bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            fenced_reply(zone, fence, reply)
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

/// KEYS[1] the zone's stream, KEYS[2] its fence; ARGV the writer's token,
/// then each entry's tick and batch. Every tick is checked before any is
/// added, so an append is all or nothing.
const APPEND_JOURNAL_LUA: &str = r"
local newer = tonumber(redis.call('GET', KEYS[2]) or '0')
if newer > tonumber(ARGV[1]) then return {'fenced', string.format('%d', newer)} end
local last = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = tonumber(string.match(info[i + 1], '^(%d+)-')) end
  end
end
for i = 2, #ARGV, 2 do
  local tick = tonumber(ARGV[i])
  if tick <= last then return {'stale', string.format('%d', last)} end
  last = tick
end
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], ARGV[i] .. '-1', 'b', ARGV[i + 1])
end
return {'ok'}
";

/// KEYS[1] the zone's stream, KEYS[2] its fence; ARGV the writer's token.
const RESET_JOURNAL_LUA: &str = r"
local newer = tonumber(redis.call('GET', KEYS[2]) or '0')
if newer > tonumber(ARGV[1]) then return {'fenced', string.format('%d', newer)} end
redis.call('DEL', KEYS[1])
return {'ok'}
";

#[derive(Debug, Clone)]
pub struct RedisJournal {
    redis: RedisConn,
    append: Arc<redis::Script>,
    reset: Arc<redis::Script>,
}

impl RedisJournal {
    pub fn new(redis: RedisConn) -> Self {
        Self {
            redis,
            append: Arc::new(redis::Script::new(APPEND_JOURNAL_LUA)),
            reset: Arc::new(redis::Script::new(RESET_JOURNAL_LUA)),
        }
    }

    fn key(&self, zone: u32) -> String {
        self.redis.key(&format!("journal:{zone}"))
    }
}

impl Journal for RedisJournal {
    fn append(&self, zone: u32, entries: Vec<JournalEntry>, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            if entries.is_empty() {
                return Ok(());
            }
            let mut invocation = self.append.key(self.key(zone));
            invocation.key(fence_key(&self.redis, zone)).arg(fence.0);
            for e in &entries {
                invocation.arg(e.tick).arg(e.batch.as_slice());
            }
            let mut c = self.redis.conn().await?;
            let reply: Vec<String> =
                bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            fenced_reply(zone, fence, reply)
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

    fn reset(&self, zone: u32, fence: Fence) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut invocation = self.reset.key(self.key(zone));
            invocation.key(fence_key(&self.redis, zone)).arg(fence.0);
            let mut c = self.redis.conn().await?;
            let reply: Vec<String> =
                bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            fenced_reply(zone, fence, reply)
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

/// Takes a player's resume session if the hash matches: get, compare, delete, atomically.
const TAKE_SESSION_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local nl = string.find(v, '\n', 1, true)
if not nl or string.sub(v, 1, nl - 1) ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return v
";

/// KEYS[1] the zone's lease, KEYS[2] its fence; ARGV the owner and the time
/// to live (ms). Grants a new token when the lease is free or the owner's
/// own: above the last one, and at least the store's time in milliseconds,
/// so tokens keep growing even if the fence key is lost.
const ACQUIRE_LEASE_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^%d+ (.+)$') ~= ARGV[1] then return '' end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now_ms)
local value = string.format('%d', token) .. ' ' .. ARGV[1]
redis.call('SET', KEYS[2], string.format('%d', token))
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
";

/// KEYS[1] the zone's lease, KEYS[2] its fence; ARGV the lease as stored
/// and the time to live (ms). Extends the lease while it is live, and takes
/// it back once it expired if no other was granted since (the fence still
/// holds its token, or was lost with the store's data and is put back).
const RENEW_LEASE_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  if current ~= ARGV[1] then return 0 end
else
  local token = string.match(ARGV[1], '^(%d+) ')
  local fence = redis.call('GET', KEYS[2])
  if fence and fence ~= token then return 0 end
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// KEYS[1] the zone's lease; ARGV the lease as stored. Deletes it if it is
/// still the current one.
const RELEASE_LEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Zone leases under `<prefix>:lease:<zone>` (expiring), their tokens under
/// `<prefix>:fence:<zone>`, next to the hot snapshots and the journal they fence.
#[derive(Debug, Clone)]
pub struct RedisLeases {
    redis: RedisConn,
    acquire: Arc<redis::Script>,
    renew: Arc<redis::Script>,
    release: Arc<redis::Script>,
}

impl RedisLeases {
    pub fn new(redis: RedisConn) -> Self {
        Self {
            redis,
            acquire: Arc::new(redis::Script::new(ACQUIRE_LEASE_LUA)),
            renew: Arc::new(redis::Script::new(RENEW_LEASE_LUA)),
            release: Arc::new(redis::Script::new(RELEASE_LEASE_LUA)),
        }
    }

    fn key(&self, zone: u32) -> String {
        self.redis.key(&format!("lease:{zone}"))
    }

    /// Renews (`Some(ttl)`) or releases the lease; whether it was still the holder's.
    async fn keep(&self, lease: &Lease, ttl: Option<u64>) -> StoreResult<bool> {
        let mut invocation = match ttl {
            Some(_) => self.renew.key(self.key(lease.zone)),
            None => self.release.key(self.key(lease.zone)),
        };
        invocation.key(fence_key(&self.redis, lease.zone)).arg(lease::encode(lease.token, &lease.owner));
        if let Some(ms) = ttl {
            invocation.arg(ms);
        }
        let mut c = self.redis.conn().await?;
        let kept: i64 = bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
        Ok(kept == 1)
    }
}

impl Leases for RedisLeases {
    fn acquire<'a>(&'a self, zone: u32, owner: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<Option<Lease>>> {
        async move {
            lease::validate_owner(owner)?;
            let ms = lease::validate_ttl(ttl)?;
            let mut invocation = self.acquire.key(self.key(zone));
            invocation.key(fence_key(&self.redis, zone)).arg(owner).arg(ms);
            let mut c = self.redis.conn().await?;
            let value: String = bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            if value.is_empty() {
                return Ok(None);
            }
            let (owner, token) = lease::decode(&value)?;
            Ok(Some(Lease { zone, owner, token }))
        }
        .boxed()
    }

    fn renew<'a>(&'a self, lease: &'a Lease, ttl: Duration) -> BoxFuture<'a, StoreResult<Option<Lease>>> {
        async move {
            let ms = lease::validate_ttl(ttl)?;
            let renewed = self.keep(lease, Some(ms)).await?;
            Ok(renewed.then(|| lease.clone()))
        }
        .boxed()
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, StoreResult<()>> {
        async move { self.keep(lease, None).await.map(|_| ()) }.boxed()
    }

    fn holder(&self, zone: u32) -> BoxFuture<'_, StoreResult<Option<(String, u64)>>> {
        async move {
            let key = self.key(zone);
            let mut c = self.redis.conn().await?;
            let value: Option<String> = bounded(BACKEND, async { c.get(&key).await.map_err(err) }).await?;
            value.as_deref().map(lease::decode).transpose()
        }
        .boxed()
    }
}

/// Resume sessions under `<prefix>:session:<player>`, expiring with them.
#[derive(Debug, Clone)]
pub struct RedisSessions {
    redis: RedisConn,
    take: Arc<redis::Script>,
}

impl RedisSessions {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis, take: Arc::new(redis::Script::new(TAKE_SESSION_LUA)) }
    }
}

impl Sessions for RedisSessions {
    fn put(&self, session: ResumeSession) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            if !session.is_valid() {
                return Err(StoreError::Invalid("malformed resume session".into()));
            }
            let key = self.redis.key(&format!("session:{}", session.player_id));
            let mut c = self.redis.conn().await?;
            let left_ms = session.expires_at_ms.saturating_sub(crate::unix_ms());
            if left_ms == 0 {
                return bounded(BACKEND, async { c.del::<_, ()>(&key).await.map_err(err) }).await;
            }
            bounded(BACKEND, async { c.pset_ex::<_, _, ()>(&key, session.to_text(), left_ms).await.map_err(err) }).await
        }
        .boxed()
    }

    fn take(&self, player_id: u64, secret_hash: &str) -> BoxFuture<'_, StoreResult<Option<ResumeSession>>> {
        let hash = secret_hash.to_owned();
        async move {
            let key = self.redis.key(&format!("session:{player_id}"));
            let mut c = self.redis.conn().await?;
            let mut invocation = self.take.key(key);
            invocation.arg(&hash);
            let value: Option<String> =
                bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            let Some(value) = value else { return Ok(None) };
            let session = ResumeSession::from_text(player_id, &value)
                .ok_or_else(|| StoreError::Corrupt(format!("resume session of player {player_id}")))?;
            Ok(Some(session).filter(|s| s.expires_at_ms > crate::unix_ms()))
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

/// `address`, `state`, `version`, `zones` (comma-separated), the admin
/// address and the fences (`zone=token`, comma-separated), one a line;
/// validation keeps newlines, commas and `=` out.
fn encode_entry(e: &ServerEntry) -> String {
    let admin = e.admin_address.as_deref().unwrap_or_default();
    let fences: Vec<String> = e.fences.iter().map(|(zone, token)| format!("{zone}={token}")).collect();
    format!("{}\n{}\n{}\n{}\n{admin}\n{}", e.address, e.state.as_str(), e.version, e.zones.join(","), fences.join(","))
}

fn decode_entry(id: &str, value: &str) -> StoreResult<ServerEntry> {
    let corrupt = || StoreError::Corrupt(format!("registry entry {id}"));
    let mut lines = value.splitn(6, '\n');
    let address = lines.next().ok_or_else(corrupt)?.to_owned();
    let state = lines.next().and_then(ServerState::parse).ok_or_else(corrupt)?;
    let version = lines.next().ok_or_else(corrupt)?.to_owned();
    let zones = lines.next().ok_or_else(corrupt)?;
    let zones = if zones.is_empty() { Vec::new() } else { zones.split(',').map(str::to_owned).collect() };
    // Written before admin addresses existed: none.
    let admin_address = lines.next().filter(|a| !a.is_empty()).map(str::to_owned);
    // Written before leases were reported: none.
    let fences = match lines.next().filter(|f| !f.is_empty()) {
        None => Default::default(),
        Some(fences) => fences
            .split(',')
            .map(|f| f.split_once('=').and_then(|(zone, token)| Some((zone.to_owned(), token.parse().ok()?))))
            .collect::<Option<_>>()
            .ok_or_else(corrupt)?,
    };
    Ok(ServerEntry { id: id.to_owned(), address, zones, state, version, admin_address, fences })
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

/// Operations state under `<prefix>:bans` (hash player → ban) with
/// `<prefix>:bans:version`, `<prefix>:operators` (hash name → token),
/// `<prefix>:audit` (a capped list, newest first), `<prefix>:login:<player>`,
/// `<prefix>:claim:<key>` and the alerts' `<prefix>:alerts:state`,
/// `:alerts:firing` (hashes by alert id) and `:alerts:feed` (a capped list),
/// and the rollouts' `<prefix>:rollout:runner` (the lease, expiring),
/// `:rollout:current` and `:rollout:last-succeeded`. Fields are joined by
/// newlines; validation keeps control characters out.
#[derive(Debug, Clone)]
pub struct RedisOps {
    redis: RedisConn,
    alert_transition: Arc<redis::Script>,
    rollout_lease: Arc<redis::Script>,
    rollout_put: Arc<redis::Script>,
}

/// KEYS: the runner's lease. ARGV: the runner, the lease's milliseconds.
/// Takes or renews the lease unless another runner holds it.
const ROLLOUT_LEASE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS: the runner's lease, the current record, the last successful one.
/// ARGV: the runner, the record, the succeeded record or '', '1' when done.
/// Writes only while the runner holds the lease; done gives it up.
const ROLLOUT_PUT_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// KEYS: alert states (hash id → 1/0), firing alerts (hash id → record),
/// the feed (list, newest first). ARGV: id, 1 or 0, the record, the feed's
/// length. Changes nothing and returns 0 when the state is already that.
const ALERT_TRANSITION_LUA: &str = r#"
local current = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if current == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return 1
"#;

impl RedisOps {
    pub fn new(redis: RedisConn) -> Self {
        Self {
            redis,
            alert_transition: Arc::new(redis::Script::new(ALERT_TRANSITION_LUA)),
            rollout_lease: Arc::new(redis::Script::new(ROLLOUT_LEASE_LUA)),
            rollout_put: Arc::new(redis::Script::new(ROLLOUT_PUT_LUA)),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> StoreResult<T> {
        let mut c = self.redis.conn().await?;
        bounded(BACKEND, async { pipe.query_async::<T>(&mut c).await.map_err(err) }).await
    }

    /// The token stored under `name`.
    async fn operator_named(&self, name: &str) -> StoreResult<Option<OperatorToken>> {
        let (value,): (Option<String>,) = self.run(redis::pipe().hget(self.redis.key("operators"), name)).await?;
        value.map(|v| decode_operator(name, &v)).transpose()
    }
}

fn fields<const N: usize>(what: &str, value: &str) -> StoreResult<[String; N]> {
    let parts: Vec<String> = value.splitn(N, '\n').map(str::to_owned).collect();
    parts.try_into().map_err(|_| StoreError::Corrupt(format!("{what}: {value:?}")))
}

fn number(what: &str, s: &str) -> StoreResult<u64> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("{what}: {s:?} is not a number")))
}

fn decode_ban(player: &str, value: &str) -> StoreResult<Ban> {
    let [at_ms, by, reason] = fields("ban", value)?;
    Ok(Ban { player: number("ban player", player)?, reason, by, at_ms: number("ban time", &at_ms)? })
}

fn decode_operator(name: &str, value: &str) -> StoreResult<OperatorToken> {
    let [role, hash, created_ms, expires_ms] = fields("operator token", value)?;
    let role = Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("operator {name}: role {role:?}")))?;
    let expires_ms = match expires_ms.as_str() {
        "-" => None,
        ms => Some(number("operator expiry", ms)?),
    };
    Ok(OperatorToken {
        name: name.to_owned(),
        role,
        hash,
        created_ms: number("operator created", &created_ms)?,
        expires_ms,
    })
}

fn decode_audit(value: &str) -> StoreResult<AuditRecord> {
    let [at_ms, actor, action, target, result] = fields("audit record", value)?;
    Ok(AuditRecord { at_ms: number("audit time", &at_ms)?, actor, action, target, result })
}

impl OpsStore for RedisOps {
    fn ban(&self, ban: Ban) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            ban.validate()?;
            let value = format!("{}\n{}\n{}", ban.at_ms, ban.by, ban.reason);
            let pipe = redis::pipe()
                .atomic()
                .hset(self.redis.key("bans"), ban.player, value)
                .ignore()
                .incr(self.redis.key("bans:version"), 1)
                .ignore()
                .clone();
            self.run::<()>(&pipe).await
        }
        .boxed()
    }

    fn unban(&self, player: u64) -> BoxFuture<'_, StoreResult<bool>> {
        async move {
            let pipe = redis::pipe()
                .atomic()
                .hdel(self.redis.key("bans"), player)
                .incr(self.redis.key("bans:version"), 1)
                .ignore()
                .clone();
            let (removed,): (u64,) = self.run(&pipe).await?;
            Ok(removed > 0)
        }
        .boxed()
    }

    fn bans(&self) -> BoxFuture<'_, StoreResult<(u64, Vec<Ban>)>> {
        async move {
            let pipe =
                redis::pipe().atomic().get(self.redis.key("bans:version")).hgetall(self.redis.key("bans")).clone();
            let (version, all): (Option<u64>, Vec<(String, String)>) = self.run(&pipe).await?;
            let mut bans = all.iter().map(|(p, v)| decode_ban(p, v)).collect::<StoreResult<Vec<_>>>()?;
            bans.sort_by_key(|b| b.player);
            Ok((version.unwrap_or(0), bans))
        }
        .boxed()
    }

    fn bans_version(&self) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            let (version,): (Option<u64>,) = self.run(redis::pipe().get(self.redis.key("bans:version"))).await?;
            Ok(version.unwrap_or(0))
        }
        .boxed()
    }

    fn is_banned(&self, player: u64) -> BoxFuture<'_, StoreResult<bool>> {
        async move {
            let (banned,): (bool,) = self.run(redis::pipe().hexists(self.redis.key("bans"), player)).await?;
            Ok(banned)
        }
        .boxed()
    }

    fn put_operator(&self, token: OperatorToken) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            token.validate()?;
            let expires = token.expires_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string());
            let value = format!("{}\n{}\n{}\n{expires}", token.role.as_str(), token.hash, token.created_ms);
            let (operators, by_hash) = (self.redis.key("operators"), self.redis.key("operators-by-hash"));
            let mut pipe = redis::pipe();
            pipe.atomic();
            // The index follows: a replaced token's old hash leaves it.
            if let Some(old) = self.operator_named(&token.name).await? {
                pipe.hdel(&by_hash, old.hash).ignore();
            }
            pipe.hset(&operators, &token.name, value).ignore().hset(&by_hash, &token.hash, &token.name).ignore();
            self.run::<()>(&pipe).await
        }
        .boxed()
    }

    /// One lookup in the index by hash, not a read of every token: every
    /// request with a bearer token asks, before any rate limit.
    fn operator_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, StoreResult<Option<OperatorToken>>> {
        async move {
            let marker = self.redis.key("operators-indexed");
            let (name, indexed): (Option<String>, bool) =
                self.run(redis::pipe().hget(self.redis.key("operators-by-hash"), hash).exists(&marker)).await?;
            if !indexed {
                // Tokens stored before the index existed: indexed once, here.
                let tokens = self.operators().await?;
                let mut pipe = redis::pipe();
                pipe.atomic();
                for t in &tokens {
                    pipe.hset(self.redis.key("operators-by-hash"), &t.hash, &t.name).ignore();
                }
                self.run::<()>(pipe.set(&marker, 1).ignore()).await?;
                return Ok(tokens.into_iter().find(|t| t.hash == hash));
            }
            let Some(name) = name else { return Ok(None) };
            Ok(self.operator_named(&name).await?.filter(|t| t.hash == hash))
        }
        .boxed()
    }

    fn operators(&self) -> BoxFuture<'_, StoreResult<Vec<OperatorToken>>> {
        async move {
            let (all,): (Vec<(String, String)>,) = self.run(redis::pipe().hgetall(self.redis.key("operators"))).await?;
            let mut tokens = all.iter().map(|(n, v)| decode_operator(n, v)).collect::<StoreResult<Vec<_>>>()?;
            tokens.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(tokens)
        }
        .boxed()
    }

    fn revoke_operator<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut pipe = redis::pipe();
            pipe.atomic().hdel(self.redis.key("operators"), name);
            if let Some(old) = self.operator_named(name).await? {
                pipe.hdel(self.redis.key("operators-by-hash"), old.hash).ignore();
            }
            let (removed,): (u64,) = self.run(&pipe).await?;
            Ok(removed > 0)
        }
        .boxed()
    }

    fn audit(&self, log: AuditLog, record: AuditRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            record.validate()?;
            let value =
                format!("{}\n{}\n{}\n{}\n{}", record.at_ms, record.actor, record.action, record.target, record.result);
            let key = self.redis.key(log.as_str());
            let pipe = redis::pipe()
                .atomic()
                .lpush(&key, value)
                .ignore()
                .ltrim(&key, 0, log.keep() as isize - 1)
                .ignore()
                .clone();
            self.run::<()>(&pipe).await
        }
        .boxed()
    }

    fn audit_log(&self, log: AuditLog, skip: usize, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditRecord>>> {
        async move {
            // Past isize::MAX Redis would read the indices as counted from the end.
            let end = skip.checked_add(limit).and_then(|end| isize::try_from(end).ok());
            let Some(end) = end.filter(|_| limit > 0) else { return Ok(Vec::new()) };
            let (start, stop) = (end - limit as isize, end - 1);
            let (all,): (Vec<String>,) =
                self.run(redis::pipe().lrange(self.redis.key(log.as_str()), start, stop)).await?;
            all.iter().map(|v| decode_audit(v)).collect()
        }
        .boxed()
    }

    fn put_login(&self, login: Login, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            login.validate()?;
            let value = format!("{}\n{}\n{}\n{}", login.at_ms, login.server, login.zone, login.name);
            let key = self.redis.key(&format!("login:{}", login.player));
            let ms = ttl.as_millis().max(1) as u64;
            self.run::<()>(redis::pipe().pset_ex(key, value, ms).ignore()).await
        }
        .boxed()
    }

    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            crate::ratelimit::validate_key(key)?;
            let mut set = redis::cmd("SET");
            set.arg(self.redis.key(&format!("claim:{key}")))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64);
            let (claimed,): (Option<String>,) = self.run(redis::pipe().add_command(set)).await?;
            Ok(claimed.is_some())
        }
        .boxed()
    }

    fn alert_transition<'a>(
        &'a self,
        id: &'a str,
        firing: bool,
        transition: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            crate::ops::validate_alert(id, transition)?;
            let mut c = self.redis.conn().await?;
            let mut invocation = self.alert_transition.key(self.redis.key("alerts:state"));
            invocation
                .key(self.redis.key("alerts:firing"))
                .key(self.redis.key("alerts:feed"))
                .arg(id)
                .arg(if firing { "1" } else { "0" })
                .arg(transition)
                .arg(crate::ops::ALERT_FEED_KEEP);
            let changed: i64 = bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            Ok(changed == 1)
        }
        .boxed()
    }

    fn alerts(&self) -> BoxFuture<'_, StoreResult<crate::ops::AlertRecords>> {
        async move {
            let (feed, firing): (Vec<String>, std::collections::BTreeMap<String, String>) = self
                .run(
                    redis::pipe().lrange(self.redis.key("alerts:feed"), 0, -1).hgetall(self.redis.key("alerts:firing")),
                )
                .await?;
            Ok(crate::ops::AlertRecords { feed, firing: firing.into_values().collect() })
        }
        .boxed()
    }

    fn rollout_lease<'a>(&'a self, runner: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            crate::ops::validate_rollout(runner, None)?;
            let mut c = self.redis.conn().await?;
            let mut invocation = self.rollout_lease.key(self.redis.key("rollout:runner"));
            invocation.arg(runner).arg(ttl.as_millis().max(1) as u64);
            let held: i64 = bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            Ok(held == 1)
        }
        .boxed()
    }

    fn rollout_put<'a>(&'a self, runner: &'a str, put: crate::ops::RolloutPut<'a>) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            crate::ops::validate_rollout(runner, Some(&put))?;
            let mut c = self.redis.conn().await?;
            let mut invocation = self.rollout_put.key(self.redis.key("rollout:runner"));
            invocation
                .key(self.redis.key("rollout:current"))
                .key(self.redis.key("rollout:last-succeeded"))
                .arg(runner)
                .arg(put.current)
                .arg(put.succeeded.unwrap_or(""))
                .arg(if put.done { "1" } else { "0" });
            let stored: i64 = bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            Ok(stored == 1)
        }
        .boxed()
    }

    fn rollouts(&self) -> BoxFuture<'_, StoreResult<crate::ops::RolloutRecords>> {
        async move {
            let keys = ["rollout:current", "rollout:runner", "rollout:last-succeeded"].map(|k| self.redis.key(k));
            let ((current, runner, last_succeeded),): ((Option<String>, Option<String>, Option<String>),) =
                self.run(redis::pipe().mget(&keys)).await?;
            Ok(crate::ops::RolloutRecords { current, runner, last_succeeded })
        }
        .boxed()
    }

    fn login(&self, player: u64) -> BoxFuture<'_, StoreResult<Option<Login>>> {
        async move {
            let key = self.redis.key(&format!("login:{player}"));
            let (value,): (Option<String>,) = self.run(redis::pipe().get(key)).await?;
            let Some(value) = value else { return Ok(None) };
            let [at_ms, server, zone, name] = fields("login", &value)?;
            Ok(Some(Login { player, name, zone, server, at_ms: number("login time", &at_ms)? }))
        }
        .boxed()
    }
}

/// GCRA in Lua, the twin of [`crate::ratelimit::gcra`], on Redis's clock.
/// KEYS[1] the key; ARGV interval (µs), burst, and `spend` or `peek` (count
/// nothing). Returns 0 when allowed, else the microseconds until the request would be.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then return allow_at - now end
if ARGV[3] == 'peek' then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

/// Rate limits under `<prefix>:rl:<key>`, shared by every instance.
#[derive(Debug, Clone)]
pub struct RedisRateLimiter {
    redis: RedisConn,
    script: Arc<redis::Script>,
}

impl RedisRateLimiter {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis, script: Arc::new(redis::Script::new(GCRA_LUA)) }
    }
}

impl RateLimiter for RedisRateLimiter {
    fn count<'a>(&'a self, key: &'a str, quota: Quota, counting: Counting) -> BoxFuture<'a, StoreResult<Decision>> {
        async move {
            crate::ratelimit::validate_key(key)?;
            let mut c = self.redis.conn().await?;
            let mut invocation = self.script.key(self.redis.key(&format!("rl:{key}")));
            let mode = match counting {
                Counting::Spend => "spend",
                Counting::Peek => "peek",
            };
            invocation.arg(quota.interval_us()).arg(quota.burst.max(1)).arg(mode);
            let wait_us: u64 = bounded(BACKEND, async { invocation.invoke_async(&mut c).await.map_err(err) }).await?;
            Ok(if wait_us == 0 {
                Decision::Allowed
            } else {
                Decision::Limited { retry_after: Duration::from_micros(wait_us) }
            })
        }
        .boxed()
    }
}
