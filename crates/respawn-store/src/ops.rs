//! What the platform server keeps for operations, shared by all its
//! instances: the ban list, operator tokens (hashed), the audit log and the
//! login sessions it issued. Redis in production
//! ([`crate::redis_store::RedisOps`]), memory in the embedded default
//! ([`crate::memory::MemoryOps`]).

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::{StoreError, StoreResult};

/// Longest free-text field (ban reason, audit detail) a store keeps.
pub const TEXT_MAX: usize = 500;
/// Longest name (operator, actor, action, target).
pub const NAME_MAX: usize = 64;
/// Which audit list a record goes to. Refused calls are kept apart, so a
/// caller without the role cannot push the actions out of their list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditLog {
    /// What operators did (done or failed): the record of changes.
    Actions,
    /// Calls refused for the caller's role.
    Refusals,
}

impl AuditLog {
    /// Records kept; older ones are trimmed.
    pub fn keep(self) -> usize {
        match self {
            AuditLog::Actions => 100_000,
            AuditLog::Refusals => 10_000,
        }
    }

    /// Its name in store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditLog::Actions => "audit",
            AuditLog::Refusals => "audit-refusals",
        }
    }
}

/// What an operator token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Kicks, announces, drains.
    Operator,
    /// Bans and manages tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An operator token as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorToken {
    /// Unique; 1-64 of `a-z`, `0-9`, `-`, `_`, `.`.
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created_ms: u64,
    /// Refused from then on (Unix ms); `None` never expires.
    pub expires_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub player: u64,
    pub reason: String,
    /// The operator who banned.
    pub by: String,
    pub at_ms: u64,
}

/// One operator action: who, what, when, with what result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `ok`, or why it failed.
    pub result: String,
}

/// A login the platform server issued: which server it sent the player to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub player: u64,
    pub name: String,
    pub zone: String,
    pub server: String,
    pub at_ms: u64,
}

/// The platform server's operations state.
pub trait OpsStore: Send + Sync + std::fmt::Debug {
    /// Bans (or re-bans with a new reason) a player; bumps the ban-list version.
    fn ban(&self, ban: Ban) -> BoxFuture<'_, StoreResult<()>>;
    /// Lifts a ban; `false` if the player was not banned.
    fn unban(&self, player: u64) -> BoxFuture<'_, StoreResult<bool>>;
    /// The ban list and its version (changes with every ban and unban).
    fn bans(&self) -> BoxFuture<'_, StoreResult<(u64, Vec<Ban>)>>;
    /// The version alone, cheap enough for every heartbeat.
    fn bans_version(&self) -> BoxFuture<'_, StoreResult<u64>>;
    fn is_banned(&self, player: u64) -> BoxFuture<'_, StoreResult<bool>>;

    /// Adds a token, or replaces the one with the same name.
    fn put_operator(&self, token: OperatorToken) -> BoxFuture<'_, StoreResult<()>>;
    /// The token whose secret hashes to `hash`.
    fn operator_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, StoreResult<Option<OperatorToken>>>;
    /// Every token, by name.
    fn operators(&self) -> BoxFuture<'_, StoreResult<Vec<OperatorToken>>>;
    /// `false` if no token had that name.
    fn revoke_operator<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// Adds a record to `log`, trimmed to [`AuditLog::keep`].
    fn audit(&self, log: AuditLog, record: AuditRecord) -> BoxFuture<'_, StoreResult<()>>;
    /// The newest `limit` records of `log`, newest first, skipping the `skip` newest.
    fn audit_log(&self, log: AuditLog, skip: usize, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditRecord>>>;

    /// Records a login for `ttl` (the session token's lifetime).
    fn put_login(&self, login: Login, ttl: Duration) -> BoxFuture<'_, StoreResult<()>>;
    /// The player's newest login still within its lifetime.
    fn login(&self, player: u64) -> BoxFuture<'_, StoreResult<Option<Login>>>;

    /// `true` for the first caller of `key` within `ttl`, `false` for every
    /// other (instances agree on which server gets a zone).
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<bool>>;

    /// Sets alert `id` firing or not, if that differs from its stored state
    /// (none stored: not firing), and then records `transition` in the
    /// alerts' feed (and as the alert while it fires); `true` when it
    /// changed. Every platform instance evaluates the alerts; only the one
    /// whose transition changed the stored state notifies anyone, so no
    /// alert fires twice, however many instances watch or restart.
    fn alert_transition<'a>(
        &'a self,
        id: &'a str,
        firing: bool,
        transition: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>>;
    /// The alerts' feed, newest first (at most [`ALERT_FEED_KEEP`]), and the alerts firing now.
    fn alerts(&self) -> BoxFuture<'_, StoreResult<AlertRecords>>;

    /// Takes the rollout runner's lease for `runner` for `ttl`, or renews it
    /// if `runner` holds it already; `false` while another runner holds it.
    /// One rollout runs at a time across every platform instance, and a
    /// runner that stops (killed, cut off from the store) loses the lease
    /// when `ttl` runs out, for another instance to take over its rollout.
    fn rollout_lease<'a>(&'a self, runner: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<bool>>;
    /// Stores `put` if `runner` holds the lease, in one step; `false`
    /// (nothing written) when it does not.
    fn rollout_put<'a>(&'a self, runner: &'a str, put: RolloutPut<'a>) -> BoxFuture<'a, StoreResult<bool>>;
    /// The current rollout's record, its runner while the lease holds, and
    /// the last successful rollout's record.
    fn rollouts(&self) -> BoxFuture<'_, StoreResult<RolloutRecords>>;
}

/// What a rollout's runner stores: records as the platform writes them.
#[derive(Debug, Clone, Copy)]
pub struct RolloutPut<'a> {
    /// The rollout as it stands.
    pub current: &'a str,
    /// Replaces the last successful rollout's record when given.
    pub succeeded: Option<&'a str>,
    /// The rollout has ended: the lease is given up in the same step.
    pub done: bool,
}

/// What [`OpsStore::rollouts`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutRecords {
    pub current: Option<String>,
    /// Whoever holds the runner's lease now.
    pub runner: Option<String>,
    pub last_succeeded: Option<String>,
}

/// Longest rollout runner name and rollout record stored.
const RUNNER_MAX: usize = 256;
const ROLLOUT_RECORD_MAX: usize = 256 * 1024;

/// Refuses a runner name or record that could not be stored faithfully.
pub(crate) fn validate_rollout(runner: &str, put: Option<&RolloutPut<'_>>) -> StoreResult<()> {
    let records_fit = put.is_none_or(|p| {
        p.current.len() <= ROLLOUT_RECORD_MAX && p.succeeded.is_none_or(|s| s.len() <= ROLLOUT_RECORD_MAX)
    });
    if runner.is_empty() || !printable(runner, RUNNER_MAX) || !records_fit {
        return Err(StoreError::Invalid("rollout: a printable runner name and records of at most 256 KiB".into()));
    }
    Ok(())
}

/// Transitions kept in the alerts' feed.
pub const ALERT_FEED_KEEP: usize = 200;
/// Longest alert id and transition record stored.
const ALERT_ID_MAX: usize = 512;
const ALERT_RECORD_MAX: usize = 8 * 1024;

/// What [`OpsStore::alerts`] returns: records as the platform wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertRecords {
    pub feed: Vec<String>,
    pub firing: Vec<String>,
}

/// Refuses an alert id or record that could not be stored faithfully.
pub(crate) fn validate_alert(id: &str, transition: &str) -> StoreResult<()> {
    if id.is_empty() || !printable(id, ALERT_ID_MAX) || transition.len() > ALERT_RECORD_MAX {
        return Err(StoreError::Invalid("alert: a printable id and a record of at most 8 KiB".into()));
    }
    Ok(())
}

fn printable(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// Operator names: what may be a key or a file name.
pub fn valid_operator_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

impl OperatorToken {
    pub fn validate(&self) -> StoreResult<()> {
        if !valid_operator_name(&self.name) {
            return Err(StoreError::Invalid(format!("operator name {:?}: 1-64 of a-z 0-9 - _ .", self.name)));
        }
        if self.hash.len() != 64 || !self.hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(StoreError::Invalid("operator token hash: 64 lowercase hex characters".into()));
        }
        Ok(())
    }
}

impl Ban {
    pub fn validate(&self) -> StoreResult<()> {
        if !printable(&self.reason, TEXT_MAX) || !printable(&self.by, NAME_MAX) {
            return Err(StoreError::Invalid(format!("ban reason: at most {TEXT_MAX} printable characters")));
        }
        Ok(())
    }
}

impl AuditRecord {
    pub fn validate(&self) -> StoreResult<()> {
        let names = [&self.actor, &self.action].iter().all(|f| printable(f, NAME_MAX));
        if !names || !printable(&self.target, TEXT_MAX) || !printable(&self.result, TEXT_MAX) {
            return Err(StoreError::Invalid("audit record: printable fields within their lengths".into()));
        }
        Ok(())
    }
}

impl Login {
    pub fn validate(&self) -> StoreResult<()> {
        if ![&self.name, &self.zone, &self.server].iter().all(|f| printable(f, crate::ENTRY_FIELD_MAX)) {
            return Err(StoreError::Invalid("login: printable fields of at most 256 characters".into()));
        }
        Ok(())
    }
}
