//! Room events as an app's backend receives them: signed webhooks to a real HTTP receiver
//! that fails and stalls some deliveries, and the pull API; every room's sequence whole
//! and in order, on one node and across three processes through a crash and a drain.

mod common;

use std::time::Duration;

use common::api::{API_KEY, Api};
use common::fleet::{Fleet, RedisAccess};
use common::redis::RedisServer;
use common::webhooks::{Flakiness, WEBHOOK_SECRET, WebhookReceiver, broken_promises, by_room};
use common::{Client, eventually, settings, start};
use serde_json::{Value, json};

/// A third of deliveries refused, some answered only after the sender gave up.
const FLAKY: Flakiness = Flakiness {
    fail_in_30: 10,
    hang_in_30: 3,
    hang_for: Duration::from_millis(1500),
};

fn event_settings(receiver: &WebhookReceiver) -> switchboard::config::Settings {
    let mut s = settings();
    s.auth.api_keys = Some(API_KEY.into());
    s.events.webhook_urls = Some(receiver.url.clone());
    s.events.webhook_secret = Some(WEBHOOK_SECRET.into());
    s.events.webhook_timeout = Duration::from_secs(1);
    s.events.webhook_max_backoff = Duration::from_secs(2);
    s.timing.resume_grace = Duration::from_secs(1);
    s
}

/// The accepted events of `room` (repeats dropped), once its last event is `last`.
async fn room_events(receiver: &WebhookReceiver, room: &str, last: &str) -> Vec<Value> {
    eventually(
        format!("room {room}'s events up to {last}"),
        Duration::from_secs(60),
        async || {
            let events = by_room(&receiver.accepted()).remove(room)?;
            (events.last()?["type"] == last).then_some(events)
        },
    )
    .await
}

/// Skips messages until one of type `kind` comes.
async fn until(client: &mut Client, kind: &str) -> Value {
    loop {
        let message = client.recv().await;
        if message["type"] == kind {
            return message;
        }
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["reason"].as_str() {
            Some(reason) => format!("{}:{reason}", e["type"].as_str().unwrap()),
            None => e["type"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[tokio::test]
async fn one_node_delivers_every_event_signed_in_order_through_a_flaky_receiver() {
    let receiver = WebhookReceiver::start(FLAKY).await;
    let server = start(event_settings(&receiver)).await;
    let token = server
        .state
        .issuer
        .as_ref()
        .unwrap()
        .issue_with("ann", None, None, Some(r#"{"name":"Ann"}"#))
        .token;
    let mut ann = server.connect_with(&token).await;
    ann.join("standup").await;
    let bob_token = server.token("bob", None);
    let mut bob = server.connect_with(&bob_token).await;
    bob.join("standup").await;
    ann.expect("peer_joined").await;
    bob.send(json!({"type": "update", "metadata": {"muted": true}}))
        .await;
    ann.expect("peer_updated").await;
    // Bob's network drops; he is back within the grace: no event pair.
    let peer_id = bob.peer_id.clone();
    server.lose(bob.ws).await;
    let url = server.ws_url(&bob_token);
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut bob = Client { ws, peer_id };
    bob.expect("resumed").await;
    // A second connection of his session replaces the first, which leaves (replaced); the
    // new one joins again.
    let mut bob = server.connect_with(&bob_token).await;
    bob.join("standup").await;
    assert_eq!(ann.expect("peer_left").await["reason"], "replaced");
    ann.expect("peer_joined").await;
    // Cy joins and drops for good: timeout once the grace ends.
    let (cy, _) = server.join("cy", "standup").await;
    ann.expect("peer_joined").await;
    drop(cy.ws);
    assert_eq!(ann.expect("peer_left").await["reason"], "timeout");
    bob.expect("peer_joined").await;
    bob.expect("peer_left").await;
    // The backend removes Bob; Ann leaves; the room ends.
    let api = Api::of(&server);
    let path = format!("/rooms/standup/peers/{}", bob.peer_id);
    assert_eq!(api.call("DELETE", &path, None).await.0, 204);
    bob.expect("removed").await;
    ann.send(json!({"type": "leave"})).await;
    ann.expect("peer_left").await;
    ann.expect_nothing_pending().await;

    let events = room_events(&receiver, "standup", "room_finished").await;
    assert_eq!(
        kinds(&events),
        [
            "room_started",
            "participant_joined",
            "participant_joined",
            "participant_updated",
            "participant_left:replaced",
            "participant_joined",
            "participant_joined",
            "participant_left:timeout",
            "participant_left:removed",
            "participant_left:left",
            "room_finished",
        ],
        "{events:#?}"
    );
    let broken = broken_promises(&receiver.accepted(), true);
    assert!(broken.is_empty(), "{broken:#?}");
    assert_eq!(events[1]["peer"]["userId"], "ann");
    assert_eq!(events[1]["peer"]["metadata"], json!({"name": "Ann"}));
    assert_eq!(events[3]["peer"]["metadata"], json!({"muted": true}));
    let (arrived, refused, forged) = receiver.counts();
    assert_eq!(forged, 0);
    assert!(refused > 0 && arrived > events.len(), "{arrived} {refused}");

    // The pull API has the same events, in delivery order, in pages.
    let mut pulled = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/events?limit=4".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&after={c}"));
        }
        let (_, page) = api.get(&path).await;
        let batch = page["events"].as_array().unwrap().clone();
        if batch.is_empty() {
            assert_eq!(page["cursor"].as_str(), cursor.as_deref());
            break;
        }
        assert!(batch.len() <= 4);
        cursor = page["cursor"].as_str().map(str::to_string);
        pulled.extend(batch);
    }
    assert_eq!(pulled, events);
    let metrics = server.metrics().await;
    for series in [
        "switchboard_events_emitted_total 11",
        "switchboard_events_delivered_total{endpoint=\"webhook-1\"}",
        "switchboard_events_retried_total{endpoint=\"webhook-1\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn an_endpoint_that_never_answers_2xx_is_given_up_on_after_the_retry_time() {
    let receiver = WebhookReceiver::start(Flakiness {
        fail_in_30: 30,
        hang_in_30: 0,
        hang_for: Duration::ZERO,
    })
    .await;
    let mut s = event_settings(&receiver);
    s.events.webhook_retry_for = Duration::from_secs(2);
    let server = start(s).await;
    let (ann, _) = server.join("ann", "gone").await;
    ann.close().await;
    eventually(
        "every event to be dropped",
        Duration::from_secs(30),
        async || {
            let metrics = server.metrics().await;
            metrics.contains("switchboard_events_dropped_total{endpoint=\"webhook-1\"} 4")
        },
    )
    .await;
    // Then the endpoint recovers: later events reach it; the dropped ones are in the log.
    receiver.set_flakiness(Flakiness::NONE);
    let (bob, _) = server.join("bob", "gone").await;
    bob.close().await;
    let events = room_events(&receiver, "gone", "room_finished").await;
    assert_eq!(events[0]["seq"], 5);
    let (_, page) = Api::of(&server).get("/events").await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
}

#[tokio::test]
async fn the_event_api_refuses_bad_cursors_limits_and_methods() {
    let receiver = WebhookReceiver::start(Flakiness::NONE).await;
    let server = start(event_settings(&receiver)).await;
    let api = Api::of(&server);
    for query in [
        "?after=abc",
        "?after=1-2-3",
        "?limit=0",
        "?limit=1001",
        "?limit=x",
    ] {
        let (status, body) = api.get(&format!("/events{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "invalid_request", "{query}");
    }
    let (_, page) = api.get("/events").await;
    assert_eq!(page, json!({"events": [], "cursor": null}));
    // A wrong method is refused, and counted like every other answer.
    let (status, body) = api.call("POST", "/events", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let metrics = server.metrics().await;
    let series = "switchboard_api_requests_total{endpoint=\"list_events\",status=\"405\"}";
    assert_eq!(metric(&metrics, series), 1, "{metrics}");
}

/// Three processes on one Redis, clients spread over them, a receiver failing a third of
/// deliveries: one node is SIGKILLed mid-run and one drained; every room's sequence is
/// whole, in order, and every join is followed by its leave.
#[tokio::test]
async fn three_nodes_keep_every_room_sequence_whole_through_a_crash_and_a_drain() {
    let redis = RedisServer::start().await;
    let receiver = WebhookReceiver::start(FLAKY).await;
    let access = vec![RedisAccess::Url(redis.url()); 3];
    let mut fleet = Fleet::start(
        &access,
        &[
            ("AUTH_API_KEYS", API_KEY),
            ("WEBHOOK_URLS", &receiver.url),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("WEBHOOK_TIMEOUT", "1s"),
            ("WEBHOOK_MAX_BACKOFF", "2s"),
            ("RESUME_GRACE", "2s"),
            // Long enough for every drained client to move before the node exits.
            ("DRAIN_TIMEOUT", "10s"),
        ],
    )
    .await;
    let addrs = fleet.addrs();
    let issuer = common::issuer(Duration::from_secs(600));
    let connect = async |node: usize, user: &str| -> (Client, String) {
        let issued = issuer.issue(user, None, None);
        let mut client = common::connect_at(&addrs[node], &issued.token).await;
        client.peer_id = issued.claims.peer_id();
        (client, issued.token)
    };
    // Three rooms, members on every node.
    let mut clients = Vec::new();
    for (i, user) in ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1"]
        .iter()
        .enumerate()
    {
        let room = &user[..1];
        let (mut client, token) = connect(i % 3, user).await;
        client.join(room).await;
        clients.push((client, token, i % 3));
    }
    for (client, _, _) in clients.iter_mut().step_by(2) {
        client
            .send(json!({"type": "update", "metadata": {"hand": true}}))
            .await;
    }
    // The backend removes one member; one drops without leaving (timeout).
    let api = Api::at(&format!("http://{}", addrs[0]));
    let path = format!("/rooms/a/peers/{}", clients[1].0.peer_id);
    assert_eq!(api.call("DELETE", &path, None).await.0, 204);
    let (dropped, _, _) = clients.remove(4); // b1, on node 1
    drop(dropped.ws);
    // c0 leaves its room and joins another.
    let c0 = &mut clients[5].0;
    c0.send(json!({"type": "leave"})).await;
    c0.send(json!({"type": "join", "roomId": "d"})).await;
    until(c0, "joined").await;

    // Node 2 dies: its members leave with node_lost.
    fleet.nodes[2].process.kill();
    // Node 1 drains: its members get goaway and resume on node 0 (no event pair).
    fleet.nodes[1].process.signal("-TERM");
    let mut survivors = Vec::new();
    for (mut client, token, node) in clients {
        match node {
            2 => drop(client),
            1 => {
                until(&mut client, "goaway").await;
                let resumed_ws = tokio_tungstenite::connect_async(format!(
                    "ws://{}/ws/signal?token={token}",
                    addrs[0]
                ))
                .await
                .unwrap()
                .0;
                let mut resumed = Client {
                    ws: resumed_ws,
                    peer_id: client.peer_id.clone(),
                };
                drop(client);
                resumed.expect("resumed").await;
                survivors.push(resumed);
            }
            _ => survivors.push(client),
        }
    }
    // Everyone left closes: every room finishes.
    for client in survivors {
        client.close().await;
    }
    let closed = tokio::time::Instant::now();
    eventually(
        "every room to finish at the receiver",
        Duration::from_secs(90),
        async || {
            let rooms = by_room(&receiver.accepted());
            rooms.len() == 4
                && rooms
                    .values()
                    .all(|events| events.last().unwrap()["type"] == "room_finished")
        },
    )
    .await;
    println!(
        "every room finished {:.1} s after the last client closed",
        closed.elapsed().as_secs_f64()
    );
    let accepted = receiver.accepted();
    let broken = broken_promises(&accepted, true);
    assert!(broken.is_empty(), "{broken:#?}");
    let rooms = by_room(&accepted);
    let reasons: Vec<String> = rooms
        .values()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    for reason in ["left", "removed", "timeout", "node_lost", "disconnected"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} in {reasons:?}"
        );
    }
    // Every field on Redis as on the embedded store.
    let updated = rooms["a"]
        .iter()
        .find(|e| e["type"] == "participant_updated" && e["peer"]["userId"] == "a0")
        .expect("a0's update");
    assert_eq!(updated["peer"]["userId"], "a0");
    assert_eq!(updated["peer"]["metadata"], json!({"hand": true}));
    assert!(updated["createdAt"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(updated["id"].as_str().unwrap().len() > 8);
    // The drained members resumed: they left once, when they closed at the end.
    assert!(!reasons.iter().any(|r| r == "replaced"), "{reasons:?}");
    let (_, refused, forged) = receiver.counts();
    assert_eq!(forged, 0);
    assert!(refused > 0);
}

/// The value of `series` (name and labels, as written) in a `/metrics` text; 0 if absent.
fn metric(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}
