//! The routing table alone: no store, no bus, no runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::signaling::outbox;

/// A table whose peers are `(peer, epoch)`, each with a connection; returns their inboxes.
fn table_with(peers: &[(&str, Epoch)]) -> (RoomTable, HashMap<String, Inbox>) {
    let mut table = RoomTable::default();
    let mut inboxes = HashMap::new();
    for &(peer, epoch) in peers {
        let (outbox, inbox) = outbox::channel(16);
        table.peers.insert(Arc::from(peer), slot(epoch, outbox));
        inboxes.insert(peer.to_string(), inbox);
    }
    (table, inboxes)
}

fn slot(epoch: Epoch, outbox: Outbox) -> PeerSlot {
    PeerSlot {
        epoch,
        session_len: 1,
        expires: tokio::time::Instant::now(),
        outbox,
        room: None,
        metadata: None,
        parked: None,
    }
}

fn member(peer: &str, node: &str, epoch: Epoch) -> Member {
    Member {
        peer_id: peer.into(),
        node: node.into(),
        epoch,
        ..Member::default()
    }
}

fn joined(to: &[&str], peer: &str) -> Notice {
    Notice {
        to: to.iter().map(|p| Arc::from(*p)).collect(),
        frame: Outgoing::PeerJoined {
            peer_id: peer,
            metadata: None,
        }
        .to_frame(),
    }
}

fn left(to: &[&str], peer: &str, reason: LeaveReason) -> Notice {
    Notice {
        to: to.iter().map(|p| Arc::from(*p)).collect(),
        frame: Outgoing::PeerLeft {
            peer_id: peer,
            reason,
        }
        .to_frame(),
    }
}

/// Recipients in a fixed order, for comparing.
fn sorted(mut notices: Vec<Notice>) -> Vec<Notice> {
    for notice in &mut notices {
        notice.to.sort();
    }
    notices
}

fn remote_node(table: &RoomTable, from: &str, to: &str) -> Option<String> {
    match table.route(from, to) {
        Ok(Route::Remote(node)) => Some(node.to_string()),
        _ => None,
    }
}

/// The slot keeps neither the user id nor the session id: both are read back from the
/// peer id, even when both contain dashes.
#[test]
fn a_slot_reads_its_user_from_the_peer_id() {
    let (outbox, _inbox) = outbox::channel(1);
    let slot = PeerSlot {
        epoch: 1,
        session_len: PeerSlot::session_len("0b6c-41f2"),
        expires: tokio::time::Instant::now(),
        outbox,
        room: None,
        metadata: None,
        parked: None,
    };
    assert_eq!(slot.user("ann-marie-0b6c-41f2"), "ann-marie");
    assert_eq!(slot.session_id("ann-marie-0b6c-41f2"), "0b6c-41f2");
    // Not a peer id of this slot's session: all of it is the user, none the session.
    assert_eq!(slot.user("ann-41f2"), "ann-41f2");
}

/// A newcomer's room hears first of members on other nodes it did not know (learned from
/// the store's answer), then of the newcomer; the newcomer itself hears neither.
#[test]
fn a_join_announces_unknown_remote_members_then_the_newcomer() {
    let (mut table, _inboxes) = table_with(&[("ann", 1), ("bob", 1)]);
    assert!(
        table
            .join("r", "ann", &[], "n1")
            .iter()
            .all(|n| n.to.is_empty())
    );
    let before = [member("ann", "n1", 1), member("cy", "n0", 4)];
    let notices = table.join("r", "bob", &before, "n1");
    assert_eq!(
        notices,
        vec![joined(&["ann"], "cy"), joined(&["ann"], "bob")]
    );
    assert_eq!(remote_node(&table, "bob", "cy").as_deref(), Some("n0"));
    assert!(matches!(table.route("bob", "ann"), Ok(Route::Local(_))));
    assert_eq!(
        table.route("bob", "bob").err(),
        Some(RelayError::PeerNotFound)
    );
    assert_eq!(
        table.route("bob", "dee").err(),
        Some(RelayError::PeerNotFound)
    );
    assert_eq!(table.known_members("r"), 3);
    assert_eq!(
        table
            .room_peers("r", "bob")
            .into_iter()
            .map(|p| p.peer_id)
            .collect::<Vec<_>>(),
        vec!["ann".to_string(), "cy".into()]
    );
}

/// Notices reach only the peers they name that still have a connection here.
#[test]
fn delivered_notices_reach_the_named_peers() {
    let (mut table, inboxes) = table_with(&[("ann", 1), ("bob", 1)]);
    let notices = table.join("r", "ann", &[], "n1");
    table.deliver(notices);
    let notices = table.join("r", "bob", &[], "n1");
    table.deliver(notices);
    let told = inboxes["ann"].try_recv().expect("ann hears of bob");
    assert_eq!(
        told.frame,
        Outgoing::PeerJoined {
            peer_id: "bob",
            metadata: None,
        }
        .to_frame()
    );
    assert!(inboxes["ann"].try_recv().is_none());
    assert!(
        inboxes["bob"].try_recv().is_none(),
        "nobody tells bob of himself"
    );
}

/// The last local member leaving drops the room's view and says so; earlier ones tell
/// the others why.
#[test]
fn departures_tell_the_rest_and_the_last_one_empties_the_view() {
    let (mut table, _inboxes) = table_with(&[("ann", 1), ("bob", 1)]);
    let _ = table.join("r", "ann", &[], "n1");
    let _ = table.join("r", "bob", &[member("cy", "n0", 1)], "n1");
    let (emptied, notices) = table.depart("r", "bob", 1, LeaveReason::Left);
    assert!(!emptied);
    assert_eq!(notices, vec![left(&["ann"], "bob", LeaveReason::Left)]);
    assert!(table.peers["bob"].room.is_none());
    assert_eq!(table.route("bob", "ann").err(), Some(RelayError::NotInRoom));
    let (emptied, notices) = table.depart("r", "ann", 1, LeaveReason::Disconnected);
    assert!(emptied, "nobody of this node is left in the room");
    assert!(notices.is_empty());
    assert!(!table.has_room("r"));
    assert_eq!(table.room_count(), 0);
}

/// Another node's word that a peer left applies only to the membership this node knows:
/// a departure of an older epoch changes nothing.
#[test]
fn a_departure_elsewhere_of_another_epoch_is_ignored() {
    let (mut table, _inboxes) = table_with(&[("ann", 1)]);
    let _ = table.join("r", "ann", &[member("cy", "n0", 5)], "n1");
    assert!(
        table
            .left_elsewhere("r", "cy", 4, LeaveReason::Left)
            .is_empty()
    );
    assert_eq!(remote_node(&table, "ann", "cy").as_deref(), Some("n0"));
    let notices = table.left_elsewhere("r", "cy", 5, LeaveReason::Left);
    assert_eq!(notices, vec![left(&["ann"], "cy", LeaveReason::Left)]);
    assert_eq!(remote_node(&table, "ann", "cy"), None);
    assert!(table.lost("r", "cy").is_empty(), "already gone");
}

/// News of a remote member: a newcomer is announced; a move between nodes is not, but
/// holds what follows until the old node is flushed; a return with another epoch is.
#[test]
fn remote_news_is_announced_once_and_a_move_between_others_holds_messages() {
    let (mut table, _inboxes) = table_with(&[("ann", 1)]);
    assert_eq!(
        table.learn("r", "cy", "n0", 1, false, None),
        (Vec::new(), None),
        "no view of r"
    );
    let _ = table.join("r", "ann", &[], "n1");
    let (notices, flush) = table.learn("r", "cy", "n0", 1, false, None);
    assert_eq!(sorted(notices), vec![joined(&["ann"], "cy")]);
    assert_eq!(flush, None);
    assert_eq!(
        table.learn("r", "cy", "n0", 1, false, None),
        (Vec::new(), None),
        "known"
    );

    let (notices, flush) = table.learn("r", "cy", "n2", 2, true, None);
    assert!(notices.is_empty(), "a move is not news to the room");
    assert_eq!(
        flush.as_deref(),
        Some("n0"),
        "the old node is to be flushed"
    );
    assert_eq!(&*table.holding["cy"].node, "n2");
    assert_eq!(remote_node(&table, "ann", "cy").as_deref(), Some("n2"));

    let (notices, _) = table.learn("r", "cy", "n2", 3, false, None);
    assert_eq!(
        sorted(notices),
        vec![joined(&["ann"], "cy")],
        "back with a new epoch"
    );
}

/// After an outage the view takes the store's word: members gone meanwhile are announced
/// as disconnected, new ones as joined.
#[test]
fn reconcile_announces_the_difference_with_the_store() {
    let (mut table, _inboxes) = table_with(&[("ann", 1)]);
    let _ = table.join("r", "ann", &[member("cy", "n0", 1)], "n1");
    let truth = [member("ann", "n1", 1), member("dee", "n2", 1)];
    let notices = table.reconcile("r", &truth, "n1", false, true);
    assert_eq!(
        notices,
        vec![
            left(&["ann"], "cy", LeaveReason::Disconnected),
            joined(&["ann"], "dee")
        ]
    );
    assert_eq!(remote_node(&table, "ann", "cy"), None);
    assert_eq!(remote_node(&table, "ann", "dee").as_deref(), Some("n2"));
    assert!(
        table
            .reconcile("other", &truth, "n1", false, true)
            .is_empty()
    );
}

/// A parked session moving to another node leaves the table with its queue; the room
/// keeps it as a remote member and late messages are forwarded. A live one does not move.
#[test]
fn a_parked_session_moves_out_with_its_queue() {
    let (mut table, _inboxes) = table_with(&[("ann", 1), ("bob", 1)]);
    let _ = table.join("r", "ann", &[], "n1");
    let _ = table.join("r", "bob", &[], "n1");
    assert!(
        table
            .move_out("bob", "n2", 2, Duration::from_secs(60))
            .is_none()
    );
    assert!(table.peers.contains_key("bob"), "a live session stays");

    let (outbox, inbox) = outbox::channel(4);
    assert!(outbox.deliver("queued".into()));
    table.peers.get_mut("bob").unwrap().parked = Some(Box::new((inbox, vec!["unsent".into()])));
    let (slot, frames) = table
        .move_out("bob", "n2", 2, Duration::from_secs(60))
        .expect("a parked session moves");
    assert_eq!(slot.epoch, 1);
    assert_eq!(frames, vec!["unsent".to_string(), "queued".into()]);
    assert!(!table.peers.contains_key("bob"));
    assert_eq!(remote_node(&table, "ann", "bob").as_deref(), Some("n2"));
    assert_eq!(table.moved.get("bob").map(|(n, _)| &**n), Some("n2"));
}

/// A resumed session takes its place quietly: only members its room did not know are
/// announced, and not to the resumed peer itself.
#[test]
fn moving_in_announces_only_what_the_room_did_not_know() {
    let (mut table, _inboxes) = table_with(&[("ann", 1), ("bob", 2)]);
    let _ = table.join("r", "ann", &[member("cy", "n0", 1)], "n1");
    let others = [
        member("ann", "n1", 1),
        member("cy", "n0", 1),
        member("dee", "n2", 1),
    ];
    let notices = table.move_in("r", "bob", &others, "n1");
    assert_eq!(sorted(notices), vec![joined(&["ann"], "dee")]);
    assert_eq!(table.peers["bob"].room.as_deref(), Some("r"));
    let local: Vec<_> = table
        .local_members("n1")
        .into_iter()
        .flat_map(|(_, members)| members)
        .map(|m| (m.peer_id, m.epoch))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(local, vec![("ann".to_string(), 1), ("bob".to_string(), 2)]);
}

/// After this node was declared lost while cut off, the other side saw its peers leave:
/// its own peers hear of every remote member again, known or not, and of nobody twice.
#[test]
fn reconcile_after_an_eviction_reintroduces_every_remote_member() {
    let (mut table, _inboxes) = table_with(&[("ann", 1)]);
    let _ = table.join(
        "r",
        "ann",
        &[member("cy", "n0", 1), member("eve", "n2", 1)],
        "n1",
    );
    let truth = [
        member("ann", "n1", 1),
        member("cy", "n0", 1),
        member("dee", "n2", 1),
    ];
    let mut notices = table.reconcile("r", &truth, "n1", true, true);
    notices.sort_by(|a, b| a.frame.as_str().cmp(b.frame.as_str()));
    let mut expected = vec![
        left(&["ann"], "eve", LeaveReason::Disconnected),
        joined(&["ann"], "cy"),
        joined(&["ann"], "dee"),
    ];
    expected.sort_by(|a, b| a.frame.as_str().cmp(b.frame.as_str()));
    assert_eq!(notices, expected);
}

/// After Redis lost its data, members missing from the store are kept (their nodes are
/// writing them back): nobody hears they left.
#[test]
fn reconcile_without_pruning_keeps_members_missing_from_the_store() {
    let (mut table, _inboxes) = table_with(&[("ann", 1)]);
    let _ = table.join("r", "ann", &[member("cy", "n0", 1)], "n1");
    let truth = [member("ann", "n1", 1), member("dee", "n2", 1)];
    let notices = table.reconcile("r", &truth, "n1", false, false);
    assert_eq!(notices, vec![joined(&["ann"], "dee")]);
    assert_eq!(remote_node(&table, "ann", "cy").as_deref(), Some("n0"));
    assert_eq!(remote_node(&table, "ann", "dee").as_deref(), Some("n2"));
}
