//! The platform server's registry of game servers (`/v1/servers`, behind the
//! zone server's own credential): what a zone server sends and gets back, and
//! [`RegistryClient`], the zone server's client of it.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::http::{Call, CallError};

/// Whether a game server takes new players.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Ready,
    /// Shutting down or handing over: no new players.
    Draining,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Ready => "ready",
            ServerState::Draining => "draining",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ready" => Some(ServerState::Ready),
            "draining" => Some(ServerState::Draining),
            _ => None,
        }
    }
}

/// `PUT /v1/servers/{id}`: a zone server's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Where clients connect, e.g. `ws://10.0.0.5:7350/ws`.
    pub address: String,
    /// The zones it hosts now.
    pub zones: Vec<String>,
    pub state: ServerState,
    pub version: String,
    /// The ban-list version the server enforces; the reply carries the list
    /// when the platform's differs.
    #[serde(default)]
    pub bans_version: u64,
    /// Where its admin API listens (`host:port`) when not on `address`'s
    /// host and port (`--admin-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_address: Option<String>,
    /// The fencing token of its lease on each zone it hosts: the platform
    /// sends players to the newest owner while a lost one's entry lives on.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fences: std::collections::BTreeMap<String, u64>,
}

/// The `host:port` (or bare host) of a `ws://` or `wss://` address, and
/// whether it is `wss://`.
pub fn ws_authority(address: &str) -> Option<(&str, bool)> {
    let (rest, tls) = match address.strip_prefix("wss://") {
        Some(rest) => (rest, true),
        None => (address.strip_prefix("ws://")?, false),
    };
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then_some((authority, tls))
}

/// Where a server whose players connect at `address` answers HTTP, named as
/// [`Call`] names a server: `host:port`, or `https://host:port` for a
/// `wss://` address (a server that serves TLS does so on every listener).
/// `listener`, a `host:port` of its own (the admin API's), replaces the
/// address's. `None` for an address with no host.
pub fn http_address(address: &str, listener: Option<&str>) -> Option<String> {
    let (authority, tls) = ws_authority(address)?;
    let at = listener.unwrap_or(authority);
    Some(if tls { format!("https://{at}") } else { at.to_owned() })
}

/// The players' WebSocket address of a server named as [`Call`] names it:
/// `ws://host:port/ws`, or `wss://host:port/ws` for `https://host:port`.
pub fn ws_address(server: &str) -> String {
    match server.strip_prefix("https://") {
        Some(authority) => format!("wss://{}/ws", authority.trim_end_matches('/')),
        None => format!("ws://{}/ws", server.trim_start_matches("http://").trim_end_matches('/')),
    }
}

/// A heartbeat's reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans: Option<BanList>,
    /// Zones of the heartbeat that another live server holds a newer lease
    /// on (the zone and that lease's token): the server has lost them, even
    /// if the lease store is out of its reach, and stops them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub superseded: std::collections::BTreeMap<String, u64>,
}

/// The players banned now, at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanList {
    pub version: u64,
    pub players: Vec<u64>,
}

/// `POST /v1/servers/{id}/claim`: which of its zones a starting server may host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The zones the server is configured for.
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimReply {
    pub granted: Vec<String>,
    pub hosted_elsewhere: Vec<String>,
}

/// `GET /v1/servers`: a listed server, as its last heartbeat described it and
/// the fleet view last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedServer {
    pub id: String,
    pub address: String,
    pub zones: Vec<String>,
    pub state: ServerState,
    pub version: String,
    /// Whether its metrics answered at the last look (null before the first).
    pub reachable: Option<bool>,
    pub players: u64,
}

/// A zone server's client of the registry, with its own credential.
#[derive(Clone)]
pub struct RegistryClient {
    /// The platform server, `host:port`.
    platform: String,
    token: String,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient").field("platform", &self.platform).finish_non_exhaustive()
    }
}

/// How long a heartbeat may take: the entry it renews lives 3 s, so one
/// stuck longer (a platform out of reach) is given up and the next sent.
const HEARTBEAT_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl RegistryClient {
    pub fn new(platform: impl Into<String>, token: impl Into<String>) -> Self {
        Self { platform: platform.into(), token: token.into() }
    }

    pub fn platform(&self) -> &str {
        &self.platform
    }

    fn call<'a>(&'a self, method: Method, path: &'a str) -> Call<'a> {
        Call::new(method, &self.platform, path).bearer(Some(&self.token))
    }

    pub async fn heartbeat(&self, id: &str, beat: &Heartbeat) -> Result<HeartbeatReply, CallError> {
        self.call(Method::PUT, &format!("/v1/servers/{id}")).json(beat).limit(HEARTBEAT_LIMIT).read().await
    }

    /// Leaves the registry at once (a clean stop).
    pub async fn leave(&self, id: &str) -> Result<(), CallError> {
        self.call(Method::DELETE, &format!("/v1/servers/{id}")).text().await.map(drop)
    }

    pub async fn claim(&self, id: &str, zones: &[String]) -> Result<ClaimReply, CallError> {
        let claim = Claim { zones: zones.to_vec() };
        self.call(Method::POST, &format!("/v1/servers/{id}/claim")).json(&claim).read().await
    }

    /// Every live server, as `GET /v1/servers` lists them.
    pub async fn servers(&self) -> Result<Vec<ListedServer>, CallError> {
        self.call(Method::GET, "/v1/servers").read().await
    }

    /// Asks the platform to move this server's zones live to a standby server.
    pub async fn evacuate(&self, id: &str) -> Result<(), CallError> {
        let path = format!("/v1/servers/{id}/evacuate");
        self.call(Method::POST, &path).limit(Duration::from_secs(10)).text().await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addresses_come_from_websocket_addresses() {
        assert_eq!(http_address("ws://127.0.0.1:7350/ws", None).as_deref(), Some("127.0.0.1:7350"));
        assert_eq!(http_address("wss://eu1.example:443/ws", None).as_deref(), Some("https://eu1.example:443"));
        assert_eq!(
            http_address("wss://eu1.example/ws", Some("10.0.0.5:7352")).as_deref(),
            Some("https://10.0.0.5:7352")
        );
        assert_eq!(http_address("ws://eu1.example/ws", Some("10.0.0.5:7352")).as_deref(), Some("10.0.0.5:7352"));
        assert_eq!(http_address("http://x/ws", None), None);
        assert_eq!(http_address("ws:///ws", None), None);
        assert_eq!(ws_authority("wss://[::1]:7350/ws"), Some(("[::1]:7350", true)));
        assert_eq!(ws_address("127.0.0.1:7350"), "ws://127.0.0.1:7350/ws");
        assert_eq!(ws_address("https://eu1.example:443/"), "wss://eu1.example:443/ws");
    }

    #[test]
    fn a_heartbeat_with_an_unknown_state_or_field_is_refused() {
        let good = r#"{"address":"ws://h:1/ws","zones":["meadow"],"state":"draining","version":"1"}"#;
        let beat: Heartbeat = serde_json::from_str(good).expect("a heartbeat");
        assert_eq!((beat.state, beat.bans_version), (ServerState::Draining, 0));
        assert!(serde_json::from_str::<Heartbeat>(&good.replace("draining", "asleep")).is_err());
        assert!(serde_json::from_str::<Heartbeat>(&good.replace("\"version\"", "\"extra\":1,\"version\"")).is_err());
    }
}
