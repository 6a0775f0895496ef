//! The server registry (`/v1/servers`): each game server heartbeats its
//! entry with its own credential (bound to its id, see
//! [`respawn_token::ServerKey`]) and gets the ban list back whenever its
//! version changed. A server may write only its own entry.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use respawn_api::registry::{BanList, Claim, ClaimReply, Heartbeat, HeartbeatReply, ListedServer};
use respawn_store::ServerEntry;
use serde::Deserialize;
use std::time::Duration;

use super::{json, store_failure, text, HttpContext};

/// A server missing this long after its last heartbeat leaves the registry.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// Most servers the registry lists: a new one past it is refused.
pub const MAX_SERVERS: usize = 1_000;

/// Checks a game server's credential and, for a route about one server
/// (`acting_for`, the path's id), that it is that server's; the error is the answer.
pub(super) fn authorize(
    ctx: &HttpContext,
    headers: &HeaderMap,
    acting_for: Option<&str>,
) -> Result<(), (StatusCode, String)> {
    let Some(key) = ctx.server_key.as_ref() else {
        return Err((
            StatusCode::NOT_FOUND,
            "registry API disabled: start the platform server with --server-key\n".into(),
        ));
    };
    let server = key
        .verify(super::bearer(headers).unwrap_or_default())
        .map_err(|e| (StatusCode::UNAUTHORIZED, format!("server credential refused: {e}\n")))?;
    match acting_for {
        Some(id) if id != server => Err((
            StatusCode::FORBIDDEN,
            format!("this credential is server {server:?}'s: it may act only as itself, not as {id:?}\n"),
        )),
        _ => Ok(()),
    }
}

/// A JSON body, or why not (for a 400).
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes, what: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("{what} body: {e}"))
}

pub(super) async fn heartbeat(State(ctx): State<HttpContext>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: Heartbeat = match parse(&body, "heartbeat") {
        Ok(b) => b,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let entry = ServerEntry {
        id,
        address: body.address,
        zones: body.zones,
        state: body.state,
        version: body.version,
        admin_address: body.admin_address,
        fences: body.fences,
    };
    // The fleet view (the registry listed every second) bounds the list
    // without listing it on every heartbeat.
    let listed = ctx.fleet.view().servers;
    if listed.len() >= MAX_SERVERS && !listed.iter().any(|s| s.id == entry.id) {
        let full = format!("the registry is full ({MAX_SERVERS} servers); {} is not listed", entry.id);
        return text(StatusCode::SERVICE_UNAVAILABLE, full);
    }
    let fences = entry.fences.clone();
    let me = entry.id.clone();
    if let Err(e) = ctx.registry.heartbeat(entry, HEARTBEAT_TTL).await {
        return store_failure("registry", e);
    }
    let superseded = match fences.is_empty() {
        true => Default::default(),
        false => match ctx.registry.servers().await {
            Ok(servers) => superseded(&me, &fences, &servers),
            Err(e) => {
                tracing::warn!(error = %e, "registry unreadable for a heartbeat's leases");
                Default::default()
            }
        },
    };
    // The heartbeat counts even when the ban list cannot be read now; the next one retries.
    let bans = match ctx.ops.bans_version().await {
        Ok(version) if version != body.bans_version => match ctx.ops.bans().await {
            Ok((version, bans)) => Some(BanList { version, players: bans.iter().map(|b| b.player).collect() }),
            Err(e) => {
                tracing::warn!(error = %e, "ban list unreadable for a heartbeat reply");
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "ban-list version unreadable for a heartbeat reply");
            None
        }
    };
    json(StatusCode::OK, &HeartbeatReply { bans, superseded })
}

/// Of `fences` (server `me`'s leases), those another listed server holds a
/// newer lease on, with that lease's token. Tokens only grow, and a server
/// reports only a lease the store granted it: a higher one elsewhere means
/// `me` has been superseded, whatever `me` can or cannot reach.
fn superseded(
    me: &str,
    fences: &std::collections::BTreeMap<String, u64>,
    servers: &[ServerEntry],
) -> std::collections::BTreeMap<String, u64> {
    fences
        .iter()
        .filter_map(|(zone, mine)| {
            let newest = servers.iter().filter(|s| s.id != me).map(|s| s.fence(zone)).max()?;
            (newest > *mine).then(|| (zone.clone(), newest))
        })
        .collect()
}

pub(super) async fn remove(State(ctx): State<HttpContext>, Path(id): Path<String>) -> Response {
    // A server leaving on purpose is not "down": the alerts are told its address.
    if let Some(entry) = ctx.registry.servers().await.ok().and_then(|s| s.into_iter().find(|s| s.id == id)) {
        ctx.alerts.left(&entry.address);
    }
    match ctx.registry.remove(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_failure("registry", e),
    }
}

/// How long a granted claim keeps the zone from being granted to another
/// server: time enough for the claimer's heartbeat to list it.
const CLAIM_TTL: Duration = Duration::from_secs(10);

/// A starting game server (`--claim`) asks which of its zones it may host:
/// those no other live server hosts, each granted to one claimer only (a
/// claim in the operations store, shared by every platform instance). Its
/// own registry entry (a restart under the same id) does not count against it.
pub(super) async fn claim(State(ctx): State<HttpContext>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: Claim = match parse(&body, "claim") {
        Ok(b) => b,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    // The same rule as a heartbeat's zones (the names become store keys).
    if body.zones.len() > 64 || !body.zones.iter().all(|z| respawn_names::valid_zone_name(z)) {
        return text(StatusCode::BAD_REQUEST, "zones: at most 64 names, each 1-64 of A-Z a-z 0-9 _ - .");
    }
    let servers = match ctx.registry.servers().await {
        Ok(s) => s,
        Err(e) => return store_failure("registry", e),
    };
    let mut granted = Vec::new();
    let mut hosted_elsewhere = Vec::new();
    for zone in body.zones {
        let own = servers.iter().any(|s| s.id == id && s.zones.contains(&zone));
        if !own && servers.iter().any(|s| s.id != id && s.zones.contains(&zone)) {
            hosted_elsewhere.push(zone);
            continue;
        }
        match ctx.ops.claim(&format!("zone-claim:{zone}"), CLAIM_TTL).await {
            Ok(true) => granted.push(zone),
            Ok(false) if own => granted.push(zone),
            Ok(false) => hosted_elsewhere.push(zone),
            Err(e) => return store_failure("zone claims", e),
        }
    }
    tracing::info!(server = %id, granted = %granted.join(","), elsewhere = %hosted_elsewhere.join(","), "zones claimed");
    json(StatusCode::OK, &ClaimReply { granted, hosted_elsewhere })
}

/// A draining game server asks for its zones to move, live, to a standby
/// server that can take them (a hand-off rollout of that one server).
pub(super) async fn evacuate(State(ctx): State<HttpContext>, Path(id): Path<String>) -> Response {
    let plan = crate::rollout::Plan {
        to: String::new(),
        from: Some(id.clone()),
        mode: crate::rollout::Mode::Handoff,
        wait: Duration::ZERO,
        rollback: false,
    };
    match ctx.start_rollout(plan).await {
        Ok(rollout) => {
            tracing::info!(server = %id, rollout = rollout.id, "evacuation started");
            json(StatusCode::ACCEPTED, &rollout)
        }
        Err(why) => text(StatusCode::CONFLICT, why),
    }
}

/// For game servers (any one's credential) and operators (any role).
pub(super) async fn list(State(ctx): State<HttpContext>) -> Response {
    let servers = match ctx.registry.servers().await {
        Ok(servers) => servers,
        Err(e) => return store_failure("registry", e),
    };
    let view = ctx.fleet.view();
    let listed: Vec<ListedServer> = servers
        .into_iter()
        .map(|s| {
            let seen = view.servers.iter().find(|v| v.id == s.id);
            ListedServer {
                reachable: seen.map(|v| v.reachable),
                players: seen.map_or(0, |v| v.players),
                id: s.id,
                address: s.address,
                zones: s.zones,
                state: s.state,
                version: s.version,
            }
        })
        .collect();
    json(StatusCode::OK, &listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fences: &[(&str, u64)]) -> ServerEntry {
        ServerEntry {
            id: id.into(),
            address: format!("ws://{id}:7350/ws"),
            zones: fences.iter().map(|(z, _)| (*z).to_owned()).collect(),
            state: respawn_store::ServerState::Ready,
            version: "1".into(),
            admin_address: None,
            fences: fences.iter().map(|(z, t)| ((*z).to_owned(), *t)).collect(),
        }
    }

    #[test]
    fn a_server_is_told_of_the_zones_a_newer_lease_holder_runs_and_only_of_those() {
        let cut_off = entry("a", &[("meadow", 4), ("caverns", 5)]);
        let servers = [cut_off.clone(), entry("b", &[("meadow", 9)]), entry("c", &[("caverns", 3)])];
        let told = superseded("a", &cut_off.fences, &servers);
        assert_eq!(told, [("meadow".to_owned(), 9)].into());
        // Its own entry (an earlier heartbeat) never counts against it.
        assert!(superseded("b", &servers[1].fences, &servers).is_empty());
    }
}
