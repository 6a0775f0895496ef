//! Joining a zone (`POST /v1/play`, with a session token from
//! [`super::accounts`]): the address of a ready game server hosting the
//! zone. A banned or disabled account is refused. Servers are picked by
//! player id among the ready ones hosting the zone, so a player returns to
//! the same server while the fleet is unchanged.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use respawn_api::admin::ZoneAdmin;
use respawn_api::players::{CharacterTicket, Place, Play, PlayGrant, CHARACTER_TICKET_TTL_SECS};
use respawn_store::ops::Login;
use respawn_store::{ServerEntry, ServerState};
use respawn_token::Claims;

use super::accounts::{account_failure, accounts};
use super::unix_now_ms;
use super::{bearer, json, rate_limit, store_failure, text, ClientIp, HttpContext};
use crate::projection::{Claim, PlayerRecord};

pub(super) async fn play(
    State(ctx): State<HttpContext>,
    ClientIp(client): ClientIp,
    Extension(claims): Extension<Claims>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        rate_limit(&ctx, &format!("play:ip:{}", client), ctx.limits.login_per_ip, "join").await?;
        let (store, signer) = accounts(&ctx)?;
        let request: Play =
            serde_json::from_slice(&body).map_err(|e| text(StatusCode::BAD_REQUEST, format!("play body: {e}")))?;
        if !respawn_names::valid_zone_name(&request.zone) {
            return Err(text(StatusCode::BAD_REQUEST, "zone must be 1-64 of A-Z a-z 0-9 _ - ."));
        }
        let player_id = claims.player_id;
        match store.by_id(player_id).await.map_err(account_failure)? {
            None => return Err(text(StatusCode::UNAUTHORIZED, "the account is gone; sign in again")),
            Some(account) => {
                if let Some(why) = account.disabled {
                    return Err(text(StatusCode::FORBIDDEN, format!("this account is disabled: {why}")));
                }
            }
        }
        match ctx.ops.is_banned(player_id).await {
            Ok(false) => {}
            Ok(true) => return Err(text(StatusCode::FORBIDDEN, "this player is banned")),
            Err(e) => return Err(store_failure("ban list", e)),
        }
        let servers = ctx.registry.servers().await.map_err(|e| store_failure("registry", e))?;
        let candidates = owners(servers, &request.zone);
        if candidates.is_empty() {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready server hosts zone {:?} now; retry in a few seconds", request.zone),
            ));
        }
        let server = &candidates[(player_id % candidates.len() as u64) as usize];
        let character_ticket = claim_character(&ctx, player_id, &claims.name, &request.zone, &signer.key).await?;
        let login = Login {
            player: player_id,
            name: claims.name.clone(),
            zone: request.zone.clone(),
            server: server.id.clone(),
            at_ms: unix_now_ms(),
        };
        if let Err(e) = ctx.ops.put_login(login, signer.ttl).await {
            // The join is good without the record; only the profile's "last login" misses it.
            tracing::warn!(error = %e, "join not recorded");
        }
        ctx.metrics.joins.inc();
        Ok(json(
            StatusCode::OK,
            &PlayGrant {
                // The router admitted this very token.
                token: bearer(&headers).unwrap_or_default().to_owned(),
                player_id,
                name: claims.name,
                zone: request.zone,
                server: server.id.clone(),
                address: server.address.clone(),
                expires_at: claims.expires_at,
                character_ticket,
            },
        ))
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// The ready servers to send a player of `zone` to: of those hosting it,
/// the ones with the newest lease on it. A server that lost its host keeps
/// its entry for a few seconds after a spare took its zones over; its older
/// fencing token keeps players away from it.
fn owners(servers: Vec<ServerEntry>, zone: &str) -> Vec<ServerEntry> {
    let hosting: Vec<_> =
        servers.into_iter().filter(|s| s.state == ServerState::Ready && s.zones.iter().any(|z| z == zone)).collect();
    let newest = hosting.iter().map(|s| s.fence(zone)).max().unwrap_or(0);
    hosting.into_iter().filter(|s| s.fence(zone) == newest).collect()
}

/// Claims the player's character for `zone` in the ledger's database and
/// seals its ticket. A character claimed for or in another zone is asked to
/// leave there (kicked: a sign-in elsewhere takes it over), and the claim
/// waits up to [`CHARACTER_WAIT`] for that stay to be stored as ended
/// (its state is handed out only then), else the caller is told to retry.
async fn claim_character(
    ctx: &HttpContext,
    player: u64,
    name: &str,
    zone: &str,
    key: &respawn_token::TokenKey,
) -> Result<String, Response> {
    let Some(ledger) = ctx.ledger.get() else {
        return Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "characters are kept in the platform's database, which is not connected yet; retry in a few seconds",
        ));
    };
    let started = std::time::Instant::now();
    let mut asked_to_leave = false;
    loop {
        let (claim, record) = ledger.claim(player, name, zone, unix_now_ms()).await.map_err(|e| {
            tracing::warn!(error = %e, "character claim failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "the character store cannot be reached now; retry in a few seconds")
        })?;
        let held = match claim {
            Claim::Granted { incarnation } => return Ok(ticket(player, name, zone, incarnation, record).seal(key)),
            Claim::Elsewhere { zone: held } => held,
        };
        if !asked_to_leave {
            asked_to_leave = true;
            ask_to_leave(ctx, player, &held);
        }
        // Its state is on its way through the event pipeline: wait for it a while.
        if started.elapsed() >= CHARACTER_WAIT {
            let mut answer = text(
                StatusCode::CONFLICT,
                format!("the character is in zone {held:?} and is being asked to leave it; retry in a moment"),
            );
            answer.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return Err(answer);
        }
        tokio::time::sleep(CHARACTER_POLL).await;
    }
}

/// How long `/v1/play` waits for a character held elsewhere to be stored
/// as it left (a travel, a zone switch, a second sign-in) before it answers
/// 409, and how often it looks meanwhile.
const CHARACTER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const CHARACTER_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// The ticket of a character just claimed.
fn ticket(player: u64, name: &str, zone: &str, incarnation: u64, record: PlayerRecord) -> CharacterTicket {
    CharacterTicket {
        player_id: player,
        name: name.to_owned(),
        zone: zone.to_owned(),
        incarnation,
        level: record.level,
        xp: record.xp,
        gold: record.gold,
        inventory: record
            .inventory
            .iter()
            .map(|(item, count)| (*item, (*count).min(u64::from(u32::MAX)) as u32))
            .collect(),
        place: record.place.map(|(zone, x, y)| Place { zone, x, y }),
        expires_at: unix_now_ms() / 1_000 + CHARACTER_TICKET_TTL_SECS,
    }
}

/// Has the servers hosting `zone` kick the player (in the background): a
/// sign-in elsewhere takes the character over, and it leaves there first.
fn ask_to_leave(ctx: &HttpContext, player: u64, zone: &str) {
    let (context, leaving) = (ctx.clone(), zone.to_owned());
    tokio::spawn(async move {
        let kick = |admin: ZoneAdmin, addr: String| async move {
            admin.kick(&addr, player, Some("signed in to play in another zone")).await
        };
        if let Err(e) = super::ops::each_server(&context, Some(&leaving), kick).await {
            tracing::debug!(status = %e.status(), player, "takeover kick reached no server");
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, zones: &[(&str, u64)], state: ServerState) -> ServerEntry {
        ServerEntry {
            id: id.into(),
            address: format!("ws://{id}:7350/ws"),
            zones: zones.iter().map(|(z, _)| (*z).to_owned()).collect(),
            state,
            version: "1".into(),
            admin_address: None,
            fences: zones.iter().filter(|(_, t)| *t > 0).map(|(z, t)| ((*z).to_owned(), *t)).collect(),
        }
    }

    fn ids(servers: Vec<ServerEntry>) -> Vec<String> {
        servers.into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn players_go_to_the_newest_lease_holder_while_a_lost_owner_is_still_listed() {
        let lost = entry("lost", &[("meadow", 4), ("caverns", 5)], ServerState::Ready);
        let spare = entry("spare", &[("meadow", 9)], ServerState::Ready);
        assert_eq!(ids(owners(vec![lost.clone(), spare.clone()], "meadow")), ["spare"]);
        assert_eq!(ids(owners(vec![lost, spare], "caverns")), ["lost"]);
    }

    #[test]
    fn servers_reporting_no_lease_and_draining_ones_are_routed_as_before() {
        let old = [entry("a", &[("meadow", 0)], ServerState::Ready), entry("b", &[("meadow", 0)], ServerState::Ready)];
        assert_eq!(ids(owners(old.to_vec(), "meadow")), ["a", "b"]);
        let draining = entry("c", &[("meadow", 12)], ServerState::Draining);
        assert_eq!(ids(owners(vec![draining, old[0].clone()], "meadow")), ["a"]);
        assert!(owners(old.to_vec(), "caverns").is_empty());
    }
}
