//! The browser client, embedded in the binary so one file deploys everything.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::cors::CorsLayer;

const JS: &str = "text/javascript; charset=utf-8";

/// Path, content type and body of every file the app is made of. The PNGs are raster
/// copies of the SVG icon, for installers and platforms that do not take SVG icons.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    ("/app.js", JS, include_bytes!("../web/app.js")),
    (
        "/manifest.webmanifest",
        "application/manifest+json",
        include_bytes!("../web/manifest.webmanifest"),
    ),
    (
        "/icon.svg",
        "image/svg+xml",
        include_bytes!("../web/icon.svg"),
    ),
    (
        "/icon-192.png",
        "image/png",
        include_bytes!("../web/icon-192.png"),
    ),
    (
        "/icon-512.png",
        "image/png",
        include_bytes!("../web/icon-512.png"),
    ),
];

/// The signaling client module: pages of other origins may `import` it (with CORS), so it
/// is served apart from the app's own files.
const CLIENT_MODULE: (&str, &[u8]) = (
    "/signaling-client.js",
    include_bytes!("../clients/js/src/signaling-client.js"),
);

/// Routes serving the web client at `/`; they need no state, so fit any router. `cors`
/// admits pages of other origins to the signaling client module (and to nothing else:
/// the app itself is for its own origin).
pub fn router<S: Clone + Send + Sync + 'static>(cors: CorsLayer) -> Router<S> {
    let (path, body) = CLIENT_MODULE;
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
        .route(
            path,
            get(move || async move { asset(JS, body) }).layer(cors),
        )
}

fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
