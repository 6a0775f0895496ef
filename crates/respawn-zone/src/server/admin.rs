//! The zone server's admin API (`/admin/*`, behind the admin bearer token):
//! drain, notices, kicks, cordon, the server's info, and the hand-over calls.
//! Answers are the `respawn_api::admin` types.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use respawn_api::admin::{HostedZone, Rosters, ServerInfo, ZoneRoster};
use respawn_api::replay::{FilmWindow, ReplayWindow, LONGEST_FILM_TICKS};
use respawn_proto::NoticeKind;

use super::handover::HandoverError;
use super::state::{ServerState, ZoneHandle};
use crate::replay::ReplayError;
use crate::rollback::RestorePoint;
use crate::zone_loop::Control;

/// The admin routes, for the server's router (or its admin listener), each
/// behind [`guard`].
pub(super) fn routes(state: Arc<ServerState>) -> Router<Arc<ServerState>> {
    Router::new()
        .route("/admin/drain", post(admin_drain))
        .route("/admin/announce", post(admin_announce))
        .route("/admin/kick", post(admin_kick))
        .route("/admin/info", get(admin_info))
        .route("/admin/characters", get(admin_characters))
        .route("/admin/cordon", post(admin_cordon))
        .route("/admin/uncordon", post(admin_uncordon))
        .route("/admin/zones/{zone}/release", post(admin_release))
        .route("/admin/zones/{zone}/adopt", post(admin_adopt))
        .route("/admin/zones/{zone}/redirect", post(admin_redirect))
        .route("/admin/zones/{zone}/resume", post(admin_resume))
        .route("/admin/zones/{zone}/replay", get(admin_replay))
        .route("/admin/zones/{zone}/film", get(admin_film))
        .route_layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Lets an admin call through with an accepted bearer token; an address
/// with too many failed calls is refused before its token is looked at.
async fn guard(State(state): State<Arc<ServerState>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = peer.map(|peer| state.trusted_proxies.client(peer, request.headers()));
    if let Some(wait) = ip.and_then(|ip| state.admin_failures.refused_for(ip)) {
        let secs = wait.as_secs() + 1;
        let message = format!("too many failed admin calls from this address: retry in {secs} s\n");
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], message).into_response();
    }
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            if let Some(ip) = ip.filter(|_| refused.0 == StatusCode::UNAUTHORIZED) {
                state.admin_failures.failed(ip);
            }
            refused.into_response()
        }
    }
}

/// Checks the admin bearer token (one of the accepted ones); the error is the status and text to answer.
fn authorize(state: &ServerState, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    if state.admin_tokens.is_empty() {
        return Err((
            StatusCode::NOT_FOUND,
            "admin API disabled: start the server with --admin-token or a registry --server-token\n",
        ));
    }
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let accepted =
        |g: &str| state.admin_tokens.iter().any(|t| respawn_token::constant_time_eq(g.as_bytes(), t.as_bytes()));
    if given.is_some_and(accepted) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong admin bearer token\n"))
    }
}

async fn admin_drain(State(state): State<Arc<ServerState>>) -> Response {
    tracing::info!("drain requested through the admin API");
    state.drain_requested.cancel();
    (StatusCode::ACCEPTED, "draining\n").into_response()
}

const MAX_NOTICE_LEN: usize = 500;

#[derive(Debug, serde::Deserialize)]
struct AnnounceParams {
    text: String,
    /// One zone; every zone when absent.
    zone: Option<String>,
}

async fn admin_announce(State(state): State<Arc<ServerState>>, Query(params): Query<AnnounceParams>) -> Response {
    if params.text.trim().is_empty() || params.text.len() > MAX_NOTICE_LEN {
        return (StatusCode::BAD_REQUEST, format!("text must be 1..={MAX_NOTICE_LEN} bytes\n")).into_response();
    }
    let zones: Vec<Arc<ZoneHandle>> = match &params.zone {
        Some(name) => match state.zone(name) {
            Some(z) => vec![z],
            None => return (StatusCode::NOT_FOUND, format!("no zone named {name:?}\n")).into_response(),
        },
        None => state.zone_handles(),
    };
    for zone in &zones {
        let notice = Control::Broadcast { kind: NoticeKind::Announcement, text: params.text.clone(), deadline_ms: 0 };
        let _ = zone.control.send(notice);
    }
    tracing::info!(zones = zones.len(), text = %params.text, "announcement sent");
    (StatusCode::ACCEPTED, "announced\n").into_response()
}

#[derive(Debug, serde::Deserialize)]
struct KickParams {
    player: u64,
    reason: Option<String>,
}

async fn admin_kick(State(state): State<Arc<ServerState>>, Query(params): Query<KickParams>) -> Response {
    let reason = params.reason.unwrap_or_else(|| "kicked by an operator".into());
    if reason.len() > MAX_NOTICE_LEN {
        return (StatusCode::BAD_REQUEST, format!("reason must be at most {MAX_NOTICE_LEN} bytes\n")).into_response();
    }
    // The player is in at most one zone; every zone ignores a player it lacks.
    for zone in state.zone_handles() {
        let _ = zone.control.send(Control::Kick { player: params.player, reason: reason.clone() });
    }
    tracing::info!(player = params.player, reason = %reason, "kick requested");
    (StatusCode::ACCEPTED, "kick sent\n").into_response()
}

/// What this server is and can take: a rollout checks it before moving zones here.
async fn admin_info(State(state): State<Arc<ServerState>>) -> Response {
    let zones = state
        .zone_handles()
        .iter()
        .map(|z| HostedZone {
            name: z.name.clone(),
            players: z.status.players.load(Ordering::Relaxed) as u64,
            tick: z.status.tick.load(Ordering::Relaxed),
            parked: z.status.parked.load(Ordering::Relaxed),
        })
        .collect();
    json(&ServerInfo {
        version: state.version.clone(),
        compat: state.config.compat,
        zones,
        configured_zones: state.config.zones.iter().map(|z| z.name.clone()).collect(),
        draining: state.draining.load(Ordering::SeqCst),
        players: state.players() as u64,
    })
}

/// The characters each zone holds, each as of its last tick (a conservation
/// drill checks that no character is held by two zones at once).
async fn admin_characters(State(state): State<Arc<ServerState>>) -> Response {
    let mut zones = Vec::new();
    for zone in state.zone_handles() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        // A zone whose thread has ended (moved away, stopped) holds nothing.
        if zone.control.send(Control::Roster { reply }).is_err() {
            continue;
        }
        if let Ok((tick, characters)) = answer.await {
            let parked = zone.status.parked.load(Ordering::SeqCst);
            zones.push(ZoneRoster { zone: zone.name.clone(), tick, parked, characters });
        }
    }
    json(&Rosters { zones })
}

/// A contract type as a JSON answer.
fn json(body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("answer not serializable: {e}\n")).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct CordonParams {
    /// Ask connected players to reconnect (they keep their characters).
    #[serde(default)]
    notify: bool,
}

async fn admin_cordon(State(state): State<Arc<ServerState>>, Query(params): Query<CordonParams>) -> Response {
    state.cordon(true, params.notify);
    (StatusCode::ACCEPTED, "cordoned: no new players\n").into_response()
}

async fn admin_uncordon(State(state): State<Arc<ServerState>>) -> Response {
    if state.drain_requested.is_cancelled() {
        return (StatusCode::CONFLICT, "the server is draining to stop; it cannot take players again\n")
            .into_response();
    }
    state.cordon(false, false);
    (StatusCode::ACCEPTED, "taking new players\n").into_response()
}

/// The status a refused hand-over call answers with.
fn handover_status(error: &HandoverError) -> StatusCode {
    match error {
        HandoverError::NotConfigured(_) | HandoverError::NotHere(_) => StatusCode::NOT_FOUND,
        HandoverError::AlreadyHosted(_)
        | HandoverError::Unrestorable(_)
        | HandoverError::Stale { .. }
        | HandoverError::NotReleased(_)
        | HandoverError::LeasedByOther { .. }
        | HandoverError::NotResumed(_) => StatusCode::CONFLICT,
        HandoverError::StartFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        HandoverError::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
        HandoverError::Gone(_) => StatusCode::GONE,
    }
}

fn answer<T: serde::Serialize>(result: Result<T, HandoverError>) -> Response {
    match result {
        Ok(body) => json(&body),
        Err(error) => {
            let status = handover_status(&error);
            tracing::warn!(status = status.as_u16(), why = %error, "hand-over call refused");
            (status, format!("{error}\n")).into_response()
        }
    }
}

/// Runs a hand-over call to its end in a task of its own: a caller that goes
/// away mid-call (a platform instance killed mid-rollout) must not leave a
/// zone half moved, its lease taken and the zone not started, say.
async fn to_the_end<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<T, HandoverError>> + Send + 'static,
) -> Result<T, HandoverError> {
    tokio::spawn(call)
        .await
        .unwrap_or_else(|e| Err(HandoverError::StartFailed(format!("the hand-over call failed: {e}"))))
}

async fn admin_release(State(state): State<Arc<ServerState>>, Path(zone): Path<String>) -> Response {
    answer(to_the_end(async move { state.release(&zone).await }).await)
}

#[derive(Debug, serde::Deserialize)]
struct AdoptParams {
    /// The tick the zone was released at: an older state is refused.
    after_tick: Option<u64>,
}

async fn admin_adopt(
    State(state): State<Arc<ServerState>>,
    Path(zone): Path<String>,
    Query(params): Query<AdoptParams>,
) -> Response {
    if state.drain_requested.is_cancelled() {
        return (StatusCode::CONFLICT, "the server is draining to stop; it takes no zone\n").into_response();
    }
    answer(to_the_end(async move { state.adopt(&zone, params.after_tick).await }).await)
}

#[derive(Debug, serde::Deserialize)]
struct RedirectParams {
    /// The zone's new WebSocket address.
    to: String,
}

async fn admin_redirect(
    State(state): State<Arc<ServerState>>,
    Path(zone): Path<String>,
    Query(params): Query<RedirectParams>,
) -> Response {
    let valid = (params.to.starts_with("ws://") || params.to.starts_with("wss://"))
        && params.to.len() <= 256
        && !params.to.chars().any(char::is_control);
    if !valid {
        return (StatusCode::BAD_REQUEST, "to must be a ws:// or wss:// address of at most 256 characters\n")
            .into_response();
    }
    answer(to_the_end(async move { state.redirect(&zone, &params.to).await }).await)
}

async fn admin_resume(State(state): State<Arc<ServerState>>, Path(zone): Path<String>) -> Response {
    answer(to_the_end(async move { state.unpark(&zone).await }).await)
}

/// The longest window a replay call digests: an hour of ticks.
const LONGEST_REPLAY_SECS: u32 = 3600;

/// `GET /admin/zones/{zone}/replay`: the zone's kept history (from the
/// stores, whoever hosts the zone) replayed on this build, the digest of
/// every tick's state in the window (`respawn_api::replay`): what a
/// rollout compares between the old build and the new one.
async fn admin_replay(
    State(state): State<Arc<ServerState>>,
    Path(zone): Path<String>,
    Query(window): Query<ReplayWindow>,
) -> Response {
    let config = match configured(&state, &zone) {
        Ok(config) => config,
        Err(refused) => return refused.into_response(),
    };
    if window.last_secs.is_some_and(|secs| secs == 0 || secs > LONGEST_REPLAY_SECS) {
        let why = format!("last_secs must be 1 to {LONGEST_REPLAY_SECS}\n");
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    // From a given start, the replay begins at the snapshot of that tick, as the other build's did.
    let first = window.start.map(|start| start + 1).or(window.from);
    let mut history = match crate::replay::load(
        &state.stores,
        config,
        first.map(RestorePoint::Tick),
        window.to.map(RestorePoint::Tick),
    )
    .await
    {
        Ok(history) => history,
        Err(error) => return not_loaded(&state, &error),
    };
    let start = history.start.tick_number();
    if let Some(asked) = window.start.filter(|asked| *asked != start) {
        let why = format!("the state at tick {asked} is no longer kept (the nearest is at tick {start})\n");
        return (StatusCode::CONFLICT, why).into_response();
    }
    if let Some(from) = window.from {
        history.from = from.clamp(start + 1, history.to.max(start + 1));
    } else if let Some(secs) = window.last_secs {
        let ticks = u64::from(secs) * u64::from(state.config.tick_hz);
        history.from = history.from.max(history.to.saturating_sub(ticks) + 1);
    }
    let (version, tick_hz) = (state.version.clone(), state.config.tick_hz);
    replayed(move || crate::inspect::trace(history, tick_hz, &version, window.state_at)).await
}

/// `GET /admin/zones/{zone}/film` (`zone`: its name or id): a window of the
/// zone's kept history (from the stores, whoever hosts the zone) replayed on
/// this build, where everything was and what happened tick by tick
/// (`respawn_api::replay::Film`): the dashboard's time machine.
async fn admin_film(
    State(state): State<Arc<ServerState>>,
    Path(zone): Path<String>,
    Query(window): Query<FilmWindow>,
) -> Response {
    let config = match configured(&state, &zone) {
        Ok(config) => config,
        Err(refused) => return refused.into_response(),
    };
    let point = |given: &str, end: &str| {
        given.parse::<RestorePoint>().map_err(|e| (StatusCode::BAD_REQUEST, format!("{end}: {e}\n")))
    };
    let (from, to) = match (point(&window.from, "from"), point(&window.to, "to")) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(refused), _) | (_, Err(refused)) => return refused.into_response(),
    };
    let mut loaded = crate::replay::load(&state.stores, config, Some(from), Some(to)).await;
    if let (Err(ReplayError::Outside { first, last, .. }), RestorePoint::Tick(from), RestorePoint::Tick(to)) =
        (&loaded, from, to)
    {
        // Ticks around a moment (an event's, from the event search) run past
        // what is kept: the film is what is kept of them.
        let (from, to) = (from.max(*first), to.min(*last));
        if from <= to {
            let (from, to) = (Some(RestorePoint::Tick(from)), Some(RestorePoint::Tick(to)));
            loaded = crate::replay::load(&state.stores, config, from, to).await;
        }
    }
    let history = match loaded {
        Ok(history) => history,
        Err(error) => return not_loaded(&state, &error),
    };
    let ticks = history.to - history.from + 1;
    if ticks > LONGEST_FILM_TICKS {
        let why = format!(
            "ticks {} to {} are {ticks} ticks: a film covers {LONGEST_FILM_TICKS} at most\n",
            history.from, history.to
        );
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let (config, version, tick_hz) = (config.clone(), state.version.clone(), state.config.tick_hz);
    replayed(move || crate::inspect::film(history, &config, tick_hz, &version)).await
}

/// The configuration of `zone` (its name or id), or 404.
fn configured<'a>(state: &'a ServerState, zone: &str) -> Result<&'a respawn_sim::ZoneConfig, (StatusCode, String)> {
    state
        .config
        .zone(zone)
        .map_err(|_| (StatusCode::NOT_FOUND, format!("no zone {zone:?} in this server's configuration\n")))
}

/// Runs a replay in a blocking task (never on the zones' tick threads or
/// the async workers): its answer as JSON, or why it was refused.
async fn replayed<T: serde::Serialize + Send + 'static>(
    replay: impl FnOnce() -> Result<T, ReplayError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(replay).await {
        Ok(Ok(answer)) => json(&answer),
        Ok(Err(error)) => replay_refused(&error),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the replay failed: {error}\n")).into_response(),
    }
}

/// Why a history could not be loaded; a zone with none archived yet says
/// when it will be (a new user's first try, seconds after the start).
fn not_loaded(state: &ServerState, error: &ReplayError) -> Response {
    let ReplayError::NoHistory { zone, .. } = error else { return replay_refused(error) };
    let history = &state.config.persist.history;
    let why = if history.enabled() {
        format!("zone {zone} has no history kept yet: this server archives it every {} s\n", history.segment.as_secs())
    } else {
        format!("zone {zone} keeps no history on this server ([persistence] history_secs = 0)\n")
    };
    (StatusCode::NOT_FOUND, why).into_response()
}

fn replay_refused(error: &ReplayError) -> Response {
    let status = match error {
        ReplayError::NoHistory { .. } | ReplayError::Outside { .. } | ReplayError::NoSnapshot { .. } => {
            StatusCode::NOT_FOUND
        }
        ReplayError::Backwards { .. } | ReplayError::FilmTooLarge { .. } => StatusCode::BAD_REQUEST,
        ReplayError::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ReplayError::Gap { .. } | ReplayError::Unusable { .. } | ReplayError::Vanished(_) => StatusCode::CONFLICT,
    };
    (status, format!("{error}\n")).into_response()
}
