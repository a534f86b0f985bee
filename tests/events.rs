//! Room events as an app's backend receives them: signed webhooks to a real HTTP receiver
//! that fails and stalls some deliveries, and the pull API; every room's sequence whole
//! and in order, on one node and across three processes through a crash and a drain.

mod common;

use std::time::Duration;

use common::api::{API_KEY, Api};
use common::fleet::{Fleet, RedisAccess};
use common::redis::RedisServer;
use common::webhooks::{Flakiness, WEBHOOK_SECRET, WebhookReceiver, broken_promises, by_room};
use common::{Backend, Client, eventually, settings, start, start_on};
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

/// Every delivery refused with 500.
const REFUSING: Flakiness = Flakiness {
    fail_in_30: 30,
    hang_in_30: 0,
    hang_for: Duration::ZERO,
};

#[tokio::test]
async fn a_revoked_member_leaves_with_reason_revoked() {
    let receiver = WebhookReceiver::start(Flakiness::NONE).await;
    let server = start(event_settings(&receiver)).await;
    let issued = server
        .state
        .issuer
        .as_ref()
        .unwrap()
        .issue("mallory", None, None);
    let mut mallory = server.connect_with(&issued.token).await;
    mallory.join("revoked").await;
    let revoked = reqwest::Client::new()
        .post(server.http("/auth/revoke"))
        .bearer_auth(API_KEY)
        .json(&json!({ "sessionId": issued.claims.session_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(mallory.expect_close().await, Some(1008));
    let events = room_events(&receiver, "revoked", "room_finished").await;
    assert_eq!(
        kinds(&events),
        [
            "room_started",
            "participant_joined",
            "participant_left:revoked",
            "room_finished"
        ]
    );
    assert_eq!(events[2]["peer"]["peerId"], mallory.peer_id.as_str());
}

/// Every page of `GET /api/v1/events` from `api`, from the oldest.
async fn pull_all(api: &Api) -> Vec<Value> {
    let mut pulled = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/events?limit=5".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&after={c}"));
        }
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let batch = page["events"].as_array().unwrap().clone();
        if batch.is_empty() {
            return pulled;
        }
        cursor = page["cursor"].as_str().map(str::to_string);
        pulled.extend(batch);
    }
}

/// Three nodes on one Redis, each room with members on every node: whichever node is
/// asked, the pull API returns the whole cluster's events, every room's sequence whole.
#[tokio::test]
async fn the_event_log_is_the_clusters_through_any_of_three_nodes() {
    let mut s = settings();
    s.auth.api_keys = Some(API_KEY.into());
    let server = start_on(Backend::Redis(3), s).await;
    let mut members = Vec::new();
    for room in ["x", "y"] {
        for user in ["u0", "u1", "u2"] {
            // Round-robin: one member of each room per node.
            members.push(server.join(&format!("{room}{user}"), room).await.0);
        }
    }
    for member in members {
        member.close().await;
    }
    // Per room: started, 3 joined, 3 left, finished.
    let expected = 2 * 8;
    let apis: Vec<Api> = (0..3)
        .map(|i| Api::at(&format!("http://{}", server.node_addr(i))))
        .collect();
    let first = eventually(
        "every event in the log",
        Duration::from_secs(30),
        async || {
            let pulled = pull_all(&apis[0]).await;
            (by_room(&pulled).values().map(Vec::len).sum::<usize>() == expected).then_some(pulled)
        },
    )
    .await;
    let broken = broken_promises(&first, true);
    assert!(broken.is_empty(), "{broken:#?}");
    for api in &apis[1..] {
        assert_eq!(pull_all(api).await, first);
    }
}

/// A receiver refusing everything while the room changes ten times a second: it is asked
/// again only on its backoff (1 s, then 2 s at most), not on every change.
#[tokio::test]
async fn a_failing_endpoint_is_retried_on_its_backoff_while_the_room_keeps_changing() {
    let receiver = WebhookReceiver::start(REFUSING).await;
    let server = start(event_settings(&receiver)).await; // WEBHOOK_MAX_BACKOFF=2s
    let (mut ann, _) = server.join("ann", "busy").await;
    let (mut bob, _) = server.join("bob", "busy").await;
    ann.expect("peer_joined").await;
    let changing = Duration::from_secs(6);
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut changes = 0;
    while started.elapsed() < changing {
        tick.tick().await;
        ann.send(json!({"type": "update", "metadata": {"n": changes}}))
            .await;
        bob.expect("peer_updated").await;
        changes += 1;
    }
    let (arrived, refused, _) = receiver.counts();
    // At 0, ≥ 0.5, ≥ 1.5, then at least every second: at most 7 attempts in 6 s; a retry
    // on every change would be about 60.
    assert!(
        (3..=7).contains(&arrived),
        "{arrived} attempts during {changes} changes in {changing:?}"
    );
    assert_eq!(refused, arrived);
    // Every attempt counted once, as a retry.
    let retried = metric(
        &server.metrics().await,
        "switchboard_events_retried_total{endpoint=\"webhook-1\"}",
    );
    assert!(
        (arrived as u64 - 1..=arrived as u64 + 1).contains(&retried),
        "{retried} retries counted for {arrived} attempts"
    );
}

/// Two endpoints, the first never answering within WEBHOOK_TIMEOUT: the second gets each
/// event at once, in this room and another, while the first one's attempts hang.
#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_back_another() {
    let hanging = WebhookReceiver::start(Flakiness {
        fail_in_30: 0,
        hang_in_30: 30,
        hang_for: Duration::from_secs(30),
    })
    .await;
    let quick = WebhookReceiver::start(Flakiness::NONE).await;
    let mut s = event_settings(&hanging);
    s.events.webhook_urls = Some(format!("{},{}", hanging.url, quick.url));
    s.events.webhook_timeout = Duration::from_secs(5);
    let server = start(s).await;
    // Well within the hanging endpoint's 5 s: what it must not wait for.
    let prompt = Duration::from_millis(2500);
    let (_ann, _) = server.join("ann", "held").await;
    eventually("ann's join at the quick endpoint", prompt, async || {
        by_room(&quick.accepted()).get("held").map(Vec::len) == Some(2)
    })
    .await;
    // The hanging endpoint now waits on its first attempt; the room changes meanwhile.
    eventually(
        "the first attempt at the hanging endpoint",
        prompt,
        async || hanging.counts().0 > 0,
    )
    .await;
    let (_bob, _) = server.join("bob", "held").await;
    let (_cy, _) = server.join("cy", "elsewhere").await;
    eventually(
        "bob's and cy's joins at the quick endpoint",
        prompt,
        async || {
            let rooms = by_room(&quick.accepted());
            rooms.get("held").map(Vec::len) == Some(3)
                && rooms.get("elsewhere").map(Vec::len) == Some(2)
        },
    )
    .await;
    let broken = broken_promises(&quick.accepted(), false);
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Events queued behind a failing one are given up on by their own age: the six events of
/// a short meeting are all dropped about WEBHOOK_RETRY_FOR after they happened, not one
/// WEBHOOK_RETRY_FOR after another.
#[tokio::test]
async fn queued_events_are_dropped_by_their_own_age() {
    let receiver = WebhookReceiver::start(REFUSING).await;
    let mut s = event_settings(&receiver);
    s.events.webhook_retry_for = Duration::from_secs(2);
    s.events.webhook_max_backoff = Duration::from_secs(1);
    let server = start(s).await;
    let happened = tokio::time::Instant::now();
    let (ann, _) = server.join("ann", "short").await;
    let (bob, _) = server.join("bob", "short").await;
    bob.close().await;
    ann.close().await;
    // 2 s of retries, one backoff and an attempt or two: about 4 s; one event after
    // another would take 12 s or more.
    eventually(
        "all six events dropped",
        Duration::from_secs(7),
        async || {
            let metrics = server.metrics().await;
            metric(
                &metrics,
                "switchboard_events_dropped_total{endpoint=\"webhook-1\"}",
            ) == 6
        },
    )
    .await;
    println!(
        "dropped {:.1} s after the first event",
        happened.elapsed().as_secs_f64()
    );
    // Each dropped event stays in the pull log.
    let (_, page) = Api::of(&server).get("/events").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 6);
}

/// Events that vanish from Redis before delivery (a restart without persistence, an
/// eviction) are counted as dropped when the room's sequence jumps past them.
#[tokio::test]
async fn events_lost_from_redis_are_counted_as_dropped() {
    let receiver = WebhookReceiver::start(REFUSING).await;
    let mut server = start_on(Backend::Redis(1), event_settings(&receiver)).await;
    let (_ann, _) = server.join("ann", "lost").await;
    // The endpoint refused seq 1 and waits for its retry; then the stream goes.
    eventually(
        "a refused attempt recorded",
        Duration::from_secs(10),
        async || {
            let metrics = server.metrics().await;
            metric(
                &metrics,
                "switchboard_events_retried_total{endpoint=\"webhook-1\"}",
            ) > 0
        },
    )
    .await;
    let stream = format!("{}room:{{lost}}:events", server.key_prefix());
    server
        .redis_mut::<RedisServer>()
        .cli(&["DEL", &stream])
        .await;
    receiver.set_flakiness(Flakiness::NONE);
    let (_bob, _) = server.join("bob", "lost").await;
    let events = room_events(&receiver, "lost", "participant_joined").await;
    assert_eq!(events[0]["seq"], 3, "{events:#?}");
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "switchboard_events_dropped_total{endpoint=\"webhook-1\"}"
        ),
        2,
        "{metrics}"
    );
}
