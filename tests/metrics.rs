//! `/metrics` reports what happened, in the Prometheus text format.

mod common;

use common::{DEADLINE, eventually, settings, start};

#[tokio::test]
async fn metrics_count_connections_messages_closes_and_refusals() {
    let server = start(settings()).await;
    let (mut a, mut b) = server.pair("a", "b", "r").await;
    a.offer(&b.peer_id, "v=0").await;
    b.expect("offer").await;
    common::refused(server.ws_url("not-a-token")).await;

    let response = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for line in [
        "switchboard_connections 2",
        "switchboard_peers 2",
        "switchboard_rooms 1",
        r#"switchboard_messages_total{type="offer",direction="in"} 1"#,
        r#"switchboard_messages_total{type="offer",direction="out"} 1"#,
        r#"switchboard_messages_total{type="join",direction="in"} 2"#,
        r#"switchboard_messages_total{type="peer_joined",direction="out"} 1"#,
        r#"switchboard_refused_upgrades_total{reason="token"} 1"#,
        "switchboard_relay_latency_seconds_count 1",
        "switchboard_join_latency_seconds_count 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    b.close().await;
    a.expect("peer_left").await;
    // The close is counted as the connection task finishes, just after peer_left.
    eventually("the close to be counted", DEADLINE, async || {
        let text = server.metrics().await;
        let counted = text.contains(r#"switchboard_closes_total{code="1000"} 1"#)
            && text.contains("switchboard_connections 1");
        counted.then_some(()).ok_or(text)
    })
    .await;
}
