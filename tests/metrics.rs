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

#[tokio::test]
async fn metrics_addr_moves_metrics_off_the_client_port() {
    let mut s = settings();
    s.node.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let server = start(s).await;
    let metrics_addr = server.metrics_addr.expect("a metrics listener");
    assert_ne!(metrics_addr, server.addr);
    let (mut a, mut b) = server.pair("a", "b", "r").await;
    a.offer(&b.peer_id, "v=0").await;
    b.expect("offer").await;

    let public = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(
        public.status(),
        404,
        "the client-facing port serves no metrics"
    );
    let private = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    let content_type = private.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = private.text().await.unwrap();
    for line in ["switchboard_peers 2", "# EOF"] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The metrics listener serves nothing else, and the main port still does.
    let other = reqwest::get(format!("http://{metrics_addr}/health/live"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let live = reqwest::get(server.http("/health/live")).await.unwrap();
    assert_eq!(live.status(), 200);

    // The metrics listener closes with the node.
    server.stop().await;
    eventually("the metrics listener to close", DEADLINE, async || {
        tokio::net::TcpStream::connect(metrics_addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn development_serves_metrics_on_the_main_port_by_default() {
    let server = start(settings()).await;
    assert_eq!(server.metrics_addr, None);
    let response = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("switchboard_connections")
    );
}
