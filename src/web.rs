//! The browser client, embedded in the binary so one file deploys everything.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::server::AppState;

const INDEX: &str = include_str!("../web/index.html");
const APP: &str = include_str!("../web/app.js");
const CLIENT: &str = include_str!("../web/signaling-client.js");
const MANIFEST: &str = include_str!("../web/manifest.webmanifest");
const ICON: &str = include_str!("../web/icon.svg");
// Raster copies of the SVG, for installers and platforms that do not take SVG icons.
const ICON_192: &[u8] = include_bytes!("../web/icon-192.png");
const ICON_512: &[u8] = include_bytes!("../web/icon-512.png");

/// Routes serving the web client at `/`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/signaling-client.js",
            get(|| async { asset("text/javascript; charset=utf-8", CLIENT) }),
        )
        .route(
            "/manifest.webmanifest",
            get(|| async { asset("application/manifest+json", MANIFEST) }),
        )
        .route("/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
        .route(
            "/icon-192.png",
            get(|| async { asset("image/png", ICON_192) }),
        )
        .route(
            "/icon-512.png",
            get(|| async { asset("image/png", ICON_512) }),
        )
}

fn asset(content_type: &'static str, body: impl Into<Body>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.into(),
    )
}
