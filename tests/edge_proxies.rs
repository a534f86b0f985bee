//! The edge configurations of deploy/ in front of a real node: nginx and Caddy terminate TLS
//! with a throwaway CA, carry token requests, signaling sessions and an offer between two
//! clients in both layouts (pass-through and the stripped `/auth`, `/signal` prefixes), and
//! hand Switchboard the client's address, so its per-IP limit counts clients and not the
//! proxy. nginx's own per-IP limit is checked too (stock Caddy has none; see its Caddyfile).

mod common;

use std::net::IpAddr;

use common::edge::{Edge, EdgeClient, Layout, Proxy, TestCa};
use common::process::Running;
use common::tools::available;
use common::{Client, DEADLINE, SECRET, eventually};
use serde_json::json;

/// Token requests plus upgrades each client address may make per minute on the node: low,
/// so one client exhausts it in a few requests while every other address still gets in.
const NODE_RATE: usize = 4;

/// A loopback address of its own for each simulated client.
fn client_ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// Starts a node trusting 127.0.0.1 (where the edge connects from) behind `proxy`.
async fn deployment(proxy: Proxy) -> Option<(TestCa, Running, Edge)> {
    if !available(proxy.command(), proxy.command()) || !available("openssl", "openssl") {
        return None;
    }
    let ca = TestCa::generate();
    let rate = NODE_RATE.to_string();
    let (node, addr) = Running::start(&[
        ("AUTH_SECRET", SECRET),
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("RATE_PER_IP_PER_MINUTE", &rate),
        // A busy test machine must not shed the upgrades under test.
        ("SHED_CPU_PERCENT", "0"),
    ]);
    let edge = Edge::start(proxy, &ca, &addr).await;
    Some((ca, node, edge))
}

/// Two clients, each on its own address, meet in a room through `layout` and relay an offer
/// and its answer; returns both, still connected.
async fn call(ca: &TestCa, edge: &Edge, layout: Layout, first: u8) -> (Client, Client) {
    let alice = EdgeClient::new(ca, edge.port, client_ip(first));
    let bob = EdgeClient::new(ca, edge.port, client_ip(first + 1));
    let mut a = alice.connect(layout, "alice").await;
    let mut b = bob.connect(layout, "bob").await;
    let room = format!("room-{first}");
    a.join(&room).await;
    let joined = b.join(&room).await;
    assert_eq!(joined["peers"], json!([a.peer_id]), "{layout:?}: {joined}");
    assert_eq!(a.expect("peer_joined").await["peerId"], b.peer_id.as_str());

    // Byte-exact SDP both ways, the sender's id set by the server.
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";
    a.offer(&b.peer_id, sdp).await;
    let offer = b.expect("offer").await;
    assert_eq!(
        (offer["peerId"].as_str(), offer["sdp"].as_str()),
        (Some(a.peer_id.as_str()), Some(sdp))
    );
    b.send(json!({"type": "answer", "peerId": a.peer_id, "sdp": "v=0 answer"}))
        .await;
    let answer = a.expect("answer").await;
    assert_eq!(answer["peerId"], b.peer_id.as_str(), "{layout:?}");
    (a, b)
}

/// Exhausts the node's per-IP budget from one address through the edge and shows that only
/// that address is refused: the node counts the forwarded client, not the proxy (through
/// which every request arrives), and believes no `X-Forwarded-For` the client made up.
async fn node_limits_the_forwarded_client(ca: &TestCa, edge: &Edge) {
    let greedy = EdgeClient::new(ca, edge.port, client_ip(40));
    for n in 0..NODE_RATE {
        let (status, body) = greedy
            .request_token(Layout::PassThrough, "greedy", None)
            .await;
        assert_eq!(status, 200, "request {n} within the per-IP budget: {body}");
    }
    let (status, body) = greedy
        .request_token(Layout::PassThrough, "greedy", None)
        .await;
    assert_eq!(status, 429, "over the per-IP budget: {body}");
    assert!(
        body.contains("rate_limited"),
        "refused by Switchboard: {body}"
    );
    // A forged header from the client is replaced by the edge, not believed by the node.
    let (status, body) = greedy
        .request_token(Layout::PassThrough, "greedy", Some("203.0.113.9"))
        .await;
    assert_eq!(status, 429, "a made-up X-Forwarded-For got through: {body}");
    // Every request came from the proxy's address: had the node counted that, this one
    // would be refused as well.
    let other = EdgeClient::new(ca, edge.port, client_ip(41));
    let (status, body) = other.request_token(Layout::SameOrigin, "other", None).await;
    assert_eq!(status, 200, "another client address is not limited: {body}");
}

async fn edge_carries_calls_and_client_addresses(proxy: Proxy) {
    let Some((ca, _node, edge)) = deployment(proxy).await else {
        return;
    };
    let mut held = Vec::new();
    for (layout, first) in [(Layout::PassThrough, 10), (Layout::SameOrigin, 20)] {
        held.push(call(&ca, &edge, layout, first).await);
    }
    // The first call is still up after the second was set up through the other layout.
    let (a, b) = &mut held[0];
    b.offer(&a.peer_id, "v=0 again").await;
    assert_eq!(a.expect("offer").await["sdp"], "v=0 again");

    node_limits_the_forwarded_client(&ca, &edge).await;

    // Tokens travelled in ?token=: the edge's access log must not keep them. An upgraded
    // request is logged when its connection ends, so close them and wait for those lines.
    for (a, b) in held {
        a.close().await;
        b.close().await;
    }
    let log = eventually(
        format!("{proxy:?} to log the closed WebSocket requests"),
        DEADLINE,
        async || {
            let log = edge.log();
            let upgrades = log.matches("/signal/ws/signal").count();
            (upgrades >= 2).then_some(log)
        },
    )
    .await;
    assert!(!log.contains("eyJ"), "a token in {proxy:?}'s log:\n{log}");
}

#[tokio::test]
async fn nginx_carries_calls_and_client_addresses() {
    edge_carries_calls_and_client_addresses(Proxy::Nginx).await;
}

#[tokio::test]
async fn caddy_carries_calls_and_client_addresses() {
    edge_carries_calls_and_client_addresses(Proxy::Caddy).await;
}

/// nginx refuses a client over the edge limit itself (its plain 429 page, not
/// Switchboard's JSON), and only that client.
#[tokio::test]
async fn nginx_limits_each_client_address_at_the_edge() {
    let Some((ca, _node, edge)) = deployment(Proxy::Nginx).await else {
        return;
    };
    let flood = EdgeClient::new(&ca, edge.port, client_ip(50));
    // burst=50 at 300/min: the edge refuses within a few requests past 50.
    let mut edge_refused = None;
    for n in 0..80 {
        let (status, body) = flood
            .request_token(Layout::PassThrough, "flood", None)
            .await;
        if status == 429 && body.contains("nginx") {
            edge_refused = Some(n);
            break;
        }
    }
    let n = edge_refused.expect("nginx never refused 80 quick requests from one address");
    assert!(n >= 50, "nginx refused request {n}, inside its burst of 50");
    let calm = EdgeClient::new(&ca, edge.port, client_ip(51));
    let (status, body) = calm.request_token(Layout::PassThrough, "calm", None).await;
    assert_eq!(
        status, 200,
        "another address is not limited at the edge: {body}"
    );
}
