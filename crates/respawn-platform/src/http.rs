//! The platform server's HTTP side: `/metrics`, `/healthz` (the process
//! answers) and `/readyz` (the ledger is connected and events are consumed).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::metrics::PlatformMetrics;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<PlatformMetrics>,
    ledger: LedgerSlot,
}

/// The ledger once connected; empty while the platform server waits for MySQL.
pub type LedgerSlot = Arc<OnceLock<Arc<dyn Ledger>>>;

/// Serves until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<PlatformMetrics>,
    ledger: LedgerSlot,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(HttpState { metrics, ledger });
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
}

async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    let pool = s.ledger.get().map(|l| l.pool_stats()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(pool))
}

async fn ready(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match s.ledger.get() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "waiting for MySQL: events wait in Kafka meanwhile\n"),
    }
}
