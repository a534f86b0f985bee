//! Several nodes on real Redis: node loss, Sentinel failover, and key hygiene.

mod common;

use std::time::{Duration, Instant};

use common::process::Running;
use common::redis::{RedisCluster, RedisServer, SentinelGroup};
use common::{Backend, Client, SECRET, eventually, settings, start_on, unique_prefix};
use serde_json::{Value, json};
use switchboard::config::Settings;

/// A client on the node at `addr` for `user`, with its peer id.
async fn client(addr: &str, user: &str) -> Client {
    common::client_at(addr, user).await.0
}

/// Settings under which a Redis failure is noticed within about a second, a node reports
/// unready after a second without Redis, and messages are held for two.
fn fast_failing_settings() -> Settings {
    let mut s = settings();
    s.timing.heartbeat_interval = Duration::from_millis(500);
    s.redis.redis_timeout = Duration::from_millis(200);
    s.redis.redis_outage_grace = Duration::from_secs(1);
    s.redis.failover_hold = Duration::from_secs(2);
    // Room events add their own Redis calls to every change: the failure scenarios run
    // with them, as a deployment with webhooks does.
    s.events.room_events = "on".into();
    s
}

/// `peers` (a JSON array) holds exactly `expected`, in any order.
fn assert_same_peers(peers: &Value, expected: &[String]) {
    let mut peers: Vec<String> = serde_json::from_value(peers.clone()).unwrap();
    peers.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(peers, expected);
}

/// The environment of a `switchboard serve` node on `url` under `prefix`.
fn node_vars<'a>(url: &'a str, prefix: &'a str, heartbeat: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("AUTH_SECRET", SECRET),
        ("REDIS_URL", url),
        ("KEY_PREFIX", prefix),
        ("HEARTBEAT_INTERVAL", heartbeat),
    ]
}

/// Skips peer_joined announcements until a message of `kind` arrives.
async fn next_of(c: &mut Client, kind: &str) -> serde_json::Value {
    loop {
        let m = c.recv().await;
        if m["type"] == kind {
            return m;
        }
        assert_eq!(m["type"], "peer_joined", "unexpected {m}");
    }
}

#[tokio::test]
async fn a_killed_node_is_cleaned_up_by_the_survivors_within_three_heartbeats() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let prefix = unique_prefix();
    let heartbeat = Duration::from_millis(500);
    let vars = node_vars(&url, &prefix, "500ms");
    let (mut doomed, a0) = Running::start(&vars);
    let (_n1, a1) = Running::start(&vars);
    let (_n2, a2) = Running::start(&vars);

    // Room r1 spans all three nodes, r2 spans the doomed node and one survivor.
    let mut a = client(&a0, "a").await;
    let mut b = client(&a1, "b").await;
    let mut c = client(&a2, "c").await;
    let mut d = client(&a0, "d").await;
    let mut e = client(&a1, "e").await;
    a.join("r1").await;
    b.join("r1").await;
    c.join("r1").await;
    d.join("r2").await;
    e.join("r2").await;
    // Everyone has heard of everyone before the crash.
    b.expect("peer_joined").await;
    b.offer(&c.peer_id, "before").await;
    assert_eq!(next_of(&mut c, "offer").await["sdp"], "before");

    doomed.kill();
    let killed = Instant::now();
    for (survivor, lost) in [
        (&mut b, &a.peer_id),
        (&mut c, &a.peer_id),
        (&mut e, &d.peer_id),
    ] {
        let left = next_of(survivor, "peer_left").await;
        assert_eq!(left["peerId"], lost.as_str());
        assert_eq!(left["reason"], "node_lost");
    }
    let took = killed.elapsed();
    // Three heartbeat periods, plus slack for a loaded test machine.
    assert!(
        took <= heartbeat * 3 + Duration::from_secs(1),
        "cleanup took {took:?}"
    );

    // The rooms keep working across the surviving nodes, and new peers can join them.
    c.offer(&b.peer_id, "after").await;
    assert_eq!(next_of(&mut b, "offer").await["sdp"], "after");
    let mut f = client(&a2, "f").await;
    let joined = f.join("r1").await;
    // The dead node's peer is gone from the room.
    assert_same_peers(&joined["peers"], &[b.peer_id.clone(), c.peer_id.clone()]);
    assert_eq!(b.expect("peer_joined").await["peerId"], f.peer_id.as_str());
}

#[tokio::test]
async fn signaling_recovers_after_a_sentinel_failover_without_restarting_nodes() {
    let mut server = start_on(Backend::Sentinel(2), settings()).await;
    let (mut a, mut b) = server.pair("a", "b", "r").await;
    a.offer(&b.peer_id, "before").await;
    assert_eq!(b.expect("offer").await["sdp"], "before");

    let new_master = server
        .redis_mut::<SentinelGroup>()
        .kill_master_and_wait_failover()
        .await;
    assert_ne!(new_master, 0);

    // New peers connect and join at once: a node that cannot write to Redis yet admits
    // them on its own view and writes them when the new master answers, so each learns of
    // the other (in `joined` or a later `peer_joined`) within a few heartbeats.
    let within = Duration::from_secs(30);
    let mut c = join_when_ready(&server.node_addr(0).to_string(), "c", "after", within).await;
    let mut d = join_when_ready(&server.node_addr(1).to_string(), "d", "after", within).await;
    let (c_id, d_id) = (c.peer_id.clone(), d.peer_id.clone());
    let c_peers = c.joined_peers.clone();
    let d_peers = d.joined_peers.clone();
    meets(&mut c, &c_peers, &d_id).await;
    meets(&mut d, &d_peers, &c_id).await;
    d.offer(&c.peer_id, "after failover").await;
    assert_eq!(c.expect("offer").await["sdp"], "after failover");
    // The peers that were connected during the failover still reach each other. If the
    // master died before answering a's last publish, a was told it may not have arrived.
    b.offer(&a.peer_id, "still here").await;
    let m = loop {
        let m = a.recv().await;
        if m["type"] != "error" {
            break m;
        }
        assert_eq!(m["code"], "unavailable", "{m}");
    };
    assert_eq!(m["sdp"], "still here");
}

/// Waits until `client` knows `other`: listed in its `joined` peers or announced later.
async fn meets(client: &mut Client, joined_peers: &Value, other: &str) {
    if joined_peers
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == other))
    {
        return;
    }
    loop {
        let m = client
            .recv_within(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{other} never announced"));
        if m["type"] == "peer_joined" && m["peerId"] == other {
            return;
        }
    }
}

/// A client that joined a room, with the `peers` it was told about.
struct Joined {
    client: Client,
    joined_peers: serde_json::Value,
}

impl std::ops::Deref for Joined {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Joined {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// One attempt to connect to `addr` and join `room`; `None` when the node refused for now.
async fn try_join(addr: &str, user: &str, room: &str) -> Option<Joined> {
    use common::Event;
    let issued = common::issuer(Duration::from_secs(600)).issue(user, None, None);
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/signal?token={}", issued.token))
            .await
            .ok()?;
    let mut client = Client {
        ws,
        peer_id: issued.claims.peer_id(),
    };
    client.send(json!({"type": "join", "roomId": room})).await;
    match client.next_event().await {
        Event::Message(m) if m["type"] == "joined" => Some(Joined {
            joined_peers: m["peers"].clone(),
            client,
        }),
        Event::Message(m) => {
            assert_eq!(m["code"], "unavailable", "{m}");
            None
        }
        Event::Closed(code) => {
            assert_eq!(code, Some(1011), "refused for another reason");
            None
        }
        Event::Binary => panic!("binary frame"),
    }
}

/// Retries [`try_join`] until it succeeds; fails the test after `within`.
async fn join_when_ready(addr: &str, user: &str, room: &str, within: Duration) -> Joined {
    let what = format!("signaling on {addr} to recover");
    eventually(what, within, async || try_join(addr, user, room).await).await
}

/// Every key under `prefix` with its PTTL in milliseconds.
async fn keys_with_ttl(redis: &RedisServer, prefix: &str) -> Vec<(String, i64)> {
    let pattern = format!("{prefix}*");
    let listing = redis.cli(&["--scan", "--pattern", &pattern]).await;
    let mut out = Vec::new();
    for key in listing.lines().filter(|l| !l.is_empty()) {
        let ttl: i64 = redis.cli(&["PTTL", key]).await.trim().parse().unwrap();
        // -2: the key went between the listing and the question (a pin released).
        if ttl != -2 {
            out.push((key.to_string(), ttl));
        }
    }
    out
}

fn assert_all_expire_within_a_day(keys: &[(String, i64)]) {
    for (key, ttl) in keys {
        assert!(
            *ttl > 0 && *ttl <= 24 * 3600 * 1000,
            "{key} has TTL {ttl} ms (must be set and at most 24 h)"
        );
    }
}

#[tokio::test]
async fn every_key_has_a_ttl_and_only_node_liveness_remains_after_everyone_leaves() {
    let mut server = start_on(Backend::Redis(3), settings()).await;
    let prefix = server.key_prefix();
    let mut clients = Vec::new();
    for (i, room) in ["r1", "r1", "r1", "r2", "r2", "r3"].iter().enumerate() {
        clients.push(server.join(&format!("u{i}"), room).await.0);
    }
    let (first, fourth) = (clients[0].peer_id.clone(), clients[3].peer_id.clone());
    clients[2].offer(&first, "x").await;
    clients[4].offer(&fourth, "y").await;
    let during = keys_with_ttl(server.redis_mut::<RedisServer>(), &prefix).await;
    assert!(
        during.iter().any(|(k, _)| k.contains("room:{r1}")),
        "{during:?}"
    );
    assert!(
        during.iter().any(|(k, _)| k.contains("sess:")),
        "{during:?}"
    );
    assert_all_expire_within_a_day(&during);

    for c in clients {
        c.close().await;
    }
    eventually("every peer to detach", common::DEADLINE, async || {
        server.peer_count() == 0
    })
    .await;
    let nodes: Vec<String> = (0..server.node_count())
        .map(|i| server.node(i).hub.node().to_string())
        .collect();
    // A room's events leave Redis once delivered, which the dispatchers do in the
    // background; the rest must be gone already.
    let redis = server.redis_mut::<RedisServer>();
    let after = eventually(
        "only liveness keys to remain",
        common::DEADLINE,
        async || {
            let after = keys_with_ttl(redis, &prefix).await;
            assert_all_expire_within_a_day(&after);
            let stray: Vec<&String> = after
                .iter()
                .map(|(k, _)| k)
                .filter(|k| !outlives_rooms(k.strip_prefix(&prefix).unwrap(), &nodes))
                .collect();
            match stray.is_empty() {
                true => Ok(after.clone()),
                false => Err(format!("{stray:?} outlived every session and room")),
            }
        },
    )
    .await;
    // The scan sees the deployment's keys: each live node's heartbeat is among them.
    for n in &nodes {
        let heartbeat = format!("{prefix}node:{n}");
        assert!(
            after.iter().any(|(k, _)| *k == heartbeat),
            "{heartbeat} missing from {after:?}"
        );
    }
}

/// Whether a key (without its prefix) may outlive every session and room: node liveness,
/// and room events, which stay readable for EVENT_RETENTION with the rooms' sequences (a
/// finished room is also looked at once more before it leaves the due set).
fn outlives_rooms(rest: &str, nodes: &[String]) -> bool {
    let events = rest == "events:log"
        || rest == "events:owners"
        || (rest.starts_with("room:{") && rest.ends_with("}:seq"))
        || nodes.iter().any(|n| rest == format!("node:{{{n}}}:due"));
    events
        || rest == "nodes"
        || nodes.iter().any(|n| {
            rest == format!("node:{n}")
                || rest == format!("node:{{{n}}}:inbox")
                || rest == format!("node:{{{n}}}:read")
                || rest == format!("node:{{{n}}}:pins")
                || rest == format!("node:{{{n}}}:withdrawals")
        })
}

#[tokio::test]
async fn a_hundred_simultaneous_joins_over_three_nodes_fill_a_room_exactly() {
    let mut s = settings();
    s.limits.max_room_peers = 10;
    let server = start_on(Backend::Redis(3), s).await;
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(server.connect(&format!("racer{i}")).await);
    }
    // Everyone asks at once; each answer is either joined or room_full.
    for c in &mut clients {
        c.send(json!({"type": "join", "roomId": "crowded"})).await;
    }
    let mut joined = 0;
    let mut full = 0;
    for c in &mut clients {
        let m = loop {
            let m = c.recv().await;
            if m["type"] != "peer_joined" {
                break m;
            }
        };
        match (m["type"].as_str(), m["code"].as_str()) {
            (Some("joined"), _) => joined += 1,
            (Some("error"), Some("room_full")) => full += 1,
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!((joined, full), (10, 90));
}

#[tokio::test]
async fn cross_node_relay_keeps_each_senders_order() {
    let server = start_on(Backend::Redis(2), settings()).await;
    let (mut a, mut b) = server.pair("a", "b", "r").await;
    let (mut c, _) = server.join("c", "r").await;
    a.expect("peer_joined").await;
    b.expect("peer_joined").await;
    // a (node 0) and c (node 0) both stream to b (node 1), interleaved.
    for seq in 0..300 {
        a.offer(&b.peer_id, &format!("a{seq}")).await;
        c.offer(&b.peer_id, &format!("c{seq}")).await;
    }
    let (mut next_a, mut next_c) = (0, 0);
    while next_a < 300 || next_c < 300 {
        let m = b.expect("offer").await;
        let sdp = m["sdp"].as_str().unwrap();
        if m["peerId"] == a.peer_id.as_str() {
            assert_eq!(sdp, format!("a{next_a}"), "a's messages out of order");
            next_a += 1;
        } else {
            assert_eq!(sdp, format!("c{next_c}"), "c's messages out of order");
            next_c += 1;
        }
    }
    b.expect_nothing_pending().await;
}

#[tokio::test]
async fn a_redis_restarted_empty_is_healed_without_closing_anyone() {
    let mut server = start_on(Backend::Redis(2), settings()).await;
    let (mut a, mut b) = server.pair("a", "b", "r").await;
    a.offer(&b.peer_id, "before").await;
    assert_eq!(b.expect("offer").await["sdp"], "before");

    // A restart without persistence: every inbox and membership is gone. Each node
    // writes back what it owns; what was sent meanwhile is held and appended again.
    server.redis_mut::<RedisServer>().restart().await;
    for seq in 0..20 {
        a.offer(&b.peer_id, &format!("{seq}")).await;
    }
    for seq in 0..20 {
        assert_eq!(b.expect("offer").await["sdp"], format!("{seq}"));
    }
    b.offer(&a.peer_id, "back").await;
    assert_eq!(a.expect("offer").await["sdp"], "back");
    let expected = [a.peer_id.clone(), b.peer_id.clone()];
    let store = server.node(0).hub.store().clone();
    eventually(
        "room r to be complete in Redis again",
        common::DEADLINE,
        async || {
            let mut members: Vec<String> = store
                .room_members("r")
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.peer_id)
                .collect();
            members.sort();
            members == expected
        },
    )
    .await;
    a.expect_nothing_pending().await;
    b.expect_nothing_pending().await;
}

#[tokio::test]
async fn a_node_declared_dead_while_alive_writes_its_state_back() {
    let server = start_on(Backend::Redis(2), settings()).await;
    // Room r spans both nodes; room s lives on node 0 only.
    let mut a = server.connect_to(0, &server.token("a", None)).await;
    let mut b = server.connect_to(1, &server.token("b", None)).await;
    let mut c = server.connect_to(0, &server.token("c", None)).await;
    let mut d = server.connect_to(0, &server.token("d", None)).await;
    a.join("r").await;
    b.join("r").await;
    a.expect("peer_joined").await;
    c.join("s").await;
    d.join("s").await;
    c.expect("peer_joined").await;
    // What a survivor's cleanup does when node 0's heartbeat lapsed (a pause, a partition).
    let node0 = server.node(0).hub.node().to_string();
    let store = server.node(1).hub.store().clone();
    store.evict_node(&node0).await.unwrap();
    assert!(store.room_members("s").await.unwrap().is_empty());
    // Node 0 notices at its next heartbeat and writes its sessions and memberships back.
    eventually("node 0 to re-register", common::DEADLINE, async || {
        store.room_members("s").await.unwrap().len() >= 2
    })
    .await;
    // Nobody is closed: a hears of b again (its node was cut off from b's), and the
    // call across nodes goes on...
    assert_eq!(a.expect("peer_joined").await["peerId"], b.peer_id.as_str());
    b.offer(&a.peer_id, "across").await;
    assert_eq!(a.expect("offer").await["sdp"], "across");
    a.offer(&b.peer_id, "and back").await;
    assert_eq!(b.expect("offer").await["sdp"], "and back");
    // ...and the call held on node 0 alone never noticed.
    c.offer(&d.peer_id, "still there").await;
    assert_eq!(d.expect("offer").await["sdp"], "still there");
    let mut e = server.connect_to(1, &server.token("e", None)).await;
    let joined = e.join("s").await;
    assert_same_peers(&joined["peers"], &[c.peer_id.clone(), d.peer_id.clone()]);
    drop(b);
}

#[tokio::test]
async fn peers_join_locally_during_an_outage_and_appear_everywhere_after_it() {
    let s = fast_failing_settings();
    let mut server = start_on(Backend::Redis(2), s).await;
    let mut a = server.connect_to(0, &server.token("a", None)).await;
    let mut b = server.connect_to(0, &server.token("b", None)).await;
    let mut x = server.connect_to(1, &server.token("x", None)).await;
    x.join("r").await;

    server.redis_mut::<RedisServer>().pause();
    wait_ready_status(&server, 503).await;
    // Peers already on node 0 keep joining and talking among themselves.
    let joined = a.join("r").await;
    assert_eq!(
        joined["peers"],
        json!([]),
        "node 0 only knows its own peers now"
    );
    b.join("r").await;
    assert_eq!(a.expect("peer_joined").await["peerId"], b.peer_id.as_str());
    a.offer(&b.peer_id, "during").await;
    assert_eq!(b.expect("offer").await["sdp"], "during");

    // Redis returns: node 0 re-registers, and both sides learn of each other.
    server.redis_mut::<RedisServer>().resume();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = x.expect("peer_joined").await;
        seen.push(m["peerId"].as_str().unwrap().to_string());
    }
    seen.sort();
    let mut expected = vec![a.peer_id.clone(), b.peer_id.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(a.expect("peer_joined").await["peerId"], x.peer_id.as_str());
    a.offer(&x.peer_id, "across").await;
    assert_eq!(x.expect("offer").await["sdp"], "across");
    x.offer(&b.peer_id, "back").await;
    assert_eq!(b.expect("peer_joined").await["peerId"], x.peer_id.as_str());
    assert_eq!(b.expect("offer").await["sdp"], "back");
}

#[tokio::test]
async fn a_node_restarted_under_the_same_id_clears_what_it_left_behind() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let prefix = unique_prefix();
    let other = node_vars(&url, &prefix, "10s");
    let mut fixed = other.to_vec();
    fixed.push(("NODE_ID", "steady-1"));
    let (mut first, addr) = Running::start(&fixed);
    let (_survivor, survivor_addr) = Running::start(&other);
    let mut ghost = client(&addr, "ghost").await;
    let mut watcher = client(&survivor_addr, "watcher").await;
    ghost.join("r").await;
    watcher.join("r").await;
    ghost.expect("peer_joined").await;

    // Crash and restart long before the survivors (10 s heartbeats) could notice.
    first.kill();
    let (_second, addr) = Running::start(&fixed);
    let left = next_of(&mut watcher, "peer_left").await;
    assert_eq!(left["peerId"], ghost.peer_id.as_str());
    assert_eq!(left["reason"], "node_lost");
    let mut newcomer = client(&addr, "newcomer").await;
    let joined = newcomer.join("r").await;
    assert_eq!(
        joined["peers"],
        json!([watcher.peer_id]),
        "no ghost member remains"
    );
}

/// Polls `/health/ready` of the first node until it answers `status`.
/// The node's `/health` details.
async fn health(server: &common::TestServer) -> Value {
    reqwest::get(server.http("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_ready_status(server: &common::TestServer, status: u16) -> Value {
    let what = format!("readiness to become {status}");
    eventually(what, Duration::from_secs(20), async || {
        let response = reqwest::get(server.http("/health/ready")).await.unwrap();
        let now = response.status().as_u16();
        if now != status {
            return Err(now);
        }
        Ok(response.json().await.unwrap())
    })
    .await
}

#[tokio::test]
async fn same_node_relay_survives_a_hung_redis_and_readiness_follows_it() {
    let s = fast_failing_settings();
    let mut server = start_on(Backend::Redis(1), s).await;
    let (mut a, mut b) = server.pair("a", "b", "r").await;

    server.redis_mut::<RedisServer>().pause();
    let body = wait_ready_status(&server, 503).await;
    assert_eq!(body["status"], "redis unavailable");
    // Failed heartbeats open the breaker: from then on Redis calls fail at once.
    eventually("the breaker to open", Duration::from_secs(20), async || {
        let detail: Value = health(&server).await;
        assert_eq!(detail["redis"]["healthy"], false);
        (detail["redis"]["breaker"] == "open" && detail["redis"]["nodes"][0]["breaker"] == "open")
            .then_some(())
            .ok_or(detail)
    })
    .await;
    let metrics = server.metrics().await;
    let address = server.redis_mut::<RedisServer>().addr();
    assert!(
        metrics.contains(&format!(
            "switchboard_redis_breaker_state{{node=\"{address}\"}} 1"
        )),
        "{metrics}"
    );
    // A join does not wait for Redis: the open breaker fails the call at once and the
    // node admits the peer on what it knows itself.
    let asked = Instant::now();
    a.send(json!({"type": "join", "roomId": "elsewhere"})).await;
    assert_eq!(a.expect("joined").await["roomId"], "elsewhere");
    assert!(
        asked.elapsed() < Duration::from_millis(150),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(b.expect("peer_left").await["reason"], "left");
    a.join("r").await;
    assert_eq!(b.expect("peer_joined").await["peerId"], a.peer_id.as_str());
    // Peers on this node keep relaying, in order, while Redis hangs.
    for seq in 0..50 {
        a.offer(&b.peer_id, &format!("during {seq}")).await;
    }
    for seq in 0..50 {
        assert_eq!(b.expect("offer").await["sdp"], format!("during {seq}"));
    }

    server.redis_mut::<RedisServer>().resume();
    wait_ready_status(&server, 200).await;
    let detail: Value = health(&server).await;
    assert_eq!(detail["redis"]["breaker"], "closed");
    b.offer(&a.peer_id, "after").await;
    assert_eq!(a.expect("offer").await["sdp"], "after");
}

#[tokio::test]
async fn redis_killed_under_active_calls_loses_nothing_silently_and_recovers() {
    let s = fast_failing_settings();
    let mut server = start_on(Backend::Redis(2), s).await;
    // A call held on node 0 alone, and one spanning both nodes.
    let mut a = server.connect_to(0, &server.token("a", None)).await;
    let mut b = server.connect_to(0, &server.token("b", None)).await;
    a.join("local").await;
    b.join("local").await;
    a.expect("peer_joined").await;
    let mut x = server.connect_to(0, &server.token("x", None)).await;
    let mut y = server.connect_to(1, &server.token("y", None)).await;
    x.join("wide").await;
    y.join("wide").await;
    x.expect("peer_joined").await;

    server.redis_mut::<RedisServer>().kill();
    wait_ready_status(&server, 503).await;
    // The local call keeps relaying, every message once and in order.
    for seq in 0..100 {
        a.offer(&b.peer_id, &format!("{seq}")).await;
    }
    for seq in 0..100 {
        assert_eq!(b.expect("offer").await["sdp"], format!("{seq}"));
    }
    // The wide call cannot relay across nodes: held for FAILOVER_HOLD, then the sender
    // is told, naming the message, not silently dropped.
    x.send(json!({"type": "offer", "peerId": y.peer_id, "sdp": "lost?", "id": 41}))
        .await;
    let error = x.expect("error").await;
    assert_eq!(error["code"], "unavailable");
    assert_eq!(error["ref"], 41);

    server.redis_mut::<RedisServer>().restart().await;
    wait_ready_status(&server, 200).await;
    // Redis came back empty: both calls go on, nobody is closed.
    x.offer(&y.peer_id, "across again").await;
    assert_eq!(y.expect("offer").await["sdp"], "across again");
    a.offer(&b.peer_id, "after").await;
    assert_eq!(b.expect("offer").await["sdp"], "after");
    // The local call's state was written back, and every key has a TTL again.
    let prefix = server.key_prefix();
    eventually(
        "the state to be re-registered",
        common::DEADLINE,
        async || {
            let keys = keys_with_ttl(server.redis_mut::<RedisServer>(), &prefix).await;
            if !keys.iter().any(|(k, _)| k.contains("room:{local}"))
                || !keys.iter().any(|(k, _)| k.contains("room:{wide}"))
            {
                return Err(format!("{keys:?}"));
            }
            assert_all_expire_within_a_day(&keys);
            Ok(())
        },
    )
    .await;
    x.expect_nothing_pending().await;
    y.expect_nothing_pending().await;
}

#[tokio::test]
async fn a_dead_cluster_shard_fails_fast_alone_while_rooms_on_other_shards_go_on() {
    // Kill a master that holds none of this node's own keys (its `{node}` keys, its
    // liveness key and the node registry, which its heartbeat needs): a room on it is
    // "doomed", a room on another master is "healthy". Those keys' slots depend on the
    // random prefix and node id; when they span all three masters, start again.
    let mut started = None;
    for _ in 0..8 {
        let mut candidate = start_on(Backend::Cluster(1), fast_failing_settings()).await;
        let (prefix, node) = (
            candidate.key_prefix(),
            candidate.state.hub.node().to_string(),
        );
        let mut own = Vec::new();
        for key in [
            format!("{{{node}}}"),
            format!("{prefix}node:{node}"),
            format!("{prefix}nodes"),
        ] {
            own.push(candidate.redis_mut::<RedisCluster>().master_of(&key).await);
        }
        own.sort();
        own.dedup();
        if own.len() < 3 {
            started = Some((candidate, own));
            break;
        }
    }
    let (mut server, own) = started.expect("a start whose own keys leave a master free");
    let prefix = server.key_prefix();
    let cluster = server.redis_mut::<RedisCluster>();
    let (mut doomed_room, mut healthy) = (None, None);
    let mut doomed_port = None;
    for i in 0..200 {
        let room = format!("r{i}");
        let port = cluster.master_of(&format!("{{{room}}}")).await;
        if !own.contains(&port) && doomed_port.is_none_or(|d| d == port) && doomed_room.is_none() {
            doomed_port = Some(port);
            doomed_room = Some(room);
        } else if doomed_port.is_some_and(|d| d != port) && healthy.is_none() {
            healthy = Some(room);
        }
        if doomed_room.is_some() && healthy.is_some() {
            break;
        }
    }
    let (doomed_room, healthy) = (doomed_room.unwrap(), healthy.unwrap());
    let doomed_port = doomed_port.unwrap();
    let doomed = cluster
        .nodes
        .iter_mut()
        .find(|n| n.addr().ends_with(&format!(":{doomed_port}")))
        .expect("the doomed master is one of ours");
    let doomed_addr = doomed.addr();
    doomed.kill();

    // Joins to the dead shard fail there (the peer is admitted on the node's own view)
    // until that master's breaker opens; the others stay closed.
    let mut probe = client(&server.addr.to_string(), "prober").await;
    eventually(
        "the dead shard's breaker to open alone",
        Duration::from_secs(20),
        async || {
            probe
                .send(json!({"type": "join", "roomId": doomed_room}))
                .await;
            probe.expect("joined").await;
            probe.send(json!({"type": "leave"})).await;
            let detail: Value = health(&server).await;
            let nodes = detail["redis"]["nodes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let open: Vec<&str> = nodes
                .iter()
                .filter(|n| n["breaker"] != "closed")
                .filter_map(|n| n["address"].as_str())
                .collect();
            (nodes.len() == 3 && open == [doomed_addr.as_str()])
                .then_some(())
                .ok_or(detail)
        },
    )
    .await;

    // A room on a healthy shard is written to Redis, not held behind the dead one.
    let (a, b) = server.pair("a", "b", &healthy).await;
    let members = format!("{prefix}room:{{{healthy}}}:members");
    let cluster = server.redis_mut::<RedisCluster>();
    let live = cluster
        .nodes
        .iter()
        .find(|n| n.addr() != doomed_addr)
        .expect("a live node")
        .url();
    // The client's own retries stay short: its default backs off for minutes on an error.
    let conn = redis::cluster::ClusterClientBuilder::new(vec![live])
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .response_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut conn = conn.get_async_connection().await.unwrap();
    let mut expected = vec![a.peer_id.clone(), b.peer_id.clone()];
    expected.sort();
    // At once, or (if a call was slow) at a later heartbeat: the dead shard never comes
    // back here, so a write held behind its keys would never appear.
    eventually(
        "the healthy room's members in Redis",
        Duration::from_secs(10),
        async || {
            let mut written: Vec<String> = redis::cmd("HKEYS")
                .arg(&members)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("the healthy shard refused: {e}"))?;
            written.sort();
            (written == expected)
                .then_some(())
                .ok_or(format!("{written:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_revoked_session_admitted_while_redis_hangs_is_closed_once_it_answers() {
    let mut server = start_on(Backend::Redis(1), fast_failing_settings()).await;
    let issued = common::issuer(Duration::from_secs(600)).issue("mallory", None, None);
    server
        .state
        .hub
        .revoke(&issued.claims.session_id, Duration::from_secs(600))
        .await
        .expect("Redis answers before it hangs");

    // While Redis hangs the revocation cannot be read: the node admits the session
    // rather than refuse every new client through an outage...
    server.redis_mut::<RedisServer>().pause();
    let mut mallory = common::connect_at(&server.addr.to_string(), &issued.token).await;
    // ...and closes it with 1008 as soon as Redis answers again.
    server.redis_mut::<RedisServer>().resume();
    assert_eq!(mallory.expect_close().await, Some(1008));
    // Once Redis answers, the revoked token is refused at the door again.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws/signal?token={}",
        server.addr, issued.token
    ))
    .await;
    assert!(refused.is_err(), "a revoked session was let in again");
}
