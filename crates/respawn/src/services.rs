//! Backing servers that drills and benchmarks start for themselves, each a
//! process on a free loopback port with its own directory and log: Tansu
//! (Kafka-compatible) and MariaDB here, Redis and SecantusDB (MongoDB-compatible)
//! in the drills.
//! Binaries come from the variables `scripts/services` exports, else from
//! its cache or PATH.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use respawn_proto::events::TOPIC;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

/// Partitions of the events topic these brokers get.
pub const PARTITIONS: u32 = 3;

/// A backing server started here, which may be killed and restarted.
pub struct Service {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    pub port: u16,
    /// Working directory; its output goes to `<name>.log` there.
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

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
    pub fn new(name: &'static str, program: PathBuf, args: &[&str], port: u16, dir: PathBuf) -> Self {
        Self { name, program, args: args.iter().map(|a| a.to_string()).collect(), port, dir, child: None }
    }

    pub async fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{}.log", self.name)))?;
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("{} did not answer on port {}", self.name, self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits for the process to end by itself.
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

/// Tansu listening on `port`, advertising `advertised` (a gate in front of it,
/// or the same port), with the events topic created.
pub async fn start_tansu(dir: &Path, port: u16, advertised: u16) -> Result<Service> {
    let tansu = find_binary("RESPAWN_TANSU", TANSU_CACHED)?;
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let mut broker = Service::new(
        "tansu",
        tansu.clone(),
        &[
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "sqlite://events.db",
        ],
        port,
        dir.to_path_buf(),
    );
    broker.start().await?;
    create_topic(&tansu, &url).await?;
    Ok(broker)
}

/// Creates database `name` on the server at `server_url` (waiting for it); returns its URL.
pub async fn create_database(server_url: &str, name: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::query(&format!("CREATE DATABASE IF NOT EXISTS {name}")).execute(&pool(server_url)?).await {
            Ok(_) => return Ok(format!("{}/{name}", server_url.trim_end_matches('/'))),
            Err(e) if Instant::now() > deadline => return Err(anyhow!("MariaDB did not take a database: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A lazily connecting pool: creating it never waits for the server.
pub fn pool(url: &str) -> Result<MySqlPool> {
    Ok(MySqlPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(2)).connect_lazy(url)?)
}

async fn create_topic(tansu: &Path, url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = tokio::process::Command::new(tansu)
            .args(["topic", "create", TOPIC, "--broker", url, "--partitions", &PARTITIONS.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await?;
        if made.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the broker did not create topic {TOPIC}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn start_mariadb(dir: &Path) -> Result<Service> {
    let data = dir.join("data");
    std::fs::create_dir_all(dir)?;
    let user = String::from_utf8(tokio::process::Command::new("id").arg("-un").output().await?.stdout)?;
    let user = user.trim();
    let installed = tokio::process::Command::new(find_binary("RESPAWN_MARIADB_INSTALL_DB", &["mariadb-install-db"])?)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--user={user}"))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    if !installed.success() {
        bail!("mariadb-install-db failed in {}", dir.display());
    }
    let port = free_port()?;
    let mut mysql = Service::new(
        "mariadb",
        find_binary("RESPAWN_MARIADBD", &["mariadbd"])?,
        &[
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            &format!("--user={user}"),
            &format!("--port={port}"),
            "--bind-address=127.0.0.1",
            &format!("--socket={}", dir.join("sock").display()),
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
        ],
        port,
        dir.to_path_buf(),
    );
    mysql.start().await?;
    Ok(mysql)
}
