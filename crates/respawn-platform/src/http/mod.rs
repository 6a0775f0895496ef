//! The platform server's HTTP side: `/metrics`, `/healthz` (the process
//! answers), `/readyz` (the ledger is connected and events are consumed),
//! the server registry game servers heartbeat into ([`registry`]), the
//! players' accounts and sign-in ([`accounts`]) and joins ([`sessions`]), the operations API ([`ops`]) and the admin
//! dashboard. Every route is listed once, in [`api::OPERATIONS`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, RawPathParams, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{RequestExt, Router};
use respawn_api::overview::EventPath;
use respawn_store::ops::OpsStore;
use respawn_store::ratelimit::{Decision, Quota, RateLimiter};
use respawn_store::{Registry, StoreError};
use respawn_token::{ServerKey, TokenKey};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::accounts::{AccountsSlot, Passwords};
use crate::fleet::Fleet;
use crate::ledger::LedgerSlot;
use crate::metrics::PlatformMetrics;

pub mod accounts;
pub mod api;
pub mod ops;
pub mod registry;
pub mod sessions;
pub mod time_machine;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Largest request body the API reads.
const BODY_LIMIT: usize = 16 * 1024;

/// What the HTTP side serves from.
#[derive(Clone)]
pub struct HttpContext {
    pub metrics: Arc<PlatformMetrics>,
    pub ledger: LedgerSlot,
    /// The players' accounts, in the ledger's database once it is connected.
    pub accounts: AccountsSlot,
    pub passwords: Passwords,
    pub registry: Arc<dyn Registry>,
    pub ops: Arc<dyn OpsStore>,
    pub limiter: Arc<dyn RateLimiter>,
    pub fleet: Arc<Fleet>,
    pub alerts: Arc<crate::alerts::Alerts>,
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// What game servers' credentials are made from (`--server-key`): each
    /// server's is bound to its id, and the platform calls each server's
    /// admin API (kicks, announcements, drains, rollouts) with that
    /// server's own. Without it the registry API is closed.
    pub server_key: Option<ServerKey>,
    /// Signs session tokens; without it there is no login.
    pub sessions: Option<SessionSigner>,
    pub limits: Limits,
    /// More metrics text appended to `/metrics` (what a host process adds).
    pub extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The `--admin-token` given at start-up, while it holds.
    pub bootstrap_admin: ops::BootstrapAdmin,
    /// How events reach the ledger: through Kafka unless the host says they
    /// are written straight into the embedded one.
    pub events: EventPath,
    /// The last hour the dashboard charts.
    pub trends: Arc<crate::trends::TrendLog>,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext").field("registry", &self.registry).finish_non_exhaustive()
    }
}

impl HttpContext {
    /// The platform server's shared state on Redis when given (keys under
    /// `prefix`), else in memory; the rest of the context is the defaults,
    /// for the caller to fill in.
    pub fn with_stores(redis_url: Option<&str>, prefix: &str) -> Result<Self, StoreError> {
        use respawn_store::{memory, ratelimit, redis_store};
        let (registry, ops, limiter): (Arc<dyn Registry>, Arc<dyn OpsStore>, Arc<dyn RateLimiter>) = match redis_url {
            Some(url) => {
                let conn = redis_store::RedisConn::new(url, prefix)?;
                (
                    Arc::new(redis_store::RedisRegistry::new(conn.clone())),
                    Arc::new(redis_store::RedisOps::new(conn.clone())),
                    Arc::new(redis_store::RedisRateLimiter::new(conn)),
                )
            }
            None => (
                Arc::new(memory::MemoryRegistry::new()),
                Arc::new(memory::MemoryOps::new()),
                Arc::new(ratelimit::MemoryRateLimiter::default()),
            ),
        };
        let metrics = Arc::new(PlatformMetrics::new());
        let ledger = LedgerSlot::default();
        Ok(Self {
            alerts: Arc::new(crate::alerts::Alerts::new(metrics.clone(), ledger.clone(), ops.clone())),
            rollouts: Arc::new(crate::rollout::Rollouts::new(ops.clone(), crate::rollout::runner_name())),
            metrics,
            ledger,
            accounts: AccountsSlot::default(),
            passwords: Passwords::new().map_err(StoreError::Invalid)?,
            registry,
            ops,
            limiter,
            fleet: Arc::default(),
            server_key: None,
            sessions: None,
            limits: Limits::default(),
            extra_metrics: None,
            bootstrap_admin: ops::BootstrapAdmin::default(),
            events: EventPath::Kafka,
            trends: Arc::default(),
        })
    }
}

impl HttpContext {
    /// Starts a rollout over this platform's registry and zone admin API.
    pub async fn start_rollout(&self, plan: crate::rollout::Plan) -> Result<crate::rollout::Rollout, String> {
        self.rollouts.start(self.registry.clone(), self.fleet_admin(), plan).await
    }

    /// The zone servers' admin API, each server called with its own credential.
    pub fn fleet_admin(&self) -> Option<crate::fleet::FleetAdmin> {
        self.server_key.clone().map(crate::fleet::FleetAdmin::new)
    }
}

/// The key zone servers check session tokens with, and the lifetimes of
/// session and refresh tokens.
#[derive(Debug, Clone)]
pub struct SessionSigner {
    pub key: TokenKey,
    pub ttl: Duration,
    pub refresh_ttl: Duration,
}

impl SessionSigner {
    /// Short-lived session tokens (15 minutes) and refresh tokens for 30 days.
    pub fn new(key: TokenKey) -> Self {
        Self { key, ttl: Duration::from_secs(15 * 60), refresh_ttl: Duration::from_secs(30 * 24 * 3600) }
    }
}

/// Rate limits, each enforced through the shared [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sign-ups, sign-ins, refreshes and joins per client IP address, each route on its own.
    pub login_per_ip: Quota,
    /// Failed sign-ins per account (username) and per client IP address.
    pub failed_sign_ins_per_account: Quota,
    pub failed_sign_ins_per_ip: Quota,
    /// Operations API calls per operator token.
    pub api_per_token: Quota,
    /// Connections one IP address may hold open; 0: no cap (behind a proxy, cap there).
    pub connections_per_ip: u32,
    /// Load balancers whose `X-Forwarded-For` names the client the limits count.
    pub trusted_proxies: respawn_net::TrustedProxies,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_per_ip: Quota { burst: 20, period: Duration::from_secs(60) },
            failed_sign_ins_per_account: Quota { burst: 5, period: Duration::from_secs(300) },
            failed_sign_ins_per_ip: Quota { burst: 20, period: Duration::from_secs(300) },
            api_per_token: Quota { burst: 100, period: Duration::from_secs(10) },
            connections_per_ip: 64,
            trusted_proxies: respawn_net::TrustedProxies::default(),
        }
    }
}

/// Serves every route of the platform, and `also` (other routes of the
/// process, e.g. the play page), until `stop`, over TLS when given it;
/// behind the connection guard (at most `limits.connections_per_ip` per
/// address, deadlines on slow clients).
pub async fn serve(
    listener: tokio::net::TcpListener,
    context: HttpContext,
    also: Router,
    tls: Option<respawn_net::ServerTls>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let guarded =
        respawn_net::GuardedListener::new(listener, context.limits.connections_per_ip, context.metrics.guard.clone())
            .trusting(context.limits.trusted_proxies.clone())
            .serving_tls(tls);
    let app = also.merge(router(context));
    // axum provides the peer address (ConnectInfo) for a tapped listener of any kind.
    let guarded = axum::serve::ListenerExt::tap_io(guarded, |_| {});
    axum::serve(guarded, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Every route of [`api::OPERATIONS`], for [`serve`] or to merge into another router.
pub fn router(context: HttpContext) -> Router {
    let metrics = context.metrics.clone();
    api::OPERATIONS
        .iter()
        .fold(Router::new(), |router, op| {
            let enforced = axum::middleware::from_fn_with_state((context.clone(), op.auth), enforce);
            router.route(op.path, (op.route)().route_layer(enforced))
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(axum::middleware::from_fn_with_state(metrics, measure))
        .with_state(context)
}

/// Lets through only the callers an operation's [`api::Auth`] admits, before
/// anything of the request is read: the table is the one place a route's
/// role is written. Handlers of operator routes find the caller as an
/// `Extension<ops::Operator>`.
async fn enforce(
    State((ctx, auth)): State<(HttpContext, api::Auth)>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let admitted = match auth {
        api::Auth::Public => Ok(None),
        api::Auth::Server => {
            let acting_for = request
                .extract_parts::<RawPathParams>()
                .await
                .ok()
                .and_then(|params| params.iter().find(|(name, _)| *name == "id").map(|(_, id)| id.to_owned()));
            registry::authorize(&ctx, request.headers(), acting_for.as_deref())
                .map(|()| None)
                .map_err(IntoResponse::into_response)
        }
        api::Auth::ServerOrViewer => match registry::authorize(&ctx, request.headers(), None) {
            Ok(()) => Ok(None),
            Err(_) => ops::authenticate(&ctx, request.headers()).await.map(Some),
        },
        api::Auth::Operator(role) => {
            let action = format!("{} {}", request.method(), request.uri().path());
            ops::authorize(&ctx, request.headers(), role, &action).await.map(Some)
        }
        api::Auth::Player => match player(&ctx, request.headers()) {
            Ok(claims) => {
                request.extensions_mut().insert(claims);
                Ok(None)
            }
            Err(refused) => Err(refused.into()),
        },
    };
    match admitted {
        Ok(operator) => {
            if let Some(operator) = operator {
                request.extensions_mut().insert(operator);
            }
            next.run(request).await
        }
        Err(refused) => refused,
    }
}

/// The claims of a request's session token, checked with the signing key.
fn player(ctx: &HttpContext, headers: &HeaderMap) -> Result<respawn_token::Claims, Refusal> {
    let Some(signer) = &ctx.sessions else {
        return Err(Refusal(StatusCode::NOT_FOUND, accounts::SIGN_IN_DISABLED.into()));
    };
    let now = respawn_api::clock::unix_secs();
    signer
        .key
        .verify(bearer(headers).unwrap_or_default(), now)
        .map_err(|e| Refusal(StatusCode::UNAUTHORIZED, format!("session token refused: {e}; sign in or refresh")))
}

/// Response time and status class of every routed request, by route template.
async fn measure(
    State(metrics): State<Arc<PlatformMetrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.http(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn openapi() -> Response {
    json(StatusCode::OK, &api::openapi())
}

async fn dashboard() -> Response {
    served(HTML, DASHBOARD, Some(&content_security_policy("'self'")))
}

pub const HTML: &str = "text/html; charset=utf-8";
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";

/// A page's Content-Security-Policy: scripts and styles from this origin
/// only, and no inline code, so markup that reached the page runs nothing;
/// nothing framed; fetches and sockets only to `connect`.
pub fn content_security_policy(connect: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src {connect}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// A page or one of its files, with the headers each carries: no content
/// sniffing, no referrer, and the page's policy (`csp`).
pub fn served(content_type: &'static str, body: &'static str, csp: Option<&str>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(value) = csp.and_then(|csp| HeaderValue::from_str(csp).ok()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

async fn metrics_text(State(s): State<HttpContext>) -> impl IntoResponse {
    let pool = s.ledger.get().map(|l| l.pool_stats()).unwrap_or_default();
    let mut text = s.metrics.render(pool);
    if let Some(extra) = &s.extra_metrics {
        text.push_str(&extra());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn ready(State(s): State<HttpContext>) -> (StatusCode, &'static str) {
    match s.ledger.get() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "waiting for MySQL: events wait in Kafka meanwhile\n"),
    }
}

pub(crate) use respawn_api::clock::unix_ms as unix_now_ms;

/// The address of the client a request comes from: the peer's, or behind a
/// trusted proxy the one it forwarded. Per-address limits count it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub std::net::IpAddr);

impl axum::extract::FromRequestParts<HttpContext> for ClientIp {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ctx: &HttpContext,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let peer = peer.ok_or_else(|| text(StatusCode::INTERNAL_SERVER_ERROR, "no peer address"))?;
        Ok(Self(ctx.limits.trusted_proxies.client(peer, &parts.headers)))
    }
}

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// A refusal made where a whole response would be a large error value.
#[derive(Debug)]
pub(crate) struct Refusal(pub StatusCode, pub String);

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Self {
        text(r.0, r.1)
    }
}

/// A plain-text answer, one line.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(json) => (status, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A store's failure as an answer: bad input is the caller's, the rest 503.
pub(crate) fn store_failure(what: &str, e: StoreError) -> Response {
    match e {
        StoreError::Invalid(message) => text(StatusCode::BAD_REQUEST, message),
        other => text(StatusCode::SERVICE_UNAVAILABLE, format!("{what} unavailable: {other}")),
    }
}

/// Counts one request under `key`; the error is the answer (429 with `Retry-After`).
pub(crate) async fn rate_limit(ctx: &HttpContext, key: &str, quota: Quota, what: &str) -> Result<(), Response> {
    match ctx.limiter.check(key, quota).await {
        Ok(Decision::Allowed) => Ok(()),
        Ok(Decision::Limited { retry_after }) => {
            ctx.metrics.rate_limited(what);
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut answer = text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many {what} requests: retry in {secs} s (limit {} per {:?})", quota.burst, quota.period),
            );
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                answer.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Err(answer)
        }
        Err(e) => Err(store_failure("rate limiter", e)),
    }
}
