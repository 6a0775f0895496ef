//! The browser client (`web/play.html`), served at `/` next to the platform
//! server's routes by `respawn up` and `respawn platform`: it logs in through
//! `POST /v1/sessions` on the same address.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PLAY_PAGE: &str = include_str!("../web/play.html");

/// `GET /`: the play page.
pub fn play_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(play_page))
}

async fn play_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PLAY_PAGE).into_response()
}
