//! Embedded implementations that live in the process's memory, for roles
//! whose data need not survive it (the server registry: servers heartbeat
//! again within seconds).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

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
