//! The hub with a real embedded store and bus: messages for a peer moving between nodes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::*;
use crate::bus::MemoryBus;
use crate::store::{MemoryStore, Seating};

const TTL: Duration = Duration::from_secs(60);

fn deliver(frame: &str) -> BusMessage {
    BusMessage::Deliver {
        to: "alice-1".into(),
        frame: frame.into(),
    }
}

/// A hub for node n1 where Bob shares room `r` with Alice, who is on n0.
async fn bob_on_n1_with_alice_on_n0(bus: Arc<dyn Bus>) -> (Hub, Registration) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let alice = Member {
        peer_id: "alice-1".into(),
        node: "n0".into(),
        epoch: 1,
        ..Member::default()
    };
    store
        .join_room("r", &alice, Seating::Fresh, 6, TTL)
        .await
        .unwrap();
    let hub = Hub::new("n1", store, bus, 6, 16, Metrics::new());
    let bob = hub
        .attach("1", "bob", &Arc::from("bob-1"), None, TTL)
        .await
        .unwrap();
    hub.join("bob-1", bob.epoch, "r").await.unwrap();
    (hub, bob)
}

/// What n1 hears when Alice's session moves from n0 to n2.
fn alice_moved_to_n2() -> BusMessage {
    BusMessage::PeerMoved {
        room: "r".into(),
        peer: "alice-1".into(),
        node: "n2".into(),
        epoch: 2,
        metadata: None,
    }
}

/// Bob (here, on n1) talks to Alice, who moves from n0 to n2: what Bob sends after
/// the move waits until n0 says it forwarded what Bob sent it before.
#[tokio::test]
async fn messages_for_a_peer_that_moved_wait_for_its_old_node_to_flush() {
    let bus = Arc::new(MemoryBus::new());
    let mut old_node = bus.subscribe("n0").await.unwrap();
    let mut new_node = bus.subscribe("n2").await.unwrap();
    let (hub, bob) = bob_on_n1_with_alice_on_n0(bus).await;
    assert!(matches!(hub.route("bob-1", "alice-1"), Ok(Route::Remote(n)) if &*n == "n0"));

    hub.on_bus(alice_moved_to_n2()).await;
    let flush = BusMessage::Flush {
        peer: "alice-1".into(),
        reply_to: "n1".into(),
    };
    // n0 also heard of Bob's join; the flush request comes after.
    loop {
        match old_node.try_recv() {
            Ok(message) if message == flush => break,
            Ok(_) => {}
            Err(e) => panic!("n0 was not asked to flush: {e}"),
        }
    }
    assert!(matches!(hub.route("bob-1", "alice-1"), Ok(Route::Remote(n)) if &*n == "n2"));
    hub.send_remote("n2", "alice-1", "one".into(), &bob.outbox, None)
        .await
        .unwrap();
    hub.send_remote("n2", "alice-1", "two".into(), &bob.outbox, None)
        .await
        .unwrap();
    assert!(new_node.try_recv().is_err(), "held until n0 is flushed");

    hub.on_bus(BusMessage::Flushed {
        peer: "alice-1".into(),
    })
    .await;
    assert_eq!(new_node.try_recv().unwrap(), deliver("one"));
    assert_eq!(new_node.try_recv().unwrap(), deliver("two"));
    hub.send_remote("n2", "alice-1", "three".into(), &bob.outbox, None)
        .await
        .unwrap();
    assert_eq!(
        new_node.try_recv().unwrap(),
        deliver("three"),
        "direct from now on"
    );
    // A late timeout finds nothing left to release.
    hub.release("alice-1").await;
    assert!(new_node.try_recv().is_err());
}

/// A bus whose publishes to one node fail, as they do while Redis is unreachable.
struct Unreachable {
    bus: MemoryBus,
    node: &'static str,
}

#[async_trait::async_trait]
impl Bus for Unreachable {
    fn send(&self, node: &str, message: BusMessage, lost: Option<OnLost>) {
        if node == self.node {
            if let Some(lost) = lost {
                lost(Undelivered::Expired);
            }
            return;
        }
        self.bus.send(node, message, lost)
    }

    async fn flushed(&self) {}

    fn abandon(&self, _node: &str) {}

    async fn close(&self, _node: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn subscribe(&self, node: &str) -> Result<crate::bus::Subscription, StoreError> {
        self.bus.subscribe(node).await
    }
}

/// A message held for a moved peer is not lost silently when it cannot be sent on:
/// its sender gets the error a failed relay gets, with the message's reference.
#[tokio::test]
async fn a_held_message_that_cannot_be_sent_on_is_reported_to_its_sender() {
    let bus = Arc::new(Unreachable {
        bus: MemoryBus::new(),
        node: "n2",
    });
    let (hub, bob) = bob_on_n1_with_alice_on_n0(bus).await;
    hub.on_bus(alice_moved_to_n2()).await;
    while bob.inbox.try_recv().is_some() {}

    let reference = RawValue::from_string("7".into()).unwrap();
    let held = hub.send_remote("n2", "alice-1", "one".into(), &bob.outbox, Some(&reference));
    held.await.unwrap();
    assert!(
        bob.inbox.try_recv().is_none(),
        "held: nothing to report yet"
    );
    hub.on_bus(BusMessage::Flushed {
        peer: "alice-1".into(),
    })
    .await;
    let told = bob
        .inbox
        .try_recv()
        .expect("the sender hears of the failure");
    let told: serde_json::Value = serde_json::from_str(told.frame.as_str()).unwrap();
    assert_eq!(told["type"], "error");
    assert_eq!(told["code"], "unavailable");
    assert_eq!(told["message"], REMOTE_RELAY_FAILED);
    assert_eq!(told["ref"], 7);
}

/// The old node answers a flush to the node that asked for it.
#[tokio::test]
async fn a_flush_is_answered_to_the_node_that_asked() {
    let bus = Arc::new(MemoryBus::new());
    let mut asker = bus.subscribe("n1").await.unwrap();
    let hub = Hub::new(
        "n0",
        Arc::new(MemoryStore::new()),
        bus,
        6,
        16,
        Metrics::new(),
    );
    hub.on_bus(BusMessage::Flush {
        peer: "alice-1".into(),
        reply_to: "n1".into(),
    })
    .await;
    // The answer leaves once the bus has handed on what came before.
    let answer = tokio::time::timeout(Duration::from_secs(5), asker.recv())
        .await
        .expect("the flush is answered");
    assert_eq!(
        answer,
        Some(BusMessage::Flushed {
            peer: "alice-1".into()
        })
    );
}

/// A parked session nobody resumes ends when its grace runs out, not before: the room
/// hears `peer_left` with reason `timeout`, and the session's place is gone.
#[tokio::test(start_paused = true)]
async fn a_parked_session_ends_when_its_grace_runs_out() {
    const GRACE: Duration = Duration::from_secs(30);
    let bus = Arc::new(MemoryBus::new());
    let hub = Arc::new(Hub::new(
        "n1",
        Arc::new(MemoryStore::new()),
        bus,
        6,
        16,
        Metrics::new(),
    ));
    let ann = hub
        .attach("1", "ann", &Arc::from("ann-1"), None, TTL)
        .await
        .unwrap();
    hub.join("ann-1", ann.epoch, "r").await.unwrap();
    let bob = hub
        .attach("1", "bob", &Arc::from("bob-1"), None, TTL)
        .await
        .unwrap();
    hub.join("bob-1", bob.epoch, "r").await.unwrap();
    while ann.inbox.try_recv().is_some() {}

    assert!(
        hub.park("bob-1", bob.epoch, (bob.inbox, Vec::new()), GRACE)
            .await
    );
    // Lets the parking timer start before the clock moves.
    tokio::task::yield_now().await;
    tokio::time::advance(GRACE - Duration::from_millis(1)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(ann.inbox.try_recv().is_none(), "still within the grace");
    assert_eq!(hub.peer_count(), 2);

    tokio::time::advance(Duration::from_millis(1)).await;
    let told = tokio::time::timeout(Duration::from_secs(1), ann.inbox.recv())
        .await
        .expect("the room hears of the expiry")
        .expect("ann's queue is open");
    let told: serde_json::Value = serde_json::from_str(told.frame.as_str()).unwrap();
    assert_eq!(told["type"], "peer_left");
    assert_eq!(told["peerId"], "bob-1");
    assert_eq!(told["reason"], "timeout");
    assert_eq!(hub.peer_count(), 1);
    assert!(matches!(
        hub.route("ann-1", "bob-1"),
        Err(RelayError::PeerNotFound)
    ));
}

/// News of a room whose gate is taken (a change there waits on the store) does not hold
/// up the bus reader: it is left with the gate's holder, and a relay to that room queues
/// behind it, so Bob still hears of Carol before her offer. Once the gate is left, both
/// arrive in order, and relays go straight through again.
#[tokio::test]
async fn room_news_waits_for_a_busy_gate_and_relays_queue_behind_it() {
    let (hub, bob) = bob_on_n1_with_alice_on_n0(Arc::new(MemoryBus::new())).await;
    while bob.inbox.try_recv().is_some() {}
    let carol_joined = BusMessage::PeerJoined {
        room: "r".into(),
        peer: "carol-1".into(),
        node: "n2".into(),
        epoch: 1,
        metadata: None,
    };
    let offer = |text: &str| BusMessage::Deliver {
        to: "bob-1".into(),
        frame: text.into(),
    };
    let next = |bob: &Registration| bob.inbox.try_recv().map(|o| o.frame.to_string());

    let pass = hub.enter_rooms(&["r"]).await;
    // Returns at once although the gate is taken.
    hub.on_bus(carol_joined).await;
    hub.on_bus(offer("carol's offer")).await;
    assert_eq!(next(&bob), None, "both wait for the gate's holder");
    drop(pass);
    let joined = next(&bob).expect("Bob hears of Carol");
    assert!(
        joined.contains("peer_joined") && joined.contains("carol-1"),
        "{joined}"
    );
    assert_eq!(next(&bob).as_deref(), Some("carol's offer"));
    assert!(!hub.room_gates.holding());

    hub.on_bus(offer("straight")).await;
    assert_eq!(next(&bob).as_deref(), Some("straight"));
}

/// Writing a node's state back can take longer than its heartbeat's TTL (Redis slow
/// after a failover): the heartbeat goes on meanwhile, so no other node declares this one
/// dead while it heals.
#[tokio::test(start_paused = true)]
async fn a_slow_rewrite_does_not_let_the_heartbeat_lapse() {
    let (hub, _bob) = bob_on_n1_with_alice_on_n0(Arc::new(MemoryBus::new())).await;
    let hub = Arc::new(hub);
    let store = hub.store().clone();
    // The heartbeat's follow-up work (the rewrite after n1's first heartbeat, the reaping
    // of dead nodes) waits for this hold on recovery as it would for a slow store.
    let hold = hub.recovery.read().await;
    let every = Duration::from_millis(500);
    let heartbeat = tokio::spawn(crate::signaling::heartbeat::run(
        hub.clone(),
        every,
        every,
        every,
    ));
    tokio::time::sleep(every * 10).await;
    assert!(
        !store
            .dead_nodes("n0")
            .await
            .unwrap()
            .contains(&"n1".to_string()),
        "n1's heartbeat lapsed behind its rewrite"
    );
    drop(hold);
    heartbeat.abort();
}
