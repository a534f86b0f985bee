//! The Hub: this node's peers, its view of the rooms they are in (including members on
//! other nodes), routing between them, and membership changes recorded in the [`Store`]
//! and announced to other nodes over the [`Bus`].
//!
//! One concern per file:
//! - [`table`]: the local routing table, plain synchronous data;
//! - `session`: a connection's session: attach, resume, park, expire, detach, refresh;
//! - `handover`: a session moving between nodes;
//! - `membership`: join and leave;
//! - `inbox`: applying what other nodes publish;
//! - `recovery`: re-registering after a store outage, cleaning up after dead nodes;
//! - `admin`: revoke, drain, close.
//! - `moderation`: participant metadata, and the server API's rooms, removals and messages.
//!
//! # Locking
//! - The table is behind a `std::sync::RwLock`: read on every relay, written briefly by
//!   membership changes, never held across `.await`. Notices a change calls for are
//!   delivered under the same write, so they leave in the order the changes were made.
//! - A change that asks the store and then updates the table holds *gates* across the
//!   round trip, so what it read is still true when it applies it: first the gate of the
//!   peer it acts for, then the gates of the rooms it touches, in name order (no
//!   deadlock). Changes in other rooms, and relays, go on meanwhile.
//! - Membership news from other nodes needs the room's gate too, but the bus consumer
//!   never waits for one: it leaves the message with the gate's holder, who applies it
//!   before leaving. Relays to that room's peers queue behind such messages, so a peer
//!   still hears `peer_joined` before the newcomer's offer.
//! - Re-registering after an outage and evicting a dead node rewrite many rooms from one
//!   store answer: they take `recovery` exclusively; every other change takes it shared.

mod admin;
mod gate;
mod handover;
mod inbox;
mod membership;
mod moderation;
mod recovery;
mod session;
mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::outbox::{Inbox, Outbox};
use super::protocol::{ErrorCode, Metadata, Outgoing, Participant};
use crate::bus::{Bus, BusMessage, OnLost, Undelivered};
use crate::net::websocket::Utf8Bytes;
use crate::room::LeaveReason;
use crate::store::{Epoch, Member, Store, StoreError};
use crate::telemetry::Metrics;
use gate::Gates;
use table::{HeldFrame, RoomTable};

pub use inbox::consume;
pub use membership::Joined;
pub use moderation::SERVER_SENDER;
pub use recovery::Rewrite;

/// TTL of room entries in the store; refreshed while members are active.
const ROOM_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a join or leave failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The room is at capacity.
    #[error("room is full")]
    RoomFull,
    /// `leave` named a room the peer is not in.
    #[error("not in that room")]
    NotInRoom,
    /// A newer connection of this session took over.
    #[error("the session moved to a newer connection")]
    Replaced,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a relay failed; nothing was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// The sender is in no room.
    NotInRoom,
    /// The target is not in the sender's room.
    PeerNotFound,
}

/// Where a relayed message goes.
pub enum Route {
    /// A peer on this node.
    Local(Outbox),
    /// A peer on another node.
    Remote(Arc<str>),
}

/// A connection's place in the hub.
pub struct Registration {
    /// Fencing epoch of this connection's session claim.
    pub epoch: Epoch,
    /// The connection's own outbox, for replies.
    pub outbox: Outbox,
    /// The queue the connection task drains.
    pub inbox: Inbox,
    /// Set when this connection resumed a parked session: written before the queue.
    pub resumed: Option<Resumed>,
}

/// What a resumed connection is told first: `resumed`, then what was queued for it.
pub struct Resumed {
    /// The room the session is in.
    pub room: Option<Arc<str>>,
    /// Everyone else in that room now.
    pub peers: Vec<Participant>,
    /// The session's own metadata.
    pub metadata: Option<Metadata>,
    /// Frames queued while the session was parked (including one whose write failed when
    /// the connection dropped), written before anything newer.
    pub queued: Vec<Utf8Bytes>,
}

/// What a sender is told when its message could not be handed to the recipient's node.
pub const REMOTE_RELAY_FAILED: &str =
    "Relaying to that peer's node failed or timed out; it may not have arrived.";

/// The error a sender gets for a relay given up on, by reason.
fn undelivered_sentence(why: Undelivered) -> &'static str {
    match why {
        Undelivered::Expired => {
            "That peer's node could not be reached within FAILOVER_HOLD; the message was not delivered."
        }
        Undelivered::NodeLost => {
            "That peer's node was lost before the message reached it; it was not delivered."
        }
        Undelivered::Full => {
            "Too many messages are waiting for that peer's node; this one was not delivered."
        }
    }
}

/// A callback that tells `sender` its message (named by `reference`) was not delivered.
fn report_to(sender: Outbox, reference: Option<Box<RawValue>>) -> OnLost {
    Box::new(move |why| {
        let error = Outgoing::Error {
            code: ErrorCode::Unavailable,
            message: undelivered_sentence(why),
            reference: reference.as_deref(),
        };
        sender.deliver(error.to_frame());
    })
}

/// A departure the store has not recorded yet: room, peer, membership epoch, reason.
type Departure = (Arc<str>, Arc<str>, Epoch, LeaveReason);

/// Rooms and peers of one node.
pub struct Hub {
    node: Arc<str>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    capacity: usize,
    queue: usize,
    metrics: Arc<Metrics>,
    /// Read on every relay, written on membership changes; never held across `.await`.
    table: RwLock<RoomTable>,
    /// Serialise changes for one peer across store and bus round trips.
    peer_gates: Gates,
    /// Serialise changes to one room across store and bus round trips.
    room_gates: Gates,
    /// Taken exclusively by changes that rewrite many rooms at once (see the module doc).
    recovery: tokio::sync::RwLock<()>,
    /// Whether the last heartbeat reached the store.
    store_healthy: AtomicBool,
    /// Since when the store has not answered heartbeats, if it does not now.
    store_down_since: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Set when a session or membership was recorded only here (the store failed): the
    /// heartbeat writes this node's state back as soon as the store answers.
    unwritten: AtomicBool,
    /// Departures the store has not recorded yet (room, peer, epoch, reason).
    departures: std::sync::Mutex<Vec<Departure>>,
    /// Set once the node shuts down: dropped connections are no longer parked.
    shutting: AtomicBool,
    /// Set once the node drains: its clients were told to go, so a session one of them
    /// takes elsewhere is handed over even while its connection here is still open.
    draining: AtomicBool,
    /// Reconnects waiting for another node to hand their session over, by peer and epoch.
    handovers: std::sync::Mutex<HashMap<(String, Epoch), oneshot::Sender<bool>>>,
    /// When this node last handed a session over or forwarded a message after one.
    last_move: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The gate of one peer, left when dropped.
struct PeerPass<'a> {
    hub: &'a Hub,
    peer: &'a str,
}

impl Drop for PeerPass<'_> {
    fn drop(&mut self) {
        // Nothing is ever left with a peer's gate.
        let _ = self.hub.peer_gates.leave(self.peer);
    }
}

/// The gates of some rooms, left when dropped, after applying what the bus consumer left
/// with them.
struct RoomPass<'a> {
    hub: &'a Hub,
    /// One room, or two (a move between rooms), in the order they were entered.
    rooms: [Option<&'a str>; 2],
}

impl Drop for RoomPass<'_> {
    fn drop(&mut self) {
        for room in self.rooms.iter().flatten() {
            while let Some(deferred) = self.hub.room_gates.leave(room) {
                for message in deferred {
                    self.hub.apply_deferred(message);
                }
            }
        }
    }
}

// === impl Hub ===

impl Hub {
    /// A hub for `node` with rooms of at most `capacity` and per-peer queues of `queue` frames.
    pub fn new(
        node: &str,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        capacity: usize,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node: Arc::from(node),
            store,
            bus,
            capacity,
            queue,
            metrics,
            table: RwLock::default(),
            peer_gates: Gates::default(),
            room_gates: Gates::default(),
            recovery: tokio::sync::RwLock::new(()),
            store_healthy: AtomicBool::new(true),
            store_down_since: std::sync::Mutex::default(),
            unwritten: AtomicBool::new(false),
            departures: std::sync::Mutex::default(),
            shutting: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            handovers: std::sync::Mutex::default(),
            last_move: std::sync::Mutex::default(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the store answered the last heartbeat.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }

    /// Records whether the store answered the last heartbeat.
    pub fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy.store(healthy, Ordering::Relaxed);
        let mut since = self
            .store_down_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (healthy, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(tokio::time::Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// How long the store has been failing this node's heartbeats; `None` while it answers.
    pub fn store_outage(&self) -> Option<Duration> {
        self.store_down_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }

    /// Whether something was recorded only on this node and awaits the store.
    pub fn has_unwritten(&self) -> bool {
        self.unwritten.load(Ordering::Relaxed)
    }

    /// Notes that something was recorded only on this node (the store failed).
    fn unwritten(&self) {
        self.unwritten.store(true, Ordering::Relaxed);
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store this hub records state in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn read(&self) -> RwLockReadGuard<'_, RoomTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RoomTable> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the gate of `peer`.
    async fn enter_peer<'a>(&'a self, peer: &'a str) -> PeerPass<'a> {
        self.peer_gates.enter(peer).await;
        PeerPass { hub: self, peer }
    }

    /// Waits for the gates of `rooms` (one, or the two of a move), in name order.
    async fn enter_rooms<'a>(&'a self, rooms: &[&'a str]) -> RoomPass<'a> {
        let sorted = match *rooms {
            [room] => [Some(room), None],
            [a, b] if a == b => [Some(a), None],
            [a, b] => [Some(a.min(b)), Some(a.max(b))],
            _ => unreachable!("a membership change involves one room or two"),
        };
        let mut pass = RoomPass {
            hub: self,
            rooms: [None, None],
        };
        for (slot, room) in sorted.into_iter().enumerate() {
            let Some(room) = room else { break };
            self.room_gates.enter(room).await;
            // Held from here, so a cancelled wait for the next one still leaves this one.
            pass.rooms[slot] = Some(room);
        }
        pass
    }

    /// Queues a message for another node; the bus holds and retries it across Redis
    /// failovers, and what never arrives is logged (the store keeps the truth).
    fn publish(&self, node: &str, message: &BusMessage) {
        self.bus.send(node, message.clone(), None);
    }

    /// Queues `message` once for each node other than this one that holds `members`.
    fn tell_other_nodes(&self, members: &[Member], message: &BusMessage) {
        for node in other_nodes(members, &self.node) {
            self.publish(&node, message);
        }
    }

    /// Records the room a session is in, as bookkeeping for a later takeover (the
    /// membership itself is recorded already); a failure is logged.
    async fn record_room(&self, session_id: &str, epoch: Epoch, room: Option<&str>) {
        if let Err(e) = self.store.set_session_room(session_id, epoch, room).await {
            tracing::warn!(error = %e, "could not record the session's room");
        }
    }

    /// Where a message from `from` to `to` goes, if they share a room; no store round trip.
    pub fn route(&self, from: &str, to: &str) -> Result<Route, RelayError> {
        self.read().route(from, to)
    }

    /// Hands a frame to a peer on another node. It is held and retried across Redis
    /// failovers; if it cannot be delivered, its sender, `sender`, gets an error naming
    /// `reference` and saying why. A frame held back (the peer is moving between nodes)
    /// is handled the same way once it can be sent on.
    pub async fn send_remote(
        &self,
        node: &str,
        to: &str,
        frame: Utf8Bytes,
        sender: &Outbox,
        reference: Option<&RawValue>,
    ) -> Result<(), StoreError> {
        // Read first: holding is rare, and the relay path should not take the write lock.
        let holding = !self.read().holding.is_empty();
        if holding && let Some(held) = self.write().holding.get_mut(to) {
            let failure = Outgoing::Error {
                code: ErrorCode::Unavailable,
                message: REMOTE_RELAY_FAILED,
                reference,
            };
            held.frames.push(HeldFrame {
                frame,
                sender: sender.clone(),
                failure: failure.to_frame(),
            });
            return Ok(());
        }
        let message = BusMessage::Deliver {
            to: to.to_string(),
            frame,
        };
        let lost = report_to(sender.clone(), reference.map(|r| r.to_owned()));
        self.bus.send(node, message, Some(lost));
        Ok(())
    }

    /// The room `peer_id` is in and its session (read from the peer id), or `Replaced` when
    /// `epoch` lost the peer.
    fn owned<'p>(
        &self,
        peer_id: &'p str,
        epoch: Epoch,
    ) -> Result<(Option<Arc<str>>, &'p str), MembershipError> {
        match self.read().owned(peer_id, epoch) {
            Some(slot) => Ok((slot.room.clone(), slot.session_id(peer_id))),
            None => Err(MembershipError::Replaced),
        }
    }

    /// Number of connected peers on this node.
    pub fn peer_count(&self) -> usize {
        self.read().peers.len()
    }

    /// Number of rooms with at least one peer on this node.
    pub fn room_count(&self) -> usize {
        self.read().room_count()
    }
}

/// The distinct nodes other than `me` holding members.
fn other_nodes(members: &[Member], me: &str) -> Vec<String> {
    let mut nodes: Vec<String> = members
        .iter()
        .filter(|m| m.node != me)
        .map(|m| m.node.clone())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

#[cfg(test)]
mod tests;
