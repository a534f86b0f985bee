//! Hostile requests the server must refuse at once, each sent hundreds of times against a
//! `switchboard serve` process in production mode (tokens only for an API key, an Origin
//! allowlist): unsafe tokens signed with the right key, ids with bidi controls or line
//! separators, malformed WebSocket handshakes, and offers whose `sdp` is not a string.
//!
//! Each refusal is checked, and timed; meanwhile an honest pair in another room keeps
//! relaying, `/health/live` keeps answering, and the server's resident memory stays within
//! [`RSS_BOUND`] of where it was and stops growing once the first round is done (a leak of
//! even a few hundred bytes per refusal would show over the rounds).
//!
//! `cargo test --release --test hostile_requests -- --nocapture` prints the figures quoted
//! in docs/SECURITY.md.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::hostile::{API_KEY, Node, ORIGIN, Watched, mib, rss};
use common::{Client, SECRET, claims, forge, patient};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Rounds of each attack; memory after the first is the baseline of the leak check.
const ROUNDS: usize = 5;
/// Attempts of each kind per round.
const PER_ROUND: usize = 300;
/// "At once": an HTTP refusal must come within this (stretched by patience).
const AT_ONCE: Duration = Duration::from_secs(1);
/// Resident memory the server may gain over a whole attack.
const RSS_BOUND: u64 = 16 << 20;
/// Resident memory the server may gain from the end of the first round to the end of the
/// last, over `(ROUNDS - 1) * PER_ROUND` attempts of each kind (2,400 at least): a leak
/// of 1.3 KiB per refusal would exceed it. (The allocator grows in steps of about 2 MiB.)
const LEAK_BOUND: u64 = 3 << 20;

/// A production node; `vars` win.
fn node(vars: &[(&str, &str)]) -> Node {
    Node::production(vars)
}

/// Runs `round` [`ROUNDS`] times (it makes [`PER_ROUND`] attempts of each of its `kinds`
/// and returns the slowest refusal it saw) with the bystanders watching; prints the
/// figures and fails the test if the server's memory grew beyond the bounds or a
/// bystander failed.
async fn rounds(what: &str, node: &Node, kinds: usize, mut round: impl AsyncFnMut() -> Duration) {
    let bystanders = node.bystanders().await;
    let mut slowest = Duration::ZERO;
    let mut warm = 0;
    let started = Instant::now();
    for i in 0..ROUNDS {
        slowest = slowest.max(round().await);
        if i == 0 {
            warm = rss(node.pid());
        }
    }
    let took = started.elapsed();
    let after = rss(node.pid());
    let watched: Watched = bystanders.finish().await;
    let steady = after.saturating_sub(warm);
    println!(
        "{what}: {} attempts ({kinds} kinds) in {took:.1?}, each refused within {slowest:.2?}; \
         {}; after the first round {:.2} MiB more",
        ROUNDS * PER_ROUND * kinds,
        watched.summary(),
        mib(steady),
    );
    watched.assert_unharmed(what, RSS_BOUND);
    assert!(
        steady < LEAK_BOUND,
        "{what}: memory grew by {:.2} MiB after the first round",
        mib(steady)
    );
}

/// Sends `request` on a fresh socket and returns the answer's status, JSON body and how
/// long it took; fails unless it came within [`AT_ONCE`].
async fn ask(addr: SocketAddr, request: &str) -> (u16, Value, Duration) {
    let asked = Instant::now();
    let (head, body) = common::raw::exchange(addr, request.as_bytes(), patient(AT_ONCE)).await;
    (common::raw::status(&head), body, asked.elapsed())
}

/// An upgrade request to `address` for `token` with `headers` (each ending in CRLF).
fn upgrade(address: &str, token: &str, headers: &str) -> String {
    format!(
        "GET /ws/signal?token={token} HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
}

const GOOD_KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_tokens_signed_with_the_right_key_are_refused_every_time() {
    let node = node(&[]);
    let hs256 = Header::new(Algorithm::HS256);
    let sign = |header: &Header, c: &Value| forge(header, c, SECRET.as_bytes());
    let now = switchboard::auth::unix_now();
    let mut crit = hs256.clone();
    crit.crit = Some(vec!["exp".into()]);
    let mut future_iat = claims("mallory");
    future_iat["iat"] = json!(now + 3600);
    let mut forever = claims("mallory");
    // 1 January 3000.
    forever["exp"] = json!(32_503_680_000u64);
    let tokens = [
        ("crit", sign(&crit, &claims("mallory")), "crit"),
        ("iat in the future", sign(&hs256, &future_iat), "iat"),
        ("exp in 3000", sign(&hs256, &forever), "maximum"),
    ];
    // The same forging, with nothing unsafe, upgrades: each refusal is for its one change.
    let honest = upgrade(&node.address, &sign(&hs256, &claims("honest")), GOOD_KEY);
    assert_eq!(ask(node.addr, &honest).await.0, 101);
    rounds("unsafe tokens", &node, tokens.len(), async || {
        let mut slowest = Duration::ZERO;
        for _ in 0..PER_ROUND {
            for (what, token, needle) in &tokens {
                let request = upgrade(&node.address, token, GOOD_KEY);
                let (status, body, took) = ask(node.addr, &request).await;
                assert_eq!(status, 401, "{what}: {body}");
                let message = body["message"].as_str().unwrap();
                assert!(message.contains(needle), "{what}: {message}");
                slowest = slowest.max(took);
            }
        }
        slowest
    })
    .await;
    assert!(
        node.metric("switchboard_refused_upgrades_total{reason=\"token\"}")
            .await
            >= (3 * ROUNDS * PER_ROUND) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_bidi_controls_or_line_separators_are_refused_every_time() {
    // Hundreds of refused joins from one connection: the message rate is not under test.
    let node = node(&[("MESSAGE_RATE", "100000"), ("MESSAGE_BURST", "100000")]);
    let issuance = [
        (json!({"userId": "admin\u{202E}gpj.exe"}), "bidirectional"),
        (json!({"userId": "line\u{2028}break"}), "separator"),
        (
            json!({"userId": "alice", "roomId": "r\u{2066}"}),
            "bidirectional",
        ),
    ];
    let rooms = [
        ("r\u{202E}", "bidirectional"),
        ("r\u{2028}", "separator"),
        ("\u{2067}r", "bidirectional"),
    ];
    // A peer waits in the room the attacker's ids imitate: it must hear of nobody.
    let (mut victim, _) = common::client_at(&node.address, "victim").await;
    victim.join("r").await;
    let (mut mallory, _) = common::client_at(&node.address, "mallory").await;
    let mut id = 0u64;
    rounds("bidi and separator ids", &node, issuance.len() + rooms.len(), async || {
        let mut slowest = Duration::ZERO;
        for _ in 0..PER_ROUND {
            for (body, needle) in &issuance {
                let body = body.to_string();
                let request = format!(
                    "POST /auth/token HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    node.address,
                    body.len()
                );
                let (status, json, took) = ask(node.addr, &request).await;
                assert_eq!(status, 400, "{body}: {json}");
                assert_eq!(json["error"], "invalid_request", "{body}: {json}");
                assert!(
                    json["message"].as_str().unwrap().contains(needle),
                    "{body}: {json}"
                );
                slowest = slowest.max(took);
            }
            for (room, needle) in &rooms {
                id += 1;
                let sent = Instant::now();
                mallory
                    .send(json!({"type": "join", "roomId": room, "id": id}))
                    .await;
                let error = mallory.expect_error("invalid_message").await;
                slowest = slowest.max(sent.elapsed());
                assert_eq!(error["ref"], id);
                let message = error["message"].as_str().unwrap();
                assert!(
                    message.contains("roomId") && message.contains(needle),
                    "{message}"
                );
            }
        }
        slowest
    })
    .await;
    // Nothing reached the room, and the attacker is still a client like any other.
    victim.expect_nothing_pending().await;
    mallory.join("r").await;
    assert_eq!(
        victim.expect("peer_joined").await["peerId"],
        mallory.peer_id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_get_400_every_time() {
    let node = node(&[]);
    let token = common::issuer(Duration::from_secs(600))
        .issue("mallory", None, None)
        .token;
    let allowed = format!("Origin: {ORIGIN}\r\n");
    let requests = [
        (
            "an 8-byte key",
            upgrade(
                &node.address,
                &token,
                &format!("Sec-WebSocket-Key: AAAAAAAAAAA=\r\n{allowed}"),
            ),
            "Sec-WebSocket-Key",
        ),
        (
            "two Origin headers",
            upgrade(
                &node.address,
                &token,
                &format!("{GOOD_KEY}{allowed}Origin: https://evil.example.net\r\n"),
            ),
            "Origin",
        ),
    ];
    // The same request, well formed, upgrades.
    let honest = upgrade(&node.address, &token, &format!("{GOOD_KEY}{allowed}"));
    assert_eq!(ask(node.addr, &honest).await.0, 101);
    rounds("malformed handshakes", &node, requests.len(), async || {
        let mut slowest = Duration::ZERO;
        for _ in 0..PER_ROUND {
            for (what, request, needle) in &requests {
                let (status, body, took) = ask(node.addr, request).await;
                assert_eq!(status, 400, "{what}: {body}");
                assert_eq!(body["error"], "invalid_handshake", "{what}: {body}");
                assert!(
                    body["message"].as_str().unwrap().contains(needle),
                    "{what}: {body}"
                );
                slowest = slowest.max(took);
            }
        }
        slowest
    })
    .await;
    assert!(
        node.metric("switchboard_refused_upgrades_total{reason=\"bad_handshake\"}")
            .await
            >= (2 * ROUNDS * PER_ROUND) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_whose_sdp_is_not_a_string_are_refused_and_never_relayed() {
    // Hundreds of refused offers from one connection: the message rate is not under test.
    let node = node(&[("MESSAGE_RATE", "100000"), ("MESSAGE_BURST", "100000")]);
    let (mut mallory, _) = common::client_at(&node.address, "mallory").await;
    let (mut victim, _) = common::client_at(&node.address, "victim").await;
    mallory.join("r").await;
    victim.join("r").await;
    mallory.expect("peer_joined").await;
    let to = victim.peer_id.clone();
    let bad = [
        json!({"type": "offer", "peerId": to, "sdp": {"v": 0, "o": "- 0 0 IN IP4 0.0.0.0"}}),
        json!({"type": "answer", "peerId": to, "sdp": ["v=0"]}),
    ];
    let mut id = 0u64;
    rounds("sdp objects", &node, bad.len(), async || {
        let mut slowest = Duration::ZERO;
        for _ in 0..PER_ROUND {
            for message in &bad {
                id += 1;
                let mut message = message.clone();
                message["id"] = json!(id);
                let sent = Instant::now();
                mallory.send(message).await;
                let error = mallory.expect_error("invalid_message").await;
                slowest = slowest.max(sent.elapsed());
                assert_eq!(error["ref"], id, "{error}");
            }
        }
        slowest
    })
    .await;
    // Every refusal was decided before its error was queued: anything relayed to the
    // victim would come before this pong. A good offer still goes through.
    victim.expect_nothing_pending().await;
    relays(&mut mallory, &mut victim).await;
}

/// `from` offers to `to`, which gets exactly that offer.
async fn relays(from: &mut Client, to: &mut Client) {
    from.offer(&to.peer_id, "v=0 good").await;
    let offer = to.expect("offer").await;
    assert_eq!(offer["sdp"], "v=0 good");
    assert_eq!(offer["peerId"], from.peer_id.as_str());
}
