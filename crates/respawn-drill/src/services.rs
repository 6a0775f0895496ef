//! The event pipeline's servers that drills and benchmarks start for
//! themselves (each a `respawn_harness::process::Service`): Tansu
//! (Kafka-compatible) with the events topic, and MariaDB with a database.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;

use respawn_harness::gate::Gate;
use respawn_harness::netns::Host;
use respawn_harness::process::{find_binary, free_port, Service, TANSU_CACHED};

use respawn_proto::events::TOPIC;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

/// Partitions of the events topic these brokers get.
pub const PARTITIONS: u32 = 3;

/// A free port for a broker and a [`Gate`] in front of it on another: the
/// broker's port stays bound while the gate binds, or the kernel could hand
/// the gate that very port (the gate then forwards to itself).
pub async fn broker_port_behind_gate() -> Result<(u16, Gate)> {
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = held.local_addr()?.port();
    let gate = Gate::open(0, SocketAddr::from(([127, 0, 0, 1], port))).await?;
    drop(held);
    Ok((port, gate))
}

/// Tansu listening on `port`, advertising `advertised` (a gate in front of it,
/// or the same port), with the events topic created.
pub async fn start_tansu(dir: &Path, port: u16, advertised: u16) -> Result<Service> {
    start_tansu_on(dir, None, port, advertised).await
}

/// [`start_tansu`] on `host` (at its address) or on loopback.
pub(crate) async fn start_tansu_on(dir: &Path, host: Option<&Host>, port: u16, advertised: u16) -> Result<Service> {
    let tansu = find_binary("RESPAWN_TANSU", TANSU_CACHED)?;
    let ip = host.map_or(std::net::Ipv4Addr::LOCALHOST, |h| h.addr);
    let url = format!("tcp://{ip}:{port}");
    let advertised = format!("tcp://{ip}:{advertised}");
    let broker = Service::new(
        "tansu",
        tansu.clone(),
        [
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
    let mut broker = match host {
        Some(host) => broker.on_host(host),
        None => broker,
    };
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
    start_mariadb_on(dir, None).await
}

/// [`start_mariadb`] on `host`, at its address, with a user `respawn` (no
/// password) that may connect from any host of its LAN; the URL of that
/// user on the server. Root may connect only from the host itself, so
/// the user is made through the server's socket, a file this process shares.
pub(crate) async fn start_mariadb_on_host(dir: &Path, host: &Host) -> Result<(Service, String)> {
    let mysql = start_mariadb_on(dir, Some(host)).await?;
    let socket = format!("mysql://root@localhost/?socket={}", dir.join("sock").display());
    let admin = pool(&socket)?;
    for statement in ["CREATE USER IF NOT EXISTS 'respawn'@'%'", "GRANT ALL PRIVILEGES ON *.* TO 'respawn'@'%'"] {
        sqlx::query(statement)
            .execute(&admin)
            .await
            .with_context(|| format!("MariaDB on {}: {statement}", host.name))?;
    }
    admin.close().await;
    let url = format!("mysql://respawn@{}:{}", host.addr, mysql.port);
    Ok((mysql, url))
}

async fn start_mariadb_on(dir: &Path, host: Option<&Host>) -> Result<Service> {
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
    // On a host of its own, the port is free there whatever this machine's loopback holds.
    let (port, ip) = match host {
        Some(host) => (3306, host.addr),
        None => (free_port()?, std::net::Ipv4Addr::LOCALHOST),
    };
    let mysql = Service::new(
        "mariadb",
        find_binary("RESPAWN_MARIADBD", &["mariadbd"])?,
        [
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            &format!("--user={user}"),
            &format!("--port={port}"),
            &format!("--bind-address={ip}"),
            &format!("--socket={}", dir.join("sock").display()),
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
        ],
        port,
        dir.to_path_buf(),
    );
    let mut mysql = match host {
        Some(host) => mysql.on_host(host),
        None => mysql,
    };
    mysql.start().await?;
    Ok(mysql)
}

/// The platform server's secrets: the zone servers share the token key
/// and the operators' admin token; each has its own credential from the server key.
pub(crate) struct PlatformSecrets {
    pub(crate) token_key: String,
    pub(crate) admin_token: String,
    pub(crate) server_key: String,
}

impl PlatformSecrets {
    pub(crate) fn random() -> Result<Self> {
        Ok(Self {
            token_key: respawn_token::random_hex(32)?,
            admin_token: respawn_token::random_hex(32)?,
            server_key: respawn_token::random_hex(32)?,
        })
    }
}

/// `respawn platform` as the drills run it, listening on `listen` (`ip:port`):
/// on Redis (its own prefix), fed from `brokers` into `mysql_url`, with
/// sign-ins not throttled (every bot signs in from one address).
pub(crate) fn platform_service(
    listen: &str,
    brokers: &str,
    redis_url: &str,
    mysql_url: &str,
    secrets: &PlatformSecrets,
    dir: std::path::PathBuf,
) -> Result<Service> {
    let port = listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).context("a platform address's port")?;
    let args = [
        "platform",
        "--listen",
        listen,
        "--kafka-brokers",
        brokers,
        "--redis-url",
        redis_url,
        "--redis-prefix",
        "drill-platform",
        "--group",
        "respawn-drill",
        "--login-per-minute",
        "100000",
    ];
    Ok(Service::new("platform", std::env::current_exe()?, args, port, dir)
        .env("RESPAWN_MYSQL_URL", mysql_url)
        .env("RESPAWN_TOKEN_KEY", secrets.token_key.clone())
        .env("RESPAWN_SERVER_KEY", secrets.server_key.clone())
        .env("RESPAWN_PLATFORM_ADMIN_TOKEN", secrets.admin_token.clone()))
}

/// The broker, the database and the platform server of a pipeline drill.
pub(crate) struct Pipeline {
    pub(crate) broker: Service,
    /// Clients reach the broker only through this gate (its advertised address):
    /// kafka-down cuts it. Killing Tansu 0.6 instead is not survivable by Tansu
    /// itself: after `kill -9` it can lose idempotent-producer state and then
    /// panics on every produce ("more or less than one row", tansu-storage lite.rs).
    pub(crate) broker_gate: Gate,
    pub(crate) mysql: Service,
    pub(crate) platform: Service,
    pub brokers: String,
    pub(crate) mysql_url: String,
    pub(crate) platform_addr: String,
}

impl Pipeline {
    pub async fn start(root: &Path) -> Result<Self> {
        let (port, gate) = broker_port_behind_gate().await?;
        let broker = start_tansu(&root.join("broker"), port, gate.port).await?;
        let mysql = start_mariadb(&root.join("mariadb")).await?;
        let mysql_url = create_database(&format!("mysql://root@127.0.0.1:{}", mysql.port), "respawn").await?;

        let brokers = format!("127.0.0.1:{}", gate.port);
        let platform_port = free_port()?;
        let platform_addr = format!("127.0.0.1:{platform_port}");
        let mut platform = Service::new(
            "platform",
            std::env::current_exe()?,
            ["platform", "--listen", &platform_addr, "--kafka-brokers", &brokers, "--mysql-url", &mysql_url],
            platform_port,
            root.join("platform"),
        );
        platform.start().await?;
        Ok(Self { broker, broker_gate: gate, mysql, platform, brokers, mysql_url, platform_addr })
    }

    /// The site-loss drill's fault: every process killed (`kill -9`) and the
    /// broker's storage gone with the site; MariaDB's data stays.
    pub async fn lose(&mut self, root: &Path) -> Result<()> {
        self.platform.kill().await;
        self.broker.kill().await;
        self.mysql.kill().await;
        let broker_dir = root.join("broker");
        std::fs::remove_dir_all(&broker_dir).with_context(|| format!("wiping {}", broker_dir.display()))
    }

    /// After [`Pipeline::lose`]: MariaDB on its data, a new empty broker at
    /// the same address (the topic created anew), the platform server.
    pub async fn rebuild(&mut self, root: &Path) -> Result<()> {
        self.mysql.start().await?;
        self.broker = start_tansu(&root.join("broker"), self.broker.port, self.broker_gate.port).await?;
        self.platform.start().await
    }

    pub(crate) fn describe(&self) -> String {
        format!("broker {}, MariaDB :{}, platform server {}", self.brokers, self.mysql.port, self.platform_addr)
    }
}
