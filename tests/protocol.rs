//! The signaling protocol end to end over real sockets: every message type, relay rules,
//! malformed input, limits, replacement, token refresh and expiry.

mod common;

use std::time::Duration;

use common::{Backend, Client, eventually, settings, start_on};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn join_relay_and_leave_follow_the_protocol_table(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, joined) = server.join("alice", "r1").await;
    assert_eq!(joined["peers"], json!([]));

    let (mut bob, joined) = server.join("bob", "r1").await;
    assert_eq!(joined["peers"], json!([alice.peer_id]));
    let seen = alice.expect("peer_joined").await;
    assert_eq!(seen["peerId"], bob.peer_id.as_str());

    // offer, answer and ice-candidate, with the sender id set by the server.
    alice.offer(&bob.peer_id, "v=0 offer").await;
    let offer = bob.expect("offer").await;
    assert_eq!(
        offer,
        json!({"type": "offer", "peerId": alice.peer_id, "sdp": "v=0 offer"})
    );

    bob.send(json!({"type": "answer", "peerId": alice.peer_id, "sdp": "v=0 answer"}))
        .await;
    let answer = alice.expect("answer").await;
    assert_eq!(
        answer,
        json!({"type": "answer", "peerId": bob.peer_id, "sdp": "v=0 answer"})
    );

    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    alice
        .send(json!({"type": "ice-candidate", "peerId": bob.peer_id, "candidate": candidate}))
        .await;
    let relayed = bob.expect("ice-candidate").await;
    assert_eq!(relayed["peerId"], alice.peer_id.as_str());
    assert_eq!(relayed["candidate"], candidate);

    // ping/pong
    bob.send(json!({"type": "ping"})).await;
    bob.expect("pong").await;

    // leave: the other side sees peer_left with reason "left"; relaying now fails.
    alice.send(json!({"type": "leave", "roomId": "r1"})).await;
    let left = bob.expect("peer_left").await;
    assert_eq!(
        left,
        json!({"type": "peer_left", "peerId": alice.peer_id, "reason": "left"})
    );
    alice.offer(&bob.peer_id, "x").await;
    alice.expect_error("not_in_room").await;

    // A client that disconnects without leave: reason "disconnected".
    let (carol, _) = server.join("carol", "r1").await;
    bob.expect("peer_joined").await;
    let carol_id = carol.peer_id.clone();
    carol.close().await;
    let left = bob.expect("peer_left").await;
    assert_eq!(left["peerId"], carol_id.as_str());
    assert_eq!(left["reason"], "disconnected");
}

async fn joining_another_room_leaves_the_current_one(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, _) = server.join("alice", "r1").await;
    let (mut bob, _) = server.join("bob", "r1").await;
    alice.expect("peer_joined").await;
    let (mut carol, _) = server.join("carol", "r2").await;

    let joined = alice.join("r2").await;
    assert_eq!(joined["peers"], json!([carol.peer_id]));
    let left = bob.expect("peer_left").await;
    assert_eq!(left["reason"], "left");
    carol.expect("peer_joined").await;

    // Re-joining the room one is in answers joined again without a second peer_joined.
    let again = alice.join("r2").await;
    assert_eq!(again["peers"], json!([carol.peer_id]));
    carol.expect_nothing_pending().await;

    // leave naming a room one is not in is refused.
    alice
        .send(json!({"type": "leave", "roomId": "r1", "id": 9}))
        .await;
    let error = alice.expect_error("not_in_room").await;
    assert_eq!(error["ref"], 9);
}

async fn relay_across_rooms_is_refused_and_not_delivered(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, _) = server.join("alice", "r1").await;
    let (mut mallory, _) = server.join("mallory", "r2").await;

    mallory
        .send(json!({"type": "offer", "peerId": alice.peer_id, "sdp": "x", "id": "q1"}))
        .await;
    let error = mallory.expect_error("peer_not_found").await;
    assert_eq!(error["ref"], "q1");
    // The refusal was decided before mallory's error was queued, so anything delivered to
    // alice would come before this pong.
    alice.expect_nothing_pending().await;

    // Unknown peers and oneself are refused the same way.
    mallory.offer("nobody-here", "x").await;
    mallory.expect_error("peer_not_found").await;
    let me = mallory.peer_id.clone();
    mallory.offer(&me, "x").await;
    mallory.expect_error("peer_not_found").await;

    // Relay before any join: not_in_room.
    let mut loner = server.connect("loner").await;
    loner.offer(&alice.peer_id, "x").await;
    loner.expect_error("not_in_room").await;
    alice.expect_nothing_pending().await;
}

async fn a_forged_sender_is_ignored(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, _) = server.join("alice", "r1").await;
    let (mut bob, _) = server.join("bob", "r1").await;
    alice.expect("peer_joined").await;
    let (carol, _) = server.join("carol", "r1").await;

    alice
        .send(
            json!({"type": "offer", "peerId": bob.peer_id, "from": carol.peer_id,
                     "sender": carol.peer_id, "senderId": carol.peer_id, "sdp": "x"}),
        )
        .await;
    let offer = bob.expect_skipping("offer").await;
    assert_eq!(offer["peerId"], alice.peer_id.as_str());
    assert!(offer.get("from").is_none() && offer.get("sender").is_none());
    // None of the forged fields is passed on, whatever its name.
    assert_eq!(
        offer,
        json!({"type": "offer", "peerId": alice.peer_id, "sdp": "x"})
    );
}

async fn relay_among_three_reaches_only_the_addressed_peer(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut a, _) = server.join("a", "r").await;
    let (mut b, _) = server.join("b", "r").await;
    let (mut c, _) = server.join("c", "r").await;
    a.expect("peer_joined").await;
    a.expect("peer_joined").await;
    b.expect("peer_joined").await;

    a.offer(&c.peer_id, "for c").await;
    let got = c.expect("offer").await;
    assert_eq!(got["sdp"], "for c");
    a.offer(&b.peer_id, "for b").await;
    let got = b.expect("offer").await;
    assert_eq!(got["sdp"], "for b");
    // c received exactly one offer: the next thing queued for it is the pong.
    c.expect_nothing_pending().await;
    a.expect_nothing_pending().await;
}

async fn a_large_non_ascii_sdp_arrives_byte_exact(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, _) = server.join("alice", "r").await;
    let (mut bob, _) = server.join("bob", "r").await;
    alice.expect("peer_joined").await;

    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=Sprechstunde für Ärzte — 会议 🎥\r\n",
    );
    while sdp.len() < 10 * 1024 {
        sdp.push_str("a=candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx \"quoted\" \\ back\r\n");
    }
    // Send with escapes written the way the client wrote them: the raw JSON string token
    // must come out exactly as it went in.
    let raw_sdp = serde_json::to_string(&sdp).unwrap().replace("ü", "\\u00fc");
    let frame = format!(
        r#"{{"type":"offer","peerId":{},"sdp":{raw_sdp}}}"#,
        serde_json::to_string(&bob.peer_id).unwrap()
    );
    alice.send_text(frame).await;

    let text = bob.next_raw_text().await;
    let expected = format!(
        r#"{{"type":"offer","peerId":{},"sdp":{raw_sdp}}}"#,
        serde_json::to_string(&alice.peer_id).unwrap()
    );
    assert_eq!(text, expected);
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed["sdp"].as_str().unwrap(), sdp);
}

async fn malformed_input_gets_errors_and_harms_nothing_else(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, _) = server.join("alice", "r").await;
    let (mut bob, _) = server.join("bob", "r").await;
    alice.expect("peer_joined").await;

    alice.send_text("{not json".into()).await;
    alice.expect_error("invalid_message").await;
    alice.send_text("[1,2,3]".into()).await;
    alice.expect_error("invalid_message").await;
    alice.send(json!({"roomId": "r"})).await;
    alice.expect_error("invalid_message").await;
    alice.send(json!({"type": "teleport", "id": 5})).await;
    let e = alice.expect_error("unknown_type").await;
    assert_eq!(e["ref"], 5);
    alice.send(json!({"type": "join"})).await;
    alice.expect_error("invalid_message").await;
    alice.send(json!({"type": "join", "roomId": 12})).await;
    alice.expect_error("invalid_message").await;
    alice.send(json!({"type": "join", "roomId": ""})).await;
    alice.expect_error("invalid_message").await;
    alice
        .send(json!({"type": "join", "roomId": "a\u{0007}b"}))
        .await;
    alice.expect_error("invalid_message").await;
    alice
        .send(json!({"type": "offer", "peerId": bob.peer_id}))
        .await;
    alice.expect_error("invalid_message").await;
    alice
        .send(json!({"type": "ice-candidate", "sdp": "x"}))
        .await;
    alice.expect_error("invalid_message").await;
    alice
        .ws
        .send(Message::binary(vec![0u8, 1, 2]))
        .await
        .unwrap();
    alice.expect_error("invalid_message").await;

    // Still connected, still in the room, still relaying both ways.
    alice.offer(&bob.peer_id, "after").await;
    assert_eq!(bob.expect("offer").await["sdp"], "after");
    bob.offer(&alice.peer_id, "back").await;
    assert_eq!(alice.expect("offer").await["sdp"], "back");
}

async fn relayed_values_of_the_wrong_type_are_refused_and_not_delivered(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut alice, _) = server.join("alice", "r").await;
    let (mut bob, _) = server.join("bob", "r").await;
    alice.expect("peer_joined").await;
    let to = bob.peer_id.clone();

    let oversized = json!({"candidate": "x".repeat(5000), "sdpMid": "0"});
    for (id, message) in [
        (
            "sdp-object",
            json!({"type": "offer", "peerId": to, "sdp": {"v": 0}}),
        ),
        (
            "sdp-number",
            json!({"type": "offer", "peerId": to, "sdp": 0}),
        ),
        (
            "answer-array",
            json!({"type": "answer", "peerId": to, "sdp": ["v=0"]}),
        ),
        (
            "candidate-string",
            json!({"type": "ice-candidate", "peerId": to, "candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}),
        ),
        (
            "candidate-number",
            json!({"type": "ice-candidate", "peerId": to, "candidate": 1}),
        ),
        (
            "candidate-oversized",
            json!({"type": "ice-candidate", "peerId": to, "candidate": oversized}),
        ),
    ] {
        let mut message = message;
        message["id"] = json!(id);
        alice.send(message).await;
        let error = alice.expect_error("invalid_message").await;
        assert_eq!(error["ref"], id, "{error}");
    }
    // Each refusal was decided before its error was queued: anything relayed to bob would
    // come before this pong.
    bob.expect_nothing_pending().await;

    // Still relaying: a valid offer, and a null candidate (the end of candidates).
    alice.offer(&to, "v=0 after").await;
    assert_eq!(bob.expect("offer").await["sdp"], "v=0 after");
    alice
        .send(json!({"type": "ice-candidate", "peerId": to, "candidate": null}))
        .await;
    let end = bob.expect("ice-candidate").await;
    assert_eq!(
        end,
        json!({"type": "ice-candidate", "peerId": alice.peer_id, "candidate": null})
    );
}

async fn an_oversized_frame_closes_with_1009_and_others_keep_working(backend: Backend) {
    let mut s = settings();
    s.limits.max_message_bytes = 4096;
    let server = start_on(backend, s).await;
    let (mut alice, _) = server.join("alice", "r").await;
    let (mut bob, _) = server.join("bob", "r").await;
    alice.expect("peer_joined").await;
    let (mut carol, _) = server.join("carol", "r").await;
    alice.expect("peer_joined").await;
    bob.expect("peer_joined").await;

    bob.offer(&alice.peer_id, &"x".repeat(8192)).await;
    assert_eq!(bob.expect_close().await, Some(1009));
    assert_eq!(alice.expect("peer_left").await["reason"], "disconnected");
    carol.expect("peer_left").await;
    alice.offer(&carol.peer_id, "fine").await;
    assert_eq!(carol.expect("offer").await["sdp"], "fine");
}

async fn a_client_that_stops_reading_is_closed_with_4003_while_others_relay(backend: Backend) {
    let mut s = settings();
    s.limits.outbound_queue = 16;
    let server = start_on(backend, s).await;
    let (mut stalled, _) = server.join("stalled", "slow").await;
    let (mut flooder, _) = server.join("flooder", "slow").await;
    stalled.expect("peer_joined").await;
    let (mut c, _) = server.join("c", "fast").await;
    let (mut d, _) = server.join("d", "fast").await;
    c.expect("peer_joined").await;

    // `stalled` reads nothing from here on; fill its socket buffers and its queue.
    let sdp = "s".repeat(60 * 1024 - 200);
    let stalled_id = stalled.peer_id.clone();
    let mut sent = 0;
    let left = loop {
        assert!(sent < 4000, "the slow consumer was never disconnected");
        flooder.offer(&stalled_id, &sdp).await;
        sent += 1;
        // Between bursts, check (without waiting) whether the server gave up on `stalled`.
        if sent % 8 == 0 {
            flooder.send(json!({"type": "ping"})).await;
            let reply = flooder.recv().await;
            if reply["type"] == "peer_left" {
                break reply;
            }
            assert_eq!(reply["type"], "pong", "{reply}");
        }
        // Meanwhile another room relays normally.
        if sent % 64 == 0 {
            c.offer(&d.peer_id, "still fast").await;
            assert_eq!(d.expect("offer").await["sdp"], "still fast");
        }
    };
    assert_eq!(left["peerId"], stalled_id.as_str());
    assert_eq!(left["reason"], "disconnected");
    // Once it reads again, the stalled client finds the 4003 close after what was queued.
    assert_eq!(stalled.expect_close().await, Some(4003));
    c.offer(&d.peer_id, "after").await;
    assert_eq!(d.expect("offer").await["sdp"], "after");
}

async fn a_second_connection_of_a_session_replaces_the_first(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut bob, _) = server.join("bob", "r").await;
    let token = server.token("alice", None);
    let mut first = server.connect_with(&token).await;
    first.join("r").await;
    bob.expect("peer_joined").await;

    let mut second = server.connect_with(&token).await;
    assert_eq!(second.peer_id, first.peer_id);
    assert_eq!(first.expect_close().await, Some(4004));
    let left = bob.expect("peer_left").await;
    assert_eq!(left["reason"], "replaced");
    assert_eq!(left["peerId"], first.peer_id.as_str());

    // The replacement joins under the same peer id and relays; the old close changed nothing.
    second.join("r").await;
    assert_eq!(
        bob.expect("peer_joined").await["peerId"],
        second.peer_id.as_str()
    );
    bob.offer(&second.peer_id, "to the new one").await;
    assert_eq!(second.expect("offer").await["sdp"], "to the new one");
    assert_eq!(server.peer_count(), 2);
}

async fn room_capacity_and_room_restricted_tokens_are_enforced(backend: Backend) {
    let mut s = settings();
    s.limits.max_room_peers = 2;
    let server = start_on(backend, s).await;
    let _a = server.join("a", "small").await;
    let _b = server.join("b", "small").await;
    let mut c = server.connect("c").await;
    c.send(json!({"type": "join", "roomId": "small", "id": 1}))
        .await;
    let e = c.expect_error("room_full").await;
    assert_eq!(e["ref"], 1);

    let token = server.token("d", Some("only-this"));
    let mut d = server.connect_with(&token).await;
    d.send(json!({"type": "join", "roomId": "another"})).await;
    d.expect_error("forbidden_room").await;
    d.join("only-this").await;
}

async fn a_fresh_token_arrives_before_expiry(backend: Backend) {
    let mut s = settings();
    s.auth.token_refresh_before = Duration::from_secs(2);
    let server = start_on(backend, s).await;
    let short = common::issuer(Duration::from_secs(4)).issue("alice", Some("r"), None);
    let mut alice = server.connect_with(&short.token).await;
    alice.join("r").await;

    let refresh = alice.expect("token").await;
    let fresh = refresh["token"].as_str().unwrap();
    let claims = server.state.verifier.verify(fresh).unwrap();
    assert_eq!(claims.session_id, short.claims.session_id);
    assert_eq!(claims.room.as_deref(), Some("r"));
    assert!(claims.exp > short.claims.exp);
    assert_eq!(refresh["expiresAt"], claims.exp);
    // It arrived before the old token expired, and the connection lives on past that time.
    assert!(switchboard::auth::unix_now() < short.claims.exp);
    eventually(
        "the old token's expiry to pass",
        common::DEADLINE,
        async || {
            alice.expect_nothing_pending().await;
            switchboard::auth::unix_now() > short.claims.exp
        },
    )
    .await;
    alice.expect_nothing_pending().await;
}

async fn a_refresh_lead_longer_than_the_token_life_does_not_loop(backend: Backend) {
    let mut s = settings();
    s.auth.token_refresh_before = Duration::from_secs(3600);
    let server = start_on(backend, s).await;
    let short = common::issuer(Duration::from_secs(2)).issue("alice", None, None);
    let mut alice = server.connect_with(&short.token).await;
    let refresh = alice.expect("token").await;
    let claims = server
        .state
        .verifier
        .verify(refresh["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.exp - claims.iat,
        3600,
        "the fresh token has the server's TTL"
    );
    // One refresh, not a stream of them: the next queued frame is the pong.
    alice.expect_nothing_pending().await;
}

async fn an_expired_token_closes_the_connection_with_4001(backend: Backend) {
    let mut s = settings();
    s.auth.token_refresh_before = Duration::ZERO;
    let server = start_on(backend, s).await;
    let (mut bob, _) = server.join("bob", "r").await;
    let short = common::issuer(Duration::from_secs(2)).issue("alice", None, None);
    let mut alice = server.connect_with(&short.token).await;
    alice.join("r").await;
    bob.expect("peer_joined").await;
    assert_eq!(alice.expect_close().await, Some(4001));
    assert!(switchboard::auth::unix_now() >= short.claims.exp - 1);
    assert_eq!(
        bob.expect("peer_left").await["peerId"],
        alice.peer_id.as_str()
    );
}

async fn a_silent_connection_times_out(backend: Backend) {
    let mut s = settings();
    s.timing.ping_interval = Duration::from_millis(200);
    s.timing.idle_timeout = Duration::from_millis(800);
    let server = start_on(backend, s).await;
    let (mut bob, _) = server.join("bob", "r").await;
    let (silent, _) = server.join("silent", "r").await;
    bob.expect("peer_joined").await;
    // `silent` neither reads nor writes, so it answers no ping; bob keeps talking.
    let left = eventually(
        "the silent peer to time out",
        common::DEADLINE,
        async || {
            bob.send(json!({"type": "ping"})).await;
            let m = bob.recv().await;
            (m["type"] == "peer_left").then_some(m)
        },
    )
    .await;
    assert_eq!(left["peerId"], silent.peer_id.as_str());
    assert_eq!(left["reason"], "timeout");
    drop(silent);
}

async fn state_is_cleaned_up_when_everyone_leaves(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (a, _) = server.join("a", "r").await;
    let (b, _) = server.join("b", "r").await;
    // One view of the room on each node holding one of the two peers.
    assert_eq!(server.room_count(), server.node_count().min(2));
    a.close().await;
    b.close().await;
    eventually("every peer to detach", common::DEADLINE, async || {
        server.peer_count() == 0
    })
    .await;
    assert_eq!(server.room_count(), 0);
}

async fn shutdown_closes_connections_with_1012(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut a, _) = server.join("a", "r").await;
    let stopping = tokio::spawn(server.stop());
    let goaway = a.expect("goaway").await;
    assert_eq!(goaway["reason"], "shutdown");
    assert!(
        goaway["reconnectInMs"].as_u64().unwrap() <= 1000,
        "{goaway}"
    );
    assert_eq!(a.expect_close().await, Some(1012));
    stopping.await.unwrap();
}

// Runs every scenario above against each backend: the same protocol whether one node
// holds the room or its peers are spread over several nodes sharing Redis.
on_every_backend!(
    join_relay_and_leave_follow_the_protocol_table,
    joining_another_room_leaves_the_current_one,
    relay_across_rooms_is_refused_and_not_delivered,
    a_forged_sender_is_ignored,
    relay_among_three_reaches_only_the_addressed_peer,
    a_large_non_ascii_sdp_arrives_byte_exact,
    malformed_input_gets_errors_and_harms_nothing_else,
    relayed_values_of_the_wrong_type_are_refused_and_not_delivered,
    an_oversized_frame_closes_with_1009_and_others_keep_working,
    a_client_that_stops_reading_is_closed_with_4003_while_others_relay,
    a_second_connection_of_a_session_replaces_the_first,
    room_capacity_and_room_restricted_tokens_are_enforced,
    state_is_cleaned_up_when_everyone_leaves,
    shutdown_closes_connections_with_1012,
);

/// The connection's timers (pings, the idle timeout, the token's refresh and expiry) are
/// the connection's own, wherever its room lives; their logic has paused-clock unit tests
/// (`src/signaling/timers.rs`). On real sockets they run once per kind of store: the
/// embedded one and Redis (a refresh also renews the session's TTL there).
macro_rules! timer_suite {
    ($($name:ident),* $(,)?) => {
        mod timers_memory {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::Memory).await } )*
        }
        mod timers_redis_one_node {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::Redis(1)).await } )*
        }
    };
}

timer_suite!(
    a_fresh_token_arrives_before_expiry,
    a_refresh_lead_longer_than_the_token_life_does_not_loop,
    an_expired_token_closes_the_connection_with_4001,
    a_silent_connection_times_out,
);

/// The closing handshake (RFC 6455 section 5.5.1): whatever code a client closes with,
/// or none, the server answers with its own close frame before it closes TCP, so the
/// client sees a clean close (its code echoed) rather than a reset. It is the socket's
/// own, whatever the store; the embedded one is enough.
#[tokio::test]
async fn the_server_answers_every_client_close_with_its_own() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = start_on(Backend::Memory, settings()).await;
    let (mut bob, _) = server.join("bob", "r").await;
    for code in [Some(1000), Some(1001), Some(3000), Some(4000), None] {
        let (mut alice, _) = server.join("alice", "r").await;
        bob.expect("peer_joined").await;
        let frame = code.map(|code| CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        });
        alice.ws.close(frame).await.expect("close frame sent");
        let reply = tokio::time::timeout(common::patient(common::DEADLINE), async {
            loop {
                match alice.ws.next().await {
                    Some(Ok(Message::Close(reply))) => return Ok(reply),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed without a close frame".to_string()),
                }
            }
        })
        .await
        .expect("an answer before the deadline");
        let reply = reply.unwrap_or_else(|e| panic!("close {code:?}: no close frame back: {e}"));
        assert_eq!(reply.map(|f| u16::from(f.code)), code, "close {code:?}");
        // After the handshake the stream ends cleanly.
        assert!(
            matches!(alice.ws.next().await, None | Some(Ok(_))),
            "close {code:?}: the connection ended with an error after the close"
        );
        let left = bob.expect("peer_left").await;
        assert_eq!(left["reason"], "disconnected");
    }
}

impl Client {
    /// Like `expect`, skipping membership events.
    async fn expect_skipping(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let m = self.recv().await;
            if m["type"] == kind {
                return m;
            }
            assert!(
                m["type"] == "peer_joined" || m["type"] == "peer_left",
                "unexpected {m}"
            );
        }
    }

    /// The next text frame, verbatim.
    async fn next_raw_text(&mut self) -> String {
        use futures_util::StreamExt;
        loop {
            let frame = tokio::time::timeout(common::patient(common::DEADLINE), self.ws.next())
                .await
                .expect("frame before deadline")
                .expect("open")
                .expect("ok");
            if let Message::Text(t) = frame {
                return t.to_string();
            }
        }
    }
}
