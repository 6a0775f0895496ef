//! Server processes started for a drill, a benchmark or a test, each on a
//! free loopback port with its own directory and log, which may be killed
//! and restarted. Binaries come from the variables `scripts/services`
//! exports, else from its cache or PATH.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::zone::ZoneCommand;

/// A backing server started here, which may be killed and restarted.
pub struct Service {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(&'static str, String)>,
    pub port: u16,
    /// Working directory; its output goes to `<name>.log` there.
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    /// Where it runs: this machine's loopback, or a host of a LAN of namespaces.
    host: Option<crate::netns::Host>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the environment: it may hold secrets.
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// A port free on loopback now (the caller binds it soon after).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Tansu as `scripts/services` caches it: built with the crate's release
/// profile for benchmarks, else with the cheaper one for tests.
pub const TANSU_CACHED: &[&str] = &["tansu-0.6.0-release/bin/tansu", "tansu-0.6.0-test/bin/tansu"];
/// SecantusDB's server as `scripts/services` caches it (a Python virtual environment).
pub const MONGOD_CACHED: &[&str] = &["secantusdb-0.7.0b3/bin/secantusd-py"];

/// A server binary: from the environment variable `scripts/services`
/// exports, else the first of `cached` (paths in its tools cache) that
/// exists, else the name of the last one on PATH.
pub fn find_binary(env: &str, cached: &[&str]) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    if let Some(found) = cached.iter().map(|c| dirs_cache().join(c)).find(|p| p.exists()) {
        return Ok(found);
    }
    let last = cached.last().copied().unwrap_or_default();
    let name = Path::new(last).file_name().map(|n| n.to_os_string()).unwrap_or_default();
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(&name)).find(|p| p.exists()))
        .ok_or_else(|| anyhow!("{last} not found: run it through scripts/services (which installs it) or set {env}"))
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("respawn/tools")
}

impl Service {
    pub fn new<A: Into<OsString>>(
        name: &'static str,
        program: PathBuf,
        args: impl IntoIterator<Item = A>,
        port: u16,
        dir: PathBuf,
    ) -> Self {
        let args = args.into_iter().map(Into::into).collect();
        Self { name, program, args, envs: Vec::new(), port, dir, child: None, host: None }
    }

    /// Run on `host` (it listens on the host's address) rather than on this machine.
    pub fn on_host(mut self, host: &crate::netns::Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// The address it answers on: loopback, or its host's.
    pub fn ip(&self) -> std::net::IpAddr {
        self.host.as_ref().map_or(std::net::Ipv4Addr::LOCALHOST, |h| h.addr).into()
    }

    /// One more environment variable for the process (secrets go here, not in its arguments).
    pub fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.envs.push((key, value.into()));
        self
    }

    /// A zone server listening on `port` (its `--listen`), started as `command` says.
    pub fn zone(name: &'static str, command: &ZoneCommand, port: u16, dir: PathBuf) -> Self {
        let mut service = Self::new(name, command.program().to_path_buf(), command.args(), port, dir);
        service.envs = command.envs().to_vec();
        service
    }

    pub async fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{}.log", self.name)))?;
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args);
        if let Some(host) = &self.host {
            command = host.command(&command);
        }
        let child = tokio::process::Command::from(command)
            .envs(self.envs.iter().map(|(k, v)| (*k, v)))
            .current_dir(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect((self.ip(), self.port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("{} did not answer on port {}", self.name, self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits for the process to end by itself.
    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let Some(child) = self.child.as_mut() else { bail!("{} is not running", self.name) };
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .map_err(|_| anyhow!("{} still running after {limit:?}", self.name))??;
        self.child = None;
        Ok(status)
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}
