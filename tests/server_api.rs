//! Participant metadata, client messages and the server API over real sockets, on one
//! node and across three (clients are spread over the nodes, the API is asked on the
//! first): every endpoint with good and bad input.

mod common;

use std::time::Duration;

use common::api::{API_KEY, Api};
use common::{Backend, Client, DEADLINE, TestServer, eventually, settings, start, start_on};
use serde_json::{Value, json};

fn api_settings() -> switchboard::config::Settings {
    let mut s = settings();
    s.auth.api_keys = Some(API_KEY.into());
    s
}

/// A client whose token carries `metadata`.
async fn connect_with_metadata(server: &TestServer, user: &str, metadata: &Value) -> Client {
    let token = server
        .state
        .issuer
        .as_ref()
        .unwrap()
        .issue_with(user, None, None, Some(&metadata.to_string()))
        .token;
    server.connect_with(&token).await
}

async fn metadata_reaches_every_member_and_late_joiners(backend: Backend) {
    let server = start_on(backend, api_settings()).await;
    let mut ann = connect_with_metadata(&server, "ann", &json!({"name": "Ann"})).await;
    let joined = ann.join("m").await;
    assert_eq!(joined["peers"], json!([]));
    assert_eq!(
        joined["metadata"],
        json!({ ann.peer_id.clone(): {"name": "Ann"} })
    );

    let mut bob = server.connect("bob").await;
    let joined = bob.join("m").await;
    assert_eq!(joined["peers"], json!([ann.peer_id]));
    assert_eq!(
        joined["metadata"],
        json!({ ann.peer_id.clone(): {"name": "Ann"} })
    );
    let seen = ann.expect("peer_joined").await;
    assert_eq!(seen, json!({"type": "peer_joined", "peerId": bob.peer_id}));

    bob.send(json!({"type": "update", "metadata": {"name": "Bob", "muted": true}}))
        .await;
    let updated = ann.expect("peer_updated").await;
    assert_eq!(
        updated,
        json!({"type": "peer_updated", "peerId": bob.peer_id, "metadata": {"name": "Bob", "muted": true}})
    );
    // The sender is not told of its own update.
    bob.expect_nothing_pending().await;

    let mut cy = server.connect("cy").await;
    let joined = cy.join("m").await;
    assert_eq!(
        joined["metadata"],
        json!({
            ann.peer_id.clone(): {"name": "Ann"},
            bob.peer_id.clone(): {"name": "Bob", "muted": true},
        })
    );
    for member in [&mut ann, &mut bob] {
        let seen = member.expect("peer_joined").await;
        assert_eq!(seen["peerId"], cy.peer_id.as_str());
        assert!(seen.get("metadata").is_none(), "{seen}");
    }

    // Refusals carry the client's id and change nothing.
    for (bad, says) in [
        (json!({"type": "update", "id": 1}), "needs a \"metadata\""),
        (
            json!({"type": "update", "id": 1, "metadata": [1]}),
            "JSON object",
        ),
        (
            json!({"type": "update", "id": 1, "metadata": "x"}),
            "JSON object",
        ),
        (
            json!({"type": "update", "id": 1, "metadata": {"x": "a".repeat(5000)}}),
            "MAX_METADATA_BYTES",
        ),
    ] {
        cy.send(bad).await;
        let error = cy.expect_error("invalid_message").await;
        assert_eq!(error["ref"], 1);
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    ann.expect_nothing_pending().await;
    bob.expect_nothing_pending().await;

    // Metadata set outside a room travels with the next join.
    let mut dee = server.connect("dee").await;
    dee.send(json!({"type": "update", "metadata": {"name": "Dee"}}))
        .await;
    dee.expect_nothing_pending().await;
    let joined = dee.join("m").await;
    assert_eq!(
        joined["metadata"][dee.peer_id.as_str()],
        json!({"name": "Dee"})
    );
    let seen = ann.expect("peer_joined").await;
    assert_eq!(
        seen,
        json!({"type": "peer_joined", "peerId": dee.peer_id, "metadata": {"name": "Dee"}})
    );
}

async fn messages_reach_one_member_or_all_others(backend: Backend) {
    let server = start_on(backend, settings()).await;
    let (mut ann, _) = server.join("ann", "chat").await;
    let (mut bob, _) = server.join("bob", "chat").await;
    let (mut cy, _) = server.join("cy", "chat").await;
    ann.expect("peer_joined").await;
    ann.expect("peer_joined").await;
    bob.expect("peer_joined").await;

    ann.send(
        json!({"type": "message", "peerId": bob.peer_id, "data": {"text": "hi", "n": [1, 2]}}),
    )
    .await;
    assert_eq!(
        bob.expect("message").await,
        json!({"type": "message", "from": ann.peer_id, "data": {"text": "hi", "n": [1, 2]}})
    );

    bob.send(json!({"type": "message", "data": "to everyone"}))
        .await;
    for member in [&mut ann, &mut cy] {
        assert_eq!(
            member.expect("message").await,
            json!({"type": "message", "from": bob.peer_id, "data": "to everyone"})
        );
    }

    // A forged sender is ignored; data may be any JSON value, null included.
    cy.send(json!({"type": "message", "peerId": ann.peer_id, "from": "server", "data": null}))
        .await;
    assert_eq!(
        ann.expect("message").await,
        json!({"type": "message", "from": cy.peer_id, "data": null})
    );

    cy.send(json!({"type": "message", "peerId": "nobody", "data": 1, "id": "q"}))
        .await;
    assert_eq!(cy.expect_error("peer_not_found").await["ref"], "q");
    cy.send(json!({"type": "message", "peerId": ann.peer_id, "id": "r"}))
        .await;
    assert_eq!(cy.expect_error("invalid_message").await["ref"], "r");
    let mut lonely = server.connect("dee").await;
    lonely
        .send(json!({"type": "message", "data": 1, "id": 3}))
        .await;
    assert_eq!(lonely.expect_error("not_in_room").await["ref"], 3);
    for member in [&mut ann, &mut bob, &mut cy] {
        member.expect_nothing_pending().await;
    }
}

async fn the_server_api_answers_for_the_whole_cluster(backend: Backend) {
    let server = start_on(backend, api_settings()).await;
    let api = Api::of(&server);
    assert_eq!(api.get("/rooms").await, (200, json!({"rooms": []})));

    let before = switchboard::clock::unix_millis();
    let mut ann = connect_with_metadata(&server, "ann", &json!({"name": "Ann"})).await;
    ann.join("standup").await;
    let (mut bob, _) = server.join("bob", "standup").await;
    let (mut cy, _) = server.join("cy", "other").await;
    ann.expect("peer_joined").await;

    let (status, body) = api.get("/rooms").await;
    assert_eq!(status, 200);
    let mut rooms = body["rooms"].as_array().unwrap().clone();
    rooms.sort_by_key(|r| r["roomId"].as_str().unwrap().to_string());
    assert_eq!(rooms.len(), 2, "{body}");
    assert_eq!(rooms[0]["roomId"], "other");
    assert_eq!(rooms[0]["peers"], 1);
    assert_eq!(rooms[1]["roomId"], "standup");
    assert_eq!(rooms[1]["peers"], 2);
    let created = rooms[1]["createdAt"].as_u64().unwrap();
    assert!(created >= before && created <= switchboard::clock::unix_millis());

    let (status, room) = api.get("/rooms/standup").await;
    assert_eq!(status, 200);
    assert_eq!(room["roomId"], "standup");
    assert_eq!(room["createdAt"], created);
    let peers = room["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{room}");
    assert_eq!(peers[0]["peerId"], ann.peer_id.as_str());
    assert_eq!(peers[0]["userId"], "ann");
    assert_eq!(peers[0]["metadata"], json!({"name": "Ann"}));
    assert_eq!(peers[1]["peerId"], bob.peer_id.as_str());
    assert_eq!(peers[1]["userId"], "bob");
    assert_eq!(peers[1]["metadata"], Value::Null);
    assert!(peers[0]["joinedAt"].as_u64().unwrap() >= created);
    assert!(peers[1]["joinedAt"].as_u64().unwrap() >= peers[0]["joinedAt"].as_u64().unwrap());

    // Metadata set by the backend reaches the peer itself and the others.
    let (status, peer) = api
        .call(
            "PATCH",
            &format!("/rooms/standup/peers/{}", bob.peer_id),
            Some(json!({"metadata": {"role": "host"}})),
        )
        .await;
    assert_eq!(status, 200, "{peer}");
    assert_eq!(peer["peerId"], bob.peer_id.as_str());
    assert_eq!(peer["metadata"], json!({"role": "host"}));
    let expected =
        json!({"type": "peer_updated", "peerId": bob.peer_id, "metadata": {"role": "host"}});
    for member in [&mut bob, &mut ann] {
        assert_eq!(member.expect("peer_updated").await, expected);
    }
    eventually(
        "the store to hold the backend's metadata",
        DEADLINE,
        async || {
            let (_, room) = api.get("/rooms/standup").await;
            room["peers"][1]["metadata"] == json!({"role": "host"})
        },
    )
    .await;

    // Messages from the server, to everyone or to the listed peers.
    let (status, body) = api
        .call(
            "POST",
            "/rooms/standup/messages",
            Some(json!({"data": {"text": "recording started"}})),
        )
        .await;
    assert_eq!((status, body), (202, json!({"delivered": 2})));
    for member in [&mut ann, &mut bob] {
        assert_eq!(
            member.expect("message").await,
            json!({"type": "message", "from": "server", "data": {"text": "recording started"}})
        );
    }
    let (status, body) = api
        .call(
            "POST",
            "/rooms/standup/messages",
            Some(json!({"data": 7, "to": [bob.peer_id, "nobody"]})),
        )
        .await;
    assert_eq!((status, body), (202, json!({"delivered": 1})));
    assert_eq!(
        bob.expect("message").await,
        json!({"type": "message", "from": "server", "data": 7})
    );
    ann.expect_nothing_pending().await;

    // Removing a peer: it is told, the others hear why, and it may join again.
    let path = format!("/rooms/standup/peers/{}", ann.peer_id);
    assert_eq!(api.call("DELETE", &path, None).await.0, 204);
    assert_eq!(
        ann.expect("removed").await,
        json!({"type": "removed", "roomId": "standup"})
    );
    assert_eq!(
        bob.expect("peer_left").await,
        json!({"type": "peer_left", "peerId": ann.peer_id, "reason": "removed"})
    );
    eventually(
        "the removed peer to be gone from the room",
        DEADLINE,
        async || {
            let (_, room) = api.get("/rooms/standup").await;
            room["peers"].as_array().map(Vec::len) == Some(1)
        },
    )
    .await;
    assert_eq!(api.call("DELETE", &path, None).await.0, 404);
    ann.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "v=0"}))
        .await;
    ann.expect_error("not_in_room").await;
    ann.join("standup").await;
    bob.expect("peer_joined").await;

    // Closing the room: everyone is told and out; the connections stay.
    assert_eq!(api.call("DELETE", "/rooms/standup", None).await.0, 204);
    for member in [&mut ann, &mut bob] {
        let mut seen = member.recv().await;
        while seen["type"] == "peer_left" {
            assert_eq!(seen["reason"], "removed");
            seen = member.recv().await;
        }
        assert_eq!(seen, json!({"type": "room_closed", "roomId": "standup"}));
    }
    eventually("the closed room to be gone", DEADLINE, async || {
        api.get("/rooms/standup").await.0 == 404
    })
    .await;
    let (_, body) = api.get("/rooms").await;
    assert_eq!(body["rooms"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(api.call("DELETE", "/rooms/standup", None).await.0, 404);
    bob.join("standup").await;
    cy.expect_nothing_pending().await;
}

/// Every refusal of the server API: a status, a code and a sentence, and nothing changed.
async fn the_server_api_refuses_bad_requests_with_a_reason(backend: Backend) {
    let server = start_on(backend, api_settings()).await;
    let api = Api::of(&server);
    let (mut ann, _) = server.join("ann", "r").await;
    let http = reqwest::Client::new();
    let url = |path: &str| server.http(&format!("/api/v1{path}"));

    let missing = http.get(url("/rooms")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    let wrong = http
        .get(url("/rooms"))
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");

    let cases = [
        ("GET", "/rooms/nobody-here", None, 404, "room_not_found"),
        ("DELETE", "/rooms/nobody-here", None, 404, "room_not_found"),
        (
            "DELETE",
            "/rooms/r/peers/nobody",
            None,
            404,
            "peer_not_found",
        ),
        ("GET", "/rooms/%E2%80%AEevil", None, 400, "invalid_request"),
        (
            "PATCH",
            "/rooms/r/peers/nobody",
            Some(json!({"metadata": {}})),
            404,
            "peer_not_found",
        ),
        (
            "PATCH",
            "/rooms/r/peers/x",
            Some(json!({})),
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            "/rooms/r/peers/x",
            Some(json!({"metadata": [1]})),
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            "/rooms/r/peers/x",
            Some(json!({"metadata": {"x": "a".repeat(5000)}})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/rooms/r/messages",
            Some(json!({})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/rooms/r/messages",
            Some(json!({"data": 1, "to": "everyone"})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/rooms/empty/messages",
            Some(json!({"data": 1})),
            404,
            "room_not_found",
        ),
        ("POST", "/rooms", None, 405, "method_not_allowed"),
        ("PUT", "/rooms/r", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let (seen, answer) = api.call(method, path, body).await;
        assert_eq!(seen, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"], code, "{method} {path}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| m.ends_with('.')),
            "{answer}"
        );
    }
    let not_json = http
        .post(url("/rooms/r/messages"))
        .bearer_auth(API_KEY)
        .body("data=1")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let too_big = http
        .post(url("/rooms/r/messages"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(format!("{{\"data\":\"{}\"}}", "a".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    // The member was never touched.
    ann.expect_nothing_pending().await;
    let metrics = server.metrics().await;
    for series in [
        "switchboard_api_requests_total{endpoint=\"get_room\",status=\"404\"} 1",
        "switchboard_api_requests_total{endpoint=\"list_rooms\",status=\"401\"} 1",
        "switchboard_api_requests_total{endpoint=\"list_rooms\",status=\"403\"} 1",
        "switchboard_api_requests_total{endpoint=\"update_peer\",status=\"400\"} 3",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn without_api_keys_the_server_api_is_off() {
    let server = start(settings()).await;
    let response = reqwest::Client::new()
        .get(server.http("/api/v1/rooms"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "api_disabled");
    assert!(body["message"].as_str().unwrap().contains("AUTH_API_KEYS"));
}

#[tokio::test]
async fn the_server_api_is_rate_limited_per_caller() {
    let mut s = api_settings();
    s.limits.api_rate_per_minute = 3;
    let server = start(s).await;
    let api = Api::of(&server);
    for _ in 0..3 {
        assert_eq!(api.get("/rooms").await.0, 200);
    }
    let response = reqwest::Client::new()
        .get(server.http("/api/v1/rooms"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}

/// A token request may carry the participant's initial metadata: a small JSON object.
#[tokio::test]
async fn tokens_carry_metadata_from_the_token_request() {
    let server = start(settings()).await;
    let http = reqwest::Client::new();
    let issue = |body: Value| http.post(server.http("/auth/token")).json(&body).send();
    let response = issue(json!({"userId": "ann", "metadata": {"name": "Ann"}}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut ann = server.connect_with(body["token"].as_str().unwrap()).await;
    let joined = ann.join("t").await;
    assert_eq!(
        joined["metadata"][ann.peer_id.as_str()],
        json!({"name": "Ann"})
    );

    for (metadata, says) in [
        (json!("Ann"), "JSON object"),
        (json!({"bio": "a".repeat(2000)}), "at most 1024"),
    ] {
        let response = issue(json!({"userId": "bob", "metadata": metadata}))
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
}

/// A resumed session keeps its metadata, and so do the others' views of it.
#[tokio::test]
async fn metadata_survives_a_resume_on_another_node() {
    let mut s = api_settings();
    s.timing.resume_grace = Duration::from_secs(10);
    let server = start_on(Backend::Redis(2), s).await;
    let token = server.token("ann", None);
    let mut ann = server.connect_to(0, &token).await;
    ann.join("r").await;
    let mut bob = server.connect_to(1, &server.token("bob", None)).await;
    bob.join("r").await;
    ann.expect("peer_joined").await;
    ann.send(json!({"type": "update", "metadata": {"muted": true}}))
        .await;
    bob.expect("peer_updated").await;
    // Ann's network drops (no close frame) and she comes back through the other node.
    server.lose(ann).await;
    let url = format!("ws://{}/ws/signal?token={}", server.node_addr(1), token);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut ann = Client {
        ws,
        peer_id: String::new(),
    };
    let resumed = ann.expect("resumed").await;
    assert_eq!(resumed["peers"], json!([bob.peer_id]));
    let own = resumed["peerId"].as_str().unwrap().to_string();
    assert_eq!(resumed["metadata"][own.as_str()], json!({"muted": true}));
    let api = Api::of(&server);
    let (_, room) = api.get("/rooms/r").await;
    let peers = room["peers"].as_array().unwrap();
    assert!(
        peers
            .iter()
            .any(|p| p["peerId"] == own.as_str() && p["metadata"] == json!({"muted": true})),
        "{room}"
    );
    bob.expect_nothing_pending().await;
}

on_every_backend!(
    the_server_api_refuses_bad_requests_with_a_reason,
    metadata_reaches_every_member_and_late_joiners,
    messages_reach_one_member_or_all_others,
    the_server_api_answers_for_the_whole_cluster,
);
