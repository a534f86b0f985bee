//! Overload protections: connection limit, per-IP limits, real load shedding and the
//! per-connection message rate limit, each while other calls keep working.

mod common;

use common::{DEADLINE, eventually, production_settings, settings, start};
use serde_json::json;
use tokio_tungstenite::tungstenite;

/// The refusal of an upgrade, with its `Retry-After`.
async fn refused_with_retry(url: String) -> (u16, serde_json::Value, Option<String>) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("the upgrade was accepted but should have been refused"),
        Err(tungstenite::Error::Http(response)) => {
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                .unwrap_or_default();
            (response.status().as_u16(), body, retry)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn upgrades_past_max_connections_get_503_while_existing_calls_go_on() {
    let mut s = settings();
    s.limits.max_connections = 4;
    let server = start(s).await;
    let (mut a, mut b) = server.pair("a", "b", "r1").await;
    let _calls = server.pair("c", "d", "r2").await;

    for _ in 0..10 {
        let token = server.token("extra", None);
        let (status, body, retry) = refused_with_retry(server.ws_url(&token)).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "overloaded");
        let retry: u64 = retry
            .expect("a refused upgrade says when to retry")
            .parse()
            .expect("Retry-After in whole seconds");
        assert!(retry >= 1, "Retry-After: {retry}");
    }
    a.offer(&b.peer_id, "still relaying").await;
    assert_eq!(b.expect("offer").await["sdp"], "still relaying");

    // A slot frees when a call ends.
    a.close().await;
    b.expect("peer_left").await;
    eventually("the slot to be released", DEADLINE, async || {
        let token = server.token("later", None);
        tokio_tungstenite::connect_async(server.ws_url(&token))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn the_per_ip_rate_applies_to_upgrades_and_token_requests() {
    // Production: development spares loopback clients the rate (tests/auth_http.rs).
    let mut s = production_settings();
    s.limits.rate_per_ip_per_minute = 5;
    let server = start(s).await;
    let token = server.token("a", None);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(
            tokio_tungstenite::connect_async(server.ws_url(&token))
                .await
                .expect("within the rate"),
        );
    }
    let (status, body, retry) = refused_with_retry(server.ws_url(&token)).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("overloaded")));
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);

    let response = reqwest::Client::new()
        .post(server.http("/auth/token"))
        .json(&json!({"userId": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}

#[tokio::test]
async fn the_per_ip_connection_cap_refuses_the_excess() {
    let mut s = settings();
    s.limits.max_connections_per_ip = 2;
    let server = start(s).await;
    let _a = server.connect("a").await;
    let _b = server.connect("b").await;
    let token = server.token("c", None);
    let (status, body, _) = refused_with_retry(server.ws_url(&token)).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("overloaded")));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("open connections")
    );
}

#[tokio::test]
async fn memory_above_the_threshold_sheds_new_upgrades() {
    let mut s = settings();
    // Any real process is above this share of its memory limit.
    s.limits.shed_memory_percent = 0.000_001;
    let server = start(s).await;
    let token = server.token("a", None);
    let body = eventually("memory to be measured", DEADLINE, async || {
        match tokio_tungstenite::connect_async(server.ws_url(&token)).await {
            // The first reading may not have been taken yet.
            Ok(_) => None,
            Err(tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 503);
                Some(
                    serde_json::from_slice::<serde_json::Value>(r.body().as_deref().unwrap())
                        .unwrap(),
                )
            }
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("memory"),
        "{body}"
    );
    let metrics = server.metrics().await;
    // The series exists at zero from the start: the refusal must have counted.
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"switchboard_refused_upgrades_total{reason="memory"} "#))
        .map(|v| v.trim().parse::<u64>().unwrap());
    assert!(refused >= Some(1), "memory refusals: {refused:?}");
}

#[tokio::test]
async fn a_message_flood_is_refused_then_closed_while_other_rooms_relay() {
    let mut s = settings();
    s.limits.message_rate = 10.0;
    s.limits.message_burst = 20.0;
    let server = start(s).await;
    let (mut flooder, mut victim) = server.pair("flooder", "victim", "noisy").await;
    let (mut c, mut d) = server.pair("c", "d", "quiet").await;

    for seq in 0..200 {
        flooder
            .send(json!({"type": "offer", "peerId": victim.peer_id, "sdp": format!("{seq}"), "id": seq}))
            .await;
    }
    // The first burst arrives; then the sender hears why the rest does not.
    let mut refused = Vec::new();
    let code = loop {
        match flooder.next_event().await {
            common::Event::Message(m) => {
                assert_eq!(m["code"], "rate_limited", "{m}");
                assert!(m["message"].as_str().unwrap().contains("offer"), "{m}");
                // The refusal names the offer it refused by its `id`: one that was sent,
                // after the ones refused before it.
                let id = m["ref"].as_u64().unwrap_or_else(|| panic!("no id: {m}"));
                assert!(id < 200, "{m}");
                assert!(refused.last().is_none_or(|&last| id > last), "{m}");
                refused.push(id);
            }
            common::Event::Closed(code) => break code,
            common::Event::Binary => panic!("binary"),
        }
    };
    assert!(!refused.is_empty());
    assert_eq!(code, Some(1008));
    let mut delivered = 0;
    loop {
        let m = victim.recv().await;
        if m["type"] == "peer_left" {
            break;
        }
        assert_eq!(
            m["sdp"],
            format!("{delivered}"),
            "what was delivered came in order"
        );
        delivered += 1;
    }
    // About one burst (its ping and join used two tokens), never the whole flood.
    assert!(
        (15..100).contains(&delivered),
        "{delivered} offers got through"
    );
    // Every refused offer is one that was not delivered.
    assert!(
        refused[0] >= delivered,
        "{refused:?} refused, {delivered} delivered"
    );
    c.offer(&d.peer_id, "unaffected").await;
    assert_eq!(d.expect("offer").await["sdp"], "unaffected");
}
