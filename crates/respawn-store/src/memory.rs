//! Embedded implementations that live in the process's memory, for roles
//! whose data need not survive it: the server registry (servers heartbeat
//! again within seconds) and the embedded platform server's operations
//! state (one process; `respawn up` is a development stack).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::ops::{AuditLog, AuditRecord, Ban, Login, OperatorToken, OpsStore};
use crate::{Registry, ServerEntry, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct MemoryRegistry {
    servers: Mutex<BTreeMap<String, (ServerEntry, Instant)>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, (ServerEntry, Instant)>) -> T) -> StoreResult<T> {
        let mut servers = self
            .servers
            .lock()
            .map_err(|_| StoreError::Backend { backend: "memory", message: "registry lock poisoned".into() })?;
        let now = Instant::now();
        servers.retain(|_, (_, until)| *until > now);
        Ok(f(&mut servers))
    }
}

impl Registry for MemoryRegistry {
    fn heartbeat(&self, entry: ServerEntry, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            entry.validate()?;
            self.with(|s| {
                s.insert(entry.id.clone(), (entry, Instant::now() + ttl));
            })
        }
        .boxed()
    }

    fn servers(&self) -> BoxFuture<'_, StoreResult<Vec<ServerEntry>>> {
        async move { self.with(|s| s.values().map(|(e, _)| e.clone()).collect()) }.boxed()
    }

    fn remove(&self, id: &str) -> BoxFuture<'_, StoreResult<()>> {
        let id = id.to_owned();
        async move {
            self.with(|s| {
                s.remove(&id);
            })
        }
        .boxed()
    }
}

#[derive(Debug, Default)]
struct OpsState {
    bans: BTreeMap<u64, Ban>,
    bans_version: u64,
    operators: BTreeMap<String, OperatorToken>,
    /// By [`AuditLog::as_str`].
    audit: HashMap<&'static str, VecDeque<AuditRecord>>,
    logins: HashMap<u64, (Login, Instant)>,
    claims: HashMap<String, Instant>,
    /// Alert id → firing, and the records of those firing.
    alert_states: HashMap<String, bool>,
    alerts_firing: BTreeMap<String, String>,
    alert_feed: VecDeque<String>,
    /// The rollout runner's lease: who, until when.
    rollout_runner: Option<(String, Instant)>,
    rollout_current: Option<String>,
    rollout_last_succeeded: Option<String>,
}

impl OpsState {
    /// The rollout runner while its lease holds.
    fn rollout_runner(&mut self) -> Option<&str> {
        if self.rollout_runner.as_ref().is_some_and(|(_, until)| *until <= Instant::now()) {
            self.rollout_runner = None;
        }
        self.rollout_runner.as_ref().map(|(runner, _)| runner.as_str())
    }
}

/// Operations state for one embedded platform server.
#[derive(Debug, Default)]
pub struct MemoryOps {
    state: Mutex<OpsState>,
}

impl MemoryOps {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut OpsState) -> T) -> StoreResult<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Backend { backend: "memory", message: "operations state lock poisoned".into() })?;
        Ok(f(&mut state))
    }
}

impl OpsStore for MemoryOps {
    fn ban(&self, ban: Ban) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            ban.validate()?;
            self.with(|s| {
                s.bans.insert(ban.player, ban);
                s.bans_version += 1;
            })
        }
        .boxed()
    }

    fn unban(&self, player: u64) -> BoxFuture<'_, StoreResult<bool>> {
        async move {
            self.with(|s| {
                let was = s.bans.remove(&player).is_some();
                if was {
                    s.bans_version += 1;
                }
                was
            })
        }
        .boxed()
    }

    fn bans(&self) -> BoxFuture<'_, StoreResult<(u64, Vec<Ban>)>> {
        async move { self.with(|s| (s.bans_version, s.bans.values().cloned().collect())) }.boxed()
    }

    fn bans_version(&self) -> BoxFuture<'_, StoreResult<u64>> {
        async move { self.with(|s| s.bans_version) }.boxed()
    }

    fn is_banned(&self, player: u64) -> BoxFuture<'_, StoreResult<bool>> {
        async move { self.with(|s| s.bans.contains_key(&player)) }.boxed()
    }

    fn put_operator(&self, token: OperatorToken) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            token.validate()?;
            self.with(|s| {
                s.operators.insert(token.name.clone(), token);
            })
        }
        .boxed()
    }

    fn operator_by_hash<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, StoreResult<Option<OperatorToken>>> {
        async move { self.with(|s| s.operators.values().find(|t| t.hash == hash).cloned()) }.boxed()
    }

    fn operators(&self) -> BoxFuture<'_, StoreResult<Vec<OperatorToken>>> {
        async move { self.with(|s| s.operators.values().cloned().collect()) }.boxed()
    }

    fn revoke_operator<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        async move { self.with(|s| s.operators.remove(name).is_some()) }.boxed()
    }

    fn audit(&self, log: AuditLog, record: AuditRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            record.validate()?;
            self.with(|s| {
                let list = s.audit.entry(log.as_str()).or_default();
                list.push_front(record);
                list.truncate(log.keep());
            })
        }
        .boxed()
    }

    fn audit_log(&self, log: AuditLog, skip: usize, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditRecord>>> {
        async move {
            self.with(|s| s.audit.get(log.as_str()).map(|l| l.iter().skip(skip).take(limit).cloned().collect()))
                .map(Option::unwrap_or_default)
        }
        .boxed()
    }

    fn put_login(&self, login: Login, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            login.validate()?;
            self.with(|s| {
                let now = Instant::now();
                s.logins.retain(|_, (_, until)| *until > now);
                s.logins.insert(login.player, (login, now + ttl));
            })
        }
        .boxed()
    }

    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            self.with(|s| {
                let now = Instant::now();
                s.claims.retain(|_, until| *until > now);
                if s.claims.contains_key(key) {
                    false
                } else {
                    s.claims.insert(key.to_owned(), now + ttl);
                    true
                }
            })
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
            self.with(|s| {
                if s.alert_states.get(id).copied().unwrap_or(false) == firing {
                    return false;
                }
                s.alert_states.insert(id.to_owned(), firing);
                match firing {
                    true => s.alerts_firing.insert(id.to_owned(), transition.to_owned()),
                    false => s.alerts_firing.remove(id),
                };
                s.alert_feed.push_front(transition.to_owned());
                s.alert_feed.truncate(crate::ops::ALERT_FEED_KEEP);
                true
            })
        }
        .boxed()
    }

    fn alerts(&self) -> BoxFuture<'_, StoreResult<crate::ops::AlertRecords>> {
        async move {
            self.with(|s| crate::ops::AlertRecords {
                feed: s.alert_feed.iter().cloned().collect(),
                firing: s.alerts_firing.values().cloned().collect(),
            })
        }
        .boxed()
    }

    fn rollout_lease<'a>(&'a self, runner: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            crate::ops::validate_rollout(runner, None)?;
            self.with(|s| {
                if s.rollout_runner().is_some_and(|holder| holder != runner) {
                    return false;
                }
                s.rollout_runner = Some((runner.to_owned(), Instant::now() + ttl));
                true
            })
        }
        .boxed()
    }

    fn rollout_put<'a>(&'a self, runner: &'a str, put: crate::ops::RolloutPut<'a>) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            crate::ops::validate_rollout(runner, Some(&put))?;
            self.with(|s| {
                if s.rollout_runner() != Some(runner) {
                    return false;
                }
                s.rollout_current = Some(put.current.to_owned());
                if let Some(succeeded) = put.succeeded {
                    s.rollout_last_succeeded = Some(succeeded.to_owned());
                }
                if put.done {
                    s.rollout_runner = None;
                }
                true
            })
        }
        .boxed()
    }

    fn rollouts(&self) -> BoxFuture<'_, StoreResult<crate::ops::RolloutRecords>> {
        async move {
            self.with(|s| crate::ops::RolloutRecords {
                runner: s.rollout_runner().map(str::to_owned),
                current: s.rollout_current.clone(),
                last_succeeded: s.rollout_last_succeeded.clone(),
            })
        }
        .boxed()
    }

    fn login(&self, player: u64) -> BoxFuture<'_, StoreResult<Option<Login>>> {
        async move {
            self.with(|s| s.logins.get(&player).filter(|(_, until)| *until > Instant::now()).map(|(l, _)| l.clone()))
        }
        .boxed()
    }
}
