//! What the platform server knows of the game servers: every second it lists
//! the registry and scrapes each server's `/metrics` (at the host and port of
//! its advertised WebSocket address), keeping per-zone CCU, tick p50/p99 over
//! the last interval and a status. The operations API and the dashboard read
//! this view; none of it needs MySQL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use respawn_api::admin::ZoneAdmin;
use respawn_api::http::CallError;
use respawn_api::prom::{self, Histogram};
use respawn_api::registry::http_address;
use respawn_store::{Registry, ServerEntry, ServerState};
use respawn_token::ServerKey;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How often the view is refreshed.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One zone as last seen.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ZoneView {
    pub name: String,
    /// Registry id of the server hosting it.
    pub server: String,
    pub address: String,
    pub version: String,
    /// `running`, `stalled` (the tick did not advance since the last look),
    /// `draining` (its server takes no new players) or `unreachable`.
    pub status: &'static str,
    pub players: u64,
    pub tick: u64,
    /// Over the last interval; absent when no tick ended in it.
    pub tick_p50_ms: Option<f64>,
    pub tick_p99_ms: Option<f64>,
    /// Events in its outbox that the broker (or the embedded ledger) has not acknowledged.
    pub outbox_pending: u64,
    /// Events the broker (or the embedded ledger) acknowledged since its server started.
    #[serde(skip)]
    pub events_published: f64,
    /// Its tick durations since its server started (the trends take intervals of it).
    #[serde(skip)]
    pub tick_histogram: Option<Histogram>,
}

/// One game server as last seen.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerView {
    pub id: String,
    pub address: String,
    pub version: String,
    /// `ready` or `draining`, as its heartbeat says.
    pub state: &'static str,
    /// Whether its metrics answered.
    pub reachable: bool,
    pub players: u64,
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetView {
    pub servers: Vec<ServerView>,
    pub zones: Vec<ZoneView>,
    /// Why the registry could not be read, when it could not.
    pub registry_error: Option<String>,
}

/// The view, shared between the watcher and the API.
#[derive(Debug, Default)]
pub struct Fleet {
    view: RwLock<FleetView>,
}

impl Fleet {
    pub fn view(&self) -> FleetView {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    fn set(&self, view: FleetView) {
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
    }
}

/// The zone servers' admin API as the platform calls it: each server with
/// its own credential (made from the server key), at the address it
/// registered under that credential. No token the platform holds opens
/// every server's admin API, so a server that registers a hostile address
/// learns nothing it did not have.
#[derive(Debug, Clone)]
pub struct FleetAdmin {
    key: ServerKey,
}

impl FleetAdmin {
    pub fn new(key: ServerKey) -> Self {
        Self { key }
    }

    /// The admin client of `server` and where its admin API listens: the
    /// admin address it registered, else its players' address's host and port.
    pub fn of(&self, server: &ServerEntry) -> Result<(ZoneAdmin, String), CallError> {
        let addr = http_address(&server.address, server.admin_address.as_deref())
            .ok_or_else(|| CallError::Invalid(format!("{}: address has no HTTP host", server.id)))?;
        let credential = self.key.credential(&server.id).map_err(|e| CallError::Invalid(e.to_string()))?;
        Ok((ZoneAdmin::new(credential), addr))
    }
}

/// What the last look at one zone left to compare the next one with.
#[derive(Debug, Clone)]
struct Seen {
    tick: u64,
    histogram: Option<Histogram>,
}

/// Refreshes `fleet` every [`PERIOD`] until `stop`, and hands each look to `alerts`.
pub async fn watch(
    fleet: Arc<Fleet>,
    registry: Arc<dyn Registry>,
    alerts: Arc<crate::alerts::Alerts>,
    stop: CancellationToken,
) {
    let mut seen: HashMap<(String, String), Seen> = HashMap::new();
    let mut every = tokio::time::interval(PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let view = match registry.servers().await {
            Ok(servers) => {
                let (view, looks) = look(servers, &mut seen).await;
                alerts.observe(looks).await;
                view
            }
            // Without the registry nothing is known of the servers: no look for the alerts either.
            Err(e) => FleetView { registry_error: Some(e.to_string()), ..fleet.view() },
        };
        fleet.set(view);
    }
}

async fn look(
    servers: Vec<ServerEntry>,
    seen: &mut HashMap<(String, String), Seen>,
) -> (FleetView, Vec<crate::alerts::ServerLook>) {
    let scrapes = futures_util::future::join_all(servers.iter().map(|s| async move {
        let addr = http_address(&s.address, None)?;
        let scrape = tokio::time::timeout(PERIOD, respawn_api::http::scrape(&addr)).await.ok()?.ok()?;
        Some(prom::parse(&scrape))
    }))
    .await;
    let mut view = FleetView::default();
    let mut still_seen = HashMap::new();
    let mut looks = Vec::with_capacity(servers.len());
    for (server, samples) in servers.into_iter().zip(scrapes) {
        looks.push(crate::alerts::ServerLook::new(&server, samples.as_deref()));
        let draining = server.state == ServerState::Draining;
        let mut players = 0;
        for zone in &server.zones {
            let key = (server.id.clone(), zone.clone());
            let mut z = ZoneView {
                name: zone.clone(),
                server: server.id.clone(),
                address: server.address.clone(),
                version: server.version.clone(),
                status: "unreachable",
                players: 0,
                tick: 0,
                tick_p50_ms: None,
                tick_p99_ms: None,
                outbox_pending: 0,
                events_published: 0.0,
                tick_histogram: None,
            };
            if let Some(samples) = &samples {
                let labels = [("zone", zone.as_str())];
                z.players = prom::value(samples, "respawn_zone_players", &labels).unwrap_or(0.0) as u64;
                z.tick = prom::value(samples, "respawn_zone_tick", &labels).unwrap_or(0.0) as u64;
                z.outbox_pending =
                    prom::value(samples, "respawn_zone_outbox_pending_events", &labels).unwrap_or(0.0) as u64;
                z.events_published =
                    prom::value(samples, "respawn_zone_events_published_total", &labels).unwrap_or(0.0);
                let histogram = Histogram::read(samples, "respawn_zone_tick_duration_seconds", &labels);
                let before = seen.get(&key);
                let interval = match (&histogram, before.and_then(|b| b.histogram.as_ref())) {
                    (Some(now), Some(then)) => Some(now.since(then)),
                    (Some(now), None) => Some(now.clone()),
                    _ => None,
                };
                let ms =
                    |q| interval.as_ref().and_then(|h| h.quantile(q)).map(|s| (s * 1_000.0 * 100.0).round() / 100.0);
                (z.tick_p50_ms, z.tick_p99_ms) = (ms(0.5), ms(0.99));
                z.status = if before.is_some_and(|b| b.tick == z.tick) {
                    "stalled"
                } else if draining {
                    "draining"
                } else {
                    "running"
                };
                z.tick_histogram = histogram.clone();
                still_seen.insert(key, Seen { tick: z.tick, histogram });
            }
            players += z.players;
            view.zones.push(z);
        }
        view.servers.push(ServerView {
            id: server.id,
            address: server.address,
            version: server.version,
            state: server.state.as_str(),
            reachable: samples.is_some(),
            players,
            zones: server.zones,
        });
    }
    *seen = still_seen;
    (view, looks)
}
