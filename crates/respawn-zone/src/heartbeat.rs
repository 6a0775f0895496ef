//! A zone server's part in the platform server's registry: every second,
//! and at once when a zone starts or stops here, it says where clients
//! connect, which zones it hosts now (they change during a rollout or a
//! failover) with its lease's fencing token on each, and whether it takes
//! new players; the reply carries the ban
//! list when it changed, and the zones another server holds a newer lease
//! on (this one stops them: see [`crate::lease`]). On a clean stop the server leaves the registry at
//! once. Before starting, a server may ask which zones it may host
//! (`--claim`); a draining one may ask for its zones to be moved
//! (`--handoff-on-drain`).

use std::sync::Arc;
use std::time::Duration;

use respawn_api::registry::{Heartbeat, HeartbeatReply, RegistryClient, ServerState};
use tokio_util::sync::CancellationToken;

use crate::server::{BanEnforcer, DrainHook, ServerView};

/// How often a zone server renews its registry entry (the entry lives 3 s).
const PERIOD: Duration = Duration::from_secs(1);

/// This server as the registry lists it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub registry: RegistryClient,
    pub id: String,
    /// Where clients connect.
    pub address: String,
    /// Where its admin API listens (`host:port`), when it has a listener of its own.
    pub admin_address: Option<String>,
    pub version: String,
}

impl Registration {
    /// A registration whose admin API is at `admin` when it has a listener
    /// of its own: an unspecified address (0.0.0.0) is reached at the host
    /// clients are sent to.
    pub fn new(
        registry: RegistryClient,
        id: String,
        address: String,
        admin: Option<std::net::SocketAddr>,
        version: String,
    ) -> Self {
        let authority = respawn_api::registry::ws_authority(&address).map_or("", |(authority, _)| authority);
        let with_port = authority.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()));
        let host = with_port.map_or(authority, |(host, _)| host).to_owned();
        let admin_address =
            admin.map(|a| if a.ip().is_unspecified() { format!("{host}:{}", a.port()) } else { a.to_string() });
        Self { registry, id, address, admin_address, version }
    }

    /// Heartbeats until `stop`, then removes the entry.
    pub async fn run(self, server: ServerView, bans: BanEnforcer, stop: CancellationToken) {
        let platform = self.registry.platform().to_owned();
        let mut failing = false;
        loop {
            let beat = Heartbeat {
                address: self.address.clone(),
                zones: server.zones(),
                fences: server.fences(),
                state: if server.is_draining() { ServerState::Draining } else { ServerState::Ready },
                version: self.version.clone(),
                bans_version: bans.version(),
                admin_address: self.admin_address.clone(),
            };
            match self.registry.heartbeat(&self.id, &beat).await {
                Ok(HeartbeatReply { bans: list, superseded }) => {
                    if let Some(list) = list {
                        bans.apply(list.version, list.players);
                    }
                    for (zone, newer) in superseded {
                        server.superseded(&zone, newer);
                    }
                    if failing {
                        tracing::info!(platform = %platform, "registered with the platform server again");
                        failing = false;
                    }
                }
                Err(e) if !failing => {
                    tracing::warn!(platform = %platform, error = %e, "heartbeat failed; heartbeats continue");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                // Cut off from the lease store, the platform is where it learns it was superseded.
                _ = tokio::time::sleep(if server.leases_in_doubt() { PERIOD / 4 } else { PERIOD }) => {}
                _ = server.hosted_changed() => {}
                _ = stop.cancelled() => break,
            }
        }
        if let Err(e) = self.registry.leave(&self.id).await {
            tracing::warn!(error = %e, "could not leave the registry; the entry expires by itself");
        }
    }
}

/// This server's id: the one its credential names (a `given` id must
/// agree), else the `given` one; `None` for a server given neither (it
/// then takes one from its address: [`crate::server::default_server_id`]).
pub fn registry_id(given: Option<&str>, credential: Option<&str>) -> Result<Option<String>, String> {
    let named = match credential {
        Some(credential) => Some(respawn_token::credential_server_id(credential).map_err(|_| {
            "--server-token is not a server credential: make one with `respawn server-credential ID`".to_owned()
        })?),
        None => None,
    };
    match (given, named) {
        (Some(id), _) if !respawn_names::valid_server_id(id) => {
            Err(format!("--server-id {id:?}: 1-64 of a-z 0-9 - _ ."))
        }
        (Some(id), Some(named)) if id != named => {
            Err(format!("--server-id {id:?} but the --server-token is server {named:?}'s"))
        }
        (Some(id), _) => Ok(Some(id.to_owned())),
        (None, Some(named)) => Ok(Some(named)),
        (None, None) => Ok(None),
    }
}

/// Which of `zones` this server (`me`) may host (`--claim`), asked of the
/// platform until it answers: hosting them without its word could give a
/// zone two owners, so a server that cannot ask does not start them.
pub async fn claim(registry: &RegistryClient, me: &str, zones: &[String]) -> Vec<String> {
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match registry.claim(me, zones).await {
            Ok(reply) => return reply.granted,
            Err(problem) => {
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!(problem = %problem, "zone claim: no answer yet; no zone starts until the platform answers");
                    last_warning = Some(std::time::Instant::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a draining server does first with `--handoff-on-drain`: asks the
/// platform to move its zones live to a standby server, and waits until
/// they are gone (the drain bounds the wait). A refusal (no standby, another
/// rollout running) leaves the guide's drain to do its work.
pub fn evacuation(registry: RegistryClient, id: String) -> DrainHook {
    DrainHook(Arc::new(move |server: ServerView| {
        let (registry, id) = (registry.clone(), id.clone());
        Box::pin(async move {
            match registry.evacuate(&id).await {
                Ok(()) => {
                    tracing::info!("the platform is moving this server's zones to a standby server");
                    while !server.zones().is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "no hand-over; draining as usual"),
            }
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_api_on_every_interface_is_reached_at_the_advertised_host() {
        let registry = RegistryClient::new("127.0.0.1:1", "credential");
        let at = |admin: &str| {
            let address = "ws://10.1.2.3:7350/ws".to_owned();
            Registration::new(registry.clone(), "z".into(), address, admin.parse().ok(), "1".into()).admin_address
        };
        assert_eq!(at("0.0.0.0:7352").as_deref(), Some("10.1.2.3:7352"));
        assert_eq!(at("127.0.0.1:9000").as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(at("none"), None);
    }

    #[test]
    fn a_server_is_registered_as_the_one_its_credential_names() {
        let key = respawn_token::ServerKey::new(b"server-key-of-this-test").expect("key");
        let credential = key.credential("zone-7").expect("credential");
        assert_eq!(registry_id(None, Some(&credential)), Ok(Some("zone-7".into())));
        assert_eq!(registry_id(Some("zone-7"), Some(&credential)), Ok(Some("zone-7".into())));
        let other = registry_id(Some("zone-8"), Some(&credential)).expect_err("another id");
        assert!(other.contains("is server \"zone-7\"'s"), "{other}");
        let shared = registry_id(None, Some("an-old-shared-server-token")).expect_err("not a credential");
        assert!(shared.contains("not a server credential"), "{shared}");
        assert_eq!(registry_id(Some("solo"), None), Ok(Some("solo".into())));
        assert!(registry_id(Some("Solo 1"), None).is_err());
        assert_eq!(registry_id(None, None), Ok(None));
    }
}
