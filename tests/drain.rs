//! A node drained with SIGTERM during calls: its clients get `goaway`, reconnect to other
//! nodes, resume, and every message of every call arrives once, in order.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::process::Running;
use common::redis::RedisServer;
use common::{Client, SECRET, client_at, eventually, unique_prefix};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Messages each peer sends its partner.
const TOTAL: u32 = 300;
/// Pause between two sends: a call keeps trickling candidates through the whole drain.
const PACE: Duration = Duration::from_millis(5);

/// One side of a call and where it goes when its node drains.
struct Side {
    client: Client,
    token: String,
    partner: String,
    /// Address to reconnect to after a 1012 close.
    fallback: String,
}

/// What one side saw.
#[derive(Debug, Default)]
struct Seen {
    /// Sequence numbers received from the partner, in arrival order.
    received: Vec<u32>,
    goaways: usize,
    resumes: usize,
    /// Anything else (errors, peer_left, ...).
    unexpected: Vec<Value>,
}

/// Sends `TOTAL` numbered candidates to the partner while receiving the partner's; on a
/// 1012 close, reconnects to the fallback with the same token and expects `resumed`.
async fn converse(side: Side, progress: Arc<AtomicU32>) -> Seen {
    let Side {
        client,
        token,
        partner,
        fallback,
    } = side;
    let mut ws = client.ws;
    let mut seen = Seen::default();
    let mut sent = 0;
    let mut tick = tokio::time::interval(PACE);
    let mut connected = true;
    let deadline = tokio::time::Instant::now() + common::patient(common::DEADLINE);
    while sent < TOTAL || seen.received.len() < TOTAL as usize {
        if tokio::time::Instant::now() > deadline {
            seen.unexpected.push(json!({"gave up after sending": sent}));
            break;
        }
        if !connected {
            // Resumed connections speak first, so no ping handshake here.
            let url = format!("ws://{fallback}/ws/signal?token={token}");
            ws = tokio_tungstenite::connect_async(url)
                .await
                .expect("reconnect")
                .0;
            connected = true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tick.tick(), if sent < TOTAL => {
                let candidate = json!({"type": "ice-candidate", "peerId": partner,
                    "candidate": {"candidate": sent.to_string()}});
                // A send that fails was not delivered; it is sent again after the resume.
                if ws.send(Message::text(candidate.to_string())).await.is_ok() {
                    sent += 1;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let m: Value = serde_json::from_str(&text).unwrap();
                    match m["type"].as_str().unwrap() {
                        "ice-candidate" => {
                            assert_eq!(m["peerId"], partner.as_str());
                            let seq = m["candidate"]["candidate"].as_str().unwrap();
                            seen.received.push(seq.parse().unwrap());
                        }
                        "goaway" => seen.goaways += 1,
                        "resumed" => seen.resumes += 1,
                        "peer_joined" | "pong" => {}
                        _ => seen.unexpected.push(m),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    assert_eq!(code, Some(1012), "only the drain closes connections");
                    // Let the library answer the close, then go elsewhere.
                    while let Some(Ok(_)) = ws.next().await {}
                    connected = false;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => connected = false,
            },
        }
    }
    seen
}

/// Whether `received` is exactly 0..TOTAL in order.
fn assert_complete(who: &str, seen: &Seen) {
    let expected: Vec<u32> = (0..TOTAL).collect();
    if seen.received != expected {
        let missing: Vec<u32> = expected
            .iter()
            .filter(|s| !seen.received.contains(s))
            .copied()
            .collect();
        panic!(
            "{who} received {} messages (missing {missing:?}); out of order or duplicated: {:?}",
            seen.received.len(),
            seen.received
                .windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .collect::<Vec<_>>()
        );
    }
    assert!(seen.unexpected.is_empty(), "{who}: {:?}", seen.unexpected);
}

/// A Redis server and the settings every node of one test shares.
struct SharedRedis {
    _redis: RedisServer,
    url: String,
    prefix: String,
}

impl SharedRedis {
    async fn start() -> Self {
        let redis = RedisServer::start().await;
        SharedRedis {
            url: redis.url(),
            prefix: unique_prefix(),
            _redis: redis,
        }
    }

    /// The shared settings, then `extra`.
    fn vars<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut vars = vec![
            ("AUTH_SECRET", SECRET),
            ("REDIS_URL", self.url.as_str()),
            ("KEY_PREFIX", self.prefix.as_str()),
        ];
        vars.extend_from_slice(extra);
        vars
    }
}

#[tokio::test]
async fn a_drained_nodes_calls_resume_elsewhere_without_losing_a_message() {
    let redis = SharedRedis::start().await;
    let vars = redis.vars(&[
        ("HEARTBEAT_INTERVAL", "500ms"),
        ("DRAIN_TIMEOUT", "2s"),
        // Each side sends 200 messages a second, above the default limit.
        ("MESSAGE_RATE", "1000"),
    ]);
    let (mut drained, n0) = Running::start(&vars);
    let (_n1, n1) = Running::start(&vars);
    let (_n2, n2) = Running::start(&vars);

    // Call 1 spans the drained node and a survivor; call 2 lies wholly on the drained
    // node, and its two sides move to two different survivors.
    let (mut alice, alice_token) = client_at(&n0, "alice").await;
    let (mut bob, bob_token) = client_at(&n1, "bob").await;
    let (mut carol, carol_token) = client_at(&n0, "carol").await;
    let (mut dave, dave_token) = client_at(&n0, "dave").await;
    alice.join("call-1").await;
    bob.join("call-1").await;
    carol.join("call-2").await;
    dave.join("call-2").await;
    let (a, b, c, d) = (
        alice.peer_id.clone(),
        bob.peer_id.clone(),
        carol.peer_id.clone(),
        dave.peer_id.clone(),
    );
    let partners = [
        (alice, alice_token, b, &n2, "alice"),
        (bob, bob_token, a, &n1, "bob"),
        (carol, carol_token, d, &n1, "carol"),
        (dave, dave_token, c, &n2, "dave"),
    ];
    let progress = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (client, token, partner, fallback, name) in partners {
        let side = Side {
            client,
            token,
            partner,
            fallback: fallback.clone(),
        };
        tasks.push((name, tokio::spawn(converse(side, progress.clone()))));
    }

    // Drain once every call is well under way.
    eventually(
        "every call to get under way",
        common::DEADLINE,
        async || progress.load(Ordering::Relaxed) >= 4 * 40,
    )
    .await;
    drained.signal("-TERM");

    let mut seen = Vec::new();
    for (name, task) in tasks {
        seen.push((name, task.await.unwrap()));
    }
    for (name, s) in &seen {
        assert_complete(name, s);
        let moved = *name != "bob";
        assert_eq!(s.goaways, usize::from(moved), "{name}: goaway");
        assert_eq!(s.resumes, usize::from(moved), "{name}: resumed");
    }
    // The drained node handed every session over and left on its own.
    assert!(drained.wait_exit().success());
    let logs = drained.logs();
    // The logs cover the drain, and it raised no error.
    assert!(logs.iter().any(|l| l.contains("draining")), "{logs:?}");
    assert!(
        !logs.iter().any(|l| l.contains("\"level\":\"ERROR\"")),
        "{logs:?}"
    );
}

/// A client told to go that connects to another node before closing its connection (make
/// before break) resumes there too: the node it leaves closes the old connection with
/// 1012 and hands the session over, and its room hears nothing of the move.
#[tokio::test]
async fn a_client_that_connects_elsewhere_before_closing_its_drained_connection_resumes() {
    let redis = SharedRedis::start().await;
    // Reconnect hints spread over 10 s: the old connection is still open (its hint not
    // due) when the new one takes the session.
    let vars = redis.vars(&[("DRAIN_TIMEOUT", "20s")]);
    let (mut drained, n0) = Running::start(&vars);
    let (_n1, n1) = Running::start(&vars);
    let (mut alice, alice_token) = client_at(&n0, "alice").await;
    let (mut bob, _) = client_at(&n1, "bob").await;
    alice.join("call").await;
    bob.join("call").await;
    alice.expect("peer_joined").await;

    drained.signal("-TERM");
    alice.expect("goaway").await;
    let url = format!("ws://{n1}/ws/signal?token={alice_token}");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket upgrade");
    let mut moved = Client {
        ws,
        peer_id: alice.peer_id.clone(),
    };
    // The old connection stays open and answers its close frame, as a browser does.
    let old = tokio::spawn(async move { alice.expect_close().await });
    let resumed = moved.expect("resumed").await;
    assert_eq!(resumed["roomId"], "call");
    assert_eq!(resumed["peers"], json!([bob.peer_id]));
    let old_close = tokio::time::timeout(common::DEADLINE, old)
        .await
        .expect("the old connection closes")
        .unwrap();
    assert_eq!(old_close, Some(1012));

    // The call goes on both ways, and bob's next message is alice's answer: no peer_left.
    bob.offer(&moved.peer_id, "v=0").await;
    let offer = moved.expect("offer").await;
    assert_eq!(offer["peerId"], bob.peer_id.as_str());
    moved
        .send(json!({"type": "answer", "peerId": bob.peer_id, "sdp": "v=0"}))
        .await;
    assert_eq!(bob.expect("answer").await["peerId"], moved.peer_id.as_str());
    moved.close().await;
    assert!(drained.wait_exit().success());
}
