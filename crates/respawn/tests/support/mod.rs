//! Test harness: starts the real `respawn zone` process on a free port and
//! talks to it over real sockets (WebSocket and plain HTTP).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use respawn_client::{Connection, Event};
use respawn_harness::zone::ZoneCommand;
pub use respawn_harness::TempDir;
use respawn_proto::{client_message, server_message};
use respawn_token::{Claims, TokenKey};
use tokio_tungstenite::tungstenite::Message;

/// How long a zone server may take to say where it listens.
pub const STARTUP: Duration = Duration::from_secs(60);

pub const TOKEN_KEY: &str = "integration-test-token-key";
pub const ADMIN_TOKEN: &str = "integration-admin-token";
/// The platform servers' `--server-key` in these tests.
pub const SERVER_KEY: &str = "integration-test-server-key";

/// The registry credential of the zone server `id`, made from [`SERVER_KEY`].
pub fn credential(id: &str) -> String {
    respawn_token::ServerKey::new(SERVER_KEY.as_bytes()).and_then(|k| k.credential(id)).expect("a server credential")
}

/// A small, crowded layout so every player sees every other one.
pub const TEST_CONFIG: &str = r#"
tick_hz = 20
view_radius = 10000
drain_deadline_secs = 10

[limits]
join_timeout_ms = 500
ping_interval_ms = 100
commands_per_second = 50

[[zones]]
id = 1
name = "meadow"
seed = 1
width = 3000
height = 3000
npc_count = 5

[[zones]]
id = 2
name = "caverns"
seed = 2
width = 3000
height = 3000
npc_count = 5
"#;

/// A running `respawn zone` process, killed when dropped.
pub struct ZoneProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The server's stderr, in a file: a pipe nobody reads would block its logging.
    log: PathBuf,
    _dir: TempDir,
}

impl ZoneProcess {
    pub fn start() -> Result<Self> {
        Self::start_with(TEST_CONFIG)
    }

    pub fn start_with(config: &str) -> Result<Self> {
        let dir = TempDir::new("zone")?;
        let data = dir.path().join("data");
        Self::start_in(config, dir, &data)
    }

    /// Starts with its state in `data` (which outlives the process).
    pub fn start_in(config: &str, dir: TempDir, data: &std::path::Path) -> Result<Self> {
        Self::start_full(config, dir, data, &[])
    }

    /// Starts with its state in `data` and extra command-line arguments.
    pub fn start_full_with(config: &str, data: &std::path::Path, extra: &[&str]) -> Result<Self> {
        Self::start_full(config, TempDir::new("zone")?, data, extra)
    }

    /// Starts with extra command-line arguments.
    pub fn start_with_args(config: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(config, extra, &[])
    }

    /// Starts with extra command-line arguments and environment variables.
    pub fn start_with_env(config: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let dir = TempDir::new("zone")?;
        let data = dir.path().join("data");
        Self::spawn(env!("CARGO_BIN_EXE_respawn"), config, dir, &data, "127.0.0.1:0".parse()?, extra, env)
    }

    /// Starts listening on `listen` (to come back at the same address), with extra arguments.
    pub fn start_at(config: &str, listen: SocketAddr, extra: &[&str]) -> Result<Self> {
        let dir = TempDir::new("zone")?;
        let data = dir.path().join("data");
        Self::start_listening(config, dir, &data, listen, extra)
    }

    fn start_full(config: &str, dir: TempDir, data: &std::path::Path, extra: &[&str]) -> Result<Self> {
        Self::start_listening(config, dir, data, "127.0.0.1:0".parse()?, extra)
    }

    /// Starts (again) with its state in `data`, listening on `listen`.
    pub fn start_at_in(config: &str, data: &std::path::Path, listen: SocketAddr, extra: &[&str]) -> Result<Self> {
        Self::start_listening(config, TempDir::new("zone")?, data, listen, extra)
    }

    /// Starts another build of the binary (`bin`) with its state in `data`.
    pub fn start_build(bin: &str, config: &str, data: &std::path::Path, extra: &[&str]) -> Result<Self> {
        Self::spawn(bin, config, TempDir::new("zone")?, data, "127.0.0.1:0".parse()?, extra, &[])
    }

    fn start_listening(
        config: &str,
        dir: TempDir,
        data: &std::path::Path,
        listen: SocketAddr,
        extra: &[&str],
    ) -> Result<Self> {
        Self::spawn(env!("CARGO_BIN_EXE_respawn"), config, dir, data, listen, extra, &[])
    }

    fn spawn(
        bin: &str,
        config: &str,
        dir: TempDir,
        data: &std::path::Path,
        listen: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let config_path = dir.path().join("zone.toml");
        std::fs::write(&config_path, config)?;
        let log = dir.path().join("zone.log");
        let mut command = ZoneCommand::new(bin, &listen.to_string())
            .config(&config_path)
            .arg("--data-dir")
            .arg(data)
            .token_key(TOKEN_KEY)
            .admin_token(ADMIN_TOKEN);
        for arg in extra {
            command = command.arg(arg);
        }
        let mut child = command
            .std_command()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn respawn zone")?;
        let line = respawn_harness::zone::listening_line(&mut child, STARTUP)
            .with_context(|| format!("{bin} zone: {}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("unexpected first line from respawn zone: {line:?}"))?;
        Ok(Self { child, addr, log, _dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Waits for the process to exit and returns its status and full stderr.
    pub fn wait_exit(mut self, limit: Duration) -> Result<(std::process::ExitStatus, String)> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, std::fs::read_to_string(&self.log)?));
            }
            if std::time::Instant::now() > deadline {
                bail!("respawn zone did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ZoneProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn token(player: u64, name: &str) -> String {
    token_expiring(player, name, 3600)
}

pub fn token_expiring(player: u64, name: &str, ttl_secs: i64) -> String {
    let now = respawn_api::clock::unix_secs() as i64;
    let claims = Claims { player_id: player, name: name.into(), expires_at: (now + ttl_secs).max(0) as u64 };
    TokenKey::new(TOKEN_KEY.as_bytes()).expect("key").sign(&claims).expect("sign")
}

/// A character ticket, as the platform would give, for a new character of
/// `player` in `zone`: what a zone server started with `--platform` wants
/// with a join (others ignore it).
pub fn ticket(player: u64, name: &str, zone: &str) -> String {
    let now = respawn_api::clock::unix_secs();
    let ticket = respawn_api::players::CharacterTicket {
        player_id: player,
        name: name.into(),
        zone: zone.into(),
        incarnation: 1,
        level: 1,
        xp: 0,
        gold: 0,
        inventory: Default::default(),
        place: None,
        expires_at: now + respawn_api::players::CHARACTER_TICKET_TTL_SECS,
    };
    ticket.seal(&TokenKey::new(TOKEN_KEY.as_bytes()).expect("key"))
}

/// Waits (10 s at most) until the platform server at `platform` lists
/// `servers` zone servers (asked as a zone server would).
pub async fn wait_registered(platform: &str, servers: usize) -> Result<()> {
    let credential = credential("registry-reader");
    respawn_harness::wait_until("zone servers in the registry", Duration::from_secs(10), || async {
        let (code, body) = respawn_api::http::request(platform, "GET", "/v1/servers", Some(&credential)).await?;
        Ok(code == 200 && serde_json::from_str::<Vec<serde_json::Value>>(&body)?.len() == servers)
    })
    .await
}

/// A protocol-level test client over `respawn_client::Connection`.
pub struct Client {
    pub conn: Connection,
}

/// How a connection ended, from the client's side.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self { conn: Connection::connect(url).await? })
    }

    pub async fn send(&mut self, body: client_message::Body) -> Result<()> {
        self.conn.send(body).await
    }

    pub async fn send_raw(&mut self, msg: Message) -> Result<()> {
        self.conn.send_raw(msg).await
    }

    /// Connects and joins; returns the client and its Welcome.
    pub async fn join(url: &str, player: u64, name: &str, zone: &str) -> Result<(Self, respawn_proto::Welcome)> {
        let mut c = Self::connect(url).await?;
        let (token, ticket) = (token(player, name), ticket(player, name, zone));
        let welcome = c.conn.join(token, None, &ticket, zone, Duration::from_secs(5)).await?;
        Ok((c, welcome))
    }

    /// Next server message, or an error on close or timeout.
    pub async fn next(&mut self, limit: Duration) -> Result<server_message::Body> {
        match tokio::time::timeout(limit, self.conn.next())
            .await
            .map_err(|_| anyhow!("no message within {limit:?}"))??
        {
            Event::Message(body) => Ok(body),
            Event::Closed { code, reason } => bail!("closed by server: {code} {reason}"),
        }
    }

    /// Reads until `pick` returns something, within `limit` overall.
    pub async fn next_matching<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&server_message::Body) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let body = self.next(left).await?;
            if let Some(found) = pick(&body) {
                return Ok(found);
            }
        }
    }

    /// Reads until the server closes; returns the close code (1006 when the
    /// connection ended without a close frame) and reason.
    pub async fn closed(&mut self, limit: Duration) -> Result<Closed> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.conn.next()).await.map_err(|_| anyhow!("not closed in time"))?? {
                Event::Message(_) => continue,
                Event::Closed { code, reason } => return Ok(Closed { code, reason }),
            }
        }
    }
}

/// A bare HTTP/1.1 request; returns status code and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    Ok(respawn_api::http::request(&addr.to_string(), method, path, bearer).await?)
}

/// The value of one sample line (`name{labels} value`) in a Prometheus scrape.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

pub async fn scrape(addr: SocketAddr) -> Result<String> {
    Ok(respawn_api::http::scrape(&addr.to_string()).await?)
}

/// Polls `/metrics` until `series` equals `want` (5 s at most).
pub async fn wait_metric(addr: SocketAddr, series: &str, want: f64) -> Result<()> {
    let mut seen = None;
    for _ in 0..100 {
        seen = metric(&scrape(addr).await?, series);
        if seen == Some(want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{series} stayed at {seen:?}, expected {want}")
}

/// The second build of the binary, labelled with another version.
pub fn next_build() -> String {
    std::env::var("RESPAWN_NEXT_BIN").expect("run through scripts/test: it builds the second version")
}

/// Runs `respawn drill ARGS --json` and reads its report as `R` (a
/// `respawn_drill` report type), pass or fail.
pub fn drill<R: serde::de::DeserializeOwned>(args: &[&str]) -> Result<R> {
    let out = Command::new(env!("CARGO_BIN_EXE_respawn")).arg("drill").args(args).arg("--json").output()?;
    serde_json::from_slice(&out.stdout)
        .or_else(|e| bail!("drill {args:?} printed no report ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// A fresh MariaDB database for one test, on the server of `scripts/services`.
pub struct Database {
    pub server: String,
    pub name: String,
}

impl Database {
    pub async fn create(tag: &str) -> Result<Self> {
        use sqlx::Connection;
        let server = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
        // Unique per call: tests of one binary run side by side.
        let name = format!("respawn_{tag}_{}", respawn_harness::unique_suffix());
        let mut db = sqlx::MySqlConnection::connect(&server).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut db).await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut db).await?;
        Ok(Self { server, name })
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

/// `respawn platform` as a process, logging to a file; killed when dropped.
pub struct Platform {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Platform {
    pub fn start(brokers: &str, mysql_url: &str, group: &str) -> Result<Self> {
        Self::start_with(brokers, mysql_url, group, &[])
    }

    /// With extra command-line arguments.
    pub fn start_with(brokers: &str, mysql_url: &str, group: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(brokers, mysql_url, group, extra, &[])
    }

    /// With extra command-line arguments and environment variables.
    pub fn start_with_env(
        brokers: &str,
        mysql_url: &str,
        group: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = TempDir::new("platform")?;
        let log = dir.path().join("platform.log");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
            .args(["platform", "--listen", &addr.to_string()])
            .args(extra)
            .env("RESPAWN_KAFKA_BROKERS", brokers)
            .env("RESPAWN_MYSQL_URL", mysql_url)
            .env("RESPAWN_CONSUMER_GROUP", group)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self { child, addr, log, _dir: dir })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A platform server with login, the registry and rollouts (which need no
    /// Kafka or MySQL: nothing listens on port 1), answering once healthy.
    /// With accounts (in a database of its own) for players to sign in to,
    /// and no Kafka.
    pub async fn for_rollouts(operator_token: &str) -> Result<Self> {
        let db = Database::create("rollouts").await?;
        let platform = Self::start_with(
            "127.0.0.1:1",
            &db.url(),
            "rollouts",
            &["--server-key", SERVER_KEY, "--token-key", TOKEN_KEY, "--admin-token", operator_token],
        )?;
        platform.wait_healthy().await?;
        platform.wait_ready().await?;
        Ok(platform)
    }

    /// Waits (20 s at most) until `/readyz` answers 200: MySQL is connected, accounts can be reached.
    pub async fn wait_ready(&self) -> Result<()> {
        let addr = self.addr.to_string();
        respawn_harness::wait_until("the platform server's MySQL", Duration::from_secs(20), || async {
            Ok(respawn_api::http::request(&addr, "GET", "/readyz", None).await?.0 == 200)
        })
        .await
    }

    /// Waits (10 s at most) until `/healthz` answers 200.
    pub async fn wait_healthy(&self) -> Result<()> {
        let addr = self.addr.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while respawn_api::http::request(&addr, "GET", "/healthz", None).await.map_or(0, |(code, _)| code) != 200 {
            if std::time::Instant::now() > deadline {
                bail!("the platform server did not start; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every zone's lease lock in an embedded data directory, held until
/// dropped. A process paused in the middle of a write keeps its zone's lock
/// (and no server takes the lease until it goes on): tests that pause a zone
/// server do it while holding these, so it is paused between writes.
pub fn lock_every_zone(data: &std::path::Path) -> Result<Vec<std::fs::File>> {
    let mut held = Vec::new();
    for entry in std::fs::read_dir(data.join("leases"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "lock") {
            let file = std::fs::File::open(&path)?;
            file.lock()?;
            held.push(file);
        }
    }
    anyhow::ensure!(!held.is_empty(), "no zone lock in {}", data.display());
    Ok(held)
}
