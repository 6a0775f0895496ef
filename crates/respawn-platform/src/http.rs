//! The platform server's HTTP side: `/metrics` and `/healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::metrics::PlatformMetrics;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<PlatformMetrics>,
    ledger: Arc<dyn Ledger>,
}

/// Serves until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<PlatformMetrics>,
    ledger: Arc<dyn Ledger>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(HttpState { metrics, ledger });
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
}

async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(s.ledger.pool_stats()))
}
