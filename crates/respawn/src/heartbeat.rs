//! A zone server's heartbeat into the platform server's registry: every
//! second it says where clients connect, which zones it hosts now (they
//! change during a rollout) and whether it takes new players; the reply carries the ban list when it changed. On
//! a clean stop the server leaves the registry at once.

use std::time::Duration;

use respawn_client::http;
use respawn_platform::http::registry::HeartbeatReply;
use std::sync::Arc;

use respawn_zone::server::{DrainHook, ServerView};
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
    pub version: String,
}

impl Heartbeat {
    fn body(&self, zones: &[String], draining: bool, bans_version: u64) -> String {
        serde_json::json!({
            "address": self.address,
            "zones": zones,
            "state": if draining { "draining" } else { "ready" },
            "version": self.version,
            "bans_version": bans_version,
        })
        .to_string()
    }

    /// Heartbeats until `stop`, then removes the entry.
    pub async fn run(self, server: ServerView, bans: BanEnforcer, stop: CancellationToken) {
        let path = format!("/v1/servers/{}", self.id);
        let mut failing = false;
        loop {
            let body = self.body(&server.zones(), server.is_draining(), bans.version());
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

/// Which of `zones` this server (`me`) may host (`--claim`), asked of the
/// platform until it answers: hosting them without its word could give a
/// zone two owners, so a server that cannot ask does not start them.
pub async fn claim(platform: &str, token: &str, me: &str, zones: &[String]) -> Vec<String> {
    let (path, body) = (format!("/v1/servers/{me}/claim"), serde_json::json!({ "zones": zones }).to_string());
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let problem = match http::request_json(platform, "POST", &path, Some(token), &body).await {
            Ok((200, answer)) => match serde_json::from_str::<serde_json::Value>(&answer) {
                Ok(answer) => {
                    let granted = answer["granted"].as_array().into_iter().flatten();
                    return granted.filter_map(|z| z.as_str().map(str::to_owned)).collect();
                }
                Err(e) => format!("unreadable answer: {e}"),
            },
            Ok((status, answer)) => format!("refused ({status}): {}", answer.trim()),
            Err(e) => format!("platform server unreachable: {e}"),
        };
        if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            tracing::warn!(problem = %problem, "zone claim: no answer yet; no zone starts until the platform answers");
            last_warning = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a draining server does first with `--handoff-on-drain`: asks the
/// platform to move its zones live to a standby server, and waits until
/// they are gone (the drain bounds the wait). A refusal (no standby, another
/// rollout running) leaves the guide's drain to do its work.
pub fn evacuation(platform: String, token: String, id: String) -> DrainHook {
    DrainHook(Arc::new(move |server: ServerView| {
        let (platform, token, id) = (platform.clone(), token.clone(), id.clone());
        Box::pin(async move {
            let path = format!("/v1/servers/{id}/evacuate");
            match http::request(&platform, "POST", &path, Some(&token)).await {
                Ok((202, _)) => {
                    tracing::info!("the platform is moving this server's zones to a standby server");
                    while !server.zones().is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok((status, body)) => tracing::warn!(status, answer = body.trim(), "no hand-over; draining as usual"),
                Err(e) => tracing::warn!(error = %e, "platform unreachable; draining as usual"),
            }
        })
    }))
}
