//! The dashboard's time machine: a window of a zone's history replayed from
//! its journal by a zone server (`respawn_api::replay::Film`), and the whole
//! state at one tick. Any server configured for the zone can replay it from
//! the shared stores; the one hosting it is asked first (with embedded
//! stores only it has the history).

use std::future::Future;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use respawn_api::admin::ZoneAdmin;
use respawn_api::http::CallError;
use respawn_api::replay::{FilmWindow, ReplayWindow};
use serde::Deserialize;

use super::{json, store_failure, text, HttpContext};

/// `GET /v1/zones/{zone}/film?from=&to=`.
pub(super) async fn film(
    State(ctx): State<HttpContext>,
    Path(zone): Path<String>,
    window: Result<Query<FilmWindow>, QueryRejection>,
) -> Response {
    let Query(window) = match window {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    ask_a_server(&ctx, &zone, |admin, addr| {
        let (zone, window) = (zone.clone(), window.clone());
        async move { admin.film(&addr, &zone, &window).await.map(|film| json(StatusCode::OK, &film)) }
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateAt {
    tick: u64,
}

/// `GET /v1/zones/{zone}/state?tick=`: every player, NPC and item after that tick.
pub(super) async fn state(
    State(ctx): State<HttpContext>,
    Path(zone): Path<String>,
    at: Result<Query<StateAt>, QueryRejection>,
) -> Response {
    let Query(StateAt { tick }) = match at {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    let window = ReplayWindow { from: Some(tick), to: Some(tick), state_at: Some(tick), ..ReplayWindow::default() };
    ask_a_server(&ctx, &zone, |admin, addr| {
        let zone = zone.clone();
        async move {
            let trace = admin.replay(&addr, &zone, &window).await?;
            Ok(match trace.state {
                Some(state) => json(StatusCode::OK, &state),
                None => text(StatusCode::BAD_GATEWAY, format!("the replay did not reach tick {tick}")),
            })
        }
    })
    .await
}

/// Asks the servers in turn (the zone's host first) until one answers
/// about the zone: a server that does not know it (404) or does not answer
/// passes the question on; any other answer is the answer.
async fn ask_a_server<F, Fut>(ctx: &HttpContext, zone: &str, call: F) -> Response
where
    F: Fn(ZoneAdmin, String) -> Fut,
    Fut: Future<Output = Result<Response, CallError>>,
{
    if zone.is_empty() || zone.len() > 64 || zone.chars().any(char::is_control) {
        return text(StatusCode::BAD_REQUEST, "zone: a zone's name or id");
    }
    let Some(admin) = ctx.fleet_admin() else { return super::ops::no_zone_admin() };
    let mut servers = match ctx.registry.servers().await {
        Ok(servers) => servers,
        Err(e) => return store_failure("registry", e),
    };
    servers.sort_by_key(|s| !s.zones.iter().any(|z| z == zone));
    let mut passed = Vec::new();
    for server in &servers {
        let answer = match admin.of(server) {
            Ok((server_admin, addr)) => call(server_admin, addr).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => return answer,
            Err(CallError::Refused { status, answer }) if status != 404 => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return text(status, answer.trim().to_owned());
            }
            Err(e) => passed.push(format!("{}: {e}", server.id)),
        }
    }
    if passed.is_empty() {
        return text(StatusCode::NOT_FOUND, "no live server to replay it");
    }
    text(StatusCode::NOT_FOUND, format!("no server could replay zone {zone:?}: {}", passed.join("; ")))
}
