//! The Hub: this node's peers and rooms, routing between them, and membership changes
//! recorded in the [`Store`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;

use super::outbox::{self, Inbox, Outbox};
use super::protocol::{LeaveReason, Outgoing, close};
use crate::store::{Epoch, JoinOutcome, Member, SessionRecord, Store, StoreError};

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

/// A connection's place in the hub.
pub struct Registration {
    /// Fencing epoch of this connection's session claim.
    pub epoch: Epoch,
    /// The connection's own outbox, for replies.
    pub outbox: Outbox,
    /// The queue the connection task drains.
    pub inbox: Inbox,
}

struct PeerSlot {
    epoch: Epoch,
    outbox: Outbox,
    room: Option<Arc<str>>,
}

#[derive(Default)]
struct Local {
    peers: HashMap<Arc<str>, PeerSlot>,
    /// Members of each room that has at least one peer here.
    rooms: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

/// Rooms and peers of one node.
pub struct Hub {
    node: String,
    store: Arc<dyn Store>,
    capacity: usize,
    queue: usize,
    /// Read on every relay, written on membership changes; never held across `.await`.
    local: RwLock<Local>,
    /// Serialises membership changes so store results and local state stay in step.
    membership: tokio::sync::Mutex<()>,
}

impl Hub {
    /// A hub for `node` with rooms of at most `capacity` and per-peer queues of `queue` frames.
    pub fn new(
        node: impl Into<String>,
        store: Arc<dyn Store>,
        capacity: usize,
        queue: usize,
    ) -> Self {
        Self {
            node: node.into(),
            store,
            capacity,
            queue,
            local: RwLock::default(),
            membership: tokio::sync::Mutex::new(()),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn read(&self) -> RwLockReadGuard<'_, Local> {
        self.local.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Local> {
        self.local.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection for a session; an older connection of the same session is
    /// closed with 4004 and leaves its room with reason `replaced`.
    pub async fn attach(
        &self,
        session_id: &str,
        user: &str,
        peer_id: &str,
        ttl: Duration,
    ) -> Result<Registration, StoreError> {
        let _serial = self.membership.lock().await;
        let record = SessionRecord {
            session_id: session_id.to_string(),
            user: user.to_string(),
            peer_id: peer_id.to_string(),
            node: self.node.clone(),
        };
        let epoch = self.store.claim_session(&record, ttl).await?;
        let (outbox, inbox) = outbox::channel(self.queue);
        let old_room = {
            let mut local = self.write();
            let old = local.peers.insert(
                Arc::from(peer_id),
                PeerSlot {
                    epoch,
                    outbox: outbox.clone(),
                    room: None,
                },
            );
            old.and_then(|old| {
                old.outbox
                    .close(Some(close::REPLACED), "replaced by a newer connection");
                let room = old.room?;
                remove_member(&mut local, &room, peer_id, LeaveReason::Replaced);
                Some(room)
            })
        };
        if let Some(room) = old_room {
            self.store.leave_room(&room, peer_id).await?;
        }
        Ok(Registration {
            epoch,
            outbox,
            inbox,
        })
    }

    /// Removes a connection that ended; a no-op when a newer connection owns the session.
    pub async fn detach(&self, session_id: &str, peer_id: &str, epoch: Epoch, reason: LeaveReason) {
        let _serial = self.membership.lock().await;
        let room = {
            let mut local = self.write();
            if local.peers.get(peer_id).is_none_or(|s| s.epoch != epoch) {
                return;
            }
            let slot = local.peers.remove(peer_id).expect("checked above");
            if let Some(room) = &slot.room {
                remove_member(&mut local, room, peer_id, reason);
            }
            slot.room
        };
        if let Some(room) = room
            && let Err(e) = self.store.leave_room(&room, peer_id).await
        {
            tracing::warn!(error = %e, "could not remove a departed peer from the store");
        }
        if let Err(e) = self.store.release_session(session_id, epoch).await {
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
        let current = self.owned_room(peer_id, epoch)?;
        if current.as_deref() == Some(room) {
            let members = self.store.room_members(room).await?;
            return Ok(others(members, peer_id));
        }
        let member = Member {
            peer_id: peer_id.to_string(),
            node: self.node.clone(),
        };
        let before = match self
            .store
            .join_room(room, &member, self.capacity, ROOM_TTL)
            .await?
        {
            JoinOutcome::Full => return Err(MembershipError::RoomFull),
            JoinOutcome::Joined(before) => before,
        };
        let room: Arc<str> = Arc::from(room);
        {
            let mut local = self.write();
            let peer: Arc<str> = Arc::from(peer_id);
            if let Some(old) = &current {
                remove_member(&mut local, old, peer_id, LeaveReason::Left);
            }
            let frame = Outgoing::PeerJoined { peer_id }.to_frame();
            broadcast(&local, &room, frame);
            local
                .rooms
                .entry(room.clone())
                .or_default()
                .insert(peer.clone());
            if let Some(slot) = local.peers.get_mut(peer_id) {
                slot.room = Some(room.clone());
            }
        }
        if let Some(old) = current {
            self.store.leave_room(&old, peer_id).await?;
        }
        Ok(others(before, peer_id))
    }

    /// Leaves the current room; `room`, when given, must name it.
    pub async fn leave(
        &self,
        peer_id: &str,
        epoch: Epoch,
        room: Option<&str>,
    ) -> Result<(), MembershipError> {
        let _serial = self.membership.lock().await;
        let current = self
            .owned_room(peer_id, epoch)?
            .ok_or(MembershipError::NotInRoom)?;
        if room.is_some_and(|r| r != &*current) {
            return Err(MembershipError::NotInRoom);
        }
        {
            let mut local = self.write();
            remove_member(&mut local, &current, peer_id, LeaveReason::Left);
            if let Some(slot) = local.peers.get_mut(peer_id) {
                slot.room = None;
            }
        }
        self.store.leave_room(&current, peer_id).await?;
        Ok(())
    }

    /// Refreshes the TTLs of a live connection's session and room.
    pub async fn refresh(
        &self,
        session_id: &str,
        peer_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let room = self.read().peers.get(peer_id).and_then(|s| s.room.clone());
        if !self.store.refresh_session(session_id, epoch, ttl).await? {
            return Ok(false);
        }
        if let Some(room) = room {
            self.store.touch_room(&room, ROOM_TTL).await?;
        }
        Ok(true)
    }

    /// The outbox of `to` if it shares the sender's room; no store round trip.
    pub fn route(&self, from: &str, to: &str) -> Result<Outbox, RelayError> {
        let local = self.read();
        let room = local
            .peers
            .get(from)
            .and_then(|s| s.room.as_ref())
            .ok_or(RelayError::NotInRoom)?;
        if from == to || !local.rooms.get(room).is_some_and(|m| m.contains(to)) {
            return Err(RelayError::PeerNotFound);
        }
        local
            .peers
            .get(to)
            .map(|s| s.outbox.clone())
            .ok_or(RelayError::PeerNotFound)
    }

    /// The room `peer_id` is in, or `Replaced` when `epoch` no longer owns the peer.
    fn owned_room(&self, peer_id: &str, epoch: Epoch) -> Result<Option<Arc<str>>, MembershipError> {
        match self.read().peers.get(peer_id) {
            Some(slot) if slot.epoch == epoch => Ok(slot.room.clone()),
            _ => Err(MembershipError::Replaced),
        }
    }

    /// Asks every connection to close with `code` (shutdown).
    pub fn close_all(&self, code: u16, text: &'static str) {
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

/// Removes `peer` from `room` and tells the remaining members why.
fn remove_member(local: &mut Local, room: &str, peer: &str, reason: LeaveReason) {
    let Some(members) = local.rooms.get_mut(room) else {
        return;
    };
    members.remove(peer);
    if members.is_empty() {
        local.rooms.remove(room);
        return;
    }
    let frame = Outgoing::PeerLeft {
        peer_id: peer,
        reason,
    }
    .to_frame();
    broadcast(local, room, frame);
}

/// Sends one pre-serialised frame to every member of `room` on this node.
fn broadcast(local: &Local, room: &str, frame: Utf8Bytes) {
    let Some(members) = local.rooms.get(room) else {
        return;
    };
    for member in members {
        if let Some(slot) = local.peers.get(member) {
            slot.outbox.deliver(frame.clone());
        }
    }
}

fn others(members: Vec<Member>, me: &str) -> Vec<String> {
    members
        .into_iter()
        .filter(|m| m.peer_id != me)
        .map(|m| m.peer_id)
        .collect()
}
