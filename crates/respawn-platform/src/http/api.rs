//! Every route of the platform server, in one table: the router is built
//! from it and `/openapi.json` is generated from it, so the document cannot
//! drift from the code.

use axum::routing::{delete, get, post, put, MethodRouter};
use respawn_store::ops::Role;
use serde_json::{json, Map, Value};

use super::{accounts, ops, registry, sessions, time_machine, HttpContext};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Public,
    /// A game server's own credential (`respawn server-credential`); on a
    /// route about one server (`{id}`), only that server's.
    Server,
    /// Any game server's credential or any operator token.
    ServerOrViewer,
    /// An operator token of this role or above.
    Operator(Role),
    /// A player's session token (from signing in).
    Player,
}

#[derive(Debug)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Query parameters: name, description.
    pub query: &'static [(&'static str, &'static str)],
    /// The JSON body's schema, when the route takes one.
    pub body: Option<fn() -> Value>,
    pub route: fn() -> MethodRouter<HttpContext>,
}

const VIEWER: Auth = Auth::Operator(Role::Viewer);
const OPERATOR: Auth = Auth::Operator(Role::Operator);
const ADMIN: Auth = Auth::Operator(Role::Admin);

fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": properties })
}

/// A character's name (`respawn_names::valid_name`).
const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,24}$";

fn refresh_body() -> Value {
    object(&["refresh_token"], json!({ "refresh_token": { "type": "string" } }))
}

fn reason_body() -> Value {
    object(&[], json!({ "reason": { "type": "string", "maxLength": 500 } }))
}

pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/healthz",
        summary: "Liveness: the process answers.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(|| async { "ok\n" }),
    },
    Operation {
        method: "get",
        path: "/readyz",
        summary: "Readiness: MySQL is connected and events are consumed.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(super::ready),
    },
    Operation {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics of the platform server.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(super::metrics_text),
    },
    Operation {
        method: "get",
        path: "/openapi.json",
        summary: "This document.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(super::openapi),
    },
    Operation {
        method: "get",
        path: "/dashboard",
        summary: "The admin dashboard (a web page; it asks for an operator token).",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(super::dashboard),
    },
    Operation {
        method: "get",
        path: "/dashboard.js",
        summary: "The admin dashboard's script.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(|| async { super::served(super::JAVASCRIPT, include_str!("dashboard.js"), None) }),
    },
    Operation {
        method: "get",
        path: "/dashboard.css",
        summary: "The admin dashboard's style sheet.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(|| async { super::served(super::CSS, include_str!("dashboard.css"), None) }),
    },
    Operation {
        method: "get",
        path: "/vendor/uPlot.iife.min.js",
        summary: "uPlot (MIT), the chart library the dashboard draws with, shipped inside the binary (scripts/vendor).",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(|| async { super::served(super::JAVASCRIPT, include_str!("../../vendor/uPlot.iife.min.js"), None) }),
    },
    Operation {
        method: "get",
        path: "/vendor/uPlot.min.css",
        summary: "uPlot's style sheet.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(|| async { super::served(super::CSS, include_str!("../../vendor/uPlot.min.css"), None) }),
    },
    Operation {
        method: "post",
        path: "/v1/accounts",
        summary: "Sign up with a username and password (and a character name): signed in at once.",
        auth: Auth::Public,
        query: &[],
        body: Some(|| {
            object(
                &["username", "password"],
                json!({
                    "username": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$" },
                    "password": { "type": "string", "minLength": 8, "maxLength": 128 },
                    "character": { "type": "string", "pattern": NAME_PATTERN },
                }),
            )
        }),
        route: || post(accounts::sign_up),
    },
    Operation {
        method: "post",
        path: "/v1/accounts/guest",
        summary: "A guest account: signed in at once, with a device secret to sign in with again (shown once).",
        auth: Auth::Public,
        query: &[],
        body: Some(|| object(&[], json!({ "character": { "type": "string", "pattern": NAME_PATTERN } }))),
        route: || post(accounts::guest),
    },
    Operation {
        method: "post",
        path: "/v1/sessions",
        summary: "Sign in with a username and password or a device secret: a session token (minutes) and a refresh token.",
        auth: Auth::Public,
        query: &[],
        body: Some(|| {
            object(
                &[],
                json!({
                    "username": { "type": "string" },
                    "password": { "type": "string" },
                    "device_secret": { "type": "string" },
                }),
            )
        }),
        route: || post(accounts::sign_in),
    },
    Operation {
        method: "post",
        path: "/v1/sessions/refresh",
        summary: "The next session and refresh token; a refresh token works once, and its reuse revokes the sign-in.",
        auth: Auth::Public,
        query: &[],
        body: Some(refresh_body),
        route: || post(accounts::refresh),
    },
    Operation {
        method: "post",
        path: "/v1/sessions/logout",
        summary: "End the sign-in the refresh token belongs to.",
        auth: Auth::Public,
        query: &[],
        body: Some(refresh_body),
        route: || post(accounts::logout),
    },
    Operation {
        method: "get",
        path: "/v1/accounts/me",
        summary: "The signed-in account: id, username, character, guest or not.",
        auth: Auth::Player,
        query: &[],
        body: None,
        route: || get(accounts::me),
    },
    Operation {
        method: "put",
        path: "/v1/accounts/me/credentials",
        summary: "A guest account takes a username and password (its device secret keeps working).",
        auth: Auth::Player,
        query: &[],
        body: Some(|| {
            object(
                &["username", "password"],
                json!({
                    "username": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$" },
                    "password": { "type": "string", "minLength": 8, "maxLength": 128 },
                }),
            )
        }),
        route: || put(accounts::set_credentials),
    },
    Operation {
        method: "post",
        path: "/v1/play",
        summary: "Join a zone: the address of a ready game server hosting it, and the token it admits.",
        auth: Auth::Player,
        query: &[],
        body: Some(|| object(&["zone"], json!({ "zone": { "type": "string", "maxLength": 64 } }))),
        route: || post(sessions::play),
    },
    Operation {
        method: "get",
        path: "/v1/accounts/{account}",
        summary: "An account by id, username or character name: character, guest or not, disabled or not.",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::account),
    },
    Operation {
        method: "post",
        path: "/v1/accounts/{account}/disable",
        summary: "Disable an account (with a reason): its sign-ins are revoked and its player kicked.",
        auth: ADMIN,
        query: &[],
        body: Some(reason_body),
        route: || post(ops::disable_account),
    },
    Operation {
        method: "post",
        path: "/v1/accounts/{account}/enable",
        summary: "Enable a disabled account again.",
        auth: ADMIN,
        query: &[],
        body: None,
        route: || post(ops::enable_account),
    },
    Operation {
        method: "post",
        path: "/v1/accounts/{account}/revoke",
        summary: "End every sign-in of an account (its refresh tokens; session tokens run out within minutes).",
        auth: ADMIN,
        query: &[],
        body: None,
        route: || post(ops::revoke_account),
    },
    Operation {
        method: "put",
        path: "/v1/accounts/{account}/password",
        summary: "Reset an account's password; its sign-ins are revoked.",
        auth: ADMIN,
        query: &[],
        body: Some(|| object(&["password"], json!({ "password": { "type": "string", "minLength": 8, "maxLength": 128 } }))),
        route: || put(ops::reset_password),
    },
    Operation {
        method: "get",
        path: "/v1/lobby",
        summary: "The zones players can log in to now, with their player counts.",
        auth: Auth::Public,
        query: &[],
        body: None,
        route: || get(sessions::lobby),
    },
    Operation {
        method: "put",
        path: "/v1/servers/{id}",
        summary:
            "Game server heartbeat (every second; the entry lives 3 s). The reply carries the ban list when it changed.",
        auth: Auth::Server,
        query: &[],
        body: Some(|| {
            object(
                &["address", "zones", "state", "version"],
                json!({
                    "address": { "type": "string" },
                    "zones": { "type": "array", "items": { "type": "string" } },
                    "state": { "enum": ["ready", "draining"] },
                    "version": { "type": "string" },
                    "bans_version": { "type": "integer" },
                }),
            )
        }),
        route: || put(registry::heartbeat),
    },
    Operation {
        method: "delete",
        path: "/v1/servers/{id}",
        summary: "A game server leaves the registry (clean stop).",
        auth: Auth::Server,
        query: &[],
        body: None,
        route: || delete(registry::remove),
    },
    Operation {
        method: "get",
        path: "/v1/servers",
        summary: "Live game servers: address, zones, ready or draining, version, reachability, players.",
        auth: Auth::ServerOrViewer,
        query: &[],
        body: None,
        route: || get(registry::list),
    },
    Operation {
        method: "post",
        path: "/v1/servers/{id}/drain",
        summary: "Drain a game server: no new players, players told, it stops once empty or at its deadline.",
        auth: OPERATOR,
        query: &[],
        body: None,
        route: || post(ops::drain),
    },
    Operation {
        method: "get",
        path: "/v1/status",
        summary: "Overview: servers, zones, players, MySQL, event consumption and lag, DB pool.",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::status),
    },
    Operation {
        method: "get",
        path: "/v1/trends",
        summary: "The dashboard's charts: the last hour, a point every 5 s: CCU and tick p50/p99 per zone, events \
                  stored per second, consumer lag and outbox, API latency and errors.",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::trends),
    },
    Operation {
        method: "get",
        path: "/v1/zones",
        summary: "Every zone: CCU, tick p50/p99 over the last second, status, hosting server, version.",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::zones),
    },
    Operation {
        method: "get",
        path: "/v1/zones/{zone}/film",
        summary: "The time machine: a window of a zone's history (a minute at most) replayed from its journal by a zone \
                  server: every tick's positions of players, NPCs and items, and its events.",
        auth: VIEWER,
        query: &[
            ("from", "the first tick: a tick number or a UTC time like 2026-11-26T10:00:00Z"),
            ("to", "the last tick: a tick number or a UTC time"),
        ],
        body: None,
        route: || get(time_machine::film),
    },
    Operation {
        method: "get",
        path: "/v1/zones/{zone}/state",
        summary: "The time machine: every player (position, hp, level, xp, gold, inventory), NPC and item of a zone \
                  after one tick, replayed from its journal.",
        auth: VIEWER,
        query: &[("tick", "a tick within the zone's kept history")],
        body: None,
        route: || get(time_machine::state),
    },
    Operation {
        method: "get",
        path: "/v1/alerts",
        summary:
            "Built-in alerting: firing and pending alerts, and the feed of recent transitions (info events included).",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::alerts),
    },
    Operation {
        method: "get",
        path: "/v1/players/{player}",
        summary: "A player's profile from MySQL (id or name), ban and last login. 503 while MySQL is down.",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::player),
    },
    Operation {
        method: "post",
        path: "/v1/players/{player}/kick",
        summary: "Disconnect a player wherever they play.",
        auth: OPERATOR,
        query: &[],
        body: Some(reason_body),
        route: || post(ops::kick),
    },
    Operation {
        method: "put",
        path: "/v1/players/{player}/ban",
        summary: "Ban a player: refused at login and at join, kicked if playing. A reason is required.",
        auth: ADMIN,
        query: &[],
        body: Some(reason_body),
        route: || put(ops::ban),
    },
    Operation {
        method: "delete",
        path: "/v1/players/{player}/ban",
        summary: "Lift a ban.",
        auth: ADMIN,
        query: &[],
        body: None,
        route: || delete(ops::unban),
    },
    Operation {
        method: "get",
        path: "/v1/bans",
        summary: "The ban list with reasons.",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::bans),
    },
    Operation {
        method: "get",
        path: "/v1/events",
        summary: "Stored events, newest first, filtered and paginated. 503 while MySQL is down.",
        auth: VIEWER,
        query: &[
            ("player", "a player id or name"),
            ("kind", "an event kind, e.g. gold_changed"),
            ("since_ms", "stored at or after (Unix ms)"),
            ("until_ms", "stored before (Unix ms)"),
            ("limit", "rows per page, 1-500 (50)"),
            ("cursor", "the next_cursor of the previous page"),
        ],
        body: None,
        route: || get(ops::events),
    },
    Operation {
        method: "post",
        path: "/v1/announcements",
        summary: "Show a notice to every player in game, in all zones or one.",
        auth: OPERATOR,
        query: &[],
        body: Some(|| {
            object(&["text"], json!({ "text": { "type": "string", "maxLength": 500 }, "zone": { "type": "string" } }))
        }),
        route: || post(ops::announce),
    },
    Operation {
        method: "get",
        path: "/v1/audit",
        summary: "The audit log, newest first: who did what, when, with what result; with refused=true, the calls refused for their role (kept apart, so they cannot push actions out).",
        auth: VIEWER,
        query: &[
            ("skip", "records to skip (0)"),
            ("limit", "records, 1-500 (50)"),
            ("refused", "true: the refused calls instead of the actions"),
            ("archived", "true: from the ledger's append-only trail, which keeps every record"),
        ],
        body: None,
        route: || get(ops::audit_log),
    },
    Operation {
        method: "post",
        path: "/v1/servers/{id}/claim",
        summary: "A starting game server asks which of its configured zones it may host: those no other live server hosts, each granted to one claimer.",
        auth: Auth::Server,
        query: &[],
        body: Some(|| object(&["zones"], json!({ "zones": { "type": "array", "maxItems": 64, "items": { "type": "string" } } }))),
        route: || post(registry::claim),
    },
    Operation {
        method: "post",
        path: "/v1/servers/{id}/evacuate",
        summary: "A draining game server's zones move live to a standby server that can take them (a hand-off rollout of that server alone); see /v1/rollouts/current.",
        auth: Auth::Server,
        query: &[],
        body: None,
        route: || post(registry::evacuate),
    },
    Operation {
        method: "post",
        path: "/v1/rollouts",
        summary: "Start a rolling update to a server (id, address or version): the guide's seven steps, or live zone hand-off with handoff=true. Runs in the background (one at a time across every platform replica; 409 while one runs); see /v1/rollouts/current.",
        auth: ADMIN,
        query: &[],
        body: Some(|| {
            object(
                &["to"],
                json!({
                    "to": { "type": "string", "maxLength": 500 },
                    "handoff": { "type": "boolean" },
                    "wait_secs": { "type": "integer", "minimum": 0, "maximum": 86400 },
                }),
            )
        }),
        route: || post(ops::start_rollout),
    },
    Operation {
        method: "post",
        path: "/v1/rollouts/rollback",
        summary: "Return to the version the last successful rollout left, the same way it came.",
        auth: ADMIN,
        query: &[],
        body: Some(|| object(&[], json!({ "wait_secs": { "type": "integer", "minimum": 0, "maximum": 86400 } }))),
        route: || post(ops::rollback),
    },
    Operation {
        method: "get",
        path: "/v1/rollouts/current",
        summary: "The running (or last) rollout of any platform replica: step of 7, log, zones moved with their pause, result, and the replica running it (another takes over if it stops).",
        auth: VIEWER,
        query: &[],
        body: None,
        route: || get(ops::current_rollout),
    },
    Operation {
        method: "get",
        path: "/v1/tokens",
        summary: "Operator tokens: names, roles, creation times (never the secrets).",
        auth: ADMIN,
        query: &[],
        body: None,
        route: || get(ops::tokens),
    },
    Operation {
        method: "post",
        path: "/v1/tokens",
        summary: "Create an operator token; the secret is in this answer only (the platform keeps its hash).",
        auth: ADMIN,
        query: &[],
        body: Some(|| {
            object(
                &["name", "role"],
                json!({
                    "name": { "type": "string", "pattern": "^[a-z0-9._-]{1,64}$" },
                    "role": { "enum": ["viewer", "operator", "admin"] },
                    "expires_in_secs": { "type": "integer", "minimum": 1 },
                }),
            )
        }),
        route: || post(ops::create_token),
    },
    Operation {
        method: "delete",
        path: "/v1/tokens/{name}",
        summary: "Revoke an operator token.",
        auth: ADMIN,
        query: &[],
        body: None,
        route: || delete(ops::revoke_token),
    },
];

/// The OpenAPI 3.1 document of [`OPERATIONS`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut operation = Map::new();
        operation.insert("summary".into(), op.summary.into());
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        parameters.extend(op.query.iter().map(|(name, description)| {
            json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
        }));
        if !parameters.is_empty() {
            operation.insert("parameters".into(), parameters.into());
        }
        if let Some(schema) = op.body {
            operation.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": schema() } } }),
            );
        }
        let mut responses =
            json!({ "200": { "description": "done" }, "400": { "description": "bad input, explained" } });
        match op.auth {
            Auth::Public => {}
            Auth::Server => {
                operation.insert("security".into(), json!([{ "serverCredential": [] }]));
                responses["401"] = json!({ "description": "missing or unknown server credential" });
                responses["403"] = json!({ "description": "the credential is another server's" });
            }
            Auth::ServerOrViewer => {
                operation.insert("security".into(), json!([{ "serverCredential": [] }, { "operatorToken": [] }]));
                responses["401"] = json!({ "description": "missing or unknown token" });
            }
            Auth::Operator(role) => {
                operation.insert("security".into(), json!([{ "operatorToken": [] }]));
                operation.insert("x-role".into(), role.as_str().into());
                responses["401"] = json!({ "description": "missing or unknown operator token" });
                responses["403"] = json!({ "description": format!("the token's role is below {}", role.as_str()) });
                responses["429"] = json!({ "description": "over the per-token rate limit; see Retry-After" });
            }
            Auth::Player => {
                operation.insert("security".into(), json!([{ "sessionToken": [] }]));
                responses["401"] = json!({ "description": "missing, malformed or expired session token" });
                responses["403"] = json!({ "description": "the account is disabled or banned" });
            }
        }
        if op.path == "/v1/sessions" {
            responses["401"] = json!({ "description": "wrong username or password, or unknown device secret" });
            responses["403"] = json!({ "description": "the account is disabled" });
        }
        if op.path.starts_with("/v1/sessions") || op.path.starts_with("/v1/accounts") || op.path == "/v1/play" {
            responses["429"] =
                json!({ "description": "over a per-IP limit, or too many failed sign-ins; see Retry-After" });
        }
        responses["503"] = json!({ "description": "a backing store is unavailable, explained" });
        operation.insert("responses".into(), responses);
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(op.method.to_owned(), Value::Object(operation));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Respawn platform server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, sign-in and joining a zone, the server registry, and the operations API. Operator roles: viewer reads; operator kicks, announces and drains; admin bans and manages tokens. Every mutating operator call is audited.",
        },
        "components": { "securitySchemes": {
            "operatorToken": { "type": "http", "scheme": "bearer", "description": "an operator token (viewer, operator or admin)" },
            "serverCredential": { "type": "http", "scheme": "bearer", "description": "one game server's own credential, bound to its id (respawn server-credential)" },
            "sessionToken": { "type": "http", "scheme": "bearer", "description": "a player's session token, from POST /v1/sessions" },
        } },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_once() {
        let doc = openapi();
        let mut seen = std::collections::HashSet::new();
        for op in OPERATIONS {
            assert!(seen.insert((op.method, op.path)), "{} {} twice", op.method, op.path);
            assert!(doc["paths"][op.path][op.method]["summary"].is_string(), "{} {}", op.method, op.path);
        }
        let documented: usize =
            doc["paths"].as_object().map_or(0, |p| p.values().filter_map(Value::as_object).map(|m| m.len()).sum());
        assert_eq!(documented, OPERATIONS.len());
        assert_eq!(doc["paths"]["/v1/players/{player}/ban"]["put"]["x-role"], "admin");
        assert_eq!(doc["paths"]["/v1/players/{player}/ban"]["put"]["parameters"][0]["name"], "player");
    }
}
