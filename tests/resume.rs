//! Resume: a connection that drops without `leave` keeps its session for `RESUME_GRACE`;
//! reconnecting with the same session gets `resumed` and everything queued meanwhile, in
//! order. Without a resume, the room hears `peer_left` `timeout`.

mod common;

use std::time::Duration;

use common::{Backend, Client, settings, start_on};
use serde_json::json;

/// Connects without the ping handshake (a resumed connection speaks first).
async fn raw(addr: std::net::SocketAddr, token: &str, peer_id: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/signal?token={token}"))
        .await
        .expect("websocket upgrade");
    Client {
        ws,
        peer_id: peer_id.to_string(),
    }
}

/// `a` sits on node 0; `b` connects to node `first`, drops, and comes back on node `back`.
async fn a_dropped_peer_resumes_with_everything_sent_meanwhile(
    backend: Backend,
    first: usize,
    back: usize,
) {
    let server = start_on(backend, settings()).await;
    let (mut a, _) = server.join("a", "r").await;
    let issued = server.state.issuer.as_ref().unwrap().issue("b", None, None);
    let mut b = server.connect_to(first, &issued.token).await;
    b.join("r").await;
    a.expect("peer_joined").await;
    a.offer(&b.peer_id, "before").await;
    assert_eq!(b.expect("offer").await["sdp"], "before");

    // b's network goes away mid-negotiation: no close frame, no leave.
    let b_id = b.peer_id.clone();
    server.lose(b).await;
    // The room is not told, and messages for b are kept.
    for seq in 0..10 {
        a.send(json!({"type": "ice-candidate", "peerId": b_id, "candidate": {"candidate": format!("c{seq}")}}))
            .await;
    }
    a.expect_nothing_pending().await;

    // b comes back with a refreshed token of the same session.
    let refreshed = server
        .state
        .issuer
        .as_ref()
        .unwrap()
        .reissue(&issued.claims.clone().into());
    let mut b = raw(server.node_addr(back), &refreshed.token, &b_id).await;
    let resumed = b.expect("resumed").await;
    assert_eq!(resumed["roomId"], "r");
    assert_eq!(resumed["peerId"], b_id.as_str());
    assert_eq!(resumed["peers"], json!([a.peer_id]));
    for seq in 0..10 {
        let m = b.expect("ice-candidate").await;
        assert_eq!(m["candidate"]["candidate"], format!("c{seq}"));
        assert_eq!(m["peerId"], a.peer_id.as_str());
    }
    // Same peer, same room: relaying goes on both ways, and nobody saw it leave.
    b.offer(&a.peer_id, "after").await;
    assert_eq!(a.expect("offer").await["sdp"], "after");
    a.offer(&b_id, "and back").await;
    assert_eq!(b.expect("offer").await["sdp"], "and back");
}

#[tokio::test]
async fn resume_on_one_node() {
    a_dropped_peer_resumes_with_everything_sent_meanwhile(Backend::Memory, 0, 0).await;
}

#[tokio::test]
async fn resume_on_the_same_node_of_two_on_redis() {
    a_dropped_peer_resumes_with_everything_sent_meanwhile(Backend::Redis(2), 0, 0).await;
}

#[tokio::test]
async fn resume_moves_the_session_to_the_node_of_the_other_peer() {
    a_dropped_peer_resumes_with_everything_sent_meanwhile(Backend::Redis(2), 1, 0).await;
}

#[tokio::test]
async fn resume_moves_the_session_away_from_the_node_of_the_other_peer() {
    a_dropped_peer_resumes_with_everything_sent_meanwhile(Backend::Redis(2), 0, 1).await;
}

#[tokio::test]
async fn resume_moves_the_session_between_nodes_of_the_embedded_store() {
    a_dropped_peer_resumes_with_everything_sent_meanwhile(Backend::MemoryNodes(3), 1, 2).await;
}

#[tokio::test]
async fn without_a_resume_the_room_hears_timeout_after_the_grace() {
    let mut s = settings();
    s.timing.resume_grace = Duration::from_millis(500);
    let server = start_on(Backend::Memory, s).await;
    let (mut a, b) = server.pair("a", "b", "r").await;
    let b_id = b.peer_id.clone();
    let dropped = tokio::time::Instant::now();
    drop(b);
    let left = a.expect("peer_left").await;
    assert_eq!(left["peerId"], b_id.as_str());
    assert_eq!(left["reason"], "timeout");
    assert!(
        dropped.elapsed() >= Duration::from_millis(500),
        "not before the grace"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_resumes_total{outcome="expired"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_overflowing_queue_ends_the_session_early() {
    let mut s = settings();
    s.limits.outbound_queue = 8;
    let server = start_on(Backend::Memory, s).await;
    let (mut a, b) = server.pair("a", "b", "r").await;
    let b_id = b.peer_id.clone();
    server.lose(b).await;
    // More than the queue holds: the session ends instead of losing messages silently.
    let mut sent = 0;
    let left = loop {
        sent += 1;
        assert!(sent < 1000, "the session never ended");
        a.offer(&b_id, "x").await;
        let m = a.recv_within(Duration::from_millis(20)).await;
        if let Some(m) = m {
            break m;
        }
    };
    assert_eq!(left["type"], "peer_left");
    assert_eq!(left["reason"], "timeout");
}

#[tokio::test]
async fn a_clean_close_leaves_at_once() {
    let server = start_on(Backend::Memory, settings()).await;
    let (mut a, b) = server.pair("a", "b", "r").await;
    b.close().await;
    assert_eq!(a.expect("peer_left").await["reason"], "disconnected");
}
