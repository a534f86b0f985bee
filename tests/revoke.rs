//! `POST /auth/revoke`: a revoked session is refused new upgrades and its live connection
//! is closed with 1008, on whichever node holds it.

mod common;

use common::{Backend, settings, start_on};
use serde_json::{Value, json};

const API_KEY: &str = "backend-key-0123456789abcdef";

async fn revoke(base: &str, session: &Value, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/auth/revoke"))
        .json(&json!({ "sessionId": session }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn revocation_closes_the_live_connection_on_any_node(backend: Backend) {
    let mut s = settings();
    s.auth.api_keys = Some(API_KEY.into());
    let server = start_on(backend, s).await;
    let (mut watcher, _) = server.join("watcher", "r").await;
    let issued = server
        .state
        .issuer
        .as_ref()
        .unwrap()
        .issue("mallory", None, None);
    let mut victim = server.connect_with(&issued.token).await;
    victim.join("r").await;
    watcher.expect("peer_joined").await;

    // The request goes to the first node; the victim may sit on another.
    let base = server.http("");
    let session = json!(issued.claims.session_id);
    let (status, body) = revoke(&base, &session, Some(API_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connected"], true);
    assert_eq!(victim.expect_close().await, Some(1008));
    let left = watcher.expect("peer_left").await;
    assert_eq!(left["peerId"], victim.peer_id.as_str());
    assert_eq!(left["reason"], "revoked");

    // The same token no longer opens a connection or validates.
    let (status, body) = common::refused(server.ws_url(&issued.token)).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let validate = reqwest::Client::new()
        .get(server.http("/auth/validate"))
        .bearer_auth(&issued.token)
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 401);
    // Other sessions are unaffected.
    watcher.expect_nothing_pending().await;
}

#[tokio::test]
async fn revocation_on_one_node() {
    revocation_closes_the_live_connection_on_any_node(Backend::Memory).await;
}

#[tokio::test]
async fn revocation_across_three_nodes_on_redis() {
    revocation_closes_the_live_connection_on_any_node(Backend::Redis(3)).await;
}

#[tokio::test]
async fn revocation_needs_a_valid_api_key_and_a_session_id() {
    let server = start_on(Backend::Memory, settings()).await;
    let base = server.http("");
    let (status, body) = revoke(&base, &json!("abc"), Some(API_KEY)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("revocation_disabled"))
    );

    let mut s = settings();
    s.auth.api_keys = Some(API_KEY.into());
    let server = start_on(Backend::Memory, s).await;
    let base = server.http("");
    assert_eq!(revoke(&base, &json!("abc"), None).await.0, 401);
    assert_eq!(
        revoke(&base, &json!("abc"), Some("wrong-key-0000000000000"))
            .await
            .0,
        401
    );
    for bad in [
        json!(null),
        json!(5),
        json!(""),
        json!("a b"),
        json!("x".repeat(65)),
    ] {
        let (status, body) = revoke(&base, &bad, Some(API_KEY)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains("sessionId"));
    }
    // A session with no live connection is still revoked for later upgrades.
    let issued = server
        .state
        .issuer
        .as_ref()
        .unwrap()
        .issue("later", None, None);
    let (status, body) = revoke(&base, &json!(issued.claims.session_id), Some(API_KEY)).await;
    assert_eq!((status, body["connected"].as_bool()), (200, Some(false)));
    assert_eq!(common::refused(server.ws_url(&issued.token)).await.0, 401);
}
