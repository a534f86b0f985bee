//! Rotating HS256 keys on running `switchboard serve` processes (one alone, and three on
//! Redis with a call split over two) through AUTH_KEYS_FILE: add the new key, switch
//! signing to it, remove the old one; then a malformed file. Every step is a
//! reload (a changed file or SIGHUP) confirmed on `/metrics` before it is checked, and
//! the connections opened before the first step must outlive them all.

mod common;

use std::time::{Duration, Instant};

use common::process::{Running, switchboard};
use common::redis::RedisServer;
use common::tools::Scratch;
use common::{DEADLINE, claims, connect_at, eventually, forge, issued_token, metric_sum, refused};
use serde_json::{Value, json};

const OLD: &str = "old-secret-0123456789-0123456789-abcdef";
const NEW: &str = "new-secret-0123456789-0123456789-abcdef";

/// The `kid` in a token's header.
fn kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).unwrap().kid
}

/// The peer id a token's session gets: `<sub>-<session_id>`.
fn peer_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    format!(
        "{}-{}",
        claims["sub"].as_str().unwrap(),
        claims["session_id"].as_str().unwrap()
    )
}

/// The count of `switchboard_key_reloads_total` with `result`.
async fn reloads(http: &reqwest::Client, addr: &str, result: &str) -> u64 {
    let series = format!("switchboard_key_reloads_total{{result=\"{result}\"}} ");
    metric_sum(http, &format!("http://{addr}"), &series).await
}

async fn wait_reloads(http: &reqwest::Client, addr: &str, result: &str, count: u64) {
    eventually(
        format!("{count} key reloads with result {result}"),
        DEADLINE,
        async || reloads(http, addr, result).await >= count,
    )
    .await;
}

async fn token(http: &reqwest::Client, addr: &str, user: &str) -> String {
    issued_token(http, &format!("http://{addr}"), user).await
}

async fn validate(http: &reqwest::Client, addr: &str, token: &str) -> u16 {
    http.get(format!("http://{addr}/auth/validate"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_dropping_a_connection() {
    let scratch = Scratch::new("key-rotation");
    let file = scratch.join("keys");
    std::fs::write(&file, format!("old={OLD}\n")).unwrap();
    let path = file.to_str().unwrap();
    let (mut node, addr) = Running::spawn(switchboard(
        &["serve", "--bind", "127.0.0.1", "--port", "0"],
        &[
            ("AUTH_KEYS_FILE", path),
            ("KEYS_RELOAD_INTERVAL", "200ms"),
            ("TOKEN_REFRESH_BEFORE", "15s"),
            ("DRAIN_TIMEOUT", "2s"),
        ],
    ));
    let http = reqwest::Client::new();

    // Before any step: the old key signs.
    let old_token = token(&http, &addr, "carol").await;
    assert_eq!(kid(&old_token).as_deref(), Some("old"));
    // A connection whose old-key token lives 40 s: its refresh comes 25 s in (15 s before
    // expiry), after the steps below, and must carry the new key.
    let mut short = claims("alice");
    let now = switchboard::auth::unix_now();
    short["exp"] = json!(now + 40);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("old".into());
    let refreshing = forge(&header, &short, OLD.as_bytes());
    let connected_at = Instant::now();
    let mut alice = connect_at(&addr, &refreshing).await;
    alice.peer_id = peer_of(&refreshing);
    let bob_token = token(&http, &addr, "bob").await;
    let mut bob = connect_at(&addr, &bob_token).await;
    bob.peer_id = peer_of(&bob_token);
    alice.join("r").await;
    let alice_peer = alice.peer_id.clone();
    bob.join("r").await;

    // 1. Add the new key (noticed by the file check): the old one still signs.
    std::fs::write(&file, format!("old={OLD}\nnew={NEW}\n")).unwrap();
    wait_reloads(&http, &addr, "success", 1).await;
    assert_eq!(validate(&http, &addr, &old_token).await, 200);
    assert_eq!(
        kid(&token(&http, &addr, "dave").await).as_deref(),
        Some("old")
    );

    // 2. Switch: the new key first, announced by SIGHUP. New tokens carry it; old ones
    //    still verify, for validation and for new upgrades.
    std::fs::write(&file, format!("new={NEW}\nold={OLD}\n")).unwrap();
    node.signal("-HUP");
    wait_reloads(&http, &addr, "success", 2).await;
    let new_token = token(&http, &addr, "erin").await;
    assert_eq!(kid(&new_token).as_deref(), Some("new"));
    assert_eq!(validate(&http, &addr, &old_token).await, 200);
    connect_at(&addr, &old_token).await.close().await;

    // 3. Remove the old key: its tokens are refused, new ones are not.
    std::fs::write(&file, format!("new={NEW}\n")).unwrap();
    node.signal("-HUP");
    wait_reloads(&http, &addr, "success", 3).await;
    assert_eq!(validate(&http, &addr, &old_token).await, 401);
    let (status, body) = refused(format!("ws://{addr}/ws/signal?token={old_token}")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(validate(&http, &addr, &new_token).await, 200);

    // 4. A malformed file changes nothing, and the warning holds no key material.
    std::fs::write(&file, "new=tiny-secret-x\n").unwrap();
    node.signal("-HUP");
    wait_reloads(&http, &addr, "failure", 1).await;
    assert_eq!(validate(&http, &addr, &new_token).await, 200);
    assert_eq!(validate(&http, &addr, &old_token).await, 401);
    assert_eq!(
        kid(&token(&http, &addr, "frank").await).as_deref(),
        Some("new")
    );
    let warning = node.wait_for(|l| l.contains("keys not reloaded"));
    assert!(warning.contains("AUTH_KEYS_FILE"), "{warning}");
    assert!(
        !warning.contains("tiny-secret-x") && !warning.contains(NEW),
        "{warning}"
    );
    assert!(
        connected_at.elapsed() < Duration::from_secs(24),
        "the steps took too long for the refresh to come after them"
    );

    // The connection opened with the old key still runs, and its refresh is signed with
    // the new key (and verifies although the old key is gone).
    let refreshed = loop {
        let message = alice
            .recv_within(common::patient(Duration::from_secs(40)))
            .await
            .expect("the token refresh, 25 s after connecting");
        if message["type"] == "token" {
            break message["token"].as_str().unwrap().to_string();
        }
    };
    assert_eq!(kid(&refreshed).as_deref(), Some("new"));
    assert_eq!(validate(&http, &addr, &refreshed).await, 200);
    // Neither connection was dropped: a relay still goes through.
    bob.offer(&alice_peer, "v=0 rotation").await;
    let offer = loop {
        let message = alice.recv().await;
        if message["type"] == "offer" {
            break message;
        }
    };
    assert_eq!(offer["sdp"], "v=0 rotation");
    alice.close().await;
    bob.close().await;
    let logs = node.terminate();
    for line in &logs {
        assert!(
            !line.contains(OLD) && !line.contains(NEW),
            "a key reached the log: {line}"
        );
    }
}

/// Waits until `to` receives an offer carrying `sdp` (other messages, such as a token
/// refresh or `peer_joined`, may come first).
async fn offer_arrives(to: &mut common::Client, sdp: &str) {
    loop {
        let message = to.recv().await;
        if message["type"] == "offer" {
            assert_eq!(message["sdp"], sdp, "{message}");
            return;
        }
    }
}

/// The same rotation on three nodes sharing Redis and one key file, with a call split
/// over two of them: each step reaches every node (the file check, then SIGHUP), tokens
/// minted on one node verify on the others, and the call relays after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_across_three_nodes_on_redis_without_dropping_a_call() {
    let redis = RedisServer::start().await;
    let scratch = Scratch::new("key-rotation-fleet");
    let file = scratch.join("keys");
    std::fs::write(&file, format!("old={OLD}\n")).unwrap();
    let path = file.to_str().unwrap().to_string();
    let prefix = common::unique_prefix();
    let url = redis.url();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = format!("node-{i}");
        nodes.push(Running::spawn(switchboard(
            &["serve", "--bind", "127.0.0.1", "--port", "0"],
            &[
                ("AUTH_KEYS_FILE", path.as_str()),
                ("KEYS_RELOAD_INTERVAL", "200ms"),
                ("REDIS_URL", url.as_str()),
                ("NODE_ID", id.as_str()),
                ("KEY_PREFIX", prefix.as_str()),
                ("HEARTBEAT_INTERVAL", "500ms"),
                ("SHED_CPU_PERCENT", "0"),
            ],
        )));
    }
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    let http = reqwest::Client::new();
    let everywhere = async |result: &str, count: u64| {
        for addr in &addrs {
            wait_reloads(&http, addr, result, count).await;
        }
    };

    // A call split over nodes 0 and 1, with tokens minted on node 2.
    let old_token = token(&http, &addrs[2], "carol").await;
    assert_eq!(kid(&old_token).as_deref(), Some("old"));
    let alice_token = token(&http, &addrs[2], "alice").await;
    let bob_token = token(&http, &addrs[2], "bob").await;
    let mut alice = connect_at(&addrs[0], &alice_token).await;
    alice.peer_id = peer_of(&alice_token);
    let mut bob = connect_at(&addrs[1], &bob_token).await;
    bob.peer_id = peer_of(&bob_token);
    alice.join("r").await;
    bob.join("r").await;
    let (alice_peer, bob_peer) = (alice.peer_id.clone(), bob.peer_id.clone());

    // 1. Add the new key on every node: the old one still signs everywhere.
    std::fs::write(&file, format!("old={OLD}\nnew={NEW}\n")).unwrap();
    everywhere("success", 1).await;
    for addr in &addrs {
        assert_eq!(validate(&http, addr, &old_token).await, 200);
        assert_eq!(
            kid(&token(&http, addr, "dave").await).as_deref(),
            Some("old")
        );
    }
    bob.offer(&alice_peer, "v=0 added").await;
    offer_arrives(&mut alice, "v=0 added").await;

    // 2. Switch signing on every node. A new token minted on one node verifies on the
    //    others, and old tokens still open connections anywhere.
    std::fs::write(&file, format!("new={NEW}\nold={OLD}\n")).unwrap();
    for (node, _) in &nodes {
        node.signal("-HUP");
    }
    everywhere("success", 2).await;
    let new_token = token(&http, &addrs[0], "erin").await;
    assert_eq!(kid(&new_token).as_deref(), Some("new"));
    for addr in &addrs {
        assert_eq!(validate(&http, addr, &new_token).await, 200);
        assert_eq!(validate(&http, addr, &old_token).await, 200);
    }
    connect_at(&addrs[1], &old_token).await.close().await;
    alice.offer(&bob_peer, "v=0 switched").await;
    offer_arrives(&mut bob, "v=0 switched").await;

    // 3. Remove the old key everywhere: old tokens are refused by every node, while the
    //    call opened with old-key tokens goes on across nodes.
    std::fs::write(&file, format!("new={NEW}\n")).unwrap();
    for (node, _) in &nodes {
        node.signal("-HUP");
    }
    everywhere("success", 3).await;
    for addr in &addrs {
        assert_eq!(validate(&http, addr, &old_token).await, 401);
        let (status, body) = refused(format!("ws://{addr}/ws/signal?token={old_token}")).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(validate(&http, addr, &new_token).await, 200);
    }
    let mut erin = connect_at(&addrs[2], &new_token).await;
    erin.peer_id = peer_of(&new_token);
    erin.join("r").await;
    bob.offer(&alice_peer, "v=0 removed").await;
    offer_arrives(&mut alice, "v=0 removed").await;
    alice.offer(&bob_peer, "v=0 still here").await;
    offer_arrives(&mut bob, "v=0 still here").await;

    for client in [alice, bob, erin] {
        client.close().await;
    }
    for (node, _) in nodes {
        for line in node.terminate() {
            assert!(
                !line.contains(OLD) && !line.contains(NEW),
                "a key reached the log: {line}"
            );
        }
    }
}

/// The status of `POST /auth/token` with `key` as the API key.
async fn issue_with(http: &reqwest::Client, addr: &str, key: &str) -> u16 {
    http.post(format!("http://{addr}/auth/token"))
        .bearer_auth(key)
        .json(&json!({ "userId": "backend-user" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// API keys rotate the same way: a changed AUTH_API_KEYS_FILE is picked up without a
/// restart, a removed key is refused from then on, and a malformed file keeps the keys
/// in service.
#[tokio::test]
async fn api_keys_rotate_from_their_file() {
    const FIRST: &str = "backend-key-first-0123456789";
    const SECOND: &str = "backend-key-second-0123456789";
    let scratch = Scratch::new("api-key-rotation");
    let file = scratch.join("api-keys");
    std::fs::write(&file, format!("{FIRST}\n")).unwrap();
    let path = file.to_str().unwrap();
    let (mut node, addr) = Running::spawn(switchboard(
        &["serve", "--bind", "127.0.0.1", "--port", "0"],
        &[
            ("AUTH_SECRET", common::SECRET),
            ("TOKEN_ISSUANCE", "api-key"),
            ("AUTH_API_KEYS_FILE", path),
            ("KEYS_RELOAD_INTERVAL", "200ms"),
        ],
    ));
    let http = reqwest::Client::new();
    assert_eq!(issue_with(&http, &addr, FIRST).await, 200);
    assert_eq!(issue_with(&http, &addr, SECOND).await, 401);

    // Both during the switch-over, then only the second.
    std::fs::write(&file, format!("{FIRST}\n{SECOND}\n")).unwrap();
    wait_reloads(&http, &addr, "success", 1).await;
    assert_eq!(issue_with(&http, &addr, FIRST).await, 200);
    assert_eq!(issue_with(&http, &addr, SECOND).await, 200);
    std::fs::write(&file, format!("{SECOND}\n")).unwrap();
    node.signal("-HUP");
    wait_reloads(&http, &addr, "success", 2).await;
    assert_eq!(issue_with(&http, &addr, FIRST).await, 401);
    assert_eq!(issue_with(&http, &addr, SECOND).await, 200);

    // A key too short to be a key: the file is refused and the second key still works.
    std::fs::write(&file, "short\n").unwrap();
    node.signal("-HUP");
    wait_reloads(&http, &addr, "failure", 1).await;
    assert_eq!(issue_with(&http, &addr, SECOND).await, 200);
    let warning = node.wait_for(|l| l.contains("keys not reloaded"));
    assert!(
        !warning.contains(SECOND) && !warning.contains("short\""),
        "{warning}"
    );
}
