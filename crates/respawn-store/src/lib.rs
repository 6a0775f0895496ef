//! Storage roles of a zone server, as small async traits, each with an
//! embedded implementation (files under a data directory) and a real one:
//!
//! | role | embedded | real |
//! |---|---|---|
//! | [`HotSnapshots`]: the newest snapshots, written every few seconds | [`file::FileHotSnapshots`] | [`redis_store::RedisHotSnapshots`] |
//! | [`ColdSnapshots`]: the fallback and the history for point-in-time restore | [`file::FileColdSnapshots`] | [`mongo::MongoColdSnapshots`] |
//! | [`Journal`]: every tick's accepted command batch since the last snapshot | [`file::FileJournal`] | [`redis_store::RedisJournal`] (a stream per zone) |
//! | [`lease::Leases`]: who owns each zone, with fencing tokens every write above carries | [`file::FileLeases`] | [`redis_store::RedisLeases`] |
//! | [`Sessions`]: resume tokens | [`file::FileSessions`] | [`redis_store::RedisSessions`] |
//! | [`Registry`]: the game servers alive, from their heartbeats | [`memory::MemoryRegistry`] | [`redis_store::RedisRegistry`] |
//! | [`ops::OpsStore`]: bans, operator tokens, audit log, logins | [`memory::MemoryOps`] | [`redis_store::RedisOps`] |
//! | [`ratelimit::RateLimiter`]: GCRA limits shared by all instances | [`ratelimit::MemoryRateLimiter`] | [`redis_store::RedisRateLimiter`] |
//!
//! [`contract`] holds one test suite per trait; every implementation runs it.
//! Every call is bounded in time: a dead backend is an [`StoreError::Unavailable`]
//! within the store's timeout, never a hang.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::future::BoxFuture;
pub use lease::Fence;

pub mod contract;
pub mod file;
pub mod history;
pub mod kafka;
pub mod lease;
pub mod memory;
pub mod mongo;
pub mod ops;
pub mod outbox;
pub mod ratelimit;
pub mod redis_store;

/// How long one store call may take before it counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1_000);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (down, refused, timed out).
    #[error("{backend} unavailable: {message}")]
    Unavailable { backend: &'static str, message: String },
    /// The backend answered, but not as expected.
    #[error("{backend} error: {message}")]
    Backend { backend: &'static str, message: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A write for a zone whose lease was granted to a newer owner since the writer's.
    #[error("zone {zone} has a newer owner (fencing token {newer} above this writer's {mine})")]
    Fenced { zone: u32, mine: u64, newer: u64 },
}

impl StoreError {
    /// Short label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Backend { .. } => "backend",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Invalid(_) => "invalid",
            StoreError::Fenced { .. } => "fenced",
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What is known of a stored snapshot without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub zone: u32,
    /// The last tick the snapshot includes.
    pub tick: u64,
    /// Wall-clock time of the write, Unix milliseconds.
    pub taken_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub bytes: Vec<u8>,
}

/// The newest snapshots of each zone. Keeps the two most recent, so a
/// corrupt newest one still leaves one to fall back to.
pub trait HotSnapshots: Send + Sync + Debug {
    /// Stores `snapshot` unless a lease newer than `fence` was granted for its zone.
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>>;
    /// Newest first, at most two.
    fn recent(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<StoredSnapshot>>>;
    /// Forgets the zone's hot snapshots (point-in-time restore).
    fn clear(&self, zone: u32) -> BoxFuture<'_, StoreResult<()>>;
}

/// Long-lived snapshots: the fallback when hot ones are missing, and the
/// history for point-in-time restore. Insert-only; the newest is chosen by
/// tick in this process, never by the server's sort order.
pub trait ColdSnapshots: Send + Sync + Debug {
    /// Stores `snapshot` unless a lease newer than `fence` was granted for
    /// its zone ([`StoreError::Fenced`]), checked in the same atomic step.
    fn put(&self, snapshot: StoredSnapshot, fence: Fence) -> BoxFuture<'_, StoreResult<()>>;
    /// Makes `fence` the zone's newest token here: a new owner calls it
    /// before it reads, so that no put of an older owner is taken after.
    /// (A store that keeps its fences with the leases has nothing to do.)
    fn fence(&self, zone: u32, fence: Fence) -> BoxFuture<'_, StoreResult<()>>;
    /// Every stored snapshot of the zone, newest (highest tick) first.
    fn list(&self, zone: u32) -> BoxFuture<'_, StoreResult<Vec<SnapshotMeta>>>;
    fn get(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<Option<StoredSnapshot>>>;
    /// Deletes all but the `keep` newest; returns how many were deleted.
    fn prune(&self, zone: u32, keep: usize) -> BoxFuture<'_, StoreResult<usize>>;
    /// Deletes snapshots with a tick above `tick` (point-in-time restore
    /// abandons that timeline); returns how many were deleted.
    fn delete_after(&self, zone: u32, tick: u64) -> BoxFuture<'_, StoreResult<usize>>;
}

/// One journal record: the command batch accepted in `tick`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub tick: u64,
    pub batch: Vec<u8>,
}

/// Each tick's command batch, in tick order, since the last snapshot.
pub trait Journal: Send + Sync + Debug {
    /// Appends entries whose ticks are higher than any stored for the zone,
    /// all or none, unless a lease newer than `fence` was granted for it.
    fn append(&self, zone: u32, entries: Vec<JournalEntry>, fence: Fence) -> BoxFuture<'_, StoreResult<()>>;
    /// Entries with a tick above `after`, in tick order.
    fn read_after(&self, zone: u32, after: u64) -> BoxFuture<'_, StoreResult<Vec<JournalEntry>>>;
    /// Drops entries with a tick at or below `through`.
    fn trim_through(&self, zone: u32, through: u64) -> BoxFuture<'_, StoreResult<()>>;
    /// Drops everything (a new timeline starts: after a restore, or a
    /// point-in-time restore), unless a lease newer than `fence` was granted.
    fn reset(&self, zone: u32, fence: Fence) -> BoxFuture<'_, StoreResult<()>>;
    fn len(&self, zone: u32) -> BoxFuture<'_, StoreResult<u64>>;
}

/// Now, in Unix milliseconds: the wall clock the stores' records use (`respawn_api::clock`).
pub use respawn_api::clock::unix_ms;

/// A player's resume token as stored: one per player, replaced by each new
/// one, used once, and never valid past `expires_at_ms` (resuming does not
/// extend it: the next token inherits the same end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeSession {
    pub player_id: u64,
    pub name: String,
    pub zone: String,
    /// SHA-256 (lowercase hex) of the token's secret: the secret itself is
    /// never stored.
    pub secret_hash: String,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
}

impl ResumeSession {
    /// Whether it can be stored as given: a hash of 64 hex characters, a
    /// name and zone of one line each.
    pub fn is_valid(&self) -> bool {
        self.secret_hash.len() == 64
            && self.secret_hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && !self.name.contains('\n')
            && !self.zone.contains('\n')
            && !self.name.is_empty()
            && !self.zone.is_empty()
    }

    /// The stored text: hash, expiry, zone, name, one per line.
    pub(crate) fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n{}", self.secret_hash, self.expires_at_ms, self.zone, self.name)
    }

    pub(crate) fn from_text(player_id: u64, text: &str) -> Option<Self> {
        let mut lines = text.splitn(4, '\n');
        let secret_hash = lines.next()?.to_owned();
        let expires_at_ms = lines.next()?.parse().ok()?;
        let zone = lines.next()?.to_owned();
        let name = lines.next()?.to_owned();
        Some(Self { player_id, name, zone, secret_hash, expires_at_ms })
    }
}

/// Resume tokens: a reconnecting client presents one instead of logging in.
pub trait Sessions: Send + Sync + Debug {
    /// Stores the player's token, replacing the one before.
    fn put(&self, session: ResumeSession) -> BoxFuture<'_, StoreResult<()>>;
    /// The player's session if `secret_hash` is its token's and it has not
    /// expired; it is removed (a token is used once). `None` otherwise.
    fn take(&self, player_id: u64, secret_hash: &str) -> BoxFuture<'_, StoreResult<Option<ResumeSession>>>;
}

/// A resume token as clients hold it: `<player id>.<32 lowercase hex>`;
/// its player and secret, or `None` for anything else (refused before it
/// reaches a store: it may become a file name or a key).
pub fn parse_resume_token(token: &str) -> Option<(u64, &str)> {
    let (player, secret) = token.split_once('.')?;
    let valid = secret.len() == 32 && secret.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    Some((player.parse().ok().filter(|p| *p != 0)?, secret)).filter(|_| valid)
}

pub use respawn_api::registry::ServerState;

/// A game server as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// Unique per server process: 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`.
    pub id: String,
    /// Where clients connect, e.g. `ws://10.0.0.5:7350/ws`.
    pub address: String,
    /// The zones it hosts.
    pub zones: Vec<String>,
    pub state: ServerState,
    pub version: String,
    /// Where its admin API listens (`host:port`), when not on the address
    /// players connect to (`--admin-listen`).
    pub admin_address: Option<String>,
    /// The fencing token of its lease on each hosted zone: where two
    /// entries list a zone (a lost owner's entry outlives it by a few
    /// seconds), the higher token is the zone's owner.
    pub fences: std::collections::BTreeMap<String, u64>,
}

/// Longest address an entry may hold.
pub(crate) const ENTRY_FIELD_MAX: usize = 256;

/// A WebSocket address players are sent to, in characters no page or log
/// has to escape: `ws://` or `wss://`, a host (IPv6 in brackets), a port and a path.
fn valid_address(address: &str) -> bool {
    let rest = address.strip_prefix("ws://").or_else(|| address.strip_prefix("wss://"));
    address.len() <= ENTRY_FIELD_MAX && rest.is_some_and(|rest| url_safe(rest) && !rest.is_empty())
}

/// Characters a host, port and path may use here.
fn url_safe(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:/[]@%".contains(&b))
}

/// An admin API's `host:port`: a host (IPv6 in brackets) and a port.
fn valid_host_port(addr: &str) -> bool {
    let port = addr.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
    addr.len() <= ENTRY_FIELD_MAX
        && url_safe(addr)
        && !addr.contains('/')
        && matches!(port, Some((h, Ok(_))) if !h.is_empty())
}

impl ServerEntry {
    /// Refuses what could not be stored faithfully or used as a key: heartbeats come from the network.
    pub fn validate(&self) -> StoreResult<()> {
        if !respawn_names::valid_server_id(&self.id) {
            return Err(StoreError::Invalid(format!("server id {:?}: 1-64 of a-z 0-9 - _ .", self.id)));
        }
        if !valid_address(&self.address) {
            return Err(StoreError::Invalid(format!(
                "server address: ws:// or wss://, then up to {ENTRY_FIELD_MAX} of A-Z a-z 0-9 - . _ ~ : / [ ] @ %"
            )));
        }
        if self.admin_address.as_deref().is_some_and(|a| !valid_host_port(a)) {
            return Err(StoreError::Invalid("admin address: host:port".into()));
        }
        if !respawn_names::valid_version(&self.version) {
            return Err(StoreError::Invalid("server version: 1-64 of A-Z a-z 0-9 . _ - +".into()));
        }
        if self.zones.len() > 64 || !self.zones.iter().all(|z| respawn_names::valid_zone_name(z)) {
            return Err(StoreError::Invalid("zones: at most 64 names, each 1-64 of A-Z a-z 0-9 _ - .".into()));
        }
        if !self.fences.keys().all(|z| self.zones.contains(z)) {
            return Err(StoreError::Invalid("fences: only of the zones the server hosts".into()));
        }
        Ok(())
    }

    /// The fencing token it holds on `zone` (0: none reported, as by a server from before leases).
    pub fn fence(&self, zone: &str) -> u64 {
        self.fences.get(zone).copied().unwrap_or(0)
    }
}

/// The server registry: game servers heartbeat; an entry not renewed within
/// its time to live is gone.
pub trait Registry: Send + Sync + Debug {
    /// Adds or renews `entry` for `ttl`.
    fn heartbeat(&self, entry: ServerEntry, ttl: Duration) -> BoxFuture<'_, StoreResult<()>>;
    /// The live servers, by id.
    fn servers(&self) -> BoxFuture<'_, StoreResult<Vec<ServerEntry>>>;
    /// Forgets a server at once (it stopped cleanly).
    fn remove(&self, id: &str) -> BoxFuture<'_, StoreResult<()>>;
}

/// Runs a backend call under [`CALL_TIMEOUT`].
pub(crate) async fn bounded<T>(
    backend: &'static str,
    call: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable { backend, message: format!("no answer within {CALL_TIMEOUT:?}") }),
    }
}
