//! The platform server, assembled in one place: the HTTP side and the
//! services beside it, each named, under one shutdown. `respawn platform`,
//! `respawn up`, the drills and the tests all start it through
//! [`PlatformServer`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use respawn_api::http::Url;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::ConsumerConfig;
use crate::http::HttpContext;

/// A task the platform server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Routes of [`crate::http::api::OPERATIONS`] (and any the host adds).
    Http,
    /// Kafka → MySQL: connects to MySQL (retrying until stopped), then consumes.
    Consumer,
    /// Scrapes every registered server each second; feeds the fleet view and the alerts.
    FleetWatcher,
    /// Posts alert transitions to the webhook.
    Notifier,
    /// Takes over a rollout whose runner (another instance) stopped.
    RolloutWatcher,
    /// Keeps the last hour of the dashboard's charts.
    Trends,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Http => "http",
            Service::Consumer => "consumer",
            Service::FleetWatcher => "fleet watcher",
            Service::Notifier => "notifier",
            Service::RolloutWatcher => "rollout watcher",
            Service::Trends => "trends",
        })
    }
}

/// Where the Kafka consumer stores the events.
#[derive(Debug, Clone)]
pub struct MySqlConsumer {
    pub mysql_url: String,
    pub config: ConsumerConfig,
}

/// What to start: the HTTP side always; the rest as configured.
pub struct PlatformServer {
    context: HttpContext,
    routes: Router,
    fleet_watcher: bool,
    webhook: Option<Url>,
    consumer: Option<MySqlConsumer>,
    tls: Option<respawn_net::ServerTls>,
}

impl fmt::Debug for PlatformServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformServer")
            .field("fleet_watcher", &self.fleet_watcher)
            .field("webhook", &self.webhook.as_ref().map(Url::as_str))
            .field("consumer", &self.consumer.is_some())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PlatformServer {
    /// The HTTP side over `context`, with the fleet watcher; no consumer, no notifier.
    pub fn new(context: HttpContext) -> Self {
        Self { context, routes: Router::new(), fleet_watcher: true, webhook: None, consumer: None, tls: None }
    }

    /// Serves HTTPS with this certificate when given one.
    pub fn tls(mut self, tls: Option<respawn_net::ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// More routes of the host process on the same listener (the play page).
    pub fn routes(mut self, routes: Router) -> Self {
        self.routes = routes;
        self
    }

    /// Without the fleet watcher: no fleet view, no alerts on servers.
    pub fn without_fleet_watcher(mut self) -> Self {
        self.fleet_watcher = false;
        self
    }

    /// Alert transitions are posted to `webhook`.
    pub fn notify(mut self, webhook: Option<Url>) -> Self {
        self.webhook = webhook;
        self
    }

    /// Consumes the event topic into MySQL.
    pub fn consume(mut self, consumer: MySqlConsumer) -> Self {
        self.consumer = Some(consumer);
        self
    }

    /// Starts every configured service on `listener`.
    pub fn start(self, listener: TcpListener) -> std::io::Result<RunningPlatform> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let context = self.context;
        let mut services: Vec<(Service, JoinHandle<Result<(), String>>)> = Vec::new();
        if let Some(webhook) = self.webhook {
            let (tx, rx) = tokio::sync::mpsc::channel(crate::notify::QUEUE);
            context.alerts.notify_to(tx);
            let notifier = crate::notify::run(webhook, rx, context.metrics.clone(), stop.clone());
            services.push((
                Service::Notifier,
                tokio::spawn(async move {
                    notifier.await;
                    Ok(())
                }),
            ));
        }
        if self.fleet_watcher {
            let (fleet, registry, alerts) = (context.fleet.clone(), context.registry.clone(), context.alerts.clone());
            let watcher = crate::fleet::watch(fleet, registry, alerts, stop.clone());
            services.push((
                Service::FleetWatcher,
                tokio::spawn(async move {
                    watcher.await;
                    Ok(())
                }),
            ));
        }
        let trends = crate::trends::watch(
            context.trends.clone(),
            context.fleet.clone(),
            context.metrics.clone(),
            context.events,
            stop.clone(),
        );
        services.push((
            Service::Trends,
            tokio::spawn(async move {
                trends.await;
                Ok(())
            }),
        ));
        if let Some(admin) = context.fleet_admin() {
            let watcher = context.rollouts.clone().watch(context.registry.clone(), admin, stop.clone());
            services.push((
                Service::RolloutWatcher,
                tokio::spawn(async move {
                    watcher.await;
                    Ok(())
                }),
            ));
        }
        if let Some(MySqlConsumer { mysql_url, config }) = self.consumer {
            let (ledger, metrics, stop) = (context.ledger.clone(), context.metrics.clone(), stop.clone());
            let accounts = context.accounts.clone();
            // Start-up does not wait for MySQL or Kafka: the consumer begins once MySQL answers.
            let consumer = async move {
                let Some(connected) = crate::mysql::connect_until_stopped(&mysql_url, &stop).await else {
                    return Ok(());
                };
                let _ = accounts.set(Arc::new(connected.accounts()));
                let connected: Arc<dyn crate::Ledger> = Arc::new(connected);
                let _ = ledger.set(connected.clone());
                tracing::info!("MySQL schema up to date; consuming events");
                crate::run_consumer(connected, config, metrics, stop).await.map_err(|e| e.to_string())
            };
            services.push((Service::Consumer, tokio::spawn(consumer)));
        }
        let http = crate::http::serve(listener, context.clone(), self.routes, self.tls, stop.clone());
        services.push((Service::Http, tokio::spawn(async move { http.await.map_err(|e| e.to_string()) })));
        Ok(RunningPlatform { context, addr, stop, services })
    }
}

/// A started platform server.
pub struct RunningPlatform {
    context: HttpContext,
    addr: SocketAddr,
    stop: CancellationToken,
    services: Vec<(Service, JoinHandle<Result<(), String>>)>,
}

impl fmt::Debug for RunningPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let services: Vec<Service> = self.services.iter().map(|(s, _)| *s).collect();
        f.debug_struct("RunningPlatform").field("addr", &self.addr).field("services", &services).finish()
    }
}

impl RunningPlatform {
    /// Its shared state (the ledger slot, metrics, stores).
    pub fn context(&self) -> &HttpContext {
        &self.context
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops every service; the first failure, naming its service.
    pub async fn shutdown(mut self) -> Result<(), String> {
        self.stop.cancel();
        let mut first_failure = None;
        for (service, task) in std::mem::take(&mut self.services) {
            let outcome = match task.await {
                Ok(result) => result,
                Err(e) => Err(format!("panicked or was cancelled: {e}")),
            };
            if let Err(why) = outcome {
                tracing::error!(%service, error = %why, "platform service failed");
                first_failure.get_or_insert(format!("{service}: {why}"));
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

impl Drop for RunningPlatform {
    /// A platform dropped without [`RunningPlatform::shutdown`] stops too.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
