//! The operations API: operator tokens with roles (viewer reads; operator
//! kicks, announces and drains; admin bans and manages tokens), a rate limit
//! per token, and an audit record for every mutating call, refused or not.
//! Reads that need no MySQL (status, zones, servers, bans, audit) keep
//! working while it is down; player profiles and event search answer 503.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use respawn_store::ops::{valid_operator_name, AuditLog, AuditRecord, Ban, OperatorToken, Role, TEXT_MAX};
use respawn_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::accounts::account_failure;
use super::{json, rate_limit, store_failure, text, unix_now_ms, HttpContext, Refusal};
use crate::accounts::{Account, AccountStore};
use crate::ledger::{EventCursor, EventQuery, Ledger};
use respawn_api::admin::ZoneAdmin;
use respawn_api::http::CallError;
use respawn_api::overview::{DbPool, EventPath, EventsStatus, Status};
use std::sync::Arc;

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub name: String,
    pub role: Role,
}

/// The operator behind the request's bearer token, within its rate limit.
pub(crate) async fn authenticate(ctx: &HttpContext, headers: &HeaderMap) -> Result<Operator, Response> {
    let Some(secret) = super::bearer(headers) else {
        return Err(text(StatusCode::UNAUTHORIZED, "missing operator token (Authorization: Bearer <token>)"));
    };
    let hash = respawn_token::hash_secret(secret);
    let bootstrap = ctx.bootstrap_admin.is(&hash);
    // The start-up admin token holds while the store is down, and is
    // installed again in a store that lost every token (Redis wiped); once
    // revoked through the API it is gone.
    let token = match ctx.ops.operator_by_hash(&hash).await {
        Ok(Some(t)) => t,
        Ok(None) if bootstrap && ctx.ops.operators().await.is_ok_and(|all| all.is_empty()) => {
            let token = bootstrap_admin_token(hash);
            if let Err(e) = ctx.ops.put_operator(token.clone()).await {
                tracing::warn!(error = %e, "cannot store the bootstrap admin token again");
            }
            token
        }
        Err(_) if bootstrap => bootstrap_admin_token(hash),
        Ok(None) => return Err(text(StatusCode::UNAUTHORIZED, "unknown operator token")),
        Err(e) => return Err(store_failure("operator tokens", e)),
    };
    if token.expires_ms.is_some_and(|at| at <= unix_now_ms()) {
        return Err(text(StatusCode::UNAUTHORIZED, format!("operator token {:?} expired", token.name)));
    }
    rate_limit(ctx, &format!("api:token:{}", token.name), ctx.limits.api_per_token, "api").await?;
    Ok(Operator { name: token.name, role: token.role })
}

/// [`authenticate`], then the role check; a refused mutating call is audited.
pub(super) async fn authorize(
    ctx: &HttpContext,
    headers: &HeaderMap,
    need: Role,
    action: &str,
) -> Result<Operator, Response> {
    let operator = authenticate(ctx, headers).await?;
    if operator.role >= need {
        return Ok(operator);
    }
    let why = format!("refused: role {} cannot {action}; it needs {}", operator.role.as_str(), need.as_str());
    if need > Role::Viewer {
        audit(ctx, AuditLog::Refusals, &operator, action, "-", &why).await;
    }
    Err(text(StatusCode::FORBIDDEN, why))
}

/// Writes an audit record to `log`; a failure to is logged loudly, and the
/// caller's answer says the action was done but not audited.
async fn audit(
    ctx: &HttpContext,
    log: AuditLog,
    operator: &Operator,
    action: &str,
    target: &str,
    result: &str,
) -> bool {
    let record = AuditRecord {
        at_ms: unix_now_ms(),
        actor: operator.name.clone(),
        action: action.to_owned(),
        target: clip(target),
        result: clip(result),
    };
    tracing::info!(actor = %record.actor, action, target = %record.target, result = %record.result, "operator action");
    // The append-only copy, in the ledger's database once it is connected.
    if let Some(ledger) = ctx.ledger.get() {
        if let Err(e) = ledger.audit(log, &record).await {
            tracing::error!(error = %e, action, "operator action NOT in the ledger's audit trail");
        }
    }
    match ctx.ops.audit(log, record).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, action, "operator action NOT audited");
            false
        }
    }
}

/// What of caller-given text an audit record keeps: printable, at most [`TEXT_MAX`] bytes.
fn clip(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().map(|c| if c.is_control() { '?' } else { c }) {
        if out.len() + c.len_utf8() > TEXT_MAX {
            break;
        }
        out.push(c);
    }
    out
}

/// Audits `result` and answers with it.
async fn audited(
    ctx: &HttpContext,
    operator: &Operator,
    action: &str,
    target: &str,
    result: Result<serde_json::Value, Response>,
) -> Response {
    match result {
        Ok(mut body) => {
            let recorded = audit(ctx, AuditLog::Actions, operator, action, target, "ok").await;
            if let Some(map) = body.as_object_mut() {
                map.insert("audited".into(), recorded.into());
            }
            json(StatusCode::OK, &body)
        }
        Err(answer) => {
            audit(ctx, AuditLog::Actions, operator, action, target, &format!("failed: {}", answer.status())).await;
            answer
        }
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes, what: &str) -> Result<T, Refusal> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("{what} body: {e}")))
}

/// A player named by id or by character name (looked up in the accounts).
async fn player_id(ctx: &HttpContext, given: &str) -> Result<u64, Response> {
    if let Ok(id) = given.parse::<u64>() {
        return Ok(id);
    }
    if !respawn_names::valid_name(given) {
        return Err(bad_request("player: a numeric id or a name of 1-24 of A-Z a-z 0-9 _ -").into());
    }
    Ok(account_named(ctx, given).await?.1.id)
}

/// An account by id, username or character name, and the store it is in.
async fn account_named(ctx: &HttpContext, given: &str) -> Result<(Arc<dyn AccountStore>, Account), Response> {
    let store = super::accounts::store(ctx)?;
    let found = match given.parse::<u64>() {
        Ok(id) => store.by_id(id).await,
        Err(_) => match store.by_character(given).await {
            Ok(None) => match respawn_names::username_key(given) {
                Some(key) => store.by_username(&key).await,
                None => Ok(None),
            },
            other => other,
        },
    };
    let account = found
        .map_err(account_failure)?
        .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("no account or character {given:?}")))?;
    Ok((store, account))
}

fn ledger(ctx: &HttpContext) -> Result<std::sync::Arc<dyn Ledger>, Refusal> {
    ctx.ledger.get().cloned().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "MySQL unavailable: player profiles and events are read from it; retry later".into(),
        )
    })
}

fn free_text(value: &str, what: &str) -> Result<(), Refusal> {
    if value.trim().is_empty() || value.len() > TEXT_MAX || value.chars().any(char::is_control) {
        return Err(bad_request(format!("{what}: 1-{TEXT_MAX} bytes of printable text")));
    }
    Ok(())
}

/// Makes the same admin call on every listed server (those hosting `zone`
/// when given); returns how many accepted and the failures.
pub(super) async fn each_server<F, Fut>(
    ctx: &HttpContext,
    zone: Option<&str>,
    call: F,
) -> Result<serde_json::Value, Response>
where
    F: Fn(ZoneAdmin, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), CallError>>,
{
    let admin = ctx.fleet_admin().ok_or_else(no_zone_admin)?;
    let servers = ctx.registry.servers().await.map_err(|e| store_failure("registry", e))?;
    let targets: Vec<_> = servers.into_iter().filter(|s| zone.is_none_or(|z| s.zones.iter().any(|h| h == z))).collect();
    if targets.is_empty() {
        return Err(text(StatusCode::NOT_FOUND, "no live server matches"));
    }
    // Every server at once: one stuck server holds the operator's call for one admin timeout at most.
    let calls = targets.iter().map(|s| {
        let pending = admin.of(s).map(|(server_admin, addr)| call(server_admin, addr));
        async move {
            let result = match pending {
                Ok(pending) => pending.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            (s.id.clone(), result)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let reached = results.iter().filter(|(_, r)| r.is_ok()).count();
    let failed: BTreeMap<String, String> = results.into_iter().filter_map(|(id, r)| r.err().map(|e| (id, e))).collect();
    if reached == 0 {
        return Err(text(StatusCode::BAD_GATEWAY, format!("no server accepted: {failed:?}")));
    }
    Ok(json!({ "servers_reached": reached, "failed": failed }))
}

/// The answer when the platform cannot call the zone servers' admin API.
pub(super) fn no_zone_admin() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server key is not configured: start the platform server with --server-key",
    )
}

pub(super) async fn status(State(ctx): State<HttpContext>) -> Response {
    let view = ctx.fleet.view();
    let pool = ctx.ledger.get().map(|l| l.pool_stats()).unwrap_or_default();
    let consumer = ctx.events == EventPath::Kafka;
    let status = Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        servers: view.servers.len(),
        zones: view.zones.len(),
        players: view.zones.iter().map(|z| z.players).sum(),
        registry_error: view.registry_error,
        // The event ledger: MySQL in production, SQLite in the embedded default.
        ledger: ctx.ledger.get().map_or("unavailable", |l| l.kind()).to_owned(),
        events: EventsStatus {
            path: ctx.events,
            consumed_per_second: consumer.then(|| ctx.metrics.consumed_per_second()),
            stored_total: consumer.then(|| ctx.metrics.stored.get()),
            consumer_lag: consumer.then(|| ctx.metrics.lag_total()),
            outbox_pending: view.zones.iter().map(|z| z.outbox_pending).sum(),
        },
        db_pool: DbPool { in_use: pool.size.saturating_sub(pool.idle), idle: pool.idle, max: pool.max },
    };
    json(StatusCode::OK, &status)
}

pub(super) async fn trends(State(ctx): State<HttpContext>) -> Response {
    json(StatusCode::OK, &ctx.trends.trends(ctx.events))
}

pub(super) async fn alerts(State(ctx): State<HttpContext>) -> Response {
    json(StatusCode::OK, &ctx.alerts.view().await)
}

pub(super) async fn zones(State(ctx): State<HttpContext>) -> Response {
    json(StatusCode::OK, &ctx.fleet.view().zones)
}

pub(super) async fn drain(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let result = async {
        let admin = ctx.fleet_admin().ok_or_else(no_zone_admin)?;
        let servers = ctx.registry.servers().await.map_err(|e| store_failure("registry", e))?;
        let server = servers
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("no live server {id:?}")))?;
        let (admin, addr) = admin.of(server).map_err(|e| text(StatusCode::BAD_GATEWAY, e.to_string()))?;
        match admin.drain(&addr).await {
            Ok(()) => Ok(json!({ "server": id, "state": "draining" })),
            Err(e) => Err(text(StatusCode::BAD_GATEWAY, format!("the server {e}"))),
        }
    }
    .await;
    audited(&ctx, &operator, "drain", &format!("server {id}"), result).await
}

#[derive(Debug, Serialize)]
struct Profile {
    player_id: u64,
    /// From MySQL: null for a player no stored event describes.
    record: Option<serde_json::Value>,
    banned: Option<serde_json::Value>,
    last_login: Option<serde_json::Value>,
}

pub(super) async fn player(State(ctx): State<HttpContext>, Path(given): Path<String>) -> Response {
    let id = match player_id(&ctx, &given).await {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let ledger = match ledger(&ctx) {
        Ok(l) => l,
        Err(refusal) => return refusal.into(),
    };
    let record = match ledger.player(id).await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("MySQL unavailable: {e}")),
    };
    let bans = ctx.ops.bans().await.map(|(_, b)| b).unwrap_or_default();
    let login = ctx.ops.login(id).await.ok().flatten();
    json(
        StatusCode::OK,
        &Profile {
            player_id: id,
            record: record.map(|r| {
                json!({
                    "name": r.name, "level": r.level, "xp": r.xp, "gold": r.gold,
                    "inventory": r.inventory, "online": r.online, "last_zone_id": r.last_zone, "events": r.events,
                    "incarnation": r.incarnation, "hold": r.hold.as_str(), "hold_zone": r.hold.zone(),
                    "place": r.place.map(|(zone, x, y)| json!({"zone": zone, "x": x, "y": y})),
                })
            }),
            banned: bans
                .into_iter()
                .find(|b| b.player == id)
                .map(|b| json!({"reason": b.reason, "by": b.by, "at_ms": b.at_ms})),
            last_login: login.map(|l| json!({"zone": l.zone, "server": l.server, "at_ms": l.at_ms})),
        },
    )
}

/// Most events one page returns.
const PAGE_MAX: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventSearch {
    player: Option<String>,
    kind: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(super) async fn events(
    State(ctx): State<HttpContext>,
    search: Result<Query<EventSearch>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(search) = match search {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    let player = match &search.player {
        Some(given) => match player_id(&ctx, given).await {
            Ok(id) => Some(id),
            Err(refused) => return refused,
        },
        None => None,
    };
    if let Some(kind) = &search.kind {
        if kind.is_empty() || kind.len() > 32 || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return text(StatusCode::BAD_REQUEST, "kind: an event kind such as gold_changed");
        }
    }
    let after = match search.cursor.as_deref().map(|c| EventCursor::decode(c).ok_or(())).transpose() {
        Ok(a) => a,
        Err(()) => return text(StatusCode::BAD_REQUEST, "cursor: pass back the next_cursor of a page"),
    };
    let limit = search.limit.unwrap_or(50).clamp(1, PAGE_MAX);
    let ledger = match ledger(&ctx) {
        Ok(l) => l,
        Err(refusal) => return refusal.into(),
    };
    let query =
        EventQuery { player, kind: search.kind, since_ms: search.since_ms, until_ms: search.until_ms, limit, after };
    let rows = match ledger.search(&query).await {
        Ok(rows) => rows,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("MySQL unavailable: {e}")),
    };
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.cursor().encode())).flatten();
    let events: Vec<_> = rows
        .iter()
        .map(|r| {
            let detail = <respawn_proto::events::Event as prost::Message>::decode(r.payload.as_slice())
                .ok()
                .and_then(|e| e.kind)
                .map_or_else(|| "undecodable".to_owned(), |k| format!("{k:?}"));
            let (zone, epoch, tick, index) = r.key;
            json!({
                "id": respawn_proto::events::event_id(zone, epoch, tick, index),
                "zone": zone, "tick": tick, "player": r.player, "kind": r.kind,
                "stored_at_ms": r.stored_at_ms, "detail": detail,
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "events": events, "next_cursor": next_cursor }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

pub(super) async fn kick(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let result = async {
        let body: ReasonBody = parse_body(&body, "kick")?;
        let reason = body.reason.unwrap_or_else(|| "kicked by an operator".into());
        free_text(&reason, "reason")?;
        let id = player_id(&ctx, &given).await?;
        let mut answer = each_server(&ctx, None, |admin, addr| {
            let reason = reason.clone();
            async move { admin.kick(&addr, id, Some(&reason)).await }
        })
        .await?;
        answer["player_id"] = id.into();
        Ok(answer)
    }
    .await;
    audited(&ctx, &operator, "kick", &format!("player {given}"), result).await
}

pub(super) async fn ban(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let result = async {
        // The input is checked before anything is looked up.
        let body: ReasonBody = parse_body(&body, "ban")?;
        let reason = body.reason.ok_or_else(|| text(StatusCode::BAD_REQUEST, "a ban needs a reason"))?;
        free_text(&reason, "reason")?;
        let id = player_id(&ctx, &given).await?;
        let ban = Ban { player: id, reason: reason.clone(), by: operator.name.clone(), at_ms: unix_now_ms() };
        ctx.ops.ban(ban).await.map_err(|e| store_failure("ban list", e))?;
        // Servers also learn the list with their next heartbeat; the kick is at once.
        let kicked =
            each_server(&ctx, None, |admin, addr| async move { admin.kick(&addr, id, Some("banned")).await }).await;
        Ok(json!({ "player_id": id, "banned": true, "kicked_now": kicked.is_ok() }))
    }
    .await;
    audited(&ctx, &operator, "ban", &format!("player {given}"), result).await
}

pub(super) async fn unban(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let result = async {
        let id = player_id(&ctx, &given).await?;
        let lifted = ctx.ops.unban(id).await.map_err(|e| store_failure("ban list", e))?;
        if !lifted {
            return Err(text(StatusCode::NOT_FOUND, "the player was not banned"));
        }
        Ok(json!({ "player_id": id, "banned": false }))
    }
    .await;
    audited(&ctx, &operator, "unban", &format!("player {given}"), result).await
}

pub(super) async fn bans(State(ctx): State<HttpContext>) -> Response {
    match ctx.ops.bans().await {
        Ok((version, bans)) => {
            let bans: Vec<_> = bans
                .into_iter()
                .map(|b| json!({"player_id": b.player, "reason": b.reason, "by": b.by, "at_ms": b.at_ms}))
                .collect();
            json(StatusCode::OK, &json!({ "version": version, "bans": bans }))
        }
        Err(e) => store_failure("ban list", e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnouncementBody {
    text: String,
    zone: Option<String>,
}

pub(super) async fn announce(
    State(ctx): State<HttpContext>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let mut target = "all zones".to_owned();
    let result = async {
        let body: AnnouncementBody = parse_body(&body, "announcement")?;
        free_text(&body.text, "text")?;
        if let Some(zone) = &body.zone {
            free_text(zone, "zone")?;
            target = format!("zone {zone}");
        }
        let (text, zone) = (body.text.as_str(), body.zone.as_deref());
        let mut answer =
            each_server(&ctx, zone, |admin, addr| async move { admin.announce(&addr, text, zone).await }).await?;
        answer["text"] = body.text.into();
        Ok(answer)
    }
    .await;
    audited(&ctx, &operator, "announce", &target, result).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Page {
    skip: Option<usize>,
    limit: Option<usize>,
    /// The calls refused for their role, kept apart from the actions.
    refused: Option<bool>,
    /// From the ledger's append-only trail (every record, never trimmed).
    archived: Option<bool>,
}

pub(super) async fn audit_log(
    State(ctx): State<HttpContext>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(page)) = page else {
        return text(StatusCode::BAD_REQUEST, "query: skip and limit, numbers; refused and archived, true or false");
    };
    let limit = page.limit.unwrap_or(50).clamp(1, PAGE_MAX as usize);
    let log = if page.refused.unwrap_or(false) { AuditLog::Refusals } else { AuditLog::Actions };
    let skip = page.skip.unwrap_or(0);
    let records = if page.archived.unwrap_or(false) {
        let ledger = match ledger(&ctx) {
            Ok(ledger) => ledger,
            Err(refused) => return refused.into(),
        };
        ledger
            .audit_trail(log, skip as u64, limit as u32)
            .await
            .map_err(|e| StoreError::Backend { backend: ledger.kind(), message: e.to_string() })
    } else {
        ctx.ops.audit_log(log, skip, limit).await
    };
    match records {
        Ok(records) => {
            let records: Vec<_> = records
                .into_iter()
                .map(|r| json!({"at_ms": r.at_ms, "actor": r.actor, "action": r.action, "target": r.target, "result": r.result}))
                .collect();
            json(StatusCode::OK, &records)
        }
        Err(e) => store_failure("audit log", e),
    }
}

pub(super) async fn tokens(State(ctx): State<HttpContext>) -> Response {
    match ctx.ops.operators().await {
        Ok(tokens) => {
            let tokens: Vec<_> = tokens
                .into_iter()
                .map(|t| json!({"name": t.name, "role": t.role.as_str(), "created_ms": t.created_ms, "expires_ms": t.expires_ms}))
                .collect();
            json(StatusCode::OK, &tokens)
        }
        Err(e) => store_failure("operator tokens", e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    /// Lifetime; the token never expires without one.
    expires_in_secs: Option<u64>,
}

pub(super) async fn create_token(
    State(ctx): State<HttpContext>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let mut target = "token ?".to_owned();
    let result = async {
        let body: NewToken = parse_body(&body, "token")?;
        if !valid_operator_name(&body.name) {
            return Err(text(StatusCode::BAD_REQUEST, "name: 1-64 of a-z 0-9 - _ ."));
        }
        target = format!("token {}", body.name);
        let role =
            Role::parse(&body.role).ok_or_else(|| text(StatusCode::BAD_REQUEST, "role: viewer, operator or admin"))?;
        let secret =
            respawn_token::random_hex(24).map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let token = OperatorToken {
            name: body.name.clone(),
            role,
            hash: respawn_token::hash_secret(&secret),
            created_ms: unix_now_ms(),
            expires_ms: body.expires_in_secs.map(|s| unix_now_ms().saturating_add(s.saturating_mul(1_000))),
        };
        ctx.ops.put_operator(token).await.map_err(|e| store_failure("operator tokens", e))?;
        // The only time the secret is shown: only its hash is stored.
        Ok(json!({ "name": body.name, "role": role.as_str(), "token": secret, "expires_in_secs": body.expires_in_secs }))
    }
    .await;
    audited(&ctx, &operator, "create_token", &target, result).await
}

pub(super) async fn revoke_token(
    State(ctx): State<HttpContext>,
    Path(name): Path<String>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let result = async {
        if !valid_operator_name(&name) {
            return Err(text(StatusCode::BAD_REQUEST, "name: 1-64 of a-z 0-9 - _ ."));
        }
        let tokens = ctx.ops.operators().await.map_err(|e| store_failure("operator tokens", e))?;
        let now = unix_now_ms();
        let admin = |t: &&OperatorToken| t.role == Role::Admin && t.expires_ms.is_none_or(|at| at > now);
        if tokens.iter().filter(admin).all(|t| t.name == name) && tokens.iter().filter(admin).any(|t| t.name == name) {
            return Err(text(
                StatusCode::CONFLICT,
                format!("{name:?} is the last admin token: create another admin first, or nobody could"),
            ));
        }
        match ctx.ops.revoke_operator(&name).await {
            Ok(true) => {
                if name == BOOTSTRAP_ADMIN {
                    // Not even while the store is down, and not again at the next start.
                    ctx.bootstrap_admin.forget();
                }
                Ok(json!({ "name": name, "revoked": true }))
            }
            Ok(false) => Err(text(StatusCode::NOT_FOUND, format!("no token named {name:?}"))),
            Err(e) => Err(store_failure("operator tokens", e)),
        }
    }
    .await;
    audited(&ctx, &operator, "revoke_token", &format!("token {name}"), result).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    /// A server id, its WebSocket address, or a version.
    to: String,
    #[serde(default)]
    handoff: bool,
    wait_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    wait_secs: Option<u64>,
}

/// Guide mode's default wait for the old version's players to go.
const ROLLOUT_WAIT_SECS: u64 = 300;

fn rollout_wait(given: Option<u64>) -> Result<std::time::Duration, Refusal> {
    match given.unwrap_or(ROLLOUT_WAIT_SECS) {
        secs @ 0..=86_400 => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(bad_request("wait_secs: at most 86400")),
    }
}

pub(super) async fn start_rollout(
    State(ctx): State<HttpContext>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let mut target = "-".to_owned();
    let result = async {
        let body: RolloutBody = parse_body(&body, "rollout")?;
        free_text(&body.to, "to")?;
        target = format!("to {}{}", body.to, if body.handoff { " (hand-off)" } else { "" });
        let mode = if body.handoff { crate::rollout::Mode::Handoff } else { crate::rollout::Mode::Guide };
        let plan = crate::rollout::Plan {
            to: body.to,
            from: None,
            mode,
            wait: rollout_wait(body.wait_secs)?,
            rollback: false,
        };
        let started = ctx.start_rollout(plan).await.map_err(|why| Refusal(StatusCode::CONFLICT, why))?;
        Ok::<_, Refusal>(json!(started))
    }
    .await;
    audited(&ctx, &operator, "rollout", &target, result.map_err(Response::from)).await
}

pub(super) async fn rollback(
    State(ctx): State<HttpContext>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let mut target = "-".to_owned();
    let result = async {
        let body: RollbackBody = parse_body(&body, "rollback")?;
        let plan = ctx
            .rollouts
            .rollback_plan(rollout_wait(body.wait_secs)?)
            .await
            .map_err(|why| Refusal(StatusCode::CONFLICT, why))?;
        target = format!("back to {}", plan.to);
        let started = ctx.start_rollout(plan).await.map_err(|why| Refusal(StatusCode::CONFLICT, why))?;
        Ok::<_, Refusal>(json!(started))
    }
    .await;
    audited(&ctx, &operator, "rollback", &target, result.map_err(Response::from)).await
}

pub(super) async fn current_rollout(State(ctx): State<HttpContext>) -> Response {
    match ctx.rollouts.current().await {
        Ok(Some(rollout)) => json(StatusCode::OK, &rollout),
        Ok(None) => text(StatusCode::NOT_FOUND, "no rollout has run on this platform"),
        Err(e) => store_failure("operations store", e),
    }
}

/// The name the `--admin-token` given at start-up goes by.
const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

fn bootstrap_admin_token(hash: String) -> OperatorToken {
    OperatorToken { name: BOOTSTRAP_ADMIN.into(), role: Role::Admin, hash, created_ms: unix_now_ms(), expires_ms: None }
}

/// The hash of the `--admin-token` given at start-up while it holds: it
/// stays valid when the operations store is down, until it is revoked.
#[derive(Debug, Clone, Default)]
pub struct BootstrapAdmin(Arc<std::sync::RwLock<Option<String>>>);

impl BootstrapAdmin {
    fn is(&self, hash: &str) -> bool {
        self.0.read().is_ok_and(|held| held.as_deref() == Some(hash))
    }

    fn set(&self, hash: String) {
        if let Ok(mut held) = self.0.write() {
            *held = Some(hash);
        }
    }

    fn forget(&self) {
        if let Ok(mut held) = self.0.write() {
            *held = None;
        }
    }
}

/// What became of the `--admin-token` at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The store held no operator token: it is the first admin.
    Installed,
    /// The store holds it already.
    Kept,
    /// The store holds other tokens and not this one: it was revoked (or
    /// replaced) through the API, and stays so.
    Refused,
}

/// Installs `secret` as the `bootstrap-admin` token (kept as its hash) only
/// where it is absent: in a store holding no operator token, a fresh
/// deployment or a wiped Redis. A token revoked through the API is not
/// installed again. With the store down it is valid until the store answers.
pub async fn install_bootstrap_admin(ctx: &mut HttpContext, secret: &str) -> respawn_store::StoreResult<Bootstrap> {
    let hash = respawn_token::hash_secret(secret);
    let tokens = match ctx.ops.operators().await {
        Ok(tokens) => tokens,
        Err(e) => {
            ctx.bootstrap_admin.set(hash);
            return Err(e);
        }
    };
    if tokens.iter().any(|t| t.name == BOOTSTRAP_ADMIN && t.hash == hash) {
        ctx.bootstrap_admin.set(hash);
        return Ok(Bootstrap::Kept);
    }
    if !tokens.is_empty() {
        tracing::warn!(
            "--admin-token not installed: the operator tokens hold others and not this one \
             (bootstrap-admin was revoked or replaced through the API)"
        );
        return Ok(Bootstrap::Refused);
    }
    ctx.ops.put_operator(bootstrap_admin_token(hash.clone())).await?;
    ctx.bootstrap_admin.set(hash);
    tracing::info!("--admin-token installed as bootstrap-admin, the first operator token");
    Ok(Bootstrap::Installed)
}

/// `GET /v1/accounts/{account}`: by id, username or character name.
pub(super) async fn account(State(ctx): State<HttpContext>, Path(given): Path<String>) -> Response {
    match account_named(&ctx, &given).await {
        Ok((_, account)) => json(StatusCode::OK, &super::accounts::account_view(&account)),
        Err(refused) => refused,
    }
}

/// `POST /v1/accounts/{account}/disable`: no more sign-ins, joins or
/// refreshes; its sign-ins are revoked and its player kicked.
pub(super) async fn disable_account(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let result = async {
        let body: ReasonBody = parse_body(&body, "disable")?;
        let reason = body.reason.ok_or_else(|| text(StatusCode::BAD_REQUEST, "disabling needs a reason"))?;
        free_text(&reason, "reason")?;
        let (store, account) = account_named(&ctx, &given).await?;
        store.set_disabled(account.id, Some(&reason)).await.map_err(account_failure)?;
        let revoked = store.revoke_account(account.id).await.map_err(account_failure)?;
        let id = account.id;
        let kicked =
            each_server(&ctx, None, |admin, addr| async move { admin.kick(&addr, id, Some("account disabled")).await })
                .await;
        Ok(json!({ "account_id": id, "disabled": true, "sign_ins_revoked": revoked, "kicked_now": kicked.is_ok() }))
    }
    .await;
    audited(&ctx, &operator, "disable account", &format!("account {given}"), result).await
}

/// `POST /v1/accounts/{account}/enable`.
pub(super) async fn enable_account(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let result = async {
        let (store, account) = account_named(&ctx, &given).await?;
        store.set_disabled(account.id, None).await.map_err(account_failure)?;
        Ok(json!({ "account_id": account.id, "disabled": false }))
    }
    .await;
    audited(&ctx, &operator, "enable account", &format!("account {given}"), result).await
}

/// `POST /v1/accounts/{account}/revoke`: every sign-in of the account ends
/// (its refresh tokens); session tokens already out run out within minutes.
pub(super) async fn revoke_account(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
) -> Response {
    let result = async {
        let (store, account) = account_named(&ctx, &given).await?;
        let revoked = store.revoke_account(account.id).await.map_err(account_failure)?;
        Ok(json!({ "account_id": account.id, "sign_ins_revoked": revoked }))
    }
    .await;
    audited(&ctx, &operator, "revoke sign-ins", &format!("account {given}"), result).await
}

/// `PUT /v1/accounts/{account}/password`: an operator's reset; the account's
/// sign-ins are revoked.
pub(super) async fn reset_password(
    State(ctx): State<HttpContext>,
    Path(given): Path<String>,
    Extension(operator): Extension<Operator>,
    body: Bytes,
) -> Response {
    let result = async {
        let body: respawn_api::players::ResetPassword = parse_body(&body, "password")?;
        // The input is checked before anything is looked up.
        let hash = super::accounts::hash_password(&ctx, body.password).await?;
        let (store, account) = account_named(&ctx, &given).await?;
        if !store.set_password(account.id, &hash).await.map_err(account_failure)? {
            return Err(text(StatusCode::CONFLICT, "a guest account has no password: it signs in with its device"));
        }
        let revoked = store.revoke_account(account.id).await.map_err(account_failure)?;
        Ok(json!({ "account_id": account.id, "password_reset": true, "sign_ins_revoked": revoked }))
    }
    .await;
    audited(&ctx, &operator, "reset password", &format!("account {given}"), result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_is_clipped_and_printable() {
        assert_eq!(clip("a\nb"), "a?b");
        let long = "é".repeat(400);
        let clipped = clip(&long);
        assert!(clipped.len() <= TEXT_MAX && clipped.chars().all(|c| c == 'é'));
    }
}
