//! Every HTTP route of a `serve` node (token issuance, validation, revocation, the
//! WebSocket upgrade's checks, health, metrics, the web client) on arbitrary request
//! heads: nothing panics, and no input is answered with a 500 (an internal error is a bug
//! for any input a client can send).
//!
//! Input: a request head as text, `METHOD /path?query` on the first line, then
//! `Name: value` lines; then, after an empty line, the body.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use switchboard::bus::MemoryBus;
use switchboard::config::{Config, Role, Settings};
use switchboard::server::{AppState, app};
use switchboard::store::MemoryStore;
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut settings = Settings::default();
        settings.auth.signing.auth_secret = Some("fuzz-secret-0123456789-0123456789-abcdef".into());
        let config = Config::from_settings(&settings, Role::Serve).expect("a valid config");
        let state = runtime().block_on(async {
            AppState::with_backend(
                config,
                Role::Serve,
                std::sync::Arc::new(MemoryStore::new()),
                std::sync::Arc::new(MemoryBus::new()),
            )
            .await
            .expect("a node")
        });
        app(state)
    })
}

/// The request `text` describes, if it is one `http` can build.
fn request(text: &str) -> Option<Request<Body>> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let (method, uri) = lines.next()?.split_once(' ')?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    let mut request = builder.body(Body::from(body.to_owned())).ok()?;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Some(request)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(request) = request(text) else {
        return;
    };
    let router = router().clone();
    let response = runtime()
        .block_on(router.oneshot(request))
        .expect("the router is infallible");
    assert_ne!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "a client's request caused an internal error"
    );
});
