//! A zone server's heartbeat into the platform server's registry: every
//! second it says where clients connect, which zones it hosts and whether it
//! is ready or draining; the reply carries the ban list when it changed. On
//! a clean stop the server leaves the registry at once.

use std::time::Duration;

use respawn_client::http;
use respawn_platform::http::registry::HeartbeatReply;
use respawn_zone::server::DrainTrigger;
use respawn_zone::BanEnforcer;
use tokio_util::sync::CancellationToken;

/// How often a zone server renews its registry entry (the entry lives 3 s).
const PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The platform server, `host:port`.
    pub platform: String,
    pub token: String,
    pub id: String,
    pub address: String,
    pub zones: Vec<String>,
    pub version: String,
}

impl Heartbeat {
    fn body(&self, draining: bool, bans_version: u64) -> String {
        serde_json::json!({
            "address": self.address,
            "zones": self.zones,
            "state": if draining { "draining" } else { "ready" },
            "version": self.version,
            "bans_version": bans_version,
        })
        .to_string()
    }

    /// Heartbeats until `stop`, then removes the entry.
    pub async fn run(self, drain: DrainTrigger, bans: BanEnforcer, stop: CancellationToken) {
        let path = format!("/v1/servers/{}", self.id);
        let mut failing = false;
        loop {
            let body = self.body(drain.is_draining(), bans.version());
            let sent = http::request_json(&self.platform, "PUT", &path, Some(&self.token), &body).await;
            if let Ok((200, reply)) = &sent {
                match serde_json::from_str::<HeartbeatReply>(reply) {
                    Ok(HeartbeatReply { bans: Some(list) }) => bans.apply(list.version, list.players),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "heartbeat reply unreadable"),
                }
            }
            match sent {
                Ok((200, _)) if failing => {
                    tracing::info!(platform = %self.platform, "registered with the platform server again");
                    failing = false;
                }
                Ok((200, _)) => {}
                Ok((status, body)) if !failing => {
                    tracing::warn!(platform = %self.platform, status, answer = body.trim(), "heartbeat refused");
                    failing = true;
                }
                Err(e) if !failing => {
                    tracing::warn!(platform = %self.platform, error = %e, "platform server unreachable; heartbeats continue");
                    failing = true;
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = stop.cancelled() => break,
            }
        }
        if let Err(e) = http::request(&self.platform, "DELETE", &path, Some(&self.token)).await {
            tracing::warn!(error = %e, "could not leave the registry; the entry expires by itself");
        }
    }
}
