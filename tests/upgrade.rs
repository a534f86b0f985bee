//! Every way an upgrade to /ws/signal is refused before a WebSocket exists.

mod common;

use common::{SECRET, claims, forge, refused, settings, start};
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn assert_401(server: &common::TestServer, token: &str, needle: &str) {
    let (status, body) = refused(server.ws_url(token)).await;
    assert_eq!(status, 401, "token {needle:?}: {body}");
    assert_eq!(body["error"], "unauthorized");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    assert!(!message.contains(token) || token.is_empty());
}

#[tokio::test]
async fn missing_and_garbage_tokens_get_401_json() {
    let server = start(settings()).await;
    let (status, body) = refused(format!("ws://{}/ws/signal", server.addr)).await;
    assert_eq!(status, 401);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("token is required")
    );
    assert_401(&server, "garbage", "malformed").await;
    assert_401(&server, "a.b.c", "malformed").await;
}

#[tokio::test]
async fn wrong_secret_expired_and_future_tokens_get_401() {
    let server = start(settings()).await;
    let hs256 = Header::new(Algorithm::HS256);
    assert_401(
        &server,
        &forge(&hs256, &claims("a"), b"another-secret-another-secret-xx"),
        "signature",
    )
    .await;

    let mut expired = claims("a");
    expired["exp"] = json!(switchboard::auth::unix_now() - 120);
    assert_401(
        &server,
        &forge(&hs256, &expired, SECRET.as_bytes()),
        "expired",
    )
    .await;

    let mut future = claims("a");
    future["nbf"] = json!(switchboard::auth::unix_now() + 300);
    assert_401(
        &server,
        &forge(&hs256, &future, SECRET.as_bytes()),
        "not valid yet",
    )
    .await;
}

#[tokio::test]
async fn other_algorithms_including_none_are_refused() {
    let server = start(settings()).await;
    let hs512 = forge(
        &Header::new(Algorithm::HS512),
        &claims("a"),
        SECRET.as_bytes(),
    );
    assert_401(&server, &hs512, "HS256").await;
    let hs384 = forge(
        &Header::new(Algorithm::HS384),
        &claims("a"),
        SECRET.as_bytes(),
    );
    assert_401(&server, &hs384, "HS256").await;

    // alg "none": header and claims with an empty signature.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("a").to_string())
    );
    assert_401(&server, &none, "HS256").await;
}

#[tokio::test]
async fn missing_or_wrong_claims_are_refused() {
    let server = start(settings()).await;
    let hs256 = Header::new(Algorithm::HS256);
    let sign = |c: &serde_json::Value| forge(&hs256, c, SECRET.as_bytes());

    let mut no_sub = claims("a");
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_401(&server, &sign(&no_sub), "sub").await;

    let mut empty_sub = claims("a");
    empty_sub["sub"] = json!("");
    assert_401(&server, &sign(&empty_sub), "sub").await;

    let mut long_sub = claims("a");
    long_sub["sub"] = json!("x".repeat(129));
    assert_401(&server, &sign(&long_sub), "sub").await;

    let mut no_session = claims("a");
    no_session.as_object_mut().unwrap().remove("session_id");
    assert_401(&server, &sign(&no_session), "claim").await;

    let mut no_exp = claims("a");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_401(&server, &sign(&no_exp), "exp").await;

    let mut aud = claims("a");
    aud["aud"] = json!("someone-else");
    assert_401(&server, &sign(&aud), "audience").await;

    let mut iss = claims("a");
    iss["iss"] = json!("evil");
    assert_401(&server, &sign(&iss), "issuer").await;
}

#[tokio::test]
async fn oversized_token_is_refused_unread() {
    let server = start(settings()).await;
    // Signed with the server's own secret: read, it would be accepted.
    let mut big = claims("a");
    big["pad"] = json!("p".repeat(5000));
    let token = forge(&Header::new(Algorithm::HS256), &big, SECRET.as_bytes());
    assert!(token.len() > 4096);
    assert_401(&server, &token, "longer than 4096").await;
    // Not a token at all: refused for its length, not as malformed, so it was never parsed.
    assert_401(&server, &"x".repeat(4097), "longer than 4096").await;
    // At the limit it is read, and found malformed.
    assert_401(&server, &"x".repeat(4096), "malformed").await;
}

#[tokio::test]
async fn foreign_origin_gets_403_and_allowed_or_absent_origin_passes() {
    let mut s = settings();
    s.auth.allowed_origins = Some("https://app.example.com".into());
    let server = start(s).await;
    let token = server.token("a", None);

    let mut request = server.ws_url(&token).into_client_request().unwrap();
    request.headers_mut().insert(
        "origin",
        HeaderValue::from_static("https://evil.example.net"),
    );
    let (status, body) = refused(request).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden_origin");

    let mut request = server.ws_url(&token).into_client_request().unwrap();
    request.headers_mut().insert(
        "origin",
        HeaderValue::from_static("https://app.example.com"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("allowed origin");

    // No Origin header at all: a non-browser client, unaffected.
    let other = server.token("b", None);
    server.connect_with(&other).await;
}

#[tokio::test]
async fn subprotocol_token_is_accepted_and_never_echoed() {
    let server = start(settings()).await;
    let token = server.token("a", None);
    let mut request = format!("ws://{}/ws/signal", server.addr)
        .into_client_request()
        .unwrap();
    let offered = format!("switchboard.v1, bearer.{token}");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&offered).unwrap(),
    );
    let (_ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    let selected = response.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(selected, "switchboard.v1");
    for (_, value) in response.headers() {
        assert!(!value.to_str().unwrap_or_default().contains(&token));
    }

    // A bad token in the subprotocol is refused like one in the query.
    let mut request = format!("ws://{}/ws/signal", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("switchboard.v1, bearer.nope"),
    );
    assert_eq!(refused(request).await.0, 401);
}

#[tokio::test]
async fn plain_http_with_a_valid_token_gets_426() {
    let server = start(settings()).await;
    let token = server.token("a", None);
    let response = reqwest::get(server.http(&format!("/ws/signal?token={token}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 426);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upgrade_required");
}

#[tokio::test]
async fn other_methods_on_the_signaling_path_get_the_routers_answers() {
    // GET upgrades are answered before the router; every other method still reaches it.
    let server = start(settings()).await;
    let token = server.token("a", None);
    let url = server.http(&format!("/ws/signal?token={token}"));
    let http = reqwest::Client::new();
    let post = http.post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET,HEAD");
    let body: serde_json::Value = post.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    // HEAD is GET without a body, as the router answers it.
    assert_eq!(http.head(&url).send().await.unwrap().status(), 426);
    // The path is matched exactly, as the router matches it.
    let slash = http
        .get(server.http(&format!("/ws/signal/?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(slash.status(), 404);
}

// ---- Malformed handshakes are refused with 400 before any upgrade ----
// Raw TCP: a WebSocket library will not send these bytes.

/// Sends `request` raw and reads the answer's status and JSON body, within 5 s.
async fn raw_handshake(addr: std::net::SocketAddr, request: String) -> (u16, serde_json::Value) {
    let (head, body) =
        common::raw::exchange(addr, request.as_bytes(), std::time::Duration::from_secs(5)).await;
    (common::raw::status(&head), body)
}

/// An upgrade request for `token` with `headers` (each line ending in CRLF) added.
fn upgrade_request(token: &str, headers: &str) -> String {
    format!(
        "GET /ws/signal?token={token} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: switchboard.v1\r\n{headers}\r\n"
    )
}

const GOOD_KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn well_formed_raw_upgrade_gets_101() {
    let server = start(settings()).await;
    let token = server.token("a", None);
    let request = upgrade_request(&token, &format!("Host: {}\r\n{GOOD_KEY}", server.addr));
    assert_eq!(raw_handshake(server.addr, request).await.0, 101);
}

#[tokio::test]
async fn websocket_key_that_is_not_16_bytes_of_base64_gets_400() {
    let server = start(settings()).await;
    let token = server.token("a", None);
    let host = format!("Host: {}\r\n", server.addr);
    for key in [
        "AAAAAAAAAAA=",                     // 8 bytes
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", // 23 bytes
        "not base64 at all!!!!!!!",
    ] {
        let request = upgrade_request(&token, &format!("{host}Sec-WebSocket-Key: {key}\r\n"));
        let (status, body) = raw_handshake(server.addr, request).await;
        assert_eq!(status, 400, "key {key}");
        assert_eq!(body["error"], "invalid_handshake");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Sec-WebSocket-Key")
        );
    }
    // Two keys, each well formed, are refused too.
    let request = upgrade_request(&token, &format!("{host}{GOOD_KEY}{GOOD_KEY}"));
    assert_eq!(raw_handshake(server.addr, request).await.0, 400);
}

#[tokio::test]
async fn duplicate_origin_gets_400_whatever_the_order() {
    let mut s = settings();
    s.auth.allowed_origins = Some("https://app.example.com".into());
    let server = start(s).await;
    let token = server.token("a", None);
    let base = format!("Host: {}\r\n{GOOD_KEY}", server.addr);
    let allowed = "Origin: https://app.example.com\r\n";
    let foreign = "Origin: https://evil.example.net\r\n";
    for origins in [
        format!("{allowed}{foreign}"),
        format!("{foreign}{allowed}"),
        format!("{allowed}{allowed}"),
    ] {
        let request = upgrade_request(&token, &format!("{base}{origins}"));
        let (status, body) = raw_handshake(server.addr, request).await;
        assert_eq!(status, 400, "{origins}");
        assert_eq!(body["error"], "invalid_handshake");
        assert!(body["message"].as_str().unwrap().contains("Origin"));
    }
    // The allowed origin, once, still upgrades.
    let request = upgrade_request(&token, &format!("{base}{allowed}"));
    assert_eq!(raw_handshake(server.addr, request).await.0, 101);
}

#[tokio::test]
async fn missing_host_gets_400() {
    let server = start(settings()).await;
    let token = server.token("a", None);
    let (status, body) = raw_handshake(server.addr, upgrade_request(&token, GOOD_KEY)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_handshake");
    assert!(body["message"].as_str().unwrap().contains("Host"));
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"switchboard_refused_upgrades_total{reason="bad_handshake"} 1"#));
}

#[tokio::test]
async fn a_request_head_far_beyond_32_kib_gets_431_and_one_within_passes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(settings()).await;
    let token = server.token("a", None);
    // Browser-sized cookies pass; a head that would pin hundreds of KiB does not (the
    // read that crosses 32 KiB may complete a head a little larger).
    for (cookie, status) in [(20 * 1024, "101"), (100 * 1024, "431")] {
        let headers = format!(
            "Host: {}\r\n{GOOD_KEY}Cookie: c={}\r\n",
            server.addr,
            "x".repeat(cookie)
        );
        let request = upgrade_request(&token, &headers);
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let _ = socket.write_all(request.as_bytes()).await;
        let mut answer = [0u8; 12];
        tokio::time::timeout(common::DEADLINE, socket.read_exact(&mut answer))
            .await
            .expect("an answer in time")
            .expect("a status line");
        assert_eq!(
            String::from_utf8_lossy(&answer),
            format!("HTTP/1.1 {status}"),
            "a {cookie}-byte cookie"
        );
    }
}

// ---- The first request of a connection is read before hyper ----

/// Reads from `socket` until `done` holds for what was read, within the deadline.
async fn read_until(socket: &mut tokio::net::TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(common::DEADLINE, async {
        while !done(&got) {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer in time");
    got
}

/// Whether `bytes` hold a whole response head.
fn has_head(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n")
}

#[tokio::test]
async fn an_upgrade_head_sent_in_pieces_is_answered_once_whole() {
    use tokio::io::AsyncWriteExt;
    let server = start(settings()).await;
    let token = server.token("a", None);
    let request = upgrade_request(&token, &format!("Host: {}\r\n{GOOD_KEY}", server.addr));
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    // The method and path split, the query split, and the last empty line split in two.
    let bytes = request.as_bytes();
    let cuts = [2, 9, 40, bytes.len() - 1];
    let mut from = 0;
    for cut in cuts {
        socket.write_all(&bytes[from..cut]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        from = cut;
    }
    socket.write_all(&bytes[from..]).await.unwrap();
    let answer = read_until(&mut socket, has_head).await;
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(
        answer.starts_with("http/1.1 101 switching protocols\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("sec-websocket-protocol: switchboard.v1\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_refused_first_upgrade_gets_a_whole_http_answer_and_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(settings()).await;
    let request = upgrade_request("garbage", &format!("Host: {}\r\n{GOOD_KEY}", server.addr));
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(common::DEADLINE, socket.read_to_end(&mut answer))
        .await
        .expect("the answer and the close in time")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    let head = head.to_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "unauthorized");
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"switchboard_refused_upgrades_total{reason="token"} 1"#));
}

#[tokio::test]
async fn an_upgrade_after_another_request_on_the_same_connection_still_upgrades() {
    use tokio::io::AsyncWriteExt;
    // The first request is hyper's; the upgrade after it reaches the router's route.
    let server = start(settings()).await;
    let token = server.token("a", None);
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let health = format!("GET /health/live HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    socket.write_all(health.as_bytes()).await.unwrap();
    let answer = read_until(&mut socket, has_head).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let length = String::from_utf8_lossy(&answer)
        .to_lowercase()
        .split("content-length: ")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next()?.parse::<usize>().ok())
        .expect("a content length");
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = answer[head_end..].to_vec();
    if rest.len() < length {
        rest.extend(read_until(&mut socket, |b| b.len() + rest.len() >= length).await);
    }
    let request = upgrade_request(&token, &format!("Host: {}\r\n{GOOD_KEY}", server.addr));
    socket.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until(&mut socket, has_head).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn other_first_requests_reach_the_router_with_every_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A body that arrives with the head, and one that follows it later, both reach the
    // handler whole: the bytes read before hyper are read again by it.
    let server = start(settings()).await;
    let body = json!({"userId": "whole-body"}).to_string();
    for split in [false, true] {
        let head = format!(
            "POST /auth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            server.addr,
            body.len()
        );
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        if split {
            socket.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            socket.write_all(body.as_bytes()).await.unwrap();
        } else {
            socket
                .write_all(format!("{head}{body}").as_bytes())
                .await
                .unwrap();
        }
        let mut answer = Vec::new();
        tokio::time::timeout(common::DEADLINE, socket.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200 "),
            "split {split}: {answer}"
        );
        assert!(answer.contains("\"token\""), "split {split}: {answer}");
    }
}
