//! How Respawn's processes are started and waited for, in one place for the
//! binary (`respawn up`'s supervisor), the drills, the benchmarks and the
//! tests: [`zone::ZoneCommand`], the one `respawn zone` command line (with
//! [`zone::StoreFlags`], the store flags the binary also parses);
//! [`process::Service`], a server process on a loopback port with its own
//! directory and log; [`supervisor::Supervisor`], which keeps a zone server
//! running; [`gate::Gate`], a TCP proxy drills and tests cut to make a
//! server unreachable; [`netns::Lan`], hosts of their own in network
//! namespaces, to lose a whole host or split the network; [`armed::Armed`],
//! a `kill -9` or a host's death fired by one write; [`logs`], how every
//! command logs (text, or JSON lines); [`TempDir`];
//! [`unique_suffix`]; and [`wait_until`].

pub mod armed;
pub mod gate;
pub mod logs;
pub mod netns;
pub mod process;
pub mod supervisor;
pub mod zone;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// `<pid>_<nanos>_<n>`: unique per call, across the processes of one
/// machine too, for the names tests give the databases, prefixes, topics
/// and directories they make. The counter matters: two threads can read the
/// same clock value, and a shared name lets one test read another's state.
pub fn unique_suffix() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = respawn_api::clock::unix_nanos();
    format!("{}_{nanos}_{}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed))
}

/// A directory of its own under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `respawn-<tag>-<unique suffix>`: new, never one that exists.
    pub fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("respawn-{tag}-{}", unique_suffix()));
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Leaves the directory in place and returns its path.
    pub fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Polls `check` every 50 ms until it is true; an error names `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() > deadline => bail!("timed out after {limit:?} waiting for {what}"),
            Err(e) if Instant::now() > deadline => bail!("timed out after {limit:?} waiting for {what}: {e:#}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
