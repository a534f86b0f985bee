//! The Hub: this node's peers, its view of the rooms they are in (including members on
//! other nodes), routing between them, and membership changes recorded in the [`Store`]
//! and announced to other nodes over the [`Bus`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::oneshot;

use super::outbox::{self, Inbox, Outbox};
use serde_json::value::RawValue;

use super::protocol::{ErrorCode, LeaveReason, Outgoing, close};
use crate::bus::{Bus, BusMessage};
use crate::identifier;
use crate::store::{Epoch, JoinOutcome, Member, Previous, SessionRecord, Store, StoreError};
use crate::telemetry::Metrics;

/// TTL of room entries in the store; refreshed while members are active.
const ROOM_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a reconnect waits for the node that held its session to hand it over; past
/// that, the old connection is taken to be gone and the session starts afresh.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// How long a handover waits for a closing connection to finish parking its session.
const PARK_SETTLE: Duration = Duration::from_secs(1);
/// How long a moved session's queue stays in the store, and how long its old node forwards
/// late messages to the new one.
const MOVE_TTL: Duration = Duration::from_secs(60);

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
    pub peers: Vec<String>,
    /// Frames queued while the session was parked (including one whose write failed when
    /// the connection dropped), written before anything newer.
    pub queued: Vec<Utf8Bytes>,
}

/// A local session. One per connection, kept small: the user id is the peer id without
/// its `-<session_id>` suffix, and the room id is the room view's key.
struct PeerSlot {
    epoch: Epoch,
    session_id: Arc<str>,
    /// When the session's store record should lapse (token expiry plus margin).
    expires: tokio::time::Instant,
    outbox: Outbox,
    room: Option<Arc<str>>,
    /// Set while the connection is gone but the session waits for a resume: the queue its
    /// messages collect in, and frames whose write failed when the connection dropped.
    parked: Option<Box<(Inbox, Vec<Utf8Bytes>)>>,
}

impl PeerSlot {
    /// The user of the session whose peer id is `peer`.
    fn user<'a>(&self, peer: &'a str) -> &'a str {
        peer.strip_suffix(&*self.session_id)
            .and_then(|p| p.strip_suffix('-'))
            .unwrap_or(peer)
    }
}

/// A member on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteMember {
    node: Arc<str>,
    epoch: Epoch,
}

/// This node's view of a room that has at least one local member.
#[derive(Default)]
struct RoomView {
    local: HashSet<Arc<str>>,
    remote: HashMap<Arc<str>, RemoteMember>,
}

#[derive(Default)]
struct Local {
    peers: HashMap<Arc<str>, PeerSlot>,
    rooms: HashMap<Arc<str>, RoomView>,
    /// Sessions handed over to another node: where late messages for them are forwarded,
    /// and since when.
    moved: HashMap<Arc<str>, (Arc<str>, tokio::time::Instant)>,
    /// Remote peers that moved between two other nodes: what this node's members send them
    /// waits here until the old node has forwarded everything sent to it before (see
    /// [`BusMessage::Flush`]), so nothing sent directly to the new node overtakes it.
    holding: HashMap<Arc<str>, Holding>,
}

/// What a sender is told when its message could not be handed to the recipient's node.
pub const REMOTE_RELAY_FAILED: &str =
    "Relaying to that peer's node failed or timed out; it may not have arrived.";

/// Messages held for a remote peer that moved, until its old node is flushed.
struct Holding {
    /// The peer's new node.
    node: Arc<str>,
    frames: Vec<HeldFrame>,
    /// A release is sending the held messages; new ones still queue behind them.
    releasing: bool,
}

impl Local {
    /// The one copy of a local peer's id (its slot's key), for its room view to share.
    fn peer_key(&self, peer_id: &str) -> Arc<str> {
        identifier::shared(&self.peers, peer_id)
    }

    /// A room's view, created when missing, and the one copy of its id, for the
    /// members' slots to share.
    fn room_view(&mut self, room: &str) -> (Arc<str>, &mut RoomView) {
        let key = identifier::shared(&self.rooms, room);
        let view = self.rooms.entry(key.clone()).or_default();
        (key, view)
    }
}

/// A message held for a moved peer: its sender was told nothing yet, so it gets `failure`
/// if the message cannot be sent on.
struct HeldFrame {
    frame: Utf8Bytes,
    sender: Outbox,
    failure: Utf8Bytes,
}

/// Rooms and peers of one node.
pub struct Hub {
    node: Arc<str>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    capacity: usize,
    queue: usize,
    metrics: Arc<Metrics>,
    /// Read on every relay, written on membership changes; never held across `.await`.
    local: RwLock<Local>,
    /// Serialises membership changes (local and from other nodes) so store results, bus
    /// events and local state stay in step.
    membership: tokio::sync::Mutex<()>,
    /// Whether the last heartbeat reached the store.
    store_healthy: std::sync::atomic::AtomicBool,
    /// Set once the node shuts down: dropped connections are no longer parked.
    shutting: std::sync::atomic::AtomicBool,
    /// Reconnects waiting for another node to hand their session over, by peer and epoch.
    handovers: std::sync::Mutex<HashMap<(String, Epoch), oneshot::Sender<bool>>>,
    /// When this node last handed a session over or forwarded a message after one.
    last_move: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What a handover found of the connection it displaces.
enum Held {
    /// Parked: its queue moves to the new connection.
    Parked,
    /// Ending, and perhaps about to park.
    Closing,
    /// Still connected: it is replaced.
    Live,
    /// Not here (ended, or already replaced).
    Gone,
}

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
            local: RwLock::default(),
            membership: tokio::sync::Mutex::new(()),
            store_healthy: std::sync::atomic::AtomicBool::new(true),
            shutting: std::sync::atomic::AtomicBool::new(false),
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
        self.store_healthy
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether the store answered the last heartbeat.
    pub fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy
            .store(healthy, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store this hub records state in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn read(&self) -> RwLockReadGuard<'_, Local> {
        self.local.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Local> {
        self.local.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection for a session. A session parked on this node or handed over
    /// by another one is resumed; otherwise the connection it replaces (on this node or
    /// another) is closed with 4004 and leaves its room with reason `replaced`.
    pub async fn attach(
        &self,
        session_id: &str,
        user: &str,
        peer_id: &str,
        ttl: Duration,
    ) -> Result<Registration, StoreError> {
        let (registration, handover) = {
            let _serial = self.membership.lock().await;
            if let Some(resumed) = self.resume(session_id, peer_id, ttl).await? {
                return Ok(resumed);
            }
            self.claim(session_id, user, peer_id, ttl).await?
        };
        let Some((previous, reply)) = handover else {
            return Ok(registration);
        };
        let resumed = matches!(
            tokio::time::timeout(HANDOVER_WAIT, reply).await,
            Ok(Ok(true))
        );
        if !resumed {
            self.handovers_lock()
                .remove(&(peer_id.to_string(), registration.epoch));
        }
        Ok(self
            .take_over(session_id, peer_id, registration, previous, resumed)
            .await)
    }

    /// Claims the session for a new connection. When another node held it, that node is
    /// asked to hand it over and the answer is returned to wait for.
    async fn claim(
        &self,
        session_id: &str,
        user: &str,
        peer_id: &str,
        ttl: Duration,
    ) -> Result<(Registration, Option<(Previous, oneshot::Receiver<bool>)>), StoreError> {
        let record = SessionRecord {
            session_id: session_id.to_string(),
            user: user.to_string(),
            peer_id: peer_id.to_string(),
            node: self.node.to_string(),
        };
        let claim = self.store.claim_session(&record, ttl).await?;
        let (outbox, inbox) = outbox::channel(self.queue);
        let old = self.write().peers.insert(
            Arc::from(peer_id),
            PeerSlot {
                epoch: claim.epoch,
                session_id: Arc::from(session_id),
                expires: tokio::time::Instant::now() + ttl,
                outbox: outbox.clone(),
                room: None,
                parked: None,
            },
        );
        if let Some(old) = &old {
            old.outbox
                .close(Some(close::REPLACED), "replaced by a newer connection");
        }
        let previous_room = claim.previous.as_ref().and_then(|p| p.room.clone());
        let mut handover = None;
        match claim.previous {
            Some(previous) if *previous.node != *self.node => {
                // Messages for the peer from this node's members come here from now on,
                // so none of them overtakes what the old node hands over.
                if let Some(room) = &previous.room {
                    let mut local = self.write();
                    let peer = local.peer_key(peer_id);
                    let (_, view) = local.room_view(room);
                    view.remote.remove(peer_id);
                    view.local.insert(peer);
                }
                let (tx, rx) = oneshot::channel();
                self.handovers_lock()
                    .insert((peer_id.to_string(), claim.epoch), tx);
                let ask = BusMessage::Handover {
                    peer: peer_id.to_string(),
                    epoch: previous.epoch,
                    node: self.node.to_string(),
                    new_epoch: claim.epoch,
                };
                self.publish(&previous.node, &ask).await;
                handover = Some((previous, rx));
            }
            Some(previous) => {
                if let Some(room) = &previous.room {
                    self.depart(room, peer_id, previous.epoch, LeaveReason::Replaced)
                        .await;
                }
            }
            None => {}
        }
        // A local predecessor whose room the session record did not name still leaves it.
        if let Some(old) = old
            && let Some(room) = old.room
            && previous_room.as_deref() != Some(&*room)
        {
            self.depart(&room, peer_id, old.epoch, LeaveReason::Replaced)
                .await;
        }
        let registration = Registration {
            epoch: claim.epoch,
            outbox,
            inbox,
            resumed: None,
        };
        Ok((registration, handover))
    }

    /// Completes a reconnect whose session another node held: a handed-over session takes
    /// the room membership, learns the room, and gets `resumed` and the moved queue; one
    /// that was not handed over starts afresh, and the old membership ends as `replaced`.
    async fn take_over(
        &self,
        session_id: &str,
        peer_id: &str,
        mut registration: Registration,
        previous: Previous,
        resumed: bool,
    ) -> Registration {
        let _serial = self.membership.lock().await;
        let epoch = registration.epoch;
        if self.owned(peer_id, epoch).is_err() {
            return registration; // a newer connection took the session meanwhile
        }
        let room = previous.room.as_deref();
        if !resumed {
            if let Some(room) = room {
                self.depart(room, peer_id, previous.epoch, LeaveReason::Replaced)
                    .await;
            }
            return registration;
        }
        let mut lost = false;
        let mut peers = Vec::new();
        if let Some(room) = room {
            match self.move_membership(session_id, peer_id, epoch, room).await {
                Ok(others) => peers = others,
                Err(e) => {
                    tracing::warn!(error = %e, "could not move the membership of a resumed session");
                    lost = true;
                }
            }
        }
        let queued = match self.store.take_spool(session_id).await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch a resumed session's queue");
                lost = true;
                Vec::new()
            }
        };
        self.metrics.resumed("succeeded");
        if lost {
            registration
                .outbox
                .close(Some(close::SLOW_CONSUMER), "messages lost; resync");
        }
        registration.resumed = Some(Resumed {
            room: room.map(Arc::from),
            peers,
            queued: queued.into_iter().map(Utf8Bytes::from).collect(),
        });
        registration
    }

    /// Moves a resumed peer's membership of `room` to this node, quietly: the store entry
    /// takes the new epoch, and other nodes route to it here. Returns the other members.
    async fn move_membership(
        &self,
        session_id: &str,
        peer_id: &str,
        epoch: Epoch,
        room: &str,
    ) -> Result<Vec<String>, StoreError> {
        let member = Member {
            peer_id: peer_id.to_string(),
            node: self.node.to_string(),
            epoch,
        };
        // Never refused: the peer is in the room already.
        let others = match self
            .store
            .join_room(room, &member, usize::MAX, ROOM_TTL)
            .await?
        {
            JoinOutcome::Joined(others) => others,
            JoinOutcome::Full => Vec::new(),
        };
        if let Err(e) = self
            .store
            .set_session_room(session_id, epoch, Some(room))
            .await
        {
            tracing::warn!(error = %e, "could not record the session's room");
        }
        {
            let mut local = self.write();
            let peer = local.peer_key(peer_id);
            let (room, view) = local.room_view(room);
            view.local.insert(peer);
            let learned = learn_remote(view, &others, &self.node);
            let view = &local.rooms[&room];
            for peer in learned {
                let frame = Outgoing::PeerJoined { peer_id: &peer }.to_frame();
                broadcast_except(&local, view, frame, peer_id);
            }
            if let Some(slot) = local.peers.get_mut(peer_id) {
                slot.room = Some(room);
            }
        }
        let moved = BusMessage::PeerMoved {
            room: room.to_string(),
            peer: peer_id.to_string(),
            node: self.node.to_string(),
            epoch,
        };
        for node in other_nodes(&others, &self.node) {
            self.publish(&node, &moved).await;
        }
        Ok(others.into_iter().map(|m| m.peer_id).collect())
    }

    /// Answers another node's [`BusMessage::Handover`]: a parked session's queue goes to
    /// the store and the session moves there; a live connection is closed as replaced.
    async fn hand_over(&self, peer: &str, epoch: Epoch, to: &str, new_epoch: Epoch) {
        let settle = tokio::time::Instant::now() + PARK_SETTLE;
        let resumed = loop {
            let serial = self.membership.lock().await;
            let held = match self.read().peers.get(peer) {
                Some(s) if s.epoch == epoch && s.parked.is_some() => Held::Parked,
                Some(s) if s.epoch == epoch && s.outbox.closing().is_some() => Held::Closing,
                Some(s) if s.epoch == epoch => Held::Live,
                _ => Held::Gone,
            };
            match held {
                Held::Parked => break self.move_parked(peer, epoch, to, new_epoch).await,
                Held::Gone => break false,
                Held::Closing if tokio::time::Instant::now() < settle => {
                    drop(serial);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Held::Closing | Held::Live => {
                    self.kick(peer, epoch).await;
                    break false;
                }
            }
        };
        let reply = BusMessage::HandedOver {
            peer: peer.to_string(),
            epoch: new_epoch,
            resumed,
        };
        self.publish(to, &reply).await;
    }

    /// Moves a parked session away: its queue into the store, its place in this node's
    /// room view to the new node. Late messages for it are forwarded there.
    async fn move_parked(&self, peer: &str, epoch: Epoch, to: &str, new_epoch: Epoch) -> bool {
        let (slot, frames) = {
            let mut local = self.write();
            let Some(mut slot) = local.peers.remove(peer) else {
                return false;
            };
            let (inbox, unsent) = *slot.parked.take().expect("checked by the caller");
            // From here on a sender gets its frame back and routes it again (to `to`).
            inbox.close();
            let mut frames: Vec<String> = unsent.iter().map(|f| f.as_str().to_owned()).collect();
            while let Some(queued) = inbox.try_recv() {
                frames.push(queued.frame.as_str().to_owned());
            }
            if let Some(room) = &slot.room
                && let Some(view) = local.rooms.get_mut(room)
            {
                view.local.remove(peer);
                if view.local.is_empty() {
                    local.rooms.remove(room);
                } else {
                    let remote = RemoteMember {
                        node: Arc::from(to),
                        epoch: new_epoch,
                    };
                    view.remote.insert(Arc::from(peer), remote);
                }
            }
            let now = tokio::time::Instant::now();
            local.moved.retain(|_, (_, since)| now - *since < MOVE_TTL);
            local.moved.insert(Arc::from(peer), (Arc::from(to), now));
            (slot, frames)
        };
        self.note_move();
        // Ends the parking timer.
        slot.outbox.close(None, "moved to another node");
        match self.store.spool(&slot.session_id, &frames, MOVE_TTL).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not hand a parked session's queue over");
                if let Some(room) = &slot.room {
                    self.depart(room, peer, epoch, LeaveReason::Replaced).await;
                }
                false
            }
        }
    }

    /// Closes a connection displaced by a newer one elsewhere and ends its membership.
    async fn kick(&self, peer: &str, epoch: Epoch) {
        let room = {
            let mut local = self.write();
            if local.peers.get(peer).is_none_or(|s| s.epoch != epoch) {
                return;
            }
            let slot = local.peers.remove(peer).expect("checked above");
            slot.outbox
                .close(Some(close::REPLACED), "replaced by a newer connection");
            slot.room
        };
        // Normally the new owner removes this membership; if it could not see it, the
        // fenced leave here does (and does nothing otherwise).
        if let Some(room) = room {
            self.depart(&room, peer, epoch, LeaveReason::Replaced).await;
        }
    }

    fn note_move(&self) {
        *self.last_move.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now());
    }

    /// True while sessions moved away from this node less than `quiet` ago or messages for
    /// them still arrive here: other nodes may not have heard of the move yet, so a
    /// draining node keeps forwarding until that settles.
    pub fn forwarding(&self, quiet: Duration) -> bool {
        self.last_move
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < quiet)
    }

    fn handovers_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, Epoch), oneshot::Sender<bool>>> {
        self.handovers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes back a session parked on this node, if there is one and the store still says
    /// it is this connection's: same epoch, same room, queued messages kept in order.
    async fn resume(
        &self,
        session_id: &str,
        peer_id: &str,
        ttl: Duration,
    ) -> Result<Option<Registration>, StoreError> {
        let Some(epoch) = self
            .read()
            .peers
            .get(peer_id)
            .filter(|s| s.parked.is_some())
            .map(|s| s.epoch)
        else {
            return Ok(None);
        };
        if !self.store.refresh_session(session_id, epoch, ttl).await? {
            return Ok(None);
        }
        let mut local = self.write();
        let Some(slot) = local.peers.get_mut(peer_id).filter(|s| s.epoch == epoch) else {
            return Ok(None);
        };
        let Some((inbox, unsent)) = slot.parked.take().map(|p| *p) else {
            return Ok(None);
        };
        slot.expires = tokio::time::Instant::now() + ttl;
        let outbox = slot.outbox.clone();
        let room = slot.room.clone();
        let peers: Vec<String> = room
            .as_ref()
            .and_then(|r| local.rooms.get(r))
            .map(|v| {
                v.local
                    .iter()
                    .filter(|p| ***p != *peer_id)
                    .chain(v.remote.keys())
                    .map(|p| p.to_string())
                    .collect()
            })
            .unwrap_or_default();
        self.metrics.resumed("succeeded");
        Ok(Some(Registration {
            epoch,
            outbox,
            inbox,
            resumed: Some(Resumed {
                room,
                peers,
                queued: unsent,
            }),
        }))
    }

    /// Parks a session whose connection dropped: it stays in its room (nobody is told yet)
    /// and messages for it queue up; it ends with `peer_left` `timeout` if nobody resumes
    /// it within `grace` or the queue overflows.
    pub async fn park(
        self: &Arc<Self>,
        peer_id: &str,
        epoch: Epoch,
        parked: (Inbox, Vec<Utf8Bytes>),
        grace: Duration,
    ) -> bool {
        let _serial = self.membership.lock().await;
        if self.shutting.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let closing = {
            let mut local = self.write();
            let Some(slot) = local.peers.get_mut(peer_id).filter(|s| s.epoch == epoch) else {
                return false;
            };
            if slot.outbox.is_full() {
                return false;
            }
            slot.outbox.reopen();
            slot.parked = Some(Box::new(parked));
            slot.outbox.watch_closing()
        };
        let hub = self.clone();
        let peer = peer_id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                // The queue overflowed, or the node is draining.
                _ = closing.closed() => {}
            }
            hub.expire(&peer, epoch).await;
        });
        true
    }

    /// Ends a parked session that nobody resumed.
    async fn expire(&self, peer_id: &str, epoch: Epoch) {
        let session_id = {
            let local = self.read();
            match local.peers.get(peer_id) {
                Some(s) if s.epoch == epoch && s.parked.is_some() => s.session_id.clone(),
                _ => return,
            }
        };
        self.metrics.resumed("expired");
        self.detach(&session_id, peer_id, epoch, LeaveReason::Timeout)
            .await;
    }

    /// Removes a connection that ended; a no-op when a newer connection owns the session.
    pub async fn detach(&self, session_id: &str, peer_id: &str, epoch: Epoch, reason: LeaveReason) {
        let _serial = self.membership.lock().await;
        let slot = {
            let mut local = self.write();
            if local.peers.get(peer_id).is_none_or(|s| s.epoch != epoch) {
                return;
            }
            local.peers.remove(peer_id).expect("checked above")
        };
        if let Some(room) = &slot.room {
            self.depart(room, peer_id, epoch, reason).await;
        }
        if let Err(e) = self
            .store
            .release_session(&self.node, session_id, epoch)
            .await
        {
            tracing::warn!(error = %e, "could not release a session in the store");
        }
    }

    /// Joins `room` (leaving any other room first); returns the peers already there.
    pub async fn join(
        &self,
        peer_id: &str,
        epoch: Epoch,
        room: &str,
    ) -> Result<Vec<String>, MembershipError> {
        let _serial = self.membership.lock().await;
        let (current, session_id) = self.owned(peer_id, epoch)?;
        if current.as_deref() == Some(room) {
            let members = self.store.room_members(room).await?;
            return Ok(members
                .into_iter()
                .filter(|m| m.peer_id != peer_id)
                .map(|m| m.peer_id)
                .collect());
        }
        let member = Member {
            peer_id: peer_id.to_string(),
            node: self.node.to_string(),
            epoch,
        };
        let joined = self
            .store
            .join_room(room, &member, self.capacity, ROOM_TTL)
            .await;
        let before = match joined {
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable: joining on this node only");
                return self.join_locally(peer_id, epoch, current, room).await;
            }
            Ok(outcome) => outcome,
        };
        let before = match before {
            JoinOutcome::Full => {
                if !self.read().rooms.contains_key(room) {
                    let _ = self.store.unindex_room(&self.node, room).await;
                }
                return Err(MembershipError::RoomFull);
            }
            JoinOutcome::Joined(before) => before,
        };
        if let Some(old) = &current {
            self.depart(old, peer_id, epoch, LeaveReason::Left).await;
        }
        // Bookkeeping for a later takeover; the membership itself is already recorded.
        if let Err(e) = self
            .store
            .set_session_room(&session_id, epoch, Some(room))
            .await
        {
            tracing::warn!(error = %e, "could not record the session's room");
        }
        let room: Arc<str> = {
            let mut local = self.write();
            let peer = local.peer_key(peer_id);
            let (room, view) = local.room_view(room);
            let learned = learn_remote(view, &before, &self.node);
            let view = &local.rooms[&room];
            // Members this node's peers had not heard of yet (learned from the store now).
            for peer in learned {
                broadcast(
                    &local,
                    view,
                    Outgoing::PeerJoined { peer_id: &peer }.to_frame(),
                );
            }
            broadcast(&local, view, Outgoing::PeerJoined { peer_id }.to_frame());
            local
                .rooms
                .get_mut(&room)
                .expect("created above")
                .local
                .insert(peer);
            if let Some(slot) = local.peers.get_mut(peer_id) {
                slot.room = Some(room.clone());
            }
            room
        };
        let joined = BusMessage::PeerJoined {
            room: room.to_string(),
            peer: peer_id.to_string(),
            node: self.node.to_string(),
            epoch,
        };
        for node in other_nodes(&before, &self.node) {
            self.publish(&node, &joined).await;
        }
        Ok(before.into_iter().map(|m| m.peer_id).collect())
    }

    /// Degraded join while the store is unavailable: the room as this node knows it, with
    /// the capacity checked against that view. The membership reaches the store (and the
    /// other nodes) when this node re-registers after the outage.
    async fn join_locally(
        &self,
        peer_id: &str,
        epoch: Epoch,
        current: Option<Arc<str>>,
        room: &str,
    ) -> Result<Vec<String>, MembershipError> {
        let known = self
            .read()
            .rooms
            .get(room)
            .map_or(0, |v| v.local.len() + v.remote.len());
        if known >= self.capacity {
            return Err(MembershipError::RoomFull);
        }
        if let Some(old) = &current {
            self.depart(old, peer_id, epoch, LeaveReason::Left).await;
        }
        let mut local = self.write();
        let peer = local.peer_key(peer_id);
        let (room, view) = local.room_view(room);
        let peers: Vec<String> = view
            .local
            .iter()
            .chain(view.remote.keys())
            .map(|p| p.to_string())
            .collect();
        let view = &local.rooms[&room];
        broadcast(&local, view, Outgoing::PeerJoined { peer_id }.to_frame());
        local
            .rooms
            .get_mut(&room)
            .expect("created above")
            .local
            .insert(peer);
        if let Some(slot) = local.peers.get_mut(peer_id) {
            slot.room = Some(room);
        }
        Ok(peers)
    }

    /// Writes this node's sessions and memberships back to the store after an outage (or
    /// after the store lost them), reconciles each room with what the store says, and
    /// tells the other nodes about this node's members.
    pub async fn reregister(&self) -> Result<(), StoreError> {
        let _serial = self.membership.lock().await;
        let now = tokio::time::Instant::now();
        let (sessions, rooms) = {
            let local = self.read();
            let sessions: Vec<(SessionRecord, Epoch, Option<Arc<str>>, Duration)> = local
                .peers
                .iter()
                .map(|(peer, s)| {
                    let record = SessionRecord {
                        session_id: s.session_id.to_string(),
                        user: s.user(peer).to_string(),
                        peer_id: peer.to_string(),
                        node: self.node.to_string(),
                    };
                    (
                        record,
                        s.epoch,
                        s.room.clone(),
                        s.expires.saturating_duration_since(now),
                    )
                })
                .collect();
            let rooms: Vec<(Arc<str>, Vec<Member>)> = local
                .rooms
                .iter()
                .map(|(room, view)| {
                    let members = view
                        .local
                        .iter()
                        .filter_map(|p| local.peers.get(p).map(|s| (p, s.epoch)))
                        .map(|(p, epoch)| Member {
                            peer_id: p.to_string(),
                            node: self.node.to_string(),
                            epoch,
                        })
                        .collect();
                    (room.clone(), members)
                })
                .collect();
            (sessions, rooms)
        };
        for (record, epoch, room, ttl) in &sessions {
            self.store
                .restore_session(
                    record,
                    *epoch,
                    room.as_deref(),
                    (*ttl).max(Duration::from_secs(1)),
                )
                .await?;
        }
        for (room, members) in rooms {
            for member in &members {
                // Never refused: these peers are in the room already.
                self.store
                    .join_room(&room, member, usize::MAX, ROOM_TTL)
                    .await?;
            }
            let truth = self.store.room_members(&room).await?;
            self.reconcile(&room, &truth);
            for node in other_nodes(&truth, &self.node) {
                for member in &members {
                    let joined = BusMessage::PeerJoined {
                        room: room.to_string(),
                        peer: member.peer_id.clone(),
                        node: self.node.to_string(),
                        epoch: member.epoch,
                    };
                    self.publish(&node, &joined).await;
                }
            }
        }
        tracing::info!(
            sessions = sessions.len(),
            "re-registered this node's sessions and rooms"
        );
        Ok(())
    }

    /// Makes this node's view of `room` match the store: remote members that left during
    /// an outage are announced as gone, ones that came are announced as joined.
    fn reconcile(&self, room: &str, truth: &[Member]) {
        let mut local = self.write();
        let Some(view) = local.rooms.get_mut(room) else {
            return;
        };
        let remote_truth: HashMap<Arc<str>, RemoteMember> = truth
            .iter()
            .filter(|m| *m.node != *self.node)
            .map(|m| {
                (
                    Arc::from(m.peer_id.as_str()),
                    RemoteMember {
                        node: Arc::from(m.node.as_str()),
                        epoch: m.epoch,
                    },
                )
            })
            .collect();
        let gone: Vec<Arc<str>> = view
            .remote
            .keys()
            .filter(|p| !remote_truth.contains_key(*p))
            .cloned()
            .collect();
        let came: Vec<Arc<str>> = remote_truth
            .iter()
            .filter(|(p, r)| view.remote.get(*p) != Some(r))
            .map(|(p, _)| p.clone())
            .collect();
        view.remote = remote_truth;
        let view = &local.rooms[room];
        for peer in gone {
            let frame = Outgoing::PeerLeft {
                peer_id: &peer,
                reason: LeaveReason::Disconnected,
            }
            .to_frame();
            broadcast(&local, view, frame);
        }
        for peer in came {
            broadcast(
                &local,
                view,
                Outgoing::PeerJoined { peer_id: &peer }.to_frame(),
            );
        }
    }

    /// Leaves the current room; `room`, when given, must name it.
    pub async fn leave(
        &self,
        peer_id: &str,
        epoch: Epoch,
        room: Option<&str>,
    ) -> Result<(), MembershipError> {
        let _serial = self.membership.lock().await;
        let (current, session_id) = self.owned(peer_id, epoch)?;
        let current = current.ok_or(MembershipError::NotInRoom)?;
        if room.is_some_and(|r| r != &*current) {
            return Err(MembershipError::NotInRoom);
        }
        self.depart(&current, peer_id, epoch, LeaveReason::Left)
            .await;
        if let Err(e) = self.store.set_session_room(&session_id, epoch, None).await {
            tracing::warn!(error = %e, "could not record that the session left its room");
        }
        Ok(())
    }

    /// Takes `peer_id` (membership `epoch`) out of `room`: tells this node's members now,
    /// and the other nodes that still have members there through the bus.
    async fn depart(&self, room: &str, peer_id: &str, epoch: Epoch, reason: LeaveReason) {
        let emptied = {
            let mut local = self.write();
            if let Some(slot) = local.peers.get_mut(peer_id)
                && slot.epoch == epoch
            {
                slot.room = None;
            }
            remove_local(&mut local, room, peer_id, reason)
        };
        let remaining = match self.store.leave_room(room, peer_id, epoch).await {
            Ok(Some(remaining)) => remaining,
            Ok(None) => Vec::new(),
            Err(e) => {
                // The index entry stays, so a cleanup after this node's death still finds it.
                tracing::warn!(error = %e, "could not record a departure in the store");
                return;
            }
        };
        // Only once the membership is gone from the store, like join's "index first".
        if emptied && let Err(e) = self.store.unindex_room(&self.node, room).await {
            tracing::debug!(error = %e, "could not update the node's room index");
        }
        let left = BusMessage::PeerLeft {
            room: room.to_string(),
            peer: peer_id.to_string(),
            epoch,
            reason,
        };
        for node in other_nodes(&remaining, &self.node) {
            self.publish(&node, &left).await;
        }
    }

    /// Publishes to another node; a failure is logged (the store keeps the truth).
    async fn publish(&self, node: &str, message: &BusMessage) {
        if let Err(e) = self.bus.publish(node, message).await {
            tracing::warn!(error = %e, to = node, "could not notify another node");
        }
    }

    /// Applies a message from another node.
    pub async fn on_bus(&self, message: BusMessage) {
        match message {
            BusMessage::Deliver { to, frame } => {
                let received = tokio::time::Instant::now();
                let outbox = self.read().peers.get(to.as_str()).map(|s| s.outbox.clone());
                let frame = match outbox {
                    Some(outbox) => match outbox.relay(frame, Some(received)) {
                        Ok(_) => return,
                        Err(frame) => frame,
                    },
                    None => frame,
                };
                // A session handed over to another node: follow it. Otherwise the peer just
                // left, and its departure is being announced to the sender.
                let moved = self.read().moved.get(to.as_str()).map(|(n, _)| n.clone());
                if let Some(node) = moved {
                    self.note_move();
                    self.publish(&node, &BusMessage::Deliver { to, frame })
                        .await;
                }
            }
            BusMessage::Handover {
                peer,
                epoch,
                node,
                new_epoch,
            } => self.hand_over(&peer, epoch, &node, new_epoch).await,
            BusMessage::HandedOver {
                peer,
                epoch,
                resumed,
            } => {
                if let Some(waiter) = self.handovers_lock().remove(&(peer, epoch)) {
                    let _ = waiter.send(resumed);
                }
            }
            BusMessage::PeerMoved {
                room,
                peer,
                node,
                epoch,
            } => {
                self.learn_remote_member(&room, &peer, &node, epoch, true)
                    .await
            }
            BusMessage::PeerJoined {
                room,
                peer,
                node,
                epoch,
            } => {
                self.learn_remote_member(&room, &peer, &node, epoch, false)
                    .await
            }
            BusMessage::PeerLeft {
                room,
                peer,
                epoch,
                reason,
            } => {
                let _serial = self.membership.lock().await;
                let mut local = self.write();
                let known = local.rooms.get(room.as_str()).is_some_and(|v| {
                    v.remote
                        .get(peer.as_str())
                        .is_some_and(|r| r.epoch == epoch)
                }) || local
                    .peers
                    .get(peer.as_str())
                    .is_some_and(|s| s.epoch == epoch && s.room.as_deref() == Some(room.as_str()));
                if known {
                    remove_local(&mut local, &room, &peer, reason);
                    if let Some(slot) = local.peers.get_mut(peer.as_str())
                        && slot.epoch == epoch
                    {
                        slot.room = None;
                    }
                }
            }
            // Everything received before this was forwarded already: messages are
            // applied in order, and a forward is published before the next is read.
            BusMessage::Flush { peer, reply_to } => {
                self.publish(&reply_to, &BusMessage::Flushed { peer }).await
            }
            BusMessage::Flushed { peer } => self.release(&peer).await,
            BusMessage::Revoke { peer, epoch } => self.close_revoked(&peer, epoch),
            BusMessage::Gap => {
                // Messages from other nodes may be missing: every local peer that talks
                // across nodes must resync, which 4003 tells its client to do.
                let local = self.read();
                let mut closed = 0;
                for view in local.rooms.values().filter(|v| !v.remote.is_empty()) {
                    for peer in &view.local {
                        if let Some(slot) = local.peers.get(peer) {
                            slot.outbox
                                .close(Some(close::SLOW_CONSUMER), "messages lost; resync");
                            closed += 1;
                        }
                    }
                }
                tracing::warn!(
                    closed,
                    "closed peers that may have missed messages from other nodes"
                );
            }
        }
    }

    /// Records a member on another node in this node's view of `room` (when this node has
    /// members there) and tells the local members if it is news to them: a peer they never
    /// heard of or, unless it merely `moved` between nodes, one back with another epoch.
    async fn learn_remote_member(
        &self,
        room: &str,
        peer: &str,
        node: &str,
        epoch: Epoch,
        moved: bool,
    ) {
        let _serial = self.membership.lock().await;
        let flush_at = {
            let mut local = self.write();
            let Some(view) = local.rooms.get_mut(room) else {
                return;
            };
            if view.local.contains(peer) {
                return;
            }
            let remote = RemoteMember {
                node: Arc::from(node),
                epoch,
            };
            let previous = view.remote.insert(Arc::from(peer), remote.clone());
            let news = match &previous {
                None => true,
                Some(known) => !moved && *known != remote,
            };
            if news {
                let view = &local.rooms[room];
                broadcast(
                    &local,
                    view,
                    Outgoing::PeerJoined { peer_id: peer }.to_frame(),
                );
            }
            // Moved between two other nodes: what this node sent through the old one may
            // still be on its way; hold what follows until the old node is flushed.
            match previous {
                Some(known) if moved && *known.node != *node => {
                    let held = local.holding.entry(Arc::from(peer)).or_insert(Holding {
                        node: remote.node.clone(),
                        frames: Vec::new(),
                        releasing: false,
                    });
                    held.node = remote.node;
                    Some(known.node)
                }
                _ => None,
            }
        };
        if let Some(old) = flush_at {
            let flush = BusMessage::Flush {
                peer: peer.to_string(),
                reply_to: self.node.to_string(),
            };
            self.publish(&old, &flush).await;
        }
    }

    /// Sends what was held for `peer` to its new node, in order, and from then on lets
    /// messages to it go there directly. Idempotent.
    pub async fn release(&self, peer: &str) {
        {
            let mut local = self.write();
            match local.holding.get_mut(peer) {
                Some(held) if !held.releasing => held.releasing = true,
                _ => return,
            }
        }
        loop {
            let (node, frames) = {
                let mut local = self.write();
                let Some(held) = local.holding.get_mut(peer) else {
                    return;
                };
                if held.frames.is_empty() {
                    local.holding.remove(peer);
                    return;
                }
                (held.node.clone(), std::mem::take(&mut held.frames))
            };
            for held in frames {
                let message = BusMessage::Deliver {
                    to: peer.to_string(),
                    frame: held.frame,
                };
                if let Err(e) = self.bus.publish(&node, &message).await {
                    tracing::warn!(error = %e, "could not relay a held message to a moved peer");
                    held.sender.deliver(held.failure);
                }
            }
        }
    }

    /// Cleans up after dead nodes: exactly one survivor removes each dead node's members
    /// and tells every room's remaining members (`peer_left`, reason `node_lost`).
    pub async fn reap_dead_nodes(&self, lock_ttl: Duration) -> Result<usize, StoreError> {
        let dead = self.store.dead_nodes(&self.node).await?;
        let mut reaped = 0;
        for node in dead {
            if !self
                .store
                .claim_cleanup(&node, &self.node, lock_ttl)
                .await?
            {
                continue;
            }
            let removed = self.evict(&node).await?;
            tracing::warn!(dead = %node, peers = removed, "a node died; its peers were removed");
            reaped += 1;
        }
        Ok(reaped)
    }

    /// At start-up, removes what an earlier process with this node id left behind (a crash
    /// followed by a restart under the same `NODE_ID`, faster than the survivors noticed).
    pub async fn evict_previous_incarnation(&self) -> Result<(), StoreError> {
        let removed = self.evict(&self.node).await?;
        if removed > 0 {
            tracing::warn!(
                peers = removed,
                "removed peers left behind by an earlier process with this node id"
            );
        }
        Ok(())
    }

    /// Removes `node`'s members from every room and announces `node_lost`; returns how many.
    async fn evict(&self, node: &str) -> Result<usize, StoreError> {
        let _serial = self.membership.lock().await;
        let evictions = self.store.evict_node(node).await?;
        let mut removed = 0;
        for eviction in evictions {
            for gone in &eviction.removed {
                removed += 1;
                {
                    let mut local = self.write();
                    let known = local
                        .rooms
                        .get(eviction.room.as_str())
                        .is_some_and(|v| v.remote.contains_key(gone.peer_id.as_str()));
                    if known {
                        remove_local(
                            &mut local,
                            &eviction.room,
                            &gone.peer_id,
                            LeaveReason::NodeLost,
                        );
                    }
                }
                let left = BusMessage::PeerLeft {
                    room: eviction.room.clone(),
                    peer: gone.peer_id.clone(),
                    epoch: gone.epoch,
                    reason: LeaveReason::NodeLost,
                };
                for other in other_nodes(&eviction.remaining, &self.node) {
                    self.publish(&other, &left).await;
                }
            }
        }
        Ok(removed)
    }

    /// Closes every local peer with 4003 so its client reconnects and the state is rebuilt:
    /// used when this node's registration vanished (it was declared dead while alive, or
    /// Redis lost its data).
    pub fn resync_all(&self, why: &'static str) {
        let local = self.read();
        for slot in local.peers.values() {
            slot.outbox.close(Some(close::SLOW_CONSUMER), why);
        }
        tracing::warn!(
            peers = local.peers.len(),
            "{why}: asked every peer to reconnect"
        );
    }

    /// Refreshes the TTLs of a live connection's session and room.
    pub async fn refresh(
        &self,
        session_id: &str,
        peer_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let room = {
            let mut local = self.write();
            let slot = local.peers.get_mut(peer_id).filter(|s| s.epoch == epoch);
            slot.and_then(|s| {
                s.expires = tokio::time::Instant::now() + ttl;
                s.room.clone()
            })
        };
        if !self.store.refresh_session(session_id, epoch, ttl).await? {
            return Ok(false);
        }
        if let Some(room) = room {
            self.store.touch_room(&room, ROOM_TTL).await?;
        }
        Ok(true)
    }

    /// Where a message from `from` to `to` goes, if they share a room; no store round trip.
    pub fn route(&self, from: &str, to: &str) -> Result<Route, RelayError> {
        let local = self.read();
        let room = local
            .peers
            .get(from)
            .and_then(|s| s.room.as_ref())
            .ok_or(RelayError::NotInRoom)?;
        if from == to {
            return Err(RelayError::PeerNotFound);
        }
        let view = local.rooms.get(room).ok_or(RelayError::PeerNotFound)?;
        if view.local.contains(to) {
            return local
                .peers
                .get(to)
                .map(|s| Route::Local(s.outbox.clone()))
                .ok_or(RelayError::PeerNotFound);
        }
        view.remote
            .get(to)
            .map(|r| Route::Remote(r.node.clone()))
            .ok_or(RelayError::PeerNotFound)
    }

    /// Hands a frame to a peer on another node. A frame held back (the peer is moving
    /// between nodes) that later cannot be sent on gets its sender, `sender`, an error
    /// naming `reference`, as a failure returned here would.
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
        self.bus.publish(node, &message).await
    }

    /// The room `peer_id` is in and its session, or `Replaced` when `epoch` lost the peer.
    fn owned(
        &self,
        peer_id: &str,
        epoch: Epoch,
    ) -> Result<(Option<Arc<str>>, Arc<str>), MembershipError> {
        match self.read().peers.get(peer_id) {
            Some(slot) if slot.epoch == epoch => Ok((slot.room.clone(), slot.session_id.clone())),
            _ => Err(MembershipError::Replaced),
        }
    }

    /// Revokes a session: new upgrades are refused for `ttl` (at least the session's own
    /// remaining life), and its live connection, on whichever node, is closed with 1008.
    /// Returns whether a live connection was found.
    pub async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let owner = self.store.session_owner(session_id).await?;
        let ttl = owner.as_ref().map_or(ttl, |o| o.ttl.max(ttl));
        self.store.revoke(session_id, ttl).await?;
        let Some(owner) = owner else {
            return Ok(false);
        };
        if *owner.node == *self.node {
            self.close_revoked(&owner.peer_id, owner.epoch);
        } else {
            let message = BusMessage::Revoke {
                peer: owner.peer_id,
                epoch: owner.epoch,
            };
            self.bus.publish(&owner.node, &message).await?;
        }
        Ok(true)
    }

    fn close_revoked(&self, peer: &str, epoch: Epoch) {
        if let Some(slot) = self.read().peers.get(peer)
            && slot.epoch == epoch
        {
            slot.outbox.close(Some(close::POLICY), "session revoked");
        }
    }

    /// Tells every client to go (`goaway` with a reconnect hint spread over `spread`) and
    /// closes each connection with 1012 when its hint comes due. Sessions stay resumable:
    /// a client reconnecting elsewhere takes its session and queue with it.
    pub fn drain(self: &Arc<Self>, spread: Duration) {
        let local = self.read();
        for (peer, slot) in local.peers.iter().filter(|(_, s)| s.parked.is_none()) {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            let jitter_ms = u64::from_le_bytes(bytes) % (spread.as_millis() as u64 + 1);
            let frame = Outgoing::Goaway {
                reason: "shutdown",
                reconnect_in_ms: jitter_ms,
            }
            .to_frame();
            slot.outbox.deliver(frame);
            let (hub, peer, epoch) = (self.clone(), peer.clone(), slot.epoch);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(jitter_ms)).await;
                // Not a session that parked meanwhile: closing it would end it.
                if let Some(slot) = hub.read().peers.get(&peer)
                    && slot.epoch == epoch
                    && slot.parked.is_none()
                {
                    slot.outbox.close(Some(close::RESTART), "server restarting");
                }
            });
        }
    }

    /// Asks every connection to close with `code` (shutdown); parked sessions end, and no
    /// more are parked.
    pub fn close_all(&self, code: u16, text: &'static str) {
        self.shutting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for slot in self.read().peers.values() {
            slot.outbox.close(Some(code), text);
        }
    }

    /// Number of connected peers on this node.
    pub fn peer_count(&self) -> usize {
        self.read().peers.len()
    }

    /// Number of rooms with at least one peer on this node.
    pub fn room_count(&self) -> usize {
        self.read().rooms.len()
    }
}

/// Removes `peer` (local or remote) from this node's view of `room` and tells the local
/// members why; a view without local members is dropped.
/// Returns true when this node no longer has anyone in the room.
fn remove_local(local: &mut Local, room: &str, peer: &str, reason: LeaveReason) -> bool {
    let Some(view) = local.rooms.get_mut(room) else {
        return false;
    };
    let was_local = view.local.remove(peer);
    let was_remote = view.remote.remove(peer).is_some();
    if view.local.is_empty() {
        local.rooms.remove(room);
        return was_local;
    }
    if was_local || was_remote {
        let view = &local.rooms[room];
        broadcast(
            local,
            view,
            Outgoing::PeerLeft {
                peer_id: peer,
                reason,
            }
            .to_frame(),
        );
    }
    false
}

/// Sends one pre-serialised frame to every local member of a room.
fn broadcast(local: &Local, view: &RoomView, frame: Utf8Bytes) {
    for member in &view.local {
        if let Some(slot) = local.peers.get(member) {
            slot.outbox.deliver(frame.clone());
        }
    }
}

/// Like [`broadcast`], leaving out `except`.
fn broadcast_except(local: &Local, view: &RoomView, frame: Utf8Bytes, except: &str) {
    for member in view.local.iter().filter(|m| ***m != *except) {
        if let Some(slot) = local.peers.get(member) {
            slot.outbox.deliver(frame.clone());
        }
    }
}

/// Records the members on other nodes in `view`; returns those it did not know as they are.
fn learn_remote(view: &mut RoomView, members: &[Member], me: &str) -> Vec<Arc<str>> {
    let mut learned = Vec::new();
    for m in members.iter().filter(|m| m.node != me) {
        let peer: Arc<str> = Arc::from(m.peer_id.as_str());
        let remote = RemoteMember {
            node: Arc::from(m.node.as_str()),
            epoch: m.epoch,
        };
        if view.remote.insert(peer.clone(), remote.clone()) != Some(remote) {
            learned.push(peer);
        }
    }
    learned
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
mod tests {
    use super::*;
    use crate::bus::MemoryBus;
    use crate::store::MemoryStore;

    const TTL: Duration = Duration::from_secs(60);

    fn deliver(frame: &str) -> BusMessage {
        BusMessage::Deliver {
            to: "alice-1".into(),
            frame: frame.into(),
        }
    }

    /// The slot keeps no user id: it is read back from the peer id, even when both the user
    /// and the session id contain dashes.
    #[test]
    fn a_slot_reads_its_user_from_the_peer_id() {
        let (outbox, _inbox) = outbox::channel(1);
        let slot = PeerSlot {
            epoch: 1,
            session_id: Arc::from("0b6c-41f2"),
            expires: tokio::time::Instant::now(),
            outbox,
            room: None,
            parked: None,
        };
        assert_eq!(slot.user("ann-marie-0b6c-41f2"), "ann-marie");
        assert_eq!(slot.user("ann-41f2"), "ann-41f2");
    }

    /// A hub for node n1 where Bob shares room `r` with Alice, who is on n0.
    async fn bob_on_n1_with_alice_on_n0(bus: Arc<dyn Bus>) -> (Hub, Registration) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let alice = Member {
            peer_id: "alice-1".into(),
            node: "n0".into(),
            epoch: 1,
        };
        store.join_room("r", &alice, 6, TTL).await.unwrap();
        let hub = Hub::new("n1", store, bus, 6, 16, Metrics::new());
        let bob = hub.attach("s-bob", "bob", "bob-1", TTL).await.unwrap();
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
        async fn publish(&self, node: &str, message: &BusMessage) -> Result<(), StoreError> {
            if node == self.node {
                return Err(StoreError("Redis is unreachable".into()));
            }
            self.bus.publish(node, message).await
        }

        async fn subscribe(&self, node: &str) -> Result<crate::bus::Inbox, StoreError> {
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
        assert_eq!(
            asker.try_recv().unwrap(),
            BusMessage::Flushed {
                peer: "alice-1".into()
            }
        );
    }
}
