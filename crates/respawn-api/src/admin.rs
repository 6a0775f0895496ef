//! The zone server's admin API (`/admin/*`, behind the admin bearer token):
//! what each call answers, and [`ZoneAdmin`], the one client of it (the
//! platform's operations API and rollouts, `respawn zone stop`).

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::http::{percent_encode, Call, CallError};
use crate::replay::{Film, FilmWindow, ReplayTrace, ReplayWindow};

/// What a server can serve and read; a zone moves to a server only if both match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compat {
    /// The newest client protocol version it accepts.
    pub protocol_version: u32,
    /// The oldest it accepts; absent from builds that accept one version only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_protocol_version: Option<u32>,
    /// The snapshot format it reads (and writes).
    pub snapshot_format: u16,
}

impl Compat {
    /// The client protocol versions it accepts.
    pub fn protocols(&self) -> std::ops::RangeInclusive<u32> {
        self.oldest_protocol_version.unwrap_or(self.protocol_version).min(self.protocol_version)..=self.protocol_version
    }

    /// Whether every client `other` accepts can join this server too.
    pub fn serves_clients_of(&self, other: &Compat) -> bool {
        let (ours, theirs) = (self.protocols(), other.protocols());
        ours.start() <= theirs.start() && theirs.end() <= ours.end()
    }
}

/// A zone a server hosts now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedZone {
    pub name: String,
    pub players: u64,
    pub tick: u64,
    /// Released for a hand-off: stored, not ticking.
    pub parked: bool,
}

/// `GET /admin/info`: what a server is and can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: String,
    pub compat: Compat,
    pub zones: Vec<HostedZone>,
    /// Every zone its configuration has (it can adopt any of them).
    pub configured_zones: Vec<String>,
    pub draining: bool,
    pub players: u64,
}

impl ServerInfo {
    /// The names of the zones hosted now.
    pub fn hosted(&self) -> Vec<String> {
        self.zones.iter().map(|z| z.name.clone()).collect()
    }

    /// Whether its configuration has every one of `zones`.
    pub fn can_host(&self, zones: &[String]) -> bool {
        zones.iter().all(|z| self.configured_zones.contains(z))
    }
}

/// Where a restored zone's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreSource {
    /// A hot snapshot (Redis or files), then the journal after it.
    Hot,
    /// A cold snapshot (MongoDB or files), then the journal after it.
    Cold,
    /// No snapshot yet: the journal from tick 1.
    Journal,
    /// Nothing stored: a new zone.
    Fresh,
}

impl RestoreSource {
    pub const ALL: [RestoreSource; 4] =
        [RestoreSource::Hot, RestoreSource::Cold, RestoreSource::Journal, RestoreSource::Fresh];

    pub fn as_str(self) -> &'static str {
        match self {
            RestoreSource::Hot => "hot",
            RestoreSource::Cold => "cold",
            RestoreSource::Journal => "journal",
            RestoreSource::Fresh => "fresh",
        }
    }
}

impl fmt::Display for RestoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /admin/zones/{zone}/release`: the zone's last tick is stored and it no longer ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub zone: String,
    pub tick: u64,
    pub players: u64,
    pub took_ms: u64,
}

/// `POST /admin/zones/{zone}/adopt`: the zone restored from the stores and started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    pub zone: String,
    pub tick: u64,
    pub players: u64,
    pub source: RestoreSource,
    pub took_ms: u64,
}

/// `POST /admin/zones/{zone}/redirect`: its clients told the new address; the zone left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirected {
    pub zone: String,
    pub redirected_players: u64,
    pub to: String,
}

/// `POST /admin/zones/{zone}/resume`: a released zone ticks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub zone: String,
}

/// One character a zone holds, connected or waiting for its player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCharacter {
    pub player: u64,
    /// Its stay (0: a character no platform keeps).
    pub incarnation: u64,
    /// A client is attached (otherwise it waits for a resume).
    pub connected: bool,
}

/// The characters one zone holds at one tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRoster {
    pub zone: String,
    pub tick: u64,
    /// Released for a hand-off: what it holds belongs to the server that adopts it.
    pub parked: bool,
    pub characters: Vec<HeldCharacter>,
}

/// `GET /admin/characters`: the characters every zone of a server holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rosters {
    pub zones: Vec<ZoneRoster>,
}

/// How long a quick admin call (info, cordon, drain, notices) may take.
pub const QUICK_CALL: Duration = Duration::from_secs(3);
/// Calls that load or store a zone may take a restore's time.
pub const MOVE_CALL: Duration = Duration::from_secs(30);
/// A redirect waits for the zone thread to tell its clients.
pub const REDIRECT_CALL: Duration = Duration::from_secs(10);
/// A replay of minutes of a zone's history, each tick's state digested.
pub const REPLAY_CALL: Duration = Duration::from_secs(60);

/// How [`ZoneAdmin::stop`] ended.
#[derive(Debug)]
pub enum Stop {
    /// Drained, and it no longer answers.
    Stopped,
    /// Nothing answered the drain: nothing to stop.
    NotRunning(CallError),
    /// It still answered when the wait was over.
    StillRunning,
}

/// The client of a zone server's admin API, with a token it accepts (an
/// operator's `--admin-token`, or the server's own credential). Each call
/// takes the server's HTTP address (`host:port`).
#[derive(Clone)]
pub struct ZoneAdmin {
    token: String,
}

impl fmt::Debug for ZoneAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneAdmin").finish_non_exhaustive()
    }
}

impl ZoneAdmin {
    pub fn new(token: impl Into<String>) -> Self {
        Self { token: token.into() }
    }

    fn call<'a>(&'a self, method: Method, addr: &'a str, path: &'a str, limit: Duration) -> Call<'a> {
        Call::new(method, addr, path).bearer(Some(&self.token)).limit(limit)
    }

    /// Whether the server takes players now (`GET /readyz`, no token needed).
    pub async fn ready(&self, addr: &str) -> bool {
        Call::new(Method::GET, addr, "/readyz").limit(QUICK_CALL).text().await.is_ok()
    }

    pub async fn info(&self, addr: &str) -> Result<ServerInfo, CallError> {
        self.call(Method::GET, addr, "/admin/info", QUICK_CALL).read().await
    }

    /// The characters each hosted zone holds.
    pub async fn characters(&self, addr: &str) -> Result<Rosters, CallError> {
        self.call(Method::GET, addr, "/admin/characters", QUICK_CALL).read().await
    }

    /// Stops taking new players; with `notify`, connected players are asked to reconnect.
    pub async fn cordon(&self, addr: &str, notify: bool) -> Result<(), CallError> {
        let path = format!("/admin/cordon?notify={notify}");
        self.call(Method::POST, addr, &path, QUICK_CALL).text().await.map(drop)
    }

    pub async fn uncordon(&self, addr: &str) -> Result<(), CallError> {
        self.call(Method::POST, addr, "/admin/uncordon", QUICK_CALL).text().await.map(drop)
    }

    /// The server drains and stops (the guide's drain).
    pub async fn drain(&self, addr: &str) -> Result<(), CallError> {
        self.call(Method::POST, addr, "/admin/drain", QUICK_CALL).text().await.map(drop)
    }

    /// Drains the server through its admin API at `admin` and waits, up to
    /// `wait`, until `addr` no longer answers (a preStop hook); a refused
    /// drain is the error.
    pub async fn stop(&self, admin: &str, addr: &str, wait: Duration) -> Result<Stop, CallError> {
        match self.drain(admin).await {
            Ok(()) => {}
            Err(refused @ CallError::Refused { .. }) => return Err(refused),
            Err(silent) => return Ok(Stop::NotRunning(silent)),
        }
        let deadline = std::time::Instant::now() + wait;
        while Call::new(Method::GET, addr, "/healthz").limit(QUICK_CALL).send().await.is_ok() {
            if std::time::Instant::now() > deadline {
                return Ok(Stop::StillRunning);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Stop::Stopped)
    }

    /// A notice to every player of `zone` (every zone when `None`).
    pub async fn announce(&self, addr: &str, text: &str, zone: Option<&str>) -> Result<(), CallError> {
        let mut path = format!("/admin/announce?text={}", percent_encode(text));
        if let Some(zone) = zone {
            path.push_str(&format!("&zone={}", percent_encode(zone)));
        }
        self.call(Method::POST, addr, &path, QUICK_CALL).text().await.map(drop)
    }

    pub async fn kick(&self, addr: &str, player: u64, reason: Option<&str>) -> Result<(), CallError> {
        let mut path = format!("/admin/kick?player={player}");
        if let Some(reason) = reason {
            path.push_str(&format!("&reason={}", percent_encode(reason)));
        }
        self.call(Method::POST, addr, &path, QUICK_CALL).text().await.map(drop)
    }

    pub async fn release(&self, addr: &str, zone: &str) -> Result<Released, CallError> {
        let path = format!("/admin/zones/{}/release", percent_encode(zone));
        self.call(Method::POST, addr, &path, MOVE_CALL).read().await
    }

    /// Restores `zone` and starts it; with `after_tick`, anything older is refused.
    pub async fn adopt(&self, addr: &str, zone: &str, after_tick: Option<u64>) -> Result<Adopted, CallError> {
        let mut path = format!("/admin/zones/{}/adopt", percent_encode(zone));
        if let Some(tick) = after_tick {
            path.push_str(&format!("?after_tick={tick}"));
        }
        self.call(Method::POST, addr, &path, MOVE_CALL).read().await
    }

    /// Sends a released zone's clients to `to` (a WebSocket address).
    pub async fn redirect(&self, addr: &str, zone: &str, to: &str) -> Result<Redirected, CallError> {
        let path = format!("/admin/zones/{}/redirect?to={}", percent_encode(zone), percent_encode(to));
        self.call(Method::POST, addr, &path, REDIRECT_CALL).read().await
    }

    /// The server replays `window` of `zone`'s kept history on its build
    /// (off its zones' tick threads) and answers the digest of every tick's state.
    pub async fn replay(&self, addr: &str, zone: &str, window: &ReplayWindow) -> Result<ReplayTrace, CallError> {
        let query: Vec<String> = [
            ("last_secs", window.last_secs.map(u64::from)),
            ("start", window.start),
            ("from", window.from),
            ("to", window.to),
            ("state_at", window.state_at),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
        .collect();
        let path = format!("/admin/zones/{}/replay?{}", percent_encode(zone), query.join("&"));
        self.call(Method::GET, addr, &path, REPLAY_CALL).read().await
    }

    /// The server replays `window` of `zone`'s kept history on its build and
    /// answers where everything was and what happened, tick by tick.
    pub async fn film(&self, addr: &str, zone: &str, window: &FilmWindow) -> Result<Film, CallError> {
        let path = format!(
            "/admin/zones/{}/film?from={}&to={}",
            percent_encode(zone),
            percent_encode(&window.from),
            percent_encode(&window.to)
        );
        self.call(Method::GET, addr, &path, REPLAY_CALL).read().await
    }

    /// A released zone ticks again where it was.
    pub async fn resume(&self, addr: &str, zone: &str) -> Result<Resumed, CallError> {
        let path = format!("/admin/zones/{}/resume", percent_encode(zone));
        self.call(Method::POST, addr, &path, QUICK_CALL).read().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_sources_read_and_write_as_lowercase_words() {
        for source in RestoreSource::ALL {
            let json = serde_json::to_string(&source).expect("serialize");
            assert_eq!(json, format!("\"{source}\""));
            assert_eq!(serde_json::from_str::<RestoreSource>(&json).expect("parse"), source);
        }
    }

    #[test]
    fn a_server_can_host_only_configured_zones() {
        let info = ServerInfo {
            version: "1".into(),
            compat: Compat { protocol_version: 1, oldest_protocol_version: None, snapshot_format: 1 },
            zones: vec![HostedZone { name: "meadow".into(), players: 2, tick: 9, parked: false }],
            configured_zones: vec!["meadow".into(), "caverns".into()],
            draining: false,
            players: 2,
        };
        assert_eq!(info.hosted(), ["meadow"]);
        assert!(info.can_host(&["caverns".into()]));
        assert!(!info.can_host(&["caverns".into(), "desert".into()]));
    }
}
