//! Self-tests of the fixtures in `tests/common`: the Redis processes of `redis.rs`, real
//! processes on free ports that can be killed, paused, restarted and failed over, and the
//! waits of `eventually.rs`.

mod common;

use std::time::{Duration, Instant};

use common::eventually::{Pacing, eventually};
use common::redis::{RedisCluster, RedisServer, SentinelGroup, free_port};

#[test]
fn free_ports_leave_room_for_the_cluster_bus() {
    for _ in 0..20 {
        let port = free_port();
        assert!(port < 55_000, "{port}");
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).unwrap();
    }
}

#[tokio::test]
async fn a_standalone_server_can_be_killed_restarted_paused_and_resumed() {
    let started = Instant::now();
    let mut server = RedisServer::start().await;
    eprintln!("standalone start: {:?}", started.elapsed());
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port));
    assert_eq!(server.addr(), format!("127.0.0.1:{}", server.port));

    assert_eq!(
        server.cli(&["SET", "k", "v", "EX", "60"]).await.trim(),
        "OK"
    );
    assert_eq!(server.cli(&["GET", "k"]).await.trim(), "v");
    let ttl: i64 = server.cli(&["TTL", "k"]).await.trim().parse().unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");

    // A crash: nothing answers on the port.
    server.kill();
    assert_eq!(server.cli(&["PING"]).await.trim(), "");

    // Same port again, and empty since nothing is persisted.
    let port = server.port;
    let restarted = Instant::now();
    server.restart().await;
    eprintln!("standalone restart: {:?}", restarted.elapsed());
    assert_eq!(server.port, port);
    assert_eq!(server.cli(&["PING"]).await.trim(), "PONG");
    assert_eq!(server.cli(&["GET", "k"]).await.trim(), "");

    // Paused: connections are accepted by the kernel but nothing answers.
    server.pause();
    let hung = tokio::time::timeout(Duration::from_millis(500), server.cli(&["PING"])).await;
    assert!(hung.is_err(), "a paused server answered: {hung:?}");
    server.resume();
    assert_eq!(server.cli(&["PING"]).await.trim(), "PONG");

    // The redis crate reaches it too.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn dropping_a_server_ends_its_process_and_frees_its_port() {
    let server = RedisServer::start().await;
    let port = server.port;
    drop(server);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port free after drop");
}

#[tokio::test]
async fn sentinel_promotes_the_replica_when_the_master_dies() {
    let started = Instant::now();
    let mut group = SentinelGroup::start().await;
    eprintln!("sentinel group start: {:?}", started.elapsed());
    assert_eq!(group.master_name, "mymaster");
    assert_eq!(
        group.sentinel_addr(),
        format!("127.0.0.1:{}", group.sentinel.port)
    );
    assert_eq!(group.master.cli(&["SET", "k", "v"]).await.trim(), "OK");

    let failover = Instant::now();
    let new_master = group.kill_master_and_wait_failover().await;
    eprintln!("sentinel failover: {:?}", failover.elapsed());
    assert_eq!(new_master, group.replica.port);
    assert!(group.replica.cli(&["ROLE"]).await.starts_with("master"));
    assert_eq!(group.replica.cli(&["SET", "k2", "v"]).await.trim(), "OK");
}

#[tokio::test]
async fn a_three_master_cluster_is_ok_and_routes_keys() {
    let started = Instant::now();
    let cluster = RedisCluster::start().await;
    eprintln!("cluster start: {:?}", started.elapsed());
    assert_eq!(cluster.nodes.len(), 3);
    assert_eq!(cluster.seeds().len(), 3);
    for info in cluster.cli_all(&["CLUSTER", "INFO"]).await {
        assert!(info.contains("cluster_state:ok"), "{info}");
    }

    // `-c` follows MOVED, so any node accepts any key.
    let first = &cluster.nodes[0];
    for key in ["a", "b", "c", "{room}x"] {
        let set = first.cli(&["-c", "SET", key, "v"]).await;
        assert_eq!(set.trim(), "OK", "{key}");
        assert_eq!(first.cli(&["-c", "GET", key]).await.trim(), "v");
    }
    let sizes: usize = cluster
        .cli_all(&["DBSIZE"])
        .await
        .iter()
        .map(|s| s.trim().parse::<usize>().unwrap())
        .sum();
    assert_eq!(sizes, 4);
}

#[tokio::test(start_paused = true)]
async fn eventually_returns_the_value_once_the_check_holds() {
    let mut calls = 0;
    let value = eventually("the third call", Duration::from_secs(1), async || {
        calls += 1;
        (calls == 3).then_some(calls)
    })
    .await;
    assert_eq!(value, 3);
}

#[tokio::test(start_paused = true)]
async fn eventually_fails_naming_what_was_awaited_and_what_was_seen() {
    let waiting = eventually("the impossible", Duration::from_secs(1), async || {
        Err::<(), _>("still 7")
    });
    let failed = tokio::spawn(waiting).await.unwrap_err().into_panic();
    let message = failed.downcast::<String>().unwrap();
    assert!(
        message.starts_with("gave up waiting for the impossible after "),
        "{message}"
    );
    assert!(message.ends_with("; last seen: still 7"), "{message}");
}

#[test]
fn eventually_pauses_double_up_to_a_share_of_the_window_and_stop_at_the_deadline() {
    let mut pacing = Pacing::new(Duration::from_secs(10));
    let pauses: Vec<u128> = (0..6)
        .map(|_| pacing.next(Duration::ZERO).unwrap().as_millis())
        .collect();
    assert_eq!(pauses, [5, 10, 20, 25, 25, 25]);
    assert_eq!(
        pacing.next(Duration::from_millis(9_990)),
        Some(Duration::from_millis(10))
    );
    assert_eq!(pacing.next(Duration::from_secs(10)), None);
}
