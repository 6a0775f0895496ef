//! The browser client (`web/play.html` with its script and style sheet),
//! served at `/` next to the platform server's routes by `respawn up` and
//! `respawn platform`: it logs in through `POST /v1/sessions` on the same
//! address and plays over WebSockets to whichever zone server it is sent to.

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use respawn_platform::http::{content_security_policy, served, CSS, HTML, JAVASCRIPT};

/// `GET /` (the play page), `/play.js` and `/play.css`.
pub fn play_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(play_page))
        .route("/play.js", get(|| async { served(JAVASCRIPT, include_str!("../web/play.js"), None) }))
        .route("/play.css", get(|| async { served(CSS, include_str!("../web/play.css"), None) }))
}

/// The page may talk to this origin and to zone servers anywhere (their
/// addresses come from the registry).
async fn play_page() -> Response {
    served(HTML, include_str!("../web/play.html"), Some(&content_security_policy("'self' ws: wss:")))
}
