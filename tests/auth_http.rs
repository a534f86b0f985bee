//! The Auth service over HTTP: issuance modes, validation, every error status, health.

mod common;

use common::{settings, start, start_role};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::auth::Issuance;
use switchboard::config::Role;

const API_KEY: &str = "app-backend-key-0123456789";

async fn post_token(
    base: &str,
    body: &str,
    content_type: &str,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/auth/token"))
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn tokens_and_joins_carry_ice_servers_with_turn_credentials() {
    let mut s = settings();
    s.ice.stun_urls = Some("stun:127.0.0.1:3478".into());
    s.ice.turn_urls = Some("turn:127.0.0.1:3478?transport=udp".into());
    s.ice.turn_secret = Some("turn-shared-secret".into());
    let server = start(s).await;
    let (status, body) = post_token(
        &server.http(""),
        r#"{"userId":"alice"}"#,
        "application/json",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let servers = &body["iceServers"];
    assert_eq!(servers[0], json!({"urls": ["stun:127.0.0.1:3478"]}));
    assert_eq!(
        servers[1]["urls"],
        json!(["turn:127.0.0.1:3478?transport=udp"])
    );
    let username = servers[1]["username"].as_str().unwrap();
    let expiry: u64 = username.split_once(':').unwrap().0.parse().unwrap();
    assert!(expiry <= body["expiresAt"].as_u64().unwrap());
    assert!(
        !username.contains("alice"),
        "no user name in TURN usernames"
    );
    assert!(servers[1]["credential"].as_str().unwrap().len() == 28);

    // joined carries them too, for the connection's own session.
    let mut client = server.connect_with(body["token"].as_str().unwrap()).await;
    let joined = client.join("r").await;
    assert_eq!(joined["iceServers"][1]["urls"], servers[1]["urls"]);
    assert_eq!(joined["iceServers"][1]["username"], servers[1]["username"]);
}

#[tokio::test]
async fn without_ice_settings_no_servers_are_handed_out() {
    let server = start(settings()).await;
    let (_, body) = post_token(
        &server.http(""),
        r#"{"userId":"a"}"#,
        "application/json",
        None,
    )
    .await;
    assert_eq!(body["iceServers"], json!([]));
    let (_, joined) = server.join("b", "r").await;
    assert!(joined.get("iceServers").is_none(), "{joined}");
}

#[tokio::test]
async fn open_issuance_mints_tokens_that_validate() {
    let server = start(settings()).await;
    let base = server.http("");
    let (status, body) = post_token(
        &base,
        r#"{"userId":"alice","roomId":"r1"}"#,
        "application/json",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let claims = server.state.verifier.verify(token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.room.as_deref(), Some("r1"));
    assert_eq!(body["peerId"], format!("alice-{}", claims.session_id));
    assert_eq!(body["expiresAt"], claims.exp);
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.session_id.len(), 32, "128 random bits, hex");

    // Bearer header and ?token= both validate.
    let client = reqwest::Client::new();
    let by_header: Value = client
        .get(format!("{base}/auth/validate"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_header["sub"], "alice");
    assert_eq!(by_header["session_id"], claims.session_id.as_str());
    assert_eq!(by_header["peer_id"], body["peerId"]);
    assert_eq!(by_header["room"], "r1");
    assert_eq!(by_header["expires_at"], claims.exp);
    let by_query = client
        .get(format!("{base}/auth/validate?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);

    // The minted token opens a signaling connection.
    server.connect_with(token).await;
}

#[tokio::test]
async fn validate_refuses_bad_tokens_with_401_json() {
    let server = start(settings()).await;
    for url in ["/auth/validate", "/auth/validate?token=garbage"] {
        let response = reqwest::get(server.http(url)).await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(!body["message"].as_str().unwrap().contains("garbage"));
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = start(settings()).await;
    let base = server.http("");
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        (
            "{nope",
            "application/json",
            400,
            "invalid_json",
            "JSON object",
        ),
        ("[]", "application/json", 400, "invalid_json", "JSON object"),
        (
            "{}",
            "application/json",
            400,
            "invalid_request",
            "userId is required",
        ),
        (
            r#"{"userId":""}"#,
            "application/json",
            400,
            "invalid_request",
            "must not be empty",
        ),
        (
            r#"{"userId":5}"#,
            "application/json",
            400,
            "invalid_request",
            "must be a string",
        ),
        (
            r#"{"userId":"a\u0000b"}"#,
            "application/json",
            400,
            "invalid_request",
            "control",
        ),
        (
            r#"{"userId":"ok","roomId":"r\n"}"#,
            "application/json",
            400,
            "invalid_request",
            "roomId",
        ),
        (
            r#"{"userId":"alice"}"#,
            "text/plain",
            415,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (body, content_type, status, code, needle) in cases {
        let (got, json) = post_token(&base, body, content_type, None).await;
        assert_eq!(got.as_u16(), *status, "{body}: {json}");
        assert_eq!(json["error"], *code, "{body}: {json}");
        assert!(
            json["message"].as_str().unwrap().contains(needle),
            "{body}: {json}"
        );
    }
    let long_user = json!({"userId": "u".repeat(129)}).to_string();
    assert_eq!(
        post_token(&base, &long_user, "application/json", None)
            .await
            .0,
        400
    );
    let max_user = json!({"userId": "u".repeat(128)}).to_string();
    assert_eq!(
        post_token(&base, &max_user, "application/json", None)
            .await
            .0,
        200
    );

    let huge = json!({"userId": "a", "pad": "p".repeat(20 * 1024)}).to_string();
    let (status, json) = post_token(&base, &huge, "application/json", None).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"], "payload_too_large");
}

#[tokio::test]
async fn api_key_mode_requires_a_valid_key() {
    let mut s = settings();
    s.auth.token_issuance = Some(Issuance::ApiKey);
    s.auth.api_keys = Some(format!("other-key-abcdefghijklmnop, {API_KEY}"));
    let server = start_role(s, Role::Auth).await;
    let base = server.http("");
    let body = r#"{"userId":"alice"}"#;

    let (status, json) = post_token(&base, body, "application/json", None).await;
    assert_eq!(status, 401);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("API key is required")
    );
    let (status, json) = post_token(
        &base,
        body,
        "application/json",
        Some("wrong-key-000000000000"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(!json["message"].as_str().unwrap().contains("wrong-key"));
    let (status, json) = post_token(&base, body, "application/json", Some(API_KEY)).await;
    assert_eq!(status, 200, "{json}");
}

#[tokio::test]
async fn every_role_answers_health_and_only_its_own_routes() {
    for role in [Role::Serve, Role::Auth, Role::Signal] {
        let server = start_role(settings(), role).await;
        for path in ["/health/live", "/health/ready"] {
            let response = reqwest::get(server.http(path)).await.unwrap();
            assert_eq!(response.status(), 200, "{role:?} {path}");
        }
        let validate = reqwest::get(server.http("/auth/validate"))
            .await
            .unwrap()
            .status()
            .as_u16();
        let signal = reqwest::get(server.http("/ws/signal"))
            .await
            .unwrap()
            .status()
            .as_u16();
        let web = reqwest::get(server.http("/"))
            .await
            .unwrap()
            .status()
            .as_u16();
        match role {
            Role::Serve => assert_eq!((validate, signal, web), (401, 401, 200)),
            Role::Auth => assert_eq!((validate, signal, web), (401, 404, 404)),
            Role::Signal => assert_eq!((validate, signal, web), (404, 401, 200)),
            Role::Token => unreachable!(),
        }
        let wrong_method = reqwest::Client::new()
            .delete(server.http("/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_method.status(), 405);
        let body: Value = wrong_method.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        let missing = reqwest::get(server.http("/nope")).await.unwrap();
        assert_eq!(missing.status(), 404);
        let body: Value = missing.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
}

#[tokio::test]
async fn draining_fails_readiness_refuses_upgrades_and_closes_with_1012() {
    let server = start(settings()).await;
    let ready = server.http("/health/ready");
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 200);
    let (mut client, _) = server.join("a", "r").await;

    server.state.start_draining();
    assert_eq!(client.expect("goaway").await["reason"], "shutdown");
    assert_eq!(client.expect_close().await, Some(1012));
    let response = reqwest::get(&ready).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        reqwest::get(server.http("/health/live"))
            .await
            .unwrap()
            .status(),
        200
    );
    let token = server.token("b", None);
    let (status, body) = common::refused(server.ws_url(&token)).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "shutting_down");

    let addr = server.addr;
    server.stop().await;
    assert!(
        reqwest::get(format!("http://{addr}/health/live"))
            .await
            .is_err()
    );
}

/// Asserts `token` is refused with 401 both at the upgrade and at `GET /auth/validate`, with
/// a message mentioning `needle` and never the token.
async fn refused_everywhere(server: &common::TestServer, token: &str, needle: &str) {
    let (status, body) = common::refused(server.ws_url(token)).await;
    assert_eq!(status, 401, "upgrade, {needle:?}: {body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert!(!message.contains(token));

    let response = reqwest::Client::new()
        .get(server.http("/auth/validate"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "validate, {needle:?}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert!(!message.contains(token));
}

#[tokio::test]
async fn tokens_signed_with_the_right_key_but_unsafe_claims_or_headers_are_refused() {
    use common::{SECRET, claims, forge};
    use jsonwebtoken::{Algorithm, Header};
    let server = start(settings()).await;
    let hs256 = Header::new(Algorithm::HS256);
    let sign = |header: &Header, c: &Value| forge(header, c, SECRET.as_bytes());
    let now = switchboard::auth::unix_now();

    // The same forging, with nothing unsafe, is accepted: each refusal below is for its one change.
    let honest = sign(&hs256, &claims("a"));
    server.connect_with(&honest).await;
    let response = reqwest::Client::new()
        .get(server.http("/auth/validate"))
        .bearer_auth(&honest)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let mut crit = hs256.clone();
    crit.crit = Some(vec!["exp".into()]);
    refused_everywhere(&server, &sign(&crit, &claims("a")), "crit").await;

    let mut future_iat = claims("a");
    future_iat["iat"] = json!(now + 3600);
    refused_everywhere(&server, &sign(&hs256, &future_iat), "iat").await;

    let mut future_nbf = claims("a");
    future_nbf["nbf"] = json!(now + 3600);
    refused_everywhere(&server, &sign(&hs256, &future_nbf), "not valid yet").await;

    // 1 January 3000.
    let mut forever = claims("a");
    forever["exp"] = json!(32_503_680_000u64);
    refused_everywhere(&server, &sign(&hs256, &forever), "86400 s maximum").await;

    let mut no_iat = claims("a");
    no_iat.as_object_mut().unwrap().remove("iat");
    refused_everywhere(&server, &sign(&hs256, &no_iat), "iat").await;

    let mut bidi_sub = claims("a");
    bidi_sub["sub"] = json!("admin\u{202E}txt.exe");
    refused_everywhere(&server, &sign(&hs256, &bidi_sub), "sub").await;
}

#[tokio::test]
async fn the_longest_lifetime_accepted_is_the_configured_one() {
    use common::{SECRET, claims, forge};
    use jsonwebtoken::{Algorithm, Header};
    let mut s = settings();
    s.auth.token_ttl = Duration::from_secs(60);
    s.auth.token_max_lifetime = Duration::from_secs(300);
    let server = start(s).await;
    let hs256 = Header::new(Algorithm::HS256);
    let now = switchboard::auth::unix_now();
    let mut within = claims("a");
    within["exp"] = json!(now + 300);
    server
        .connect_with(&forge(&hs256, &within, SECRET.as_bytes()))
        .await;
    // `claims` lives 600 s: twice what this node accepts.
    let beyond = forge(&hs256, &claims("a"), SECRET.as_bytes());
    refused_everywhere(&server, &beyond, "300 s maximum").await;
}

#[tokio::test]
async fn ids_with_bidi_controls_or_line_separators_are_refused_at_issuance() {
    let server = start(settings()).await;
    let base = server.http("");
    let cases = [
        (
            json!({"userId": "admin\u{202E}gpj.exe"}),
            "userId",
            "bidirectional",
        ),
        (
            json!({"userId": "\u{2066}alice"}),
            "userId",
            "bidirectional",
        ),
        (json!({"userId": "a\u{200F}"}), "userId", "bidirectional"),
        (json!({"userId": "a\u{061C}"}), "userId", "bidirectional"),
        (
            json!({"userId": "line\u{2028}break"}),
            "userId",
            "separator",
        ),
        (json!({"userId": "para\u{2029}"}), "userId", "separator"),
        (
            json!({"userId": "alice", "roomId": "r\u{202D}"}),
            "roomId",
            "bidirectional",
        ),
    ];
    for (body, field, needle) in cases {
        let (status, json) = post_token(&base, &body.to_string(), "application/json", None).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert_eq!(json["error"], "invalid_request", "{body}: {json}");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.starts_with(field) && message.contains(needle),
            "{body}: {message}"
        );
    }
    // Right-to-left scripts and joiners are names, not attacks.
    let body = json!({"userId": "שלום", "roomId": "👩\u{200D}💻"}).to_string();
    let (status, json) = post_token(&base, &body, "application/json", None).await;
    assert_eq!(status, 200, "{json}");
}

#[tokio::test]
async fn room_ids_with_bidi_controls_or_line_separators_get_invalid_message_on_the_socket() {
    let server = start(settings()).await;
    let (mut bob, _) = server.join("bob", "r").await;
    let mut alice = server.connect("alice").await;
    for (id, room, needle) in [
        (1, "r\u{202E}", "bidirectional"),
        (2, "\u{2067}r", "bidirectional"),
        (3, "r\u{2028}", "separator"),
        (4, "r\u{2029}", "separator"),
    ] {
        alice
            .send(json!({"type": "join", "roomId": room, "id": id}))
            .await;
        let error = alice.expect_error("invalid_message").await;
        assert_eq!(error["ref"], id);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("roomId") && message.contains(needle),
            "{message}"
        );
    }
    // The refusals cost nothing: alice still joins, and bob hears only that join.
    alice.join("r").await;
    assert_eq!(
        bob.expect("peer_joined").await["peerId"],
        alice.peer_id.as_str()
    );
    bob.expect_nothing_pending().await;
}

// ---- Oversized bodies are refused with 413 before they are read ----
// Raw TCP: the attacker declares or streams more than the limit and never finishes.

/// Sends `request` raw and returns the answer's head and body, within 2 s.
async fn raw_answer(addr: std::net::SocketAddr, request: &[u8]) -> (String, Value) {
    common::raw::exchange(addr, request, Duration::from_secs(2)).await
}

#[tokio::test]
async fn declared_huge_body_gets_413_before_it_is_sent() {
    let server = start(settings()).await;
    for path in ["/auth/token", "/auth/revoke"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000000000\r\n\r\n",
            server.addr
        );
        let (head, body) = raw_answer(server.addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
        assert_eq!(body["error"], "payload_too_large");
        assert!(body["message"].as_str().unwrap().contains("16384 bytes"));
    }
    // At the limit, a declared length is read as usual.
    let (status, body) = post_token(
        &server.http(""),
        &format!(r#"{{"userId": "a", "pad": "{}"}}"#, "x".repeat(16_000)),
        "application/json",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn chunked_body_above_the_limit_gets_413() {
    let server = start(settings()).await;
    let mut request = format!(
        "POST /auth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        server.addr
    )
    .into_bytes();
    let chunk = "x".repeat(4096);
    for _ in 0..5 {
        request.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    // No last chunk: the server must not wait for the end of a body it will refuse.
    let (head, body) = raw_answer(server.addr, &request).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body["error"], "payload_too_large");
}

/// `count` token requests from this machine, optionally claiming to forward `client`;
/// returns how many got 200 and the first refusal's status.
async fn issue_many(base: &str, count: usize, client: Option<&str>) -> (usize, Option<u16>) {
    let http = reqwest::Client::new();
    let (mut issued, mut refused) = (0, None);
    for _ in 0..count {
        let mut request = http
            .post(format!("{base}/auth/token"))
            .json(&json!({"userId": "bench"}));
        if let Some(client) = client {
            request = request.header("x-forwarded-for", client);
        }
        match request.send().await.unwrap().status().as_u16() {
            200 => issued += 1,
            status => refused = refused.or(Some(status)),
        }
    }
    (issued, refused)
}

#[tokio::test]
async fn development_spares_loopback_clients_the_per_ip_issuance_rate() {
    let mut s = settings();
    s.limits.rate_per_ip_per_minute = 5;
    // 127.0.0.1 forwards for others here, so a forwarded client is a remote one.
    s.limits.trusted_proxies = Some("127.0.0.1".into());
    let server = start(s).await;
    let base = server.http("");
    // The README's benchmark asks for hundreds of tokens from the machine the node runs on.
    assert_eq!(issue_many(&base, 60, None).await, (60, None));
    // Upgrades from loopback are spared too (the bench connects after each token).
    for user in ["a", "b", "c", "d", "e", "f", "g"] {
        server.connect(user).await;
    }
    // A client elsewhere is held to the rate, in development as well.
    assert_eq!(
        issue_many(&base, 6, Some("192.0.2.7")).await,
        (5, Some(429))
    );
}

#[tokio::test]
async fn development_lets_loopback_hold_more_pending_connections_than_the_per_ip_cap() {
    // No TRUSTED_PROXIES: that list is exempt from the cap in every mode.
    let server = start(settings()).await;
    // The bench opens more connections at once than MAX_PENDING_PER_IP (64): none of
    // them is cut as the oldest pending one, each gets its token.
    let mut sockets = Vec::new();
    for _ in 0..80 {
        sockets.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let body = r#"{"userId":"bench"}"#;
    let request = format!(
        "POST /auth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    for mut socket in sockets {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[tokio::test]
async fn production_holds_loopback_clients_to_the_per_ip_issuance_rate() {
    let mut s = common::production_settings();
    s.limits.rate_per_ip_per_minute = 5;
    let server = start(s).await;
    assert_eq!(issue_many(&server.http(""), 6, None).await, (5, Some(429)));
}
