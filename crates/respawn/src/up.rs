//! `respawn up`: the whole local stack in one command. A supervised zone
//! server child process (restarted if it dies), the platform server in this
//! process (login, registry, operations API, dashboard; state in memory,
//! player profiles from the embedded ledger), the browser client, bots that
//! log in like players, and a live one-line status until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use respawn_api::overview::EventPath;
use respawn_client::{Access, BotStats, Fleet};
use respawn_platform::fleet::FleetView;
use respawn_platform::http::SessionSigner;
use respawn_store::ratelimit::Quota;
use respawn_token::TokenKey;
use respawn_zone::ServerConfig;

use respawn_harness::supervisor::{say, ChildSpec, Supervisor, SupervisorStatus};
use respawn_harness::zone::StoreFlags;

/// The players' accounts and characters when events go to Kafka rather than
/// the embedded ledger: a consumer in this process stores them there.
const PLATFORM_DB: &str = "platform.sqlite";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Address of the play page, the login, the operations API and the dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the zone server (WebSocket, metrics).
    #[arg(long, default_value = "127.0.0.1:7350")]
    zone_listen: SocketAddr,
    /// Simulated players, spread over the zones.
    #[arg(long, default_value_t = 12)]
    bots: u32,
    /// Zone server configuration file; two standard zones when absent.
    #[arg(long)]
    zone_config: Option<PathBuf>,
    #[command(flatten)]
    stores: StoreFlags,
    #[command(flatten)]
    alerting: crate::AlertingArgs,
}

pub async fn run(args: UpArgs) -> Result<()> {
    let config = match &args.zone_config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::defaults(),
    };
    let zones: Vec<String> = config.zones.iter().map(|z| z.name.clone()).collect();
    let token_key = respawn_token::random_hex(32)?;
    let key = TokenKey::new(token_key.as_bytes())?;
    let server_key = respawn_token::ServerKey::new(respawn_token::random_hex(32)?.as_bytes())?;
    let zone_admin_token = respawn_token::random_hex(32)?;
    let operator_token = respawn_token::random_hex(24)?;
    let run_dir = std::env::temp_dir().join(format!("respawn-up-{}", std::process::id()));
    tokio::fs::create_dir_all(&run_dir).await?;
    let log_path = run_dir.join("zone.log");

    // The platform server first (in this process, state in memory): the zone
    // server heartbeats into it from its first second.
    let web = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the play page (try --listen)", args.listen))?;
    let web_addr = web.local_addr()?;
    let supervisor_status = Arc::new(SupervisorStatus::default());
    let mut platform = respawn_platform::http::HttpContext::with_stores(None, "respawn")?;
    platform.server_key = Some(server_key.clone());
    platform.sessions = Some(SessionSigner::new(key.clone()));
    // Without Kafka the zone server writes its events straight into the embedded ledger.
    platform.events = if args.stores.kafka_brokers.is_some() { EventPath::Kafka } else { EventPath::Embedded };
    // Every bot and browser tab logs in from this machine's address.
    platform.limits.login_per_ip = Quota { burst: args.bots.saturating_mul(2) + 60, period: Duration::from_secs(60) };
    let status_for_metrics = supervisor_status.clone();
    platform.extra_metrics = Some(Arc::new(move || status_for_metrics.render()));
    respawn_platform::http::ops::install_bootstrap_admin(&mut platform, &operator_token).await?;
    let (ledger_slot, accounts_slot) = (platform.ledger.clone(), platform.accounts.clone());
    let platform = respawn_platform::PlatformServer::new(platform)
        .routes(crate::web::play_routes())
        .notify(args.alerting.webhook()?)
        .start(web)?;

    let spec = ChildSpec {
        exe: std::env::current_exe().context("cannot find the respawn binary")?,
        config: args.zone_config.clone(),
        stores: args.stores.clone(),
        token_key,
        admin_token: zone_admin_token,
        platform: Some((web_addr.to_string(), server_key.credential("zone-1")?)),
        log_path: log_path.clone(),
        echo_warnings: true,
    };
    let supervisor = Supervisor::start(spec, args.zone_listen, supervisor_status).await?;
    let zone_addr = supervisor.addr;
    // The zone server created the embedded ledger before it listened; the
    // platform side reads player profiles and events from it and keeps the
    // players' accounts and characters in it. With Kafka they get a file of
    // their own, which a consumer in this process fills from the topic.
    let db_path = args.stores.data_dir.join(match &args.stores.kafka_brokers {
        None => respawn_harness::zone::EVENTS_DB,
        Some(_) => PLATFORM_DB,
    });
    let consumer_stop = tokio_util::sync::CancellationToken::new();
    match respawn_platform::SqliteLedger::open(&db_path).await {
        Ok(ledger) => {
            let _ = accounts_slot.set(Arc::new(ledger.accounts()));
            let ledger: Arc<dyn respawn_platform::Ledger> = Arc::new(ledger);
            let _ = ledger_slot.set(ledger.clone());
            if let Some(brokers) = &args.stores.kafka_brokers {
                let config = respawn_platform::ConsumerConfig {
                    brokers: brokers.clone(),
                    topic: respawn_proto::events::TOPIC.to_owned(),
                    group: "respawn-up".to_owned(),
                    batch_max: 5_000,
                    batch_wait: Duration::from_millis(50),
                };
                let (metrics, stop) = (platform.context().metrics.clone(), consumer_stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = respawn_platform::run_consumer(ledger, config, metrics, stop).await {
                        say(&format!("events consumer stopped: {e}"));
                    }
                });
            }
        }
        Err(e) => say(&format!("accounts and characters unavailable: cannot open {}: {e}", db_path.display())),
    }

    println!("Respawn is up.");
    println!("  play:      http://{web_addr}/");
    println!("  dashboard: http://{web_addr}/dashboard (operator token: {operator_token})");
    println!(
        "  api:       http://{web_addr}/openapi.json (respawn ctl --endpoint {web_addr} --token <operator token>)"
    );
    println!("  metrics:   http://{zone_addr}/metrics (platform and supervisor: http://{web_addr}/metrics)");
    println!("  zones:     {}", zones.join(", "));
    println!("  logs:      {}", log_path.display());
    match &args.stores.kafka_brokers {
        Some(brokers) => println!("  events:    Kafka {brokers} (topic {})", respawn_proto::events::TOPIC),
        None => {
            println!(
                "  events:    {} (embedded ledger, SQLite)",
                args.stores.data_dir.join(respawn_harness::zone::EVENTS_DB).display()
            )
        }
    }
    println!("Ctrl-C stops everything.");

    let bots = Fleet::spawn(Access::Login { platform: web_addr.to_string() }, &zones, args.bots, "bot");

    let (mut status, fleet) = (LiveStatus::default(), platform.context().fleet.clone());
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = every.tick() => status.show(&fleet.view(), &bots.stats, args.bots, supervisor.status.restarts()),
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            ended = supervisor.ended() => {
                // The supervisor only ends on its own when the zone server cannot start.
                say("");
                return Err(ended);
            }
        }
    }
    say("stopping: bots, then the zone server (drain), then the platform server");
    bots.stop().await;
    supervisor.stop().await;
    consumer_stop.cancel();
    if let Ok(Err(why)) = tokio::time::timeout(Duration::from_secs(3), platform.shutdown()).await {
        say(&format!("platform server: {why}"));
    }
    let _ = tokio::fs::remove_dir_all(&run_dir).await;
    say("stopped");
    Ok(())
}

/// The one-line live status: CCU and tick p99 per zone, as the platform's fleet view last saw them.
#[derive(Default)]
struct LiveStatus {
    shown: u64,
    /// Whether the zone server ever answered: before, it is starting.
    answered: bool,
}

impl LiveStatus {
    fn show(&mut self, view: &FleetView, bots: &BotStats, bots_wanted: u32, restarts: u64) {
        let answering = view.zones.iter().filter(|z| z.status != "unreachable");
        let parts: Vec<String> = answering
            .map(|z| {
                let p99 = z.tick_p99_ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
                format!("{}: {} players, tick p99 {p99}", z.name, z.players)
            })
            .collect();
        self.answered |= !parts.is_empty();
        let line = if parts.is_empty() {
            let state = if self.answered { "not answering" } else { "starting" };
            format!("zone server {state} (restarts {restarts})")
        } else {
            let connected = bots.connected.load(Ordering::Relaxed);
            format!("{} | bots {connected}/{bots_wanted} | restarts {restarts}", parts.join(" | "))
        };
        self.shown += 1;
        let mut err = std::io::stderr().lock();
        if err.is_terminal() {
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
        } else if self.shown % 10 == 1 {
            let _ = writeln!(err, "{line}");
        }
    }
}
