//! The deployment of the drills on hosts of their own: a LAN of network
//! namespaces (`respawn_harness::netns`) with Redis, the MongoDB-compatible
//! server, the broker and MariaDB on one host (`store`), the platform server
//! on another (`platform`), a zone server on each of three more (`a` hosting
//! every zone; `b` and `c` standing by with `--take-over`), and this
//! process's bots and probes on a client host. Every address and port is the
//! host's own: nothing on this machine's network is used or changed, and
//! the LAN goes, with every process on it, when the drill ends.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use respawn_api::prom::{self, Sample};
use respawn_client::{Access, Fleet};
use respawn_harness::netns::Host;
use respawn_harness::process::{find_binary, Service, MONGOD_CACHED};
use respawn_harness::zone::{StoreFlags, ZoneCommand};

use crate::findings::Killed;
use crate::ledger::{EventCounts, LedgerView};
use crate::services::{create_database, platform_service, start_mariadb_on_host, start_tansu_on, PlatformSecrets};

/// Every zone server listens here, on its own host's address.
pub(crate) const ZONE_PORT: u16 = 7350;
const PLATFORM_PORT: u16 = 7400;
const REDIS_PORT: u16 = 6379;
const MONGO_PORT: u16 = 27017;
const BROKER_PORT: u16 = 9092;
/// The players' gate to zone-a, on the client host (flaky-network).
const PLAYERS_GATE_PORT: u16 = 7351;

/// The LAN's hosts.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    pub(crate) store: Host,
    pub(crate) platform: Host,
    /// The zone servers' hosts: the first one's server hosts every zone, the others stand by.
    pub(crate) zones: [Host; 3],
    /// Where this process's bots play from.
    pub(crate) client: Host,
}

impl Hosts {
    pub(crate) fn on(lan: &mut respawn_harness::netns::Lan) -> Result<Self> {
        Ok(Self {
            store: lan.host("store")?,
            platform: lan.host("platform")?,
            zones: [lan.host("a")?, lan.host("b")?, lan.host("c")?],
            client: lan.host("client")?,
        })
    }
}

/// One zone server of the LAN.
pub(crate) struct LanServer {
    /// `ip:port`.
    pub(crate) addr: String,
    service: Service,
    /// Its host died: it is not looked at any more.
    pub(crate) dead: bool,
}

/// The deployment, up and played on.
pub(crate) struct Cluster {
    pub(crate) hosts: Hosts,
    pub(crate) started: Instant,
    pub(crate) timeline: Vec<String>,
    pub(crate) servers: Vec<LanServer>,
    pub(crate) zones: Vec<String>,
    pub(crate) fleet: Fleet,
    /// Events of the servers whose host died, from the last look before.
    pub(crate) killed: Killed,
    pub(crate) brokers: String,
    pub(crate) platform_addr: String,
    /// Between the players and zone-a, when they reach it through a slow, lossy network.
    pub(crate) players_gate: Option<respawn_harness::gate::Gate>,
    mysql_url: String,
    _platform: Service,
    _store_services: Vec<Service>,
}

/// How long a look at a server's metrics may take: a server cut off does not answer at all.
const LOOK_LIMIT: Duration = Duration::from_secs(1);

impl Cluster {
    /// With `flaky_players`, zone-a advertises a flawed gate on the client
    /// host ([`respawn_harness::gate::Flaws::FLAKY`]): its players' every
    /// connection goes through it.
    pub(crate) async fn start(hosts: Hosts, root: &Path, bots: u32, flaky_players: bool) -> Result<Self> {
        let started = Instant::now();
        let secrets = PlatformSecrets::random()?;
        let server_key = respawn_token::ServerKey::new(secrets.server_key.as_bytes())?;
        let store = &hosts.store;
        let ip = store.addr.to_string();
        let redis_bin = find_binary("RESPAWN_REDIS_SERVER", &["redis-server"])?;
        let redis_args =
            ["--port", "6379", "--bind", &ip, "--protected-mode", "no", "--save", "", "--appendonly", "no"];
        let mut redis = Service::new("redis", redis_bin, redis_args, REDIS_PORT, root.join("redis")).on_host(store);
        redis.start().await.context("starting Redis")?;
        let mongo_data = root.join("mongo/data").display().to_string();
        let mongo_args = ["--host", &ip, "--port", "27017", "--storage-path", &mongo_data];
        let mongo_bin = find_binary("RESPAWN_MONGOD", MONGOD_CACHED)?;
        let mut mongo = Service::new("mongo", mongo_bin, mongo_args, MONGO_PORT, root.join("mongo")).on_host(store);
        mongo.start().await.context("starting the MongoDB-compatible server")?;
        let broker = start_tansu_on(&root.join("broker"), Some(store), BROKER_PORT, BROKER_PORT).await?;
        let (mysql, server_url) = start_mariadb_on_host(&root.join("mariadb"), store).await?;
        let mysql_url = create_database(&server_url, "respawn").await?;
        let brokers = format!("{ip}:{BROKER_PORT}");
        let redis_url = format!("redis://{ip}:{REDIS_PORT}/0");

        let platform_addr = format!("{}:{PLATFORM_PORT}", hosts.platform.addr);
        let mut platform =
            platform_service(&platform_addr, &brokers, &redis_url, &mysql_url, &secrets, root.join("platform"))?
                .on_host(&hosts.platform);
        platform.start().await.context("starting the platform server")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(respawn_api::http::request(&platform_addr, "GET", "/readyz", None).await, Ok((200, _))) {
            if Instant::now() > deadline {
                bail!("the platform server was not ready (its ledger connected) within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let zones: Vec<String> = respawn_zone::ServerConfig::defaults().zones.iter().map(|z| z.name.clone()).collect();
        let players_gate = match flaky_players {
            true => {
                let listen = std::net::SocketAddr::from((hosts.client.addr, PLAYERS_GATE_PORT));
                let upstream = std::net::SocketAddr::from((hosts.zones[0].addr, ZONE_PORT));
                let flaws = respawn_harness::gate::Flaws::FLAKY;
                Some(respawn_harness::gate::Gate::open_flawed(listen, upstream, flaws).await?)
            }
            false => None,
        };
        let mut servers = Vec::new();
        for (i, (host, id)) in hosts.zones.iter().zip(["zone-a", "zone-b", "zone-c"]).enumerate() {
            let addr = format!("{}:{ZONE_PORT}", host.addr);
            let stores = StoreFlags {
                data_dir: root.join(id).join("data"),
                redis_url: Some(redis_url.clone()),
                redis_prefix: "drill".into(),
                mongo_uri: Some(format!("mongodb://{ip}:{MONGO_PORT}/?directConnection=true")),
                mongo_db: "respawn_drill".into(),
                kafka_brokers: Some(brokers.clone()),
            };
            let mut command = ZoneCommand::new(std::env::current_exe()?, &addr)
                .token_key(&secrets.token_key)
                .admin_token(&secrets.admin_token)
                .platform(&platform_addr, &server_key.credential(id)?)
                .outbox_dir(&root.join(id).join("outbox"))
                .stores(&stores);
            if i > 0 {
                command = command.standby().arg("--take-over");
            } else if players_gate.is_some() {
                command = command.arg("--advertise").arg(format!("ws://{}:{PLAYERS_GATE_PORT}/ws", hosts.client.addr));
            }
            let mut service = Service::zone(id, &command, ZONE_PORT, root.join(id)).on_host(host);
            service.start().await.with_context(|| format!("starting zone server {id} on host {}", host.name))?;
            servers.push(LanServer { addr, service, dead: false });
        }
        let fleet = Fleet::spawn(Access::Login { platform: platform_addr.clone() }, &zones, bots, "lan");
        let mut cluster = Self {
            hosts,
            started,
            timeline: Vec::new(),
            servers,
            zones,
            fleet,
            killed: Killed::default(),
            brokers,
            platform_addr: platform_addr.clone(),
            players_gate,
            mysql_url,
            _platform: platform,
            _store_services: vec![redis, mongo, broker, mysql],
        };
        cluster.note(format!(
            "deployment up on {} hosts of their own: Redis, MongoDB-compatible, Tansu and MariaDB on {}; platform \
             server {platform_addr}; zone-a {} hosting {}; zone-b {} and zone-c {} standing by with --take-over; {bots} \
             bots on {}",
            6,
            cluster.hosts.store.addr,
            cluster.servers[0].addr,
            cluster.zones.join(", "),
            cluster.servers[1].addr,
            cluster.servers[2].addr,
            cluster.hosts.client.addr,
        ));
        Ok(cluster)
    }

    pub(crate) fn note(&mut self, what: impl std::fmt::Display) {
        self.timeline.push(format!("{:>7.3} s  {what}", self.started.elapsed().as_secs_f64()));
    }

    /// Server `i`'s metrics as it answered them, if it did within [`LOOK_LIMIT`].
    pub(crate) async fn look_text(&self, i: usize) -> Option<String> {
        let server = &self.servers[i];
        if server.dead {
            return None;
        }
        tokio::time::timeout(LOOK_LIMIT, respawn_api::http::scrape(&server.addr)).await.ok()?.ok()
    }

    pub(crate) async fn look(&self, i: usize) -> Option<Vec<Sample>> {
        self.look_text(i).await.map(|t| prom::parse(&t))
    }

    /// A metric summed over the servers `which` picks that answer.
    pub(crate) async fn sum(&self, which: &[usize], name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for &i in which {
            if let Some(s) = self.look(i).await {
                total += prom::sum(&s, name, labels);
            }
        }
        total
    }

    /// Whether server `i` has a zone of that name ticking.
    pub(crate) async fn ticks(&self, i: usize, zone: &str) -> bool {
        self.look(i).await.is_some_and(|s| {
            prom::value(&s, "respawn_zone_tick_duration_seconds_count", &[("zone", zone)]).unwrap_or(0.0) > 0.0
                && prom::value(&s, "respawn_zone_players", &[("zone", zone)]).is_some()
        })
    }

    /// Players connected to a zone on server `i` (zones it hosts now).
    pub(crate) async fn players_on(&self, which: &[usize]) -> u64 {
        self.sum(which, "respawn_zone_players", &[]).await as u64
    }

    /// Waits until every bot plays on the first server and it has played a while (snapshots, journal).
    pub(crate) async fn warm_up(&mut self) -> Result<()> {
        let want = self.fleet.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.fleet.stats.connected.load(std::sync::atomic::Ordering::Relaxed) < want {
            if Instant::now() > deadline {
                bail!("only {} of {want} bots playing after 30 s", self.players_on(&[0]).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.note(format!("{want} bots playing on zone-a"));
        Ok(())
    }

    /// Which servers are not dead.
    pub(crate) fn live(&self) -> Vec<usize> {
        (0..self.servers.len()).filter(|&i| !self.servers[i].dead).collect()
    }

    /// Stops the bots, waits for the events to settle in MariaDB, and counts
    /// them against what every server generated (the dead ones: their last look).
    pub(crate) async fn tally_events(&mut self) -> Result<crate::findings::EventTally> {
        self.fleet.halt().await;
        let ledger = LedgerView::MySql(crate::services::pool(&self.mysql_url)?);
        // Events of ticks never durable (a lost lease drops them) or taken back by a restore.
        let mut rolled_back = self.killed.rolled_back;
        for i in self.live() {
            if let Some(s) = self.look(i).await {
                let mut live = Killed::default();
                live.add(&s);
                rolled_back += live.rolled_back;
            }
        }
        let brokers = self.brokers.clone();
        let (generated, _, stored) = crate::ledger::settle(self, &ledger, Some(&brokers), rolled_back).await?;
        self.note(format!(
            "bots stopped; {} events stored of {generated} generated ({rolled_back} in ticks never durable or taken \
             back)",
            stored.distinct_rows
        ));
        Ok(crate::findings::EventTally::of(generated, rolled_back, &stored))
    }

    /// Stops the bots and every process (the LAN itself goes with its owner).
    pub(crate) async fn stop(mut self) {
        self.fleet.halt().await;
        for server in &mut self.servers {
            server.service.kill().await;
        }
    }
}

impl EventCounts for Cluster {
    async fn generated(&self) -> Result<u64> {
        Ok(self.killed.generated + self.sum(&self.live(), "respawn_zone_events_total", &[]).await as u64)
    }

    async fn outbox_pending(&self) -> Result<u64> {
        Ok(self.sum(&self.live(), "respawn_zone_outbox_pending_events", &[]).await as u64)
    }
}

/// Runs `drill` on a LAN made for it, from its client host; the LAN, and
/// every process on it, is gone when this returns.
pub(crate) fn on_lan<T, F>(drill: impl FnOnce(Hosts) -> F + Send + 'static) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
    T: Send + 'static,
{
    let mut lan = respawn_harness::netns::Lan::new()?;
    let hosts = Hosts::on(&mut lan)?;
    let client = hosts.client.clone();
    let result = client.run(move || drill(hosts));
    drop(lan);
    result?
}
