//! The players' login (`POST /v1/sessions`): a signed, expiring session
//! token and the address of a ready game server hosting the zone asked for.
//!
//! Identity is by name: the player id is derived from the name
//! ([`respawn_token::player_id_for_name`]), as in a guest login. A banned
//! player is refused. Servers are picked by player id among the ready ones
//! hosting the zone, so a player returns to the same server while the fleet
//! is unchanged.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response;
use respawn_store::ops::Login;
use respawn_store::ServerState;
use respawn_token::Claims;
use serde::{Deserialize, Serialize};

use super::{json, rate_limit, store_failure, text, HttpContext};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub name: String,
    pub zone: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginReply {
    pub token: String,
    pub player_id: u64,
    pub name: String,
    pub zone: String,
    /// The registry id of the server chosen.
    pub server: String,
    /// Where to connect: the server's WebSocket address.
    pub address: String,
    /// Unix seconds.
    pub expires_at: u64,
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) async fn login(
    State(ctx): State<HttpContext>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if let Err(limited) = rate_limit(&ctx, &format!("login:ip:{}", peer.ip()), ctx.limits.login_per_ip, "login").await {
        return limited;
    }
    let Some(signer) = &ctx.sessions else {
        return text(StatusCode::NOT_FOUND, "login disabled: start the platform server with --token-key");
    };
    let request: LoginRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("login body: {e}")),
    };
    if !respawn_names::valid_name(&request.name) {
        return text(StatusCode::BAD_REQUEST, "name must be 1-24 of A-Z a-z 0-9 _ -");
    }
    if request.zone.is_empty() || request.zone.len() > 64 || request.zone.chars().any(char::is_control) {
        return text(StatusCode::BAD_REQUEST, "zone must be 1-64 printable characters");
    }
    let player_id = respawn_token::player_id_for_name(&request.name);
    match ctx.ops.is_banned(player_id).await {
        Ok(false) => {}
        Ok(true) => return text(StatusCode::FORBIDDEN, "this player is banned"),
        Err(e) => return store_failure("ban list", e),
    }
    let servers = match ctx.registry.servers().await {
        Ok(s) => s,
        Err(e) => return store_failure("registry", e),
    };
    let candidates: Vec<_> =
        servers.into_iter().filter(|s| s.state == ServerState::Ready && s.zones.contains(&request.zone)).collect();
    if candidates.is_empty() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no ready server hosts zone {:?} now; retry in a few seconds", request.zone),
        );
    }
    let server = &candidates[(player_id % candidates.len() as u64) as usize];
    let expires_at = unix_now_ms() / 1_000 + signer.ttl.as_secs();
    let claims = Claims { player_id, name: request.name.clone(), expires_at };
    let token = match signer.key.sign(&claims) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot sign a token: {e}")),
    };
    let login = Login {
        player: player_id,
        name: request.name.clone(),
        zone: request.zone.clone(),
        server: server.id.clone(),
        at_ms: unix_now_ms(),
    };
    if let Err(e) = ctx.ops.put_login(login, signer.ttl).await {
        // The token is good without the record; only the profile's "last login" misses it.
        tracing::warn!(error = %e, "login not recorded");
    }
    ctx.metrics.logins.inc();
    json(
        StatusCode::OK,
        &LoginReply {
            token,
            player_id,
            name: request.name,
            zone: request.zone,
            server: server.id.clone(),
            address: server.address.clone(),
            expires_at,
        },
    )
}

/// The zones players can log in to now (hosted by a ready server), with
/// their players: what a game client shows before login.
pub(super) async fn lobby(State(ctx): State<HttpContext>) -> Response {
    let servers = match ctx.registry.servers().await {
        Ok(s) => s,
        Err(e) => return store_failure("registry", e),
    };
    let view = ctx.fleet.view();
    let mut zones: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for server in servers.iter().filter(|s| s.state == ServerState::Ready) {
        for zone in &server.zones {
            let players =
                view.zones.iter().filter(|z| z.server == server.id && &z.name == zone).map(|z| z.players).sum::<u64>();
            *zones.entry(zone.clone()).or_default() += players;
        }
    }
    let zones: Vec<_> =
        zones.into_iter().map(|(name, players)| serde_json::json!({"name": name, "players": players})).collect();
    json(StatusCode::OK, &serde_json::json!({ "zones": zones }))
}
