//! Same-node versus cross-node relay latency on a real Redis, and Redis commands per
//! relayed message. Needs `redis-server` and `redis-cli` (scripts/test.sh installs them).
//!
//! Run: `cargo bench --bench cross_node` (optional args: pairs, rate per second, seconds,
//! churners). With churners, a third case measures cross-node latency again while that
//! many clients per node keep joining and leaving rooms shared with the other node (a join
//! storm whose membership news crosses the bus beside the relays).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Backend, Client, settings, start_on};
use serde_json::json;

static BASE: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Total `calls` over every command in `INFO commandstats`.
async fn redis_calls(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .await
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Sends `count` offers per pair at `interval` and returns one-way latencies in ns.
async fn run(pairs: Vec<(Client, Client)>, count: usize, interval: Duration) -> Vec<u64> {
    let padding = "a".repeat(2000);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (mut sender, mut receiver) in pairs {
        let to = receiver.peer_id.clone();
        let pad = padding.clone();
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            for seq in 0..count {
                tick.tick().await;
                let sdp = format!("{seq}:{}:{pad}", now_ns());
                sender
                    .send(json!({"type": "offer", "peerId": to, "sdp": sdp}))
                    .await;
            }
            sender
        }));
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for seq in 0..count {
                let m = receiver.expect("offer").await;
                let mut parts = m["sdp"].as_str().unwrap().split(':');
                let got: usize = parts.next().unwrap().parse().unwrap();
                assert_eq!(got, seq, "lost or reordered");
                let sent: u64 = parts.next().unwrap().parse().unwrap();
                latencies.push(now_ns() - sent);
            }
            (receiver, latencies)
        }));
    }
    let mut all = Vec::new();
    for r in receivers {
        all.extend(r.await.expect("receiver").1);
    }
    for s in senders {
        s.await.expect("sender");
    }
    all.sort_unstable();
    all
}

async fn pairs(
    server: &common::TestServer,
    n: usize,
    nodes: (usize, usize),
    room: &str,
) -> Vec<(Client, Client)> {
    let mut out = Vec::new();
    for i in 0..n {
        let ta = server.token(&format!("s{room}{i}"), None);
        let tb = server.token(&format!("r{room}{i}"), None);
        let mut a = server.connect_to(nodes.0, &ta).await;
        let mut b = server.connect_to(nodes.1, &tb).await;
        a.join(&format!("{room}{i}")).await;
        b.join(&format!("{room}{i}")).await;
        a.expect("peer_joined").await;
        out.push((a, b));
    }
    out
}

/// Clients that join and leave, until `stop`, rooms where a peer of the other node sits:
/// every join and leave is a store round trip on one node and bus news for the other.
/// Returns how many joins they made.
async fn churn(
    server: &common::TestServer,
    per_node: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<usize> {
    let mut tasks = Vec::new();
    for i in 0..per_node * 2 {
        let (here, there) = (i % 2, (i + 1) % 2);
        let room = format!("churn{i}");
        let mut anchor = server
            .connect_to(there, &server.token(&format!("anchor{i}"), None))
            .await;
        anchor.join(&room).await;
        let mut churner = server
            .connect_to(here, &server.token(&format!("churner{i}"), None))
            .await;
        let stop_anchor = stop.clone();
        // The anchor reads what it is told, so its queue never fills.
        tasks.push(tokio::spawn(async move {
            while !*stop_anchor.borrow() {
                let _ = anchor.recv_within(Duration::from_millis(50)).await;
            }
            0
        }));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut joins = 0;
            while !*stop.borrow() {
                churner.join(&room).await;
                churner.send(json!({"type": "leave", "roomId": room})).await;
                joins += 1;
            }
            joins
        }));
    }
    tokio::spawn(async move {
        let mut joins = 0;
        for t in tasks {
            joins += t.await.expect("churn task");
        }
        joins
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let pair_count = *args.first().unwrap_or(&20) as usize;
    let rate = *args.get(1).unwrap_or(&1000);
    let seconds = *args.get(2).unwrap_or(&5);
    let churners = *args.get(3).unwrap_or(&0) as usize;
    let per_pair = (rate * seconds / pair_count as u64) as usize;
    let interval = Duration::from_secs_f64(pair_count as f64 / rate as f64);

    let mut s = settings();
    s.limits.outbound_queue = 4096;
    let mut server = start_on(Backend::Redis(2), s).await;
    let same = pairs(&server, pair_count, (0, 0), "same").await;
    let cross = pairs(&server, pair_count, (0, 1), "cross").await;
    let storm = if churners > 0 {
        Some(pairs(&server, pair_count, (0, 1), "storm").await)
    } else {
        None
    };

    println!("{pair_count} pairs, {rate} offers/s of ~2 KB for {seconds} s per case");
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10}",
        "case", "messages", "p50 µs", "p99 µs", "max µs"
    );
    let before = redis_calls(server.redis_mut::<RedisServer>()).await;
    let same_lat = run(same, per_pair, interval).await;
    let mid = redis_calls(server.redis_mut::<RedisServer>()).await;
    let cross_lat = run(cross, per_pair, interval).await;
    let after = redis_calls(server.redis_mut::<RedisServer>()).await;
    let mut cases = vec![
        ("same-node", same_lat.clone()),
        ("cross-node", cross_lat.clone()),
    ];
    if let Some(storm) = storm {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let joining = churn(&server, churners, stopped).await;
        let started = Instant::now();
        let lat = run(storm, per_pair, interval).await;
        let elapsed = started.elapsed();
        let _ = stop.send(true);
        let joins = joining.await.expect("churn");
        println!(
            "join storm: {churners} clients per node made {:.0} joins/s (and as many leaves)",
            joins as f64 / elapsed.as_secs_f64()
        );
        cases.push(("cross, storm", lat));
    }
    for (name, lat) in &cases {
        println!(
            "{name:<12} {:>10} {:>10.0} {:>10.0} {:>10.0}",
            lat.len(),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            percentile(lat, 1.0)
        );
    }
    // The figures include background work (heartbeats, INFO itself) over the same period.
    println!(
        "Redis commands per relayed message: same-node {:.3}, cross-node {:.3}",
        (mid - before) as f64 / same_lat.len() as f64,
        (after - mid) as f64 / cross_lat.len() as f64
    );
}
