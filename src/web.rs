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
    ("/mesh.js", JS, include_bytes!("../web/mesh.js")),
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

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// A file in web/ that ASSETS misses would be absent from the binary, and the page
    /// would only find out in a browser (a module import failing with 404).
    #[test]
    fn every_file_of_the_app_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = match name.as_str() {
                "index.html" => "/".to_string(),
                _ => format!("/{name}"),
            };
            assert!(
                ASSETS.iter().any(|&(served, _, _)| served == path),
                "web/{name} is not in ASSETS"
            );
        }
    }
}
