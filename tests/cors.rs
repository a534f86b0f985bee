//! CORS on the real binary: a page of an allowed origin may fetch a token and import the
//! signaling client module; a page of any other origin gets no CORS header, so its browser
//! blocks the call. `ALLOWED_ORIGINS` governs both, as it governs `/ws/signal`.

mod common;

use common::SECRET;
use common::process::Running;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};

const APP: &str = "https://app.example";
const FOREIGN: &str = "https://evil.example";

/// A development node allowing only [`APP`].
fn node_allowing_app() -> (Running, String) {
    Running::start(&[("AUTH_SECRET", SECRET), ("ALLOWED_ORIGINS", APP)])
}

/// What a browser sends before a cross-origin JSON `POST`.
async fn preflight(address: &str, path: &str, origin: &str, headers: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("http://{address}{path}"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .send()
        .await
        .unwrap()
}

async fn post_token(address: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{address}/auth/token"))
        .header(header::ORIGIN, origin)
        .json(&serde_json::json!({"userId": "alice"}))
        .send()
        .await
        .unwrap()
}

async fn get_from(address: &str, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .header(header::ORIGIN, origin)
        .send()
        .await
        .unwrap()
}

/// The values of a comma-separated header, lower-cased.
fn list(headers: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

fn allow_origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_with_what_the_post_needs() {
    let (_node, address) = node_allowing_app();
    let response = preflight(&address, "/auth/token", APP, "content-type,authorization").await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(allow_origin(headers), Some(APP), "{headers:?}");
    assert!(
        list(headers, header::VARY).contains(&"origin".into()),
        "{headers:?}"
    );
    assert!(list(headers, header::ACCESS_CONTROL_ALLOW_METHODS).contains(&"post".into()));
    let allowed = list(headers, header::ACCESS_CONTROL_ALLOW_HEADERS);
    for needed in ["content-type", "authorization"] {
        assert!(allowed.contains(&needed.into()), "{needed} in {allowed:?}");
    }
    let max_age: u64 = headers[header::ACCESS_CONTROL_MAX_AGE]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age > 0);
    assert!(
        headers
            .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
            .is_none(),
        "no cookies are involved, so none are allowed"
    );

    // The client asks /auth/validate why an upgrade failed, with the token in a header.
    let response = preflight(&address, "/auth/validate", APP, "authorization").await;
    assert!(response.status().is_success());
    assert_eq!(allow_origin(response.headers()), Some(APP));
}

#[tokio::test]
async fn a_foreign_origin_gets_no_cors_headers() {
    let (_node, address) = node_allowing_app();
    let response = preflight(&address, "/auth/token", FOREIGN, "content-type").await;
    assert_eq!(allow_origin(response.headers()), None, "{response:?}");
    // The server still issues to non-browser clients; the page's browser hides the answer.
    let response = post_token(&address, FOREIGN).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(response.headers()), None);
    let response = get_from(&address, "/signaling-client.js", FOREIGN).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(response.headers()), None);
}

#[tokio::test]
async fn the_token_post_from_an_allowed_origin_carries_the_header_even_when_refused() {
    let (_node, address) = node_allowing_app();
    let response = post_token(&address, APP).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(response.headers()), Some(APP));
    assert!(list(response.headers(), header::VARY).contains(&"origin".into()));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["token"].is_string(), "{body}");

    // A refusal must be readable by the page too, or it sees only "network error".
    let response = reqwest::Client::new()
        .post(format!("http://{address}/auth/token"))
        .header(header::ORIGIN, APP)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(allow_origin(response.headers()), Some(APP));
}

#[tokio::test]
async fn the_client_module_is_importable_from_an_allowed_origin_and_the_app_is_not() {
    let (_node, address) = node_allowing_app();
    let response = get_from(&address, "/signaling-client.js", APP).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(response.headers()), Some(APP));
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // The package's source is what the node serves: one copy of the client.
    let served = response.text().await.unwrap();
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js/src/signaling-client.js"),
    )
    .unwrap();
    assert_eq!(served, source);

    let response = get_from(&address, "/app.js", APP).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        allow_origin(response.headers()),
        None,
        "the app is not a library"
    );
}

#[tokio::test]
async fn development_without_allowed_origins_admits_any_origin() {
    let (_node, address) = Running::start(&[("AUTH_SECRET", SECRET)]);
    let response = preflight(&address, "/auth/token", FOREIGN, "content-type").await;
    assert_eq!(allow_origin(response.headers()), Some(FOREIGN));
}

#[tokio::test]
async fn production_admits_only_the_listed_origins() {
    let (_node, address) = Running::start(&[
        ("SWITCHBOARD_ENV", "production"),
        ("AUTH_SECRET", SECRET),
        ("TOKEN_ISSUANCE", "open"),
        ("ALLOW_OPEN_ISSUANCE", "true"),
        ("ALLOWED_ORIGINS", APP),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let response = preflight(&address, "/auth/token", APP, "content-type").await;
    assert_eq!(allow_origin(response.headers()), Some(APP));
    let response = post_token(&address, FOREIGN).await;
    assert_eq!(allow_origin(response.headers()), None);
}
