//! Built-in alerting, so a deployment without Prometheus (`respawn up`) is
//! watched too. Every second the fleet watcher hands over what it saw of each
//! game server ([`ServerLook`]); the platform server adds its own figures.
//! The rules are those of `deploy/prometheus/alerts.yml`, with the same
//! thresholds and durations: a condition true for its whole duration fires,
//! and resolves when it stops being true. Transitions go to a feed (the
//! dashboard's) and to the notifier ([`crate::notify`]).

use respawn_store::unix_ms;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use respawn_api::prom::{self, Histogram, Sample};
use respawn_store::ops::OpsStore;
use serde::{Deserialize, Serialize};

use crate::ledger::LedgerSlot;
use crate::metrics::PlatformMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// One zone as one look saw it.
#[derive(Debug, Clone)]
pub struct ZoneLook {
    pub name: String,
    pub players: f64,
    pub queue: f64,
    pub tick: Option<Histogram>,
    /// `(store, consecutive failures)`.
    pub failures_in_row: Vec<(String, f64)>,
    /// Cold snapshots stored so far.
    pub cold_saved: f64,
}

/// One game server as one look saw it.
#[derive(Debug, Clone)]
pub struct ServerLook {
    pub id: String,
    pub address: String,
    pub version: String,
    pub draining: bool,
    /// Whether its metrics answered; the rest is empty when not.
    pub reachable: bool,
    pub cpu_seconds: Option<f64>,
    pub zones: Vec<ZoneLook>,
}

impl ServerLook {
    /// What the rules need of a server's scrape (`None`: it did not answer).
    pub fn new(entry: &respawn_store::ServerEntry, samples: Option<&[Sample]>) -> Self {
        let zones = samples.map_or_else(Vec::new, |s| {
            entry
                .zones
                .iter()
                .map(|zone| {
                    let z = [("zone", zone.as_str())];
                    let value = |name| prom::value(s, name, &z).unwrap_or(0.0);
                    ZoneLook {
                        name: zone.clone(),
                        players: value("respawn_zone_players"),
                        queue: value("respawn_zone_command_queue_length"),
                        tick: Histogram::read(s, "respawn_zone_tick_duration_seconds", &z),
                        failures_in_row: s
                            .iter()
                            .filter(|x| x.name == "respawn_zone_snapshot_failures_in_row" && x.has(&z))
                            .map(|x| (x.label("store").unwrap_or("?").to_owned(), x.value))
                            .collect(),
                        cold_saved: prom::value(
                            s,
                            "respawn_zone_snapshots_total",
                            &[("zone", zone.as_str()), ("store", "cold"), ("result", "ok")],
                        )
                        .unwrap_or(0.0),
                    }
                })
                .collect()
        });
        Self {
            id: entry.id.clone(),
            address: entry.address.clone(),
            version: entry.version.clone(),
            draining: entry.state == respawn_store::ServerState::Draining,
            reachable: samples.is_some(),
            cpu_seconds: samples.and_then(|s| prom::value(s, "process_cpu_seconds_total", &[])),
            zones,
        }
    }

    fn zone(&self, name: &str) -> Option<&ZoneLook> {
        self.zones.iter().find(|z| z.name == name)
    }
}

/// The platform server's own figures at one look.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlatformLook {
    pub http_total: f64,
    pub http_errors: f64,
    pub pool_in_use: u32,
    pub pool_max: u32,
    pub lag: i64,
}

/// Everything seen at one moment.
#[derive(Debug, Clone)]
pub struct Look {
    pub at: Instant,
    pub servers: Vec<ServerLook>,
    pub platform: PlatformLook,
}

impl Look {
    fn server(&self, id: &str) -> Option<&ServerLook> {
        self.servers.iter().find(|s| s.id == id)
    }
}

/// Looks kept: the longest window a rule reads (5 min) and some.
const KEEP: Duration = Duration::from_secs(330);
/// How long a vanished server's address is remembered as down.
const REMEMBER_DOWN: Duration = Duration::from_secs(600);
/// A version counts as new this long after it was first seen.
const NEW_VERSION: Duration = Duration::from_secs(600);
/// The scale-out threshold: 80% of the 5000 players one zone was benchmarked with.
pub const SCALE_OUT_PLAYERS: f64 = 4000.0;

/// The recent looks, and what outlives them.
#[derive(Debug, Default)]
pub struct History {
    looks: VecDeque<Look>,
    /// Addresses of servers seen, with when they were last seen reachable.
    addresses: HashMap<String, Instant>,
    /// Addresses whose server left the registry on purpose, and when.
    left: HashMap<String, Instant>,
    /// Versions, with when they were first seen; those of the first look count as old.
    versions: HashMap<String, Instant>,
}

impl History {
    fn now(&self) -> Option<&Look> {
        self.looks.back()
    }

    /// The oldest look within `window` of the newest (so a window with data is used as far as it goes).
    fn within(&self, window: Duration) -> Option<&Look> {
        let now = self.now()?.at;
        self.looks.iter().find(|l| now.duration_since(l.at) <= window)
    }

    /// The oldest look within `window` of the newest in which `pick` finds
    /// something (a server that joined later is compared from its first look).
    fn first_within<'a, T>(&'a self, window: Duration, pick: impl Fn(&'a Look) -> Option<T>) -> Option<(&'a Look, T)> {
        let now = self.now()?.at;
        self.looks.iter().filter(|l| now.duration_since(l.at) <= window).find_map(|l| pick(l).map(|t| (l, t)))
    }

    /// The newest look at least `age` old.
    fn aged(&self, age: Duration) -> Option<&Look> {
        let now = self.now()?.at;
        self.looks.iter().rev().find(|l| now.duration_since(l.at) >= age)
    }

    fn push(&mut self, look: Look) {
        let first = self.looks.is_empty() && self.versions.is_empty();
        for s in &look.servers {
            let since = if first { look.at.checked_sub(NEW_VERSION).unwrap_or(look.at) } else { look.at };
            self.versions.entry(s.version.clone()).or_insert(since);
            if s.reachable {
                self.addresses.insert(s.address.clone(), look.at);
            }
        }
        self.addresses.retain(|_, seen| look.at.duration_since(*seen) < REMEMBER_DOWN);
        self.left.retain(|_, at| look.at.duration_since(*at) < REMEMBER_DOWN);
        self.looks.push_back(look);
        while self.looks.front().zip(self.looks.back()).is_some_and(|(a, b)| b.at.duration_since(a.at) > KEEP) {
            self.looks.pop_front();
        }
    }
}

/// What a rule finds true now: one entry per key (a server, a zone, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub key: String,
    pub summary: String,
}

/// One condition of the guide.
#[derive(Debug)]
pub struct Rule {
    pub name: &'static str,
    pub severity: Severity,
    /// How long the condition must hold before the alert fires.
    pub hold: Duration,
    /// Section of docs/runbook.md.
    pub runbook: &'static str,
    pub check: fn(&History) -> Vec<Finding>,
}

fn finding(key: impl Into<String>, summary: String) -> Finding {
    Finding { key: key.into(), summary }
}

/// p99 of each zone's ticks over the last `window`, per (server, zone).
fn tick_p99(h: &History, window: Duration) -> Vec<(&ServerLook, &ZoneLook, f64)> {
    let Some(now) = h.now() else { return Vec::new() };
    let mut out = Vec::new();
    for server in now.servers.iter().filter(|s| s.reachable) {
        for zone in &server.zones {
            let before = h.first_within(window, |l| l.server(&server.id)?.zone(&zone.name)?.tick.as_ref());
            let (Some(now_hist), Some((_, before))) = (zone.tick.as_ref(), before) else { continue };
            if let Some(p99) = now_hist.since(before).quantile(0.99) {
                out.push((server, zone, p99));
            }
        }
    }
    out
}

fn slow_ticks(h: &History, window: Duration, limit: f64, text: &str) -> Vec<Finding> {
    tick_p99(h, window)
        .into_iter()
        .filter(|(_, _, p99)| *p99 > limit)
        .map(|(s, z, p99)| {
            let summary = format!("Zone {} on {}: tick p99 {:.0} ms, over {text}", z.name, s.address, p99 * 1_000.0);
            finding(format!("{} {}", s.address, z.name), summary)
        })
        .collect()
}

fn players_by_zone(look: &Look) -> BTreeMap<&str, f64> {
    let mut zones = BTreeMap::new();
    for server in look.servers.iter().filter(|s| s.reachable) {
        for zone in &server.zones {
            *zones.entry(zone.name.as_str()).or_insert(0.0) += zone.players;
        }
    }
    zones
}

pub const RULES: &[Rule] = &[
    Rule {
        name: "GameServerDown",
        severity: Severity::Critical,
        hold: Duration::from_secs(15),
        runbook: "game-server-down",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            h.addresses
                .iter()
                .filter(|(address, seen)| {
                    let up = now.servers.iter().any(|s| &s.address == *address && s.reachable);
                    let left_after = h.left.get(*address).is_some_and(|at| at >= *seen);
                    !up && !left_after
                })
                .map(|(address, _)| finding(address.clone(), format!("Zone server {address} is down")))
                .collect()
        },
    },
    Rule {
        name: "TickOver100ms",
        severity: Severity::Critical,
        hold: Duration::from_secs(30),
        runbook: "slow-ticks",
        check: |h| slow_ticks(h, Duration::from_secs(30), 0.1, "100 ms for 30 s"),
    },
    Rule {
        name: "CcuDrop",
        severity: Severity::Critical,
        hold: Duration::ZERO,
        runbook: "ccu-drop",
        check: |h| {
            let (Some(now), Some(then)) = (h.now(), h.aged(Duration::from_secs(60))) else { return Vec::new() };
            let (now, then) = (players_by_zone(now), players_by_zone(then));
            then.iter()
                .filter(|(_, before)| **before >= 10.0)
                .filter_map(|(zone, before)| {
                    let after = now.get(zone).copied().unwrap_or(0.0);
                    (after <= 0.7 * before).then(|| {
                        let summary =
                            format!("Zone {zone} lost 30% or more of its players within a minute ({before} → {after})");
                        finding(*zone, summary)
                    })
                })
                .collect()
        },
    },
    Rule {
        name: "ApiErrorRate",
        severity: Severity::Critical,
        hold: Duration::from_secs(120),
        runbook: "api-errors",
        check: |h| {
            let (Some(now), Some(then)) = (h.now(), h.within(Duration::from_secs(300))) else { return Vec::new() };
            let total = now.platform.http_total - then.platform.http_total;
            let errors = now.platform.http_errors - then.platform.http_errors;
            if total > 0.0 && errors / total > 0.05 {
                let share = errors / total * 100.0;
                vec![finding("platform", format!("Over 5% of API responses are errors ({share:.1}% over 5 min)"))]
            } else {
                Vec::new()
            }
        },
    },
    Rule {
        name: "DbPoolExhausted",
        severity: Severity::Critical,
        hold: Duration::from_secs(60),
        runbook: "db-pool-exhausted",
        check: |h| {
            let Some(p) = h.now().map(|l| l.platform) else { return Vec::new() };
            if p.pool_in_use > 0 && p.pool_in_use >= p.pool_max {
                vec![finding("platform", format!("MySQL pool exhausted ({} of {} in use)", p.pool_in_use, p.pool_max))]
            } else {
                Vec::new()
            }
        },
    },
    Rule {
        name: "CommandQueueLong",
        severity: Severity::Warning,
        hold: Duration::from_secs(15),
        runbook: "command-queue",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            now.servers
                .iter()
                .flat_map(|s| s.zones.iter().map(move |z| (s, z)))
                .filter(|(_, z)| z.queue > 1000.0)
                .map(|(s, z)| {
                    let summary = format!("Zone {} on {}: {} commands queued (over 1000)", z.name, s.address, z.queue);
                    finding(format!("{} {}", s.address, z.name), summary)
                })
                .collect()
        },
    },
    Rule {
        name: "SnapshotFailing",
        severity: Severity::Warning,
        hold: Duration::ZERO,
        runbook: "snapshot-failures",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            now.servers
                .iter()
                .flat_map(|s| s.zones.iter().map(move |z| (s, z)))
                .flat_map(|(s, z)| z.failures_in_row.iter().map(move |(store, n)| (s, z, store, n)))
                .filter(|(_, _, _, n)| **n >= 3.0)
                .map(|(s, z, store, n)| {
                    let summary = format!("Zone {}: {store} snapshots failed {n} times in a row", z.name);
                    finding(format!("{} {} {store}", s.address, z.name), summary)
                })
                .collect()
        },
    },
    Rule {
        name: "ConsumerLagHigh",
        severity: Severity::Warning,
        hold: Duration::ZERO,
        runbook: "consumer-lag",
        check: |h| {
            let Some(lag) = h.now().map(|l| l.platform.lag) else { return Vec::new() };
            if lag > 10_000 {
                vec![finding("platform", format!("{lag} events wait for the platform servers (over 10000)"))]
            } else {
                Vec::new()
            }
        },
    },
    Rule {
        name: "TickOver70ms",
        severity: Severity::Warning,
        hold: Duration::from_secs(60),
        runbook: "slow-ticks",
        check: |h| slow_ticks(h, Duration::from_secs(60), 0.07, "70 ms for 1 min"),
    },
    Rule {
        name: "CpuHigh",
        severity: Severity::Warning,
        hold: Duration::from_secs(300),
        runbook: "cpu-high",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            now.servers
                .iter()
                .filter_map(|s| {
                    let (then, before) = h.first_within(Duration::from_secs(60), |l| l.server(&s.id)?.cpu_seconds)?;
                    let seconds = now.at.duration_since(then.at).as_secs_f64();
                    if seconds < 5.0 {
                        return None;
                    }
                    let busy = (s.cpu_seconds? - before) / seconds;
                    (busy > 0.8).then(|| {
                        finding(s.address.clone(), format!("Zone server {} at {:.0}% CPU", s.address, busy * 100.0))
                    })
                })
                .collect()
        },
    },
    Rule {
        name: "NewVersionDeployed",
        severity: Severity::Info,
        hold: Duration::ZERO,
        runbook: "deployments",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            let mut live: Vec<&str> = now.servers.iter().map(|s| s.version.as_str()).collect();
            live.sort_unstable();
            live.dedup();
            live.into_iter()
                .filter(|v| h.versions.get(*v).is_some_and(|first| now.at.duration_since(*first) < NEW_VERSION))
                .map(|v| finding(v, format!("Version {v} deployed")))
                .collect()
        },
    },
    Rule {
        name: "Maintenance",
        severity: Severity::Info,
        hold: Duration::ZERO,
        runbook: "maintenance",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            now.servers
                .iter()
                .filter(|s| s.draining)
                .map(|s| finding(s.address.clone(), format!("Zone server {} is draining for maintenance", s.address)))
                .collect()
        },
    },
    Rule {
        name: "SnapshotSaved",
        severity: Severity::Info,
        hold: Duration::ZERO,
        runbook: "snapshots",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            now.servers
                .iter()
                .flat_map(|s| s.zones.iter().map(move |z| (s, z)))
                .filter(|(s, z)| {
                    let before =
                        h.first_within(Duration::from_secs(60), |l| Some(l.server(&s.id)?.zone(&z.name)?.cold_saved));
                    before.is_some_and(|(_, b)| z.cold_saved > b)
                })
                .map(|(s, z)| {
                    finding(format!("{} {}", s.address, z.name), format!("Zone {}: cold snapshot saved", z.name))
                })
                .collect()
        },
    },
    Rule {
        name: "CcuScaleOutThreshold",
        severity: Severity::Info,
        hold: Duration::ZERO,
        runbook: "scale-out",
        check: |h| {
            let Some(now) = h.now() else { return Vec::new() };
            now.servers
                .iter()
                .filter_map(|s| {
                    let players: f64 = s.zones.iter().map(|z| z.players).sum();
                    (players >= SCALE_OUT_PLAYERS).then(|| {
                        let summary =
                            format!("Zone server {} reached {players} players: consider scaling out", s.address);
                        finding(s.address.clone(), summary)
                    })
                })
                .collect()
        },
    },
];

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// True, not yet for long enough.
    Pending,
    Firing,
    Resolved,
}

/// An alert being tracked, or one that fired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    pub name: String,
    pub severity: Severity,
    pub key: String,
    pub summary: String,
    pub runbook: String,
    pub state: AlertState,
    /// Unix ms the condition became true.
    pub since_ms: u64,
    /// Unix ms of this state (firing: when it fired; resolved: when it resolved).
    pub at_ms: u64,
}

/// Firing alerts and the newest transitions (the feed), as every platform
/// instance agreed on them in the operations store, and the alerts pending
/// here.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    pub firing: Vec<Alert>,
    pub pending: Vec<Alert>,
    pub feed: Vec<Alert>,
}

#[derive(Debug, Clone)]
struct Tracked {
    alert: Alert,
    since: Instant,
}

/// The alert engine.
#[derive(Debug)]
pub struct Alerts {
    rules: &'static [Rule],
    history: Mutex<History>,
    tracked: Mutex<BTreeMap<(&'static str, String), Tracked>>,
    /// Where the instances agree on each alert's state and keep the feed.
    ops: Arc<dyn OpsStore>,
    metrics: Arc<PlatformMetrics>,
    ledger: LedgerSlot,
    /// Where firing and resolved alerts go (the notifier), once one is set.
    notify: std::sync::OnceLock<tokio::sync::mpsc::Sender<Alert>>,
}

impl Alerts {
    pub fn new(metrics: Arc<PlatformMetrics>, ledger: LedgerSlot, ops: Arc<dyn OpsStore>) -> Self {
        Self {
            rules: RULES,
            history: Mutex::default(),
            tracked: Mutex::default(),
            ops,
            metrics,
            ledger,
            notify: std::sync::OnceLock::new(),
        }
    }

    /// Sends every transition from now on to `notifier` (set once).
    pub fn notify_to(&self, notifier: tokio::sync::mpsc::Sender<Alert>) {
        let _ = self.notify.set(notifier);
    }

    /// A server left the registry on purpose: its address is not "down".
    pub fn left(&self, address: &str) {
        if let Ok(mut h) = self.history.lock() {
            h.left.insert(address.to_owned(), Instant::now());
        }
    }

    fn platform_look(&self) -> PlatformLook {
        let pool = self.ledger.get().map(|l| l.pool_stats()).unwrap_or_default();
        let (http_total, http_errors) = self.metrics.http_totals();
        PlatformLook {
            http_total,
            http_errors,
            pool_in_use: pool.size.saturating_sub(pool.idle),
            pool_max: pool.max,
            lag: self.metrics.lag_total(),
        }
    }

    /// Records what the fleet watcher saw now, evaluates every rule and
    /// publishes the transitions.
    pub async fn observe(&self, servers: Vec<ServerLook>) {
        let look = Look { at: Instant::now(), servers, platform: self.platform_look() };
        let transitions = self.evaluate(look, unix_ms());
        self.publish(transitions).await;
    }

    /// Tells the notifier and the feed of the transitions this instance is
    /// the first to make (another instance, or this one before a restart,
    /// may have fired the alert already): no alert fires twice.
    pub async fn publish(&self, transitions: Vec<Alert>) {
        for alert in transitions {
            let id = format!("{}|{}", alert.name, alert.key);
            let record = serde_json::to_string(&alert).unwrap_or_default();
            match self.ops.alert_transition(&id, alert.state == AlertState::Firing, &record).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(alert = %id, state = ?alert.state, "told already by another instance");
                    continue;
                }
                // Without the store, telling twice beats not telling.
                Err(e) => tracing::warn!(alert = %id, error = %e, "alert state not stored; notifying anyway"),
            }
            tracing::info!(alert = %alert.name, key = %alert.key, state = ?alert.state, summary = %alert.summary, "alert");
            if let Some(notify) = self.notify.get() {
                if notify.try_send(alert.clone()).is_err() {
                    tracing::error!(alert = %alert.name, "alert notification queue full: notification dropped");
                }
            }
        }
    }

    /// One evaluation at `look.at` (wall time `now_ms`); returns the transitions.
    pub fn evaluate(&self, look: Look, now_ms: u64) -> Vec<Alert> {
        let at = look.at;
        let findings: Vec<(&'static Rule, Finding)> = {
            let Ok(mut history) = self.history.lock() else { return Vec::new() };
            history.push(look);
            self.rules.iter().flat_map(|r| (r.check)(&history).into_iter().map(move |f| (r, f))).collect()
        };
        let Ok(mut tracked) = self.tracked.lock() else { return Vec::new() };
        let mut transitions = Vec::new();
        let mut still = BTreeMap::new();
        for (rule, found) in findings {
            let key = (rule.name, found.key.clone());
            let mut t = tracked.remove(&key).unwrap_or_else(|| Tracked {
                alert: Alert {
                    name: rule.name.to_owned(),
                    severity: rule.severity,
                    key: found.key.clone(),
                    summary: String::new(),
                    runbook: format!("docs/runbook.md#{}", rule.runbook),
                    state: AlertState::Pending,
                    since_ms: now_ms,
                    at_ms: now_ms,
                },
                since: at,
            });
            t.alert.summary = found.summary;
            if t.alert.state == AlertState::Pending && at.duration_since(t.since) >= rule.hold {
                t.alert.state = AlertState::Firing;
                t.alert.at_ms = now_ms;
                transitions.push(t.alert.clone());
            }
            still.insert(key, t);
        }
        for (_, t) in std::mem::replace(&mut *tracked, still) {
            if t.alert.state == AlertState::Firing {
                transitions.push(Alert { state: AlertState::Resolved, at_ms: now_ms, ..t.alert });
            }
        }
        transitions
    }

    /// Firing alerts and the feed from the operations store (as this
    /// instance saw them if the store cannot be read), pending ones from here.
    pub async fn view(&self) -> AlertsView {
        let tracked: Vec<Alert> =
            self.tracked.lock().map(|t| t.values().map(|t| t.alert.clone()).collect()).unwrap_or_default();
        let (mut firing, mut pending): (Vec<Alert>, Vec<Alert>) =
            tracked.into_iter().partition(|a| a.state == AlertState::Firing);
        let mut feed = Vec::new();
        match self.ops.alerts().await {
            Ok(stored) => {
                let parse = |records: Vec<String>| -> Vec<Alert> {
                    records.iter().filter_map(|r| serde_json::from_str(r).ok()).collect()
                };
                (firing, feed) = (parse(stored.firing), parse(stored.feed));
            }
            Err(e) => tracing::warn!(error = %e, "alert states unreadable; showing this instance's"),
        }
        let order = |a: &Alert, b: &Alert| (a.severity, &a.name, &a.key).cmp(&(b.severity, &b.name, &b.key));
        firing.sort_by(order);
        pending.sort_by(order);
        AlertsView { firing, pending, feed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, players: f64, reachable: bool) -> ServerLook {
        ServerLook {
            id: id.into(),
            address: format!("ws://{id}/ws"),
            version: "0.1.0".into(),
            draining: false,
            reachable,
            cpu_seconds: Some(0.0),
            zones: if reachable {
                vec![ZoneLook {
                    name: "meadow".into(),
                    players,
                    queue: 0.0,
                    tick: None,
                    failures_in_row: Vec::new(),
                    cold_saved: 0.0,
                }]
            } else {
                Vec::new()
            },
        }
    }

    fn engine() -> Alerts {
        engine_on(Arc::new(respawn_store::memory::MemoryOps::new()))
    }

    /// An engine keeping alert states in `ops` (several instances share one).
    fn engine_on(ops: Arc<dyn OpsStore>) -> Alerts {
        Alerts::new(Arc::new(PlatformMetrics::new()), LedgerSlot::default(), ops)
    }

    fn named(alerts: &[Alert]) -> Vec<(&str, AlertState)> {
        alerts.iter().map(|a| (a.name.as_str(), a.state)).collect()
    }

    fn look(at: Instant, servers: Vec<ServerLook>) -> Look {
        Look { at, servers, platform: PlatformLook::default() }
    }

    #[tokio::test]
    async fn a_condition_fires_after_its_hold_and_resolves_once() {
        let e = engine();
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        assert!(e.evaluate(look(s(0), vec![server("a", 1.0, true)]), 0).is_empty());
        // Unreachable from 1 s on: pending until 15 s have passed.
        for secs in 1..16 {
            assert!(e.evaluate(look(s(secs), vec![server("a", 0.0, false)]), secs).is_empty(), "at {secs} s");
        }
        assert_eq!(e.view().await.pending.len(), 1);
        let fired = e.evaluate(look(s(16), vec![server("a", 0.0, false)]), 16);
        assert_eq!(named(&fired), [("GameServerDown", AlertState::Firing)]);
        assert_eq!(fired[0].key, "ws://a/ws");
        e.publish(fired).await;
        assert_eq!(named(&e.view().await.firing), [("GameServerDown", AlertState::Firing)]);
        assert!(e.evaluate(look(s(17), vec![server("a", 0.0, false)]), 17).is_empty(), "fires once");
        let resolved = e.evaluate(look(s(18), vec![server("a", 1.0, true)]), 18);
        assert_eq!(named(&resolved), [("GameServerDown", AlertState::Resolved)]);
        e.publish(resolved).await;
        let view = e.view().await;
        assert!(view.firing.is_empty());
        assert_eq!(
            named(&view.feed),
            [("GameServerDown", AlertState::Resolved), ("GameServerDown", AlertState::Firing)]
        );
    }

    /// Two platform instances watch the same fleet, and one restarts: each
    /// transition is told once, by the instance that made it first.
    #[tokio::test]
    async fn instances_sharing_the_alert_states_tell_each_transition_once() {
        let ops: Arc<dyn OpsStore> = Arc::new(respawn_store::memory::MemoryOps::new());
        let (a, b) = (engine_on(ops.clone()), engine_on(ops.clone()));
        let (tx, mut told) = tokio::sync::mpsc::channel(16);
        a.notify_to(tx.clone());
        b.notify_to(tx.clone());
        let t0 = Instant::now();
        let down = |e: &Alerts, secs: u64| {
            e.evaluate(look(t0 + Duration::from_secs(secs), vec![server("a", 0.0, false)]), secs)
        };
        for e in [&a, &b] {
            e.evaluate(look(t0, vec![server("a", 1.0, true)]), 0);
        }
        for secs in 1..16 {
            assert!(down(&a, secs).is_empty() && down(&b, secs).is_empty());
        }
        let (fired_a, fired_b) = (down(&a, 16), down(&b, 16));
        assert_eq!((fired_a.len(), fired_b.len()), (1, 1), "each instance sees it fire");
        a.publish(fired_a).await;
        b.publish(fired_b).await;
        // A restarted instance sees it fire anew.
        let restarted = engine_on(ops.clone());
        restarted.notify_to(tx.clone());
        restarted.evaluate(look(t0 + Duration::from_secs(16), vec![server("a", 1.0, true)]), 16);
        for secs in 17..33 {
            restarted.publish(down(&restarted, secs)).await;
        }
        let told_now: Vec<Alert> = std::iter::from_fn(|| told.try_recv().ok()).collect();
        assert_eq!(named(&told_now), [("GameServerDown", AlertState::Firing)], "told once");
        let up = |e: &Alerts| e.evaluate(look(t0 + Duration::from_secs(40), vec![server("a", 1.0, true)]), 40);
        for e in [&a, &b, &restarted] {
            e.publish(up(e)).await;
        }
        let told_now: Vec<Alert> = std::iter::from_fn(|| told.try_recv().ok()).collect();
        assert_eq!(named(&told_now), [("GameServerDown", AlertState::Resolved)], "resolved once");
        assert!(a.view().await.firing.is_empty() && b.view().await.firing.is_empty());
    }

    #[test]
    fn a_server_that_left_on_purpose_is_not_down() {
        let e = engine();
        let t0 = Instant::now();
        e.evaluate(look(t0, vec![server("a", 1.0, true)]), 0);
        e.left("ws://a/ws");
        for secs in 1..30 {
            assert!(e.evaluate(look(t0 + Duration::from_secs(secs), Vec::new()), secs).is_empty());
        }
        assert!(e.tracked.lock().expect("tracked").is_empty());
    }

    #[test]
    fn a_ccu_drop_of_30_percent_within_a_minute_fires_at_once() {
        let e = engine();
        let t0 = Instant::now();
        for secs in 0..=60 {
            e.evaluate(look(t0 + Duration::from_secs(secs), vec![server("a", 20.0, true)]), secs);
        }
        let fired = e.evaluate(look(t0 + Duration::from_secs(61), vec![server("a", 14.0, true)]), 61);
        assert_eq!(fired.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), vec!["CcuDrop"]);
        let small = engine();
        for secs in 0..=60 {
            small.evaluate(look(t0 + Duration::from_secs(secs), vec![server("a", 5.0, true)]), secs);
        }
        assert!(small.evaluate(look(t0 + Duration::from_secs(61), vec![server("a", 1.0, true)]), 61).is_empty());
    }

    #[test]
    fn info_events_maintenance_snapshots_and_scale_out() {
        let e = engine();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let names = |alerts: Vec<Alert>| alerts.into_iter().map(|a| (a.name, a.state)).collect::<Vec<_>>();
        let (firing, resolved) = (AlertState::Firing, AlertState::Resolved);
        e.evaluate(look(at(0), vec![server("a", 1.0, true)]), 0);
        let mut draining = server("a", 1.0, true);
        draining.draining = true;
        assert_eq!(names(e.evaluate(look(at(1), vec![draining]), 1)), vec![("Maintenance".to_owned(), firing)]);
        assert_eq!(
            names(e.evaluate(look(at(2), vec![server("a", 1.0, true)]), 2)),
            vec![("Maintenance".to_owned(), resolved)]
        );
        let mut saved = server("a", 1.0, true);
        saved.zones[0].cold_saved = 1.0;
        assert_eq!(names(e.evaluate(look(at(3), vec![saved.clone()]), 3)), vec![("SnapshotSaved".to_owned(), firing)]);
        let mut crowded = saved.clone();
        crowded.zones[0].players = SCALE_OUT_PLAYERS;
        assert_eq!(names(e.evaluate(look(at(4), vec![crowded]), 4)), vec![("CcuScaleOutThreshold".to_owned(), firing)]);
        let mut upgraded = saved;
        upgraded.version = "0.2.0".into();
        let fired = names(e.evaluate(look(at(5), vec![upgraded]), 5));
        assert!(
            fired.contains(&("NewVersionDeployed".to_owned(), firing))
                && fired.contains(&("CcuScaleOutThreshold".to_owned(), resolved)),
            "{fired:?}"
        );
    }

    #[test]
    fn slow_ticks_fire_from_the_histogram_window() {
        let e = engine();
        let t0 = Instant::now();
        let with_ticks = |n: f64| {
            let mut s = server("a", 1.0, true);
            // n ticks so far, all between 100 and 200 ms.
            s.zones[0].tick = Some(Histogram { buckets: vec![(0.07, 0.0), (0.1, 0.0), (0.2, n), (f64::INFINITY, n)] });
            s
        };
        let mut fired = Vec::new();
        for secs in 0..=40 {
            fired.extend(e.evaluate(look(t0 + Duration::from_secs(secs), vec![with_ticks(secs as f64 * 5.0)]), secs));
        }
        let names: Vec<&str> = fired.iter().map(|a| a.name.as_str()).collect();
        assert!(names.contains(&"TickOver100ms"), "{names:?}");
        assert!(!names.contains(&"TickOver70ms"), "70 ms needs a whole minute: {names:?}");
    }
}
