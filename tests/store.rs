//! One conformance suite for every `Store`: the embedded store, a real standalone Redis and
//! a real Redis Cluster must agree on capacity, fencing, TTLs and node cleanup.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::{RedisCluster, RedisServer};
use switchboard::redis::{Keys, Redis, Topology};
use switchboard::room::LeaveReason;
use switchboard::store::{
    JoinOutcome, Member, MemoryStore, RedisStore, Seating, SessionRecord, Store,
};

const HOUR: Duration = Duration::from_secs(3600);

/// A store under test and whatever keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    _servers: Option<Box<dyn std::any::Any + Send + Sync>>,
}

async fn redis_store(topology: Topology) -> Arc<dyn Store> {
    let redis = Redis::connect(&topology, Duration::from_secs(2))
        .await
        .unwrap();
    Arc::new(RedisStore::new(redis, Keys::new(&common::unique_prefix())))
}

async fn subject(kind: &str) -> Subject {
    match kind {
        "memory" => Subject {
            store: Arc::new(MemoryStore::new()),
            _servers: None,
        },
        "redis" => {
            let server = RedisServer::start().await;
            let store = redis_store(Topology::Standalone { url: server.url() }).await;
            Subject {
                store,
                _servers: Some(Box::new(server)),
            }
        }
        "cluster" => {
            let cluster = RedisCluster::start().await;
            let store = redis_store(Topology::Cluster {
                seeds: cluster.seeds(),
            })
            .await;
            Subject {
                store,
                _servers: Some(Box::new(cluster)),
            }
        }
        _ => unreachable!(),
    }
}

fn member(peer: &str, node: &str, epoch: u64) -> Member {
    Member {
        peer_id: peer.into(),
        node: node.into(),
        epoch,
        ..Member::default()
    }
}

fn record(session: &str, node: &str) -> SessionRecord {
    SessionRecord {
        session_id: session.into(),
        user: "u".into(),
        peer_id: format!("u-{session}"),
        node: node.into(),
    }
}

async fn capacity_holds_under_a_hundred_simultaneous_joins(kind: &str) {
    let s = subject(kind).await;
    let capacity = 7;
    let mut joins = Vec::new();
    for i in 0..100 {
        let store = s.store.clone();
        joins.push(tokio::spawn(async move {
            let m = member(&format!("p{i}"), &format!("n{}", i % 3), i as u64 + 1);
            store
                .join_room("race", &m, Seating::Fresh, capacity, HOUR)
                .await
                .unwrap()
        }));
    }
    let mut joined = 0;
    for j in joins {
        if matches!(j.await.unwrap(), JoinOutcome::Joined { .. }) {
            joined += 1;
        }
    }
    assert_eq!(joined, capacity);
    assert_eq!(s.store.room_members("race").await.unwrap().len(), capacity);
}

async fn a_stale_connection_cannot_touch_its_successor(kind: &str) {
    let s = subject(kind).await;
    let store = &s.store;
    let old = store
        .claim_session(&record("s1", "n1"), HOUR)
        .await
        .unwrap();
    store
        .join_room(
            "r",
            &member("u-s1", "n1", old.epoch),
            Seating::Fresh,
            5,
            HOUR,
        )
        .await
        .unwrap();
    assert!(
        store
            .set_session_room("s1", old.epoch, Some("r"))
            .await
            .unwrap()
    );

    let new = store
        .claim_session(&record("s1", "n2"), HOUR)
        .await
        .unwrap();
    assert!(new.epoch > old.epoch);
    let previous = new.previous.expect("the old owner is reported");
    assert_eq!(
        (
            previous.node.as_str(),
            previous.epoch,
            previous.room.as_deref()
        ),
        ("n1", old.epoch, Some("r"))
    );
    store
        .join_room(
            "r",
            &member("u-s1", "n2", new.epoch),
            Seating::Fresh,
            5,
            HOUR,
        )
        .await
        .unwrap();

    // The old connection closes late: none of its calls may undo the new one.
    assert_eq!(
        store
            .leave_room("r", "u-s1", old.epoch, LeaveReason::Left)
            .await
            .unwrap(),
        None
    );
    assert!(!store.refresh_session("s1", old.epoch, HOUR).await.unwrap());
    assert!(!store.set_session_room("s1", old.epoch, None).await.unwrap());
    assert!(!store.release_session("n1", "s1", old.epoch).await.unwrap());
    assert_eq!(
        store.room_members("r").await.unwrap(),
        vec![member("u-s1", "n2", new.epoch)]
    );
    assert!(store.refresh_session("s1", new.epoch, HOUR).await.unwrap());
    assert!(store.release_session("n2", "s1", new.epoch).await.unwrap());
}

async fn a_room_lives_until_its_last_member_anywhere_leaves(kind: &str) {
    let s = subject(kind).await;
    let store = &s.store;
    store
        .join_room("r", &member("a", "n1", 1), Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    store
        .join_room("r", &member("b", "n2", 2), Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    // n1 has no local members left, but the room stays for b on n2.
    assert_eq!(
        store
            .leave_room("r", "a", 1, LeaveReason::Left)
            .await
            .unwrap(),
        Some(vec![member("b", "n2", 2)])
    );
    assert_eq!(store.room_members("r").await.unwrap().len(), 1);
    assert_eq!(
        store
            .leave_room("r", "b", 2, LeaveReason::Left)
            .await
            .unwrap(),
        Some(vec![])
    );
    assert!(store.room_members("r").await.unwrap().is_empty());
}

async fn a_dead_node_is_evicted_by_exactly_one_survivor(kind: &str) {
    let s = subject(kind).await;
    let store = &s.store;
    let short = Duration::from_millis(300);
    assert!(
        !store.heartbeat("dead", short).await.unwrap(),
        "a first heartbeat registers"
    );
    assert!(!store.heartbeat("alive", HOUR).await.unwrap());
    assert!(
        store.heartbeat("alive", HOUR).await.unwrap(),
        "later heartbeats find the registration"
    );
    let claim = store
        .claim_session(&record("sd", "dead"), HOUR)
        .await
        .unwrap();
    store
        .join_room(
            "r",
            &member("u-sd", "dead", claim.epoch),
            Seating::Fresh,
            5,
            HOUR,
        )
        .await
        .unwrap();
    store
        .join_room("r", &member("x", "alive", 9), Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    assert!(store.dead_nodes("alive").await.unwrap().is_empty());
    assert_eq!(store.live_node_count().await.unwrap(), 2);

    common::eventually("the heartbeat to expire", common::DEADLINE, async || {
        !store.dead_nodes("alive").await.unwrap().is_empty()
    })
    .await;
    assert_eq!(
        store.dead_nodes("alive").await.unwrap(),
        vec!["dead".to_string()]
    );
    assert!(store.claim_cleanup("dead", "alive", HOUR).await.unwrap());
    assert!(!store.claim_cleanup("dead", "other", HOUR).await.unwrap());
    let evictions = store.evict_node("dead").await.unwrap();
    assert_eq!(evictions.len(), 1);
    assert_eq!(
        evictions[0].removed,
        vec![member("u-sd", "dead", claim.epoch)]
    );
    assert_eq!(evictions[0].remaining, vec![member("x", "alive", 9)]);
    assert!(
        !store
            .refresh_session("sd", claim.epoch, HOUR)
            .await
            .unwrap()
    );
    assert!(store.dead_nodes("alive").await.unwrap().is_empty());
    assert_eq!(store.live_node_count().await.unwrap(), 1);
    // Had "dead" only been slow, its next heartbeat tells it that it was evicted.
    assert!(!store.heartbeat("dead", short).await.unwrap());
}

async fn a_resume_queue_keeps_its_order_and_is_taken_once(kind: &str) {
    let s = subject(kind).await;
    let store = &s.store;
    assert!(store.take_spool("q").await.unwrap().is_empty());
    store.spool("q", &[], HOUR).await.unwrap();
    let first = ["{\"seq\":1}".to_string(), "ü ✓".to_string()];
    store.spool("q", &first, HOUR).await.unwrap();
    store.spool("q", &["3".to_string()], HOUR).await.unwrap();
    store
        .spool("other", &["x".to_string()], HOUR)
        .await
        .unwrap();
    assert_eq!(
        store.take_spool("q").await.unwrap(),
        ["{\"seq\":1}", "ü ✓", "3"]
    );
    assert!(store.take_spool("q").await.unwrap().is_empty());
    assert_eq!(store.take_spool("other").await.unwrap(), ["x"]);
}

/// Join time, user and metadata travel with a member: as written, as kept by a move, and
/// after a metadata change.
async fn a_member_keeps_its_facts(kind: &str) {
    let subject = subject(kind).await;
    let store = &subject.store;
    let ann = Member {
        user: "ann".into(),
        joined_at: 1_767_225_600_123,
        metadata: Some(r#"{"name":"Ann"}"#.into()),
        ..member("ann-s1", "n1", 1)
    };
    store
        .join_room("r", &ann, Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    assert_eq!(
        store.room_members("r").await.unwrap(),
        std::slice::from_ref(&ann)
    );
    // Moving to another node keeps the facts, whatever the mover wrote.
    let moved = Member {
        node: "n2".into(),
        epoch: 2,
        joined_at: 9,
        metadata: None,
        ..ann.clone()
    };
    let JoinOutcome::Joined { seated, .. } = store
        .join_room("r", &moved, Seating::Keep, 5, HOUR)
        .await
        .unwrap()
    else {
        panic!("a move is never refused")
    };
    let expected = Member {
        node: "n2".into(),
        epoch: 2,
        ..ann.clone()
    };
    assert_eq!(seated, expected);
    let all = store
        .set_metadata("r", "ann-s1", 2, r#"{"muted":true}"#)
        .await
        .unwrap()
        .expect("the member is there");
    assert_eq!(all.len(), 1);
    assert_eq!(
        store.room_members("r").await.unwrap()[0]
            .metadata
            .as_deref(),
        Some(r#"{"muted":true}"#)
    );
    // A stale epoch changes nothing.
    assert_eq!(
        store.set_metadata("r", "ann-s1", 1, "{}").await.unwrap(),
        None
    );
    let info = store.room_info("r").await.unwrap().unwrap();
    assert_eq!(info.created_at, 1_767_225_600_123);
    assert_eq!(info.members[0].user, "ann");
}

/// Every change that alters a room writes its events, with the room's next seq, in the
/// same shape on every store; a move writes none.
async fn membership_changes_write_their_events_in_order(kind: &str) {
    let subject = subject(kind).await;
    let store = &subject.store;
    store.record_events(HOUR, 1000, "n1");
    let ann = Member {
        user: "ann".into(),
        joined_at: 5,
        ..member("ann-s1", "n1", 1)
    };
    let bob = Member {
        user: "bob".into(),
        ..member("bob-s2", "n2", 2)
    };
    store
        .join_room("r", &ann, Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    store
        .join_room("r", &bob, Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    let moved = member("bob-s2", "n3", 3);
    store
        .join_room("r", &moved, Seating::Keep, 5, HOUR)
        .await
        .unwrap();
    store
        .set_metadata("r", "ann-s1", 1, r#"{"hand":true}"#)
        .await
        .unwrap();
    store
        .leave_room("r", "ann-s1", 1, LeaveReason::Removed)
        .await
        .unwrap();
    assert_eq!(store.evict_node("n3").await.unwrap().len(), 1);
    let events = store.events_after("r", "", 100).await.unwrap();
    let parsed: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.json).expect("an event is JSON"))
        .collect();
    let kinds: Vec<String> = parsed
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "room_started ",
            "participant_joined ",
            "participant_joined ",
            "participant_updated ",
            "participant_left removed",
            "participant_left node_lost",
            "room_finished ",
        ]
    );
    for (i, event) in parsed.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1, "{event}");
        assert_eq!(event["roomId"], "r");
        assert!(event["createdAt"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        parsed[3]["peer"],
        serde_json::json!({"peerId": "ann-s1", "userId": "ann", "metadata": {"hand": true}})
    );
    assert_eq!(
        parsed[5]["peer"],
        serde_json::json!({"peerId": "bob-s2", "userId": "bob", "metadata": null})
    );
    let ids: std::collections::HashSet<&str> =
        parsed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), parsed.len(), "event ids are unique");
    // The room is due a look; the sequence goes on in the room's next life.
    assert!(
        !store
            .due_rooms(u64::MAX / 2000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .join_room("r", &ann, Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    let after = store
        .events_after("r", &events.last().unwrap().position, 10)
        .await
        .unwrap();
    let seqs: Vec<u64> = after
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.json).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [8, 9]);
}

/// A member written by an older build (no facts) still reads, and the entry this build
/// writes is the one an older build reads: `node|epoch`.
#[tokio::test]
async fn redis_member_entries_stay_readable_by_older_builds() {
    let server = RedisServer::start().await;
    let prefix = common::unique_prefix();
    let redis = Redis::connect(&Topology::Standalone { url: server.url() }, HOUR)
        .await
        .unwrap();
    let store = RedisStore::new(redis, Keys::new(&prefix));
    let key = format!("{prefix}room:{{r}}:members");
    server.cli(&["HSET", &key, "old-s0", "n0|7"]).await;
    let ann = Member {
        user: "ann".into(),
        joined_at: 5,
        metadata: Some("{}".into()),
        ..member("ann-s1", "n1", 1)
    };
    store
        .join_room("r", &ann, Seating::Fresh, 5, HOUR)
        .await
        .unwrap();
    assert_eq!(server.cli(&["HGET", &key, "ann-s1"]).await.trim(), "n1|1");
    let mut members = store.room_members("r").await.unwrap();
    members.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    assert_eq!(members, [ann, member("old-s0", "n0", 7)]);
    assert!(
        store
            .leave_room("r", "old-s0", 7, LeaveReason::Left)
            .await
            .unwrap()
            .is_some()
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test] async fn $name() { super::$name("memory").await } )*
        }
        mod redis {
            $( #[tokio::test] async fn $name() { super::$name("redis").await } )*
        }
        mod redis_cluster {
            $( #[tokio::test] async fn $name() { super::$name("cluster").await } )*
        }
    };
}

conformance!(
    capacity_holds_under_a_hundred_simultaneous_joins,
    a_stale_connection_cannot_touch_its_successor,
    a_room_lives_until_its_last_member_anywhere_leaves,
    a_dead_node_is_evicted_by_exactly_one_survivor,
    a_resume_queue_keeps_its_order_and_is_taken_once,
    a_member_keeps_its_facts,
    membership_changes_write_their_events_in_order,
);
