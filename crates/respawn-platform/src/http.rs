//! The platform server's HTTP side: `/metrics`, `/healthz` (the process
//! answers), `/readyz` (the ledger is connected and events are consumed) and
//! the server registry (`/v1/servers`), which game servers heartbeat into
//! with the shared server token.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use respawn_store::{Registry, ServerEntry, ServerState, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::metrics::PlatformMetrics;

/// A server missing this long after its last heartbeat leaves the registry.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// Largest request body the API reads.
const BODY_LIMIT: usize = 16 * 1024;

/// What the HTTP side serves from.
#[derive(Clone)]
pub struct HttpContext {
    pub metrics: Arc<PlatformMetrics>,
    pub ledger: LedgerSlot,
    pub registry: Arc<dyn Registry>,
    /// The secret game servers present; without it the registry API is closed.
    pub server_token: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext").field("registry", &self.registry).finish_non_exhaustive()
    }
}

/// The ledger once connected; empty while the platform server waits for MySQL.
pub type LedgerSlot = Arc<OnceLock<Arc<dyn Ledger>>>;

/// Serves until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    context: HttpContext,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/servers", get(list_servers))
        .route("/v1/servers/{id}", axum::routing::put(heartbeat).delete(remove_server))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(context);
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
}

async fn metrics_text(State(s): State<HttpContext>) -> impl IntoResponse {
    let pool = s.ledger.get().map(|l| l.pool_stats()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(pool))
}

async fn ready(State(s): State<HttpContext>) -> (StatusCode, &'static str) {
    match s.ledger.get() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "waiting for MySQL: events wait in Kafka meanwhile\n"),
    }
}

/// A heartbeat's body, and a listed server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerBody {
    #[serde(default, skip_deserializing)]
    pub id: String,
    pub address: String,
    pub zones: Vec<String>,
    /// `ready` or `draining`.
    pub state: String,
    pub version: String,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// Checks the server token; the error is the answer.
fn authorize(ctx: &HttpContext, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(expected) = ctx.server_token.as_deref() else {
        return Err((StatusCode::NOT_FOUND, "registry API disabled: start the platform server with --server-token\n"));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| respawn_token::constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong server token\n"))
    }
}

fn store_failure(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(message) => text(StatusCode::BAD_REQUEST, message),
        other => text(StatusCode::SERVICE_UNAVAILABLE, format!("registry unavailable: {other}")),
    }
}

async fn heartbeat(
    State(ctx): State<HttpContext>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&ctx, &headers) {
        return refused.into_response();
    }
    let body: ServerBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("heartbeat body: {e}")),
    };
    let Some(state) = ServerState::parse(&body.state) else {
        return text(StatusCode::BAD_REQUEST, "state must be ready or draining");
    };
    let entry = ServerEntry { id, address: body.address, zones: body.zones, state, version: body.version };
    match ctx.registry.heartbeat(entry, HEARTBEAT_TTL).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_failure(e),
    }
}

async fn remove_server(State(ctx): State<HttpContext>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&ctx, &headers) {
        return refused.into_response();
    }
    match ctx.registry.remove(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_failure(e),
    }
}

async fn list_servers(State(ctx): State<HttpContext>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&ctx, &headers) {
        return refused.into_response();
    }
    match ctx.registry.servers().await {
        Ok(servers) => {
            let body: Vec<ServerBody> = servers
                .into_iter()
                .map(|s| ServerBody {
                    id: s.id,
                    address: s.address,
                    zones: s.zones,
                    state: s.state.as_str().to_owned(),
                    version: s.version,
                })
                .collect();
            match serde_json::to_string(&body) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Err(e) => store_failure(e),
    }
}
