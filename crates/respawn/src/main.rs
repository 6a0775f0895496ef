//! `respawn`: one binary, many roles. Parses the command line and wires the
//! chosen role to its crates.

use std::net::SocketAddr;
use std::path::PathBuf;

mod ctl;
mod up;
mod web;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use respawn_api::admin::{Stop, ZoneAdmin};
use respawn_api::registry::RegistryClient;
use respawn_harness::logs::LogFormat;
use respawn_harness::zone::{ServerCredentialFlags, StoreFlags, TlsFlags};
use respawn_token::{Claims, TokenKey};
use respawn_zone::persist::Stores;
use respawn_zone::{heartbeat, Characters, ServerConfig, ServerOptions, ZoneServer};

#[derive(Parser, Debug)]
#[command(name = "respawn", version = VERSION, about = "A real-time game backend whose failures behave predictably")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Logs on stderr as human text, or one JSON object per line (for a log store).
    #[arg(long, global = true, env = "RESPAWN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the whole local stack: zone server (supervised), play page, bots.
    Up(up::UpArgs),
    /// Run a zone server: several zones, each on its own fixed-rate tick thread.
    Zone(Box<ZoneArgs>),
    /// Drain a zone server on this machine through its admin API and wait
    /// until it has stopped (a Kubernetes preStop hook).
    ZoneStop(ZoneStopArgs),
    /// Run the platform server's event consumer: Kafka into MySQL, exactly once in effect.
    Platform(PlatformArgs),
    /// Mint a signed session token without the platform server (tests, tools, a zone server alone).
    Token(TokenArgs),
    /// Make zone servers' registry credentials from the platform's server key
    /// (one line per id): each server gets its own, bound to its id.
    ServerCredential(ServerCredentialArgs),
    /// Operator commands over the platform server's API (status, zones, kick,
    /// ban, announce, drain, ...) and point-in-time restore.
    Ctl(ctl::CtlArgs),
    /// Disaster-recovery drills with measured RTO and RPO.
    Drill(respawn_drill::DrillArgs),
    /// A zone's kept history run again, tick by tick, every recorded state hash checked.
    Replay(respawn_drill::replay::ReplayArgs),
    /// Bot clients over real WebSockets against a zone server, with a report.
    Loadgen(respawn_drill::loadgen::LoadgenArgs),
    /// Benchmarks: the tick in this process, the event pipeline against real servers.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Args, Debug)]
struct ZoneStopArgs {
    /// The zone server's listen address (0.0.0.0 means this machine).
    #[arg(long, env = "RESPAWN_LISTEN", default_value = "127.0.0.1:7350")]
    listen: SocketAddr,
    /// Its --admin-listen, when the admin API has a listener of its own.
    #[arg(long, env = "RESPAWN_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// The server's --admin-token.
    #[arg(long, env = "RESPAWN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(flatten)]
    credential: ServerCredentialFlags,
    /// It serves TLS: call it over https (at localhost for a loopback or
    /// 0.0.0.0 --listen: its certificate must name localhost, or the address).
    #[arg(long)]
    tls: bool,
    /// How long to wait for the server to stop.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// One zone at full speed: tick time including replication encoding.
    Tick(respawn_drill::bench::TickArgs),
    /// Events/s from the outbox to the broker and from the broker into MariaDB.
    Pipeline(respawn_drill::bench::pipeline::PipelineArgs),
}

#[derive(Args, Debug)]
struct ZoneArgs {
    /// TOML file describing zones and limits; built-in defaults when absent.
    #[arg(long, env = "RESPAWN_ZONE_CONFIG")]
    config: Option<PathBuf>,
    /// Address for WebSocket, health and metrics (overrides the file).
    #[arg(long, env = "RESPAWN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Simulation rate in Hz (overrides the file).
    #[arg(long, env = "RESPAWN_TICK_HZ")]
    tick_hz: Option<u32>,
    /// Seconds to wait for players to leave during a drain (overrides the file).
    #[arg(long, env = "RESPAWN_DRAIN_DEADLINE_SECS")]
    drain_deadline_secs: Option<u64>,
    /// Connections one client IP address may hold open, 0 for no cap
    /// (overrides the file's `[limits] connections_per_ip`, default 128).
    #[arg(long, env = "RESPAWN_CONNECTIONS_PER_IP")]
    connections_per_ip: Option<u32>,
    /// Load balancers (IPs) whose X-Forwarded-For names the client; their connections are not capped.
    #[arg(long = "trusted-proxy", env = "RESPAWN_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Secret that session tokens are signed with (at least 16 bytes).
    #[arg(long, env = "RESPAWN_TOKEN_KEY", hide_env_values = true)]
    token_key: String,
    /// Bearer token for operators' calls to the admin API (`/admin/*`); the
    /// platform calls it with the server's credential instead.
    #[arg(long, env = "RESPAWN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Platform server (`host:port`, or `https://host:port` when it serves
    /// TLS) whose registry this server heartbeats into, with its --server-token.
    #[arg(long, env = "RESPAWN_PLATFORM_ADDR")]
    platform: Option<String>,
    #[command(flatten)]
    credential: ServerCredentialFlags,
    #[command(flatten)]
    tls: TlsFlags,
    /// Where the platform sends clients (default: ws://<listen address>/ws, wss:// with TLS).
    #[arg(long, env = "RESPAWN_ADVERTISE")]
    advertise: Option<String>,
    /// Serve the admin API (`/admin/*`) on this address only, not on the
    /// players' (the platform is told where; a 0.0.0.0 one is reached at the advertised host).
    #[arg(long, env = "RESPAWN_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Host only these zones of the configuration at start (comma-separated
    /// names); stand by for the others. The configuration still names every
    /// zone an exit leads to, wherever it is hosted.
    #[arg(long, env = "RESPAWN_ZONES", value_delimiter = ',', conflicts_with = "standby")]
    zones: Vec<String>,
    /// Host no zone at start: zones arrive by hand-over during a rollout.
    #[arg(long, env = "RESPAWN_STANDBY", conflicts_with = "claim")]
    standby: bool,
    /// Run any zone of the configuration not hosted here once its lease
    /// has run out (its server was lost): a spare for failover.
    #[arg(long, env = "RESPAWN_TAKE_OVER")]
    take_over: bool,
    /// Host only the configured zones no other live server hosts (asked of
    /// the platform server; no zone starts until it answers); stand by for
    /// the others. For replicas that start before the old ones stop (Kubernetes).
    #[arg(long, env = "RESPAWN_CLAIM", requires = "platform")]
    claim: bool,
    /// When draining, first have the platform server move the zones live to a
    /// standby server; the players follow them.
    #[arg(long, env = "RESPAWN_HANDOFF_ON_DRAIN", requires = "platform")]
    handoff_on_drain: bool,
    /// This server's id in the registry and in its zones' leases, stable
    /// across restarts of the same instance: the one its --server-token
    /// names by default, else made of the host name and the listen address.
    #[arg(long, env = "RESPAWN_SERVER_ID")]
    server_id: Option<String>,
    /// Directory of the zones' event outboxes (default: `outbox` in the data
    /// directory). Two servers sharing a data directory need one each.
    #[arg(long, env = "RESPAWN_OUTBOX_DIR")]
    outbox_dir: Option<PathBuf>,
    #[command(flatten)]
    stores: StoreFlags,
}

/// This build's version: the crate's, unless the build was labelled
/// otherwise (`RESPAWN_BUILD_VERSION=... cargo build`; the rollout test
/// makes its second build so).
pub const VERSION: &str = match option_env!("RESPAWN_BUILD_VERSION") {
    Some(label) => label,
    None => env!("CARGO_PKG_VERSION"),
};

/// The zone stores the flags name: files, with Redis and MongoDB for their roles when given.
pub async fn build_stores(flags: &StoreFlags) -> Result<Stores> {
    Ok(Stores::connect(&flags.data_dir, flags.redis(), flags.mongo()).await?)
}

#[derive(Args, Debug)]
struct PlatformArgs {
    /// Kafka brokers to consume `game.events.player` from.
    #[arg(long, env = "RESPAWN_KAFKA_BROKERS")]
    kafka_brokers: String,
    /// MySQL or MariaDB, e.g. mysql://user:password@127.0.0.1:3306/respawn
    #[arg(long, env = "RESPAWN_MYSQL_URL", hide_env_values = true)]
    mysql_url: String,
    /// Kafka consumer group.
    #[arg(long, env = "RESPAWN_CONSUMER_GROUP", default_value = respawn_platform::GROUP)]
    group: String,
    /// Address for the HTTP API, `/metrics` and `/healthz`.
    #[arg(long, env = "RESPAWN_PLATFORM_LISTEN", default_value = "127.0.0.1:7360")]
    listen: SocketAddr,
    /// Key the zone servers' credentials are made from (`respawn
    /// server-credential`); the registry API is closed without it. Only the
    /// platform holds it.
    #[arg(long, env = "RESPAWN_SERVER_KEY", hide_env_values = true)]
    server_key: Option<String>,
    /// Redis for the server registry, bans, operator tokens, audit log and
    /// rate limits (kept in this process's memory without it).
    #[arg(long, env = "RESPAWN_REDIS_URL")]
    redis_url: Option<String>,
    /// Key prefix in Redis.
    #[arg(long, env = "RESPAWN_REDIS_PREFIX", default_value = "respawn")]
    redis_prefix: String,
    /// Secret session tokens are signed with, the zone servers' --token-key;
    /// players cannot log in without it.
    #[arg(long, env = "RESPAWN_TOKEN_KEY", hide_env_values = true)]
    token_key: Option<String>,
    /// Lifetime of the session tokens issued at sign-in (a refresh gives the next).
    #[arg(long, env = "RESPAWN_SESSION_TTL_SECS", default_value_t = 900)]
    session_ttl_secs: u64,
    /// Lifetime of a sign-in's refresh tokens.
    #[arg(long, env = "RESPAWN_REFRESH_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    refresh_ttl_secs: u64,
    /// Sign-ups, sign-ins, refreshes and joins allowed per client IP address per minute, each (also the burst).
    #[arg(long, env = "RESPAWN_LOGIN_PER_MINUTE", default_value_t = 20)]
    login_per_minute: u32,
    /// Operations API calls allowed per operator token per second (bursts of ten times this).
    #[arg(long, env = "RESPAWN_API_PER_SECOND", default_value_t = 10)]
    api_per_second: u32,
    /// Connections one client IP address may hold open (0: no cap; behind a
    /// proxy every client has the proxy's address: list it with --trusted-proxy).
    #[arg(long, env = "RESPAWN_CONNECTIONS_PER_IP", default_value_t = 64)]
    connections_per_ip: u32,
    /// Load balancers (IPs) whose X-Forwarded-For names the client; their connections are not capped.
    #[arg(long = "trusted-proxy", env = "RESPAWN_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// An admin operator token to install at start-up (stored hashed, as
    /// `bootstrap-admin`); create the others through the API.
    #[arg(long, env = "RESPAWN_PLATFORM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(flatten)]
    alerting: AlertingArgs,
}

/// Built-in alerting's outputs.
#[derive(Args, Debug, Clone)]
pub struct AlertingArgs {
    /// Webhook (http or https) that firing and resolved alerts are posted to, Slack-compatible.
    #[arg(long, env = "RESPAWN_ALERT_WEBHOOK")]
    alert_webhook: Option<String>,
}

impl AlertingArgs {
    /// The webhook, checked.
    pub fn webhook(&self) -> Result<Option<respawn_api::http::Url>> {
        self.alert_webhook
            .as_deref()
            .map(|url| respawn_api::http::parse_url(url).map_err(|why| anyhow::anyhow!("--alert-webhook {why}")))
            .transpose()
    }
}

#[derive(Args, Debug)]
struct ServerCredentialArgs {
    /// The platform's --server-key.
    #[arg(long, env = "RESPAWN_SERVER_KEY", hide_env_values = true)]
    key: String,
    /// Server ids (1-64 of a-z 0-9 - _ .): Kubernetes pod names, compose services.
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Secret to sign with; must match the zone server's.
    #[arg(long, env = "RESPAWN_TOKEN_KEY", hide_env_values = true)]
    key: String,
    /// Numeric player id.
    #[arg(long)]
    player: u64,
    /// Display name: 1-24 of A-Z a-z 0-9 _ -.
    #[arg(long)]
    name: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    respawn_harness::logs::init(cli.log_format);
    match cli.command {
        Cmd::Up(args) => runtime()?.block_on(up::run(args)),
        Cmd::Zone(args) => run_zone(*args),
        Cmd::ZoneStop(args) => runtime()?.block_on(stop_zone(args)),
        Cmd::Token(args) => mint_token(args),
        Cmd::ServerCredential(args) => make_server_credentials(args),
        Cmd::Platform(args) => runtime()?.block_on(run_platform(args)),
        Cmd::Bench(BenchCmd::Tick(args)) => respawn_drill::bench::run_tick(args),
        Cmd::Bench(BenchCmd::Pipeline(args)) => respawn_drill::bench::pipeline::run(args),
        Cmd::Loadgen(args) => runtime()?.block_on(respawn_drill::loadgen::run(args)),
        Cmd::Drill(args) => runtime()?.block_on(respawn_drill::run(args)),
        Cmd::Replay(args) => runtime()?.block_on(respawn_drill::replay::run(args, VERSION)),
        Cmd::Ctl(args) => runtime()?.block_on(ctl::run(args)),
    }
}

/// Asks the zone server to drain (with `--handoff-on-drain` its zones move to
/// a standby server first), then waits until it no longer answers.
async fn stop_zone(args: ZoneStopArgs) -> Result<()> {
    let here = |mut addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        match (args.tls, addr.ip().is_loopback()) {
            (true, true) => format!("https://localhost:{}", addr.port()),
            (true, false) => format!("https://{addr}"),
            (false, _) => addr.to_string(),
        }
    };
    let (addr, admin) = (here(args.listen), here(args.admin_listen.unwrap_or(args.listen)));
    let Some(token) = args.admin_token.or(args.credential.read()?) else {
        bail!("give the zone server's --admin-token or its --server-token (or --server-token-file)");
    };
    match ZoneAdmin::new(token).stop(&admin, &addr, std::time::Duration::from_secs(args.wait_secs)).await {
        Ok(Stop::Stopped) => eprintln!("zone server at {addr} stopped"),
        Ok(Stop::NotRunning(e)) => eprintln!("zone server at {addr} not answering ({e}): nothing to drain"),
        Ok(Stop::StillRunning) => bail!("the zone server at {addr} still answers after {} s", args.wait_secs),
        Err(refused) => bail!("the zone server {refused}"),
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn token_key(secret: &str) -> Result<TokenKey> {
    TokenKey::new(secret.as_bytes()).context("token key")
}

/// Refuses to serve with a secret that is short or a placeholder (see [`respawn_token::check_secrets`]).
fn check_secrets<'a>(secrets: impl IntoIterator<Item = (&'static str, Option<&'a str>)>) -> Result<()> {
    respawn_token::check_secrets(secrets).map_err(anyhow::Error::msg)
}

async fn run_platform(args: PlatformArgs) -> Result<()> {
    check_secrets([
        ("--token-key", args.token_key.as_deref()),
        ("--server-key", args.server_key.as_deref()),
        ("--admin-token", args.admin_token.as_deref()),
    ])?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (try --listen)", args.listen))?;
    let config = respawn_platform::ConsumerConfig {
        brokers: args.kafka_brokers,
        topic: respawn_proto::events::TOPIC.to_owned(),
        group: args.group,
        batch_max: 5_000,
        batch_wait: std::time::Duration::from_millis(50),
    };
    let stores = respawn_platform::http::HttpContext::with_stores(args.redis_url.as_deref(), &args.redis_prefix)?;
    let mut context = respawn_platform::http::HttpContext {
        server_key: match &args.server_key {
            Some(key) => Some(respawn_token::ServerKey::new(key.as_bytes()).context("--server-key")?),
            None => None,
        },
        sessions: match &args.token_key {
            Some(key) => Some(respawn_platform::http::SessionSigner {
                key: token_key(key)?,
                ttl: std::time::Duration::from_secs(args.session_ttl_secs.max(1)),
                refresh_ttl: std::time::Duration::from_secs(args.refresh_ttl_secs.max(1)),
            }),
            None => None,
        },
        limits: respawn_platform::http::Limits {
            login_per_ip: respawn_store::ratelimit::Quota {
                burst: args.login_per_minute.max(1),
                period: std::time::Duration::from_secs(60),
            },
            api_per_token: respawn_store::ratelimit::Quota {
                burst: args.api_per_second.max(1).saturating_mul(10),
                period: std::time::Duration::from_secs(10),
            },
            connections_per_ip: args.connections_per_ip,
            trusted_proxies: respawn_net::TrustedProxies::new(args.trusted_proxies),
            ..respawn_platform::http::Limits::default()
        },
        ..stores
    };
    if let Some(secret) = &args.admin_token {
        if let Err(e) = respawn_platform::http::ops::install_bootstrap_admin(&mut context, secret).await {
            tracing::warn!(error = %e, "operator tokens unreadable: --admin-token holds until they are");
        }
    }
    let metrics = context.metrics.clone();
    let platform = respawn_platform::PlatformServer::new(context)
        .routes(web::play_routes())
        .notify(args.alerting.webhook()?)
        .consume(respawn_platform::MySqlConsumer { mysql_url: args.mysql_url, config })
        .tls(args.tls.load()?)
        .start(listener)?;
    let scheme = if args.tls.tls_cert.is_some() { "https" } else { "http" };
    tracing::info!(metrics = %format!("{scheme}://{}/metrics", args.listen), "platform server listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    platform.shutdown().await.map_err(anyhow::Error::msg)?;
    tracing::info!(stored = metrics.stored.get(), duplicates = metrics.duplicates.get(), "platform consumer stopped");
    Ok(())
}

fn mint_token(args: TokenArgs) -> Result<()> {
    let claims = Claims {
        player_id: args.player,
        name: args.name,
        expires_at: respawn_api::clock::unix_secs().saturating_add(args.ttl),
    };
    println!("{}", token_key(&args.key)?.sign(&claims).context("cannot sign these claims")?);
    Ok(())
}

fn make_server_credentials(args: ServerCredentialArgs) -> Result<()> {
    check_secrets([("--key", Some(args.key.as_str()))])?;
    let key = respawn_token::ServerKey::new(args.key.as_bytes()).context("--key")?;
    for id in &args.ids {
        println!("{}", key.credential(id).map_err(|e| anyhow::anyhow!("{id:?}: {e}"))?);
    }
    Ok(())
}

fn run_zone(args: ZoneArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::defaults(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(hz) = args.tick_hz {
        config.tick_hz = hz;
    }
    if let Some(per_ip) = args.connections_per_ip {
        config.limits.connections_per_ip = per_ip;
    }
    if let Some(secs) = args.drain_deadline_secs {
        config.drain_deadline = std::time::Duration::from_secs(secs);
    }
    config.validate()?;
    let credential = args.credential.read()?;
    check_secrets([
        ("--token-key", Some(args.token_key.as_str())),
        ("--admin-token", args.admin_token.as_deref()),
        ("--server-token", credential.as_deref()),
    ])?;
    if args.platform.is_some() && credential.is_none() {
        bail!("--platform needs this server's --server-token (or --server-token-file): `respawn server-credential ID`");
    }
    let server_id =
        heartbeat::registry_id(args.server_id.as_deref(), credential.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(id) = &server_id {
        respawn_harness::logs::name_server(id);
    }
    let tls = args.tls.tls_cert.is_some();
    let configured: Vec<String> = config.zones.iter().map(|z| z.name.clone()).collect();
    // What --zones leaves out; --claim chooses among what it keeps.
    let left_out = config.left_out_by(&args.zones).map_err(|e| anyhow::anyhow!("--zones: {e}"))?;
    runtime()?.block_on(async move {
        // A platform needs a credential, which names the server.
        let registry = args.platform.clone().zip(credential.clone()).zip(server_id.clone());
        let registry = registry.map(|((p, t), id)| (RegistryClient::new(p, t), id));
        let not_hosted: Vec<String> = match &registry {
            _ if args.standby => configured,
            Some((registry, server_id)) if args.claim => {
                let wanted: Vec<String> = configured.iter().filter(|z| !left_out.contains(z)).cloned().collect();
                let granted = heartbeat::claim(registry, server_id, &wanted).await;
                configured.into_iter().filter(|z| !granted.contains(z)).collect()
            }
            _ => left_out,
        };
        let before_drain = match &registry {
            Some((registry, id)) if args.handoff_on_drain => Some(heartbeat::evacuation(registry.clone(), id.clone())),
            _ => None,
        };
        let options = ServerOptions {
            config,
            token_key: token_key(&args.token_key)?,
            stores: build_stores(&args.stores).await?,
            outbox_dir: args.outbox_dir.unwrap_or_else(|| args.stores.data_dir.join("outbox")),
            event_log: Some(
                respawn_platform::event_log(args.stores.kafka_brokers.as_deref(), &args.stores.events_db())
                    .await
                    .map_err(anyhow::Error::msg)?,
            ),
            admin_tokens: args.admin_token.into_iter().chain(credential).collect(),
            admin_listen: args.admin_listen,
            trusted_proxies: respawn_net::TrustedProxies::new(args.trusted_proxies),
            tls: args.tls.load()?,
            version: VERSION.to_owned(),
            server_id: server_id.clone(),
            take_over: args.take_over,
            not_hosted,
            before_drain,
            characters: if args.platform.is_some() { Characters::KeptByPlatform } else { Characters::Fresh },
        };
        let server = ZoneServer::start(options).await?;
        let (addr, [http, ws]) = (server.local_addr()?, if tls { ["https", "wss"] } else { ["http", "ws"] });
        // One machine-readable line on stdout; logs go to stderr.
        println!("respawn zone listening on {http}://{addr}");
        let heartbeat_stop = tokio_util::sync::CancellationToken::new();
        let heartbeat = match registry {
            Some((registry, server_id)) => Some(tokio::spawn(
                heartbeat::Registration::new(
                    registry,
                    server_id,
                    args.advertise.unwrap_or_else(|| format!("{ws}://{addr}/ws")),
                    server.admin_addr(),
                    VERSION.to_owned(),
                )
                .run(server.view(), server.ban_enforcer(), heartbeat_stop.clone()),
            )),
            _ => None,
        };
        server.drain_trigger().on_signals();
        server.run().await?;
        heartbeat_stop.cancel();
        if let Some(heartbeat) = heartbeat {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), heartbeat).await;
        }
        Ok(())
    })
}
