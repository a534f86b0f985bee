//! A session moving between nodes: the new node claims it and asks the old one to hand
//! it over; the old one sends its queue through the store and forwards late messages; a
//! third node holds what it sends the moving peer until the old node is flushed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::membership::participants;
use super::{Hub, ROOM_TTL, Registration, Resumed};
use crate::bus::{BusMessage, OnLost};
use crate::net::websocket::Utf8Bytes;
use crate::signaling::protocol::{LeaveReason, Participant, close, metadata_from};
use crate::store::{Epoch, JoinOutcome, Previous, Seating, StoreError};

/// How long a handover waits for a closing connection to finish parking its session.
const PARK_SETTLE: Duration = Duration::from_secs(1);
/// How long a moved session's queue stays in the store, and how long its old node forwards
/// late messages to the new one.
const MOVE_TTL: Duration = Duration::from_secs(60);

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
    /// Completes a reconnect whose session another node held: a handed-over session takes
    /// the room membership, learns the room, and gets `resumed` and the moved queue; one
    /// that was not handed over starts afresh, and the old membership ends as `replaced`.
    pub(super) async fn take_over(
        &self,
        session_id: &str,
        peer_id: &str,
        mut registration: Registration,
        previous: Previous,
        resumed: bool,
    ) -> Registration {
        let _recovery = self.recovery.read().await;
        let _peer = self.enter_peer(peer_id).await;
        let epoch = registration.epoch;
        if self.owned(peer_id, epoch).is_err() {
            return registration; // a newer connection took the session meanwhile
        }
        let room = previous.room.as_deref();
        if !resumed {
            if let Some(room) = room {
                let _room = self.enter_rooms(&[room]).await;
                self.depart(room, peer_id, previous.epoch, LeaveReason::Replaced)
                    .await;
            }
            return registration;
        }
        let mut lost = false;
        let mut peers = Vec::new();
        if let Some(room) = room {
            let _room = self.enter_rooms(&[room]).await;
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
                .close(Some(close::RESYNC), "messages lost; resync");
        }
        registration.resumed = Some(Resumed {
            room: room.map(Arc::from),
            peers,
            metadata: self.metadata_of(peer_id),
            queued: queued.into_iter().map(Utf8Bytes::from).collect(),
        });
        registration
    }

    /// Moves a resumed peer's membership of `room` to this node, quietly: the store entry
    /// takes the new epoch, and other nodes route to it here. Returns the other members.
    /// The caller holds the room's gate.
    async fn move_membership(
        &self,
        session_id: &str,
        peer_id: &str,
        epoch: Epoch,
        room: &str,
    ) -> Result<Vec<Participant>, StoreError> {
        let member = self.member_of(peer_id, epoch);
        // Never refused: the peer is in the room already. Its join time and metadata stay
        // as the old node left them.
        let (others, seated) = match self
            .store
            .join_room(room, &member, Seating::Keep, usize::MAX, ROOM_TTL)
            .await?
        {
            JoinOutcome::Joined { before, seated } => (before, seated),
            JoinOutcome::Full => (Vec::new(), member),
        };
        let metadata = seated.metadata.as_deref().and_then(metadata_from);
        if let Some(slot) = self.write().peers.get_mut(peer_id)
            && slot.epoch == epoch
            && metadata.is_some()
        {
            slot.metadata = metadata;
        }
        self.record_room(session_id, epoch, Some(room)).await;
        {
            let mut table = self.write();
            let notices = table.move_in(room, peer_id, &others, &self.node);
            table.deliver(notices);
        }
        let moved = BusMessage::PeerMoved {
            room: room.to_string(),
            peer: peer_id.to_string(),
            node: self.node.to_string(),
            epoch,
            metadata: seated.metadata,
        };
        self.tell_other_nodes(&others, &moved);
        Ok(participants(others, peer_id))
    }

    /// Answers another node's [`BusMessage::Handover`]: a parked session's queue goes to
    /// the store and the session moves there; a live connection is closed as replaced,
    /// unless this node is draining: then it closes with 1012, parks and moves the same way.
    pub(super) async fn hand_over(&self, peer: &str, epoch: Epoch, to: &str, new_epoch: Epoch) {
        let settle = tokio::time::Instant::now() + PARK_SETTLE;
        let resumed = loop {
            let recovery = self.recovery.read().await;
            let gate = self.enter_peer(peer).await;
            let held = match self.read().peers.get(peer) {
                Some(s) if s.epoch == epoch && s.parked.is_some() => Held::Parked,
                Some(s) if s.epoch == epoch && s.outbox.closing().is_some() => Held::Closing,
                Some(s) if s.epoch == epoch && self.draining.load(Ordering::Relaxed) => {
                    // Told to go, the client connected elsewhere before this connection
                    // closed: it closes as the drain would have closed it (1012) and
                    // parks, and its queue follows the session.
                    s.outbox.close(Some(close::RESTART), "server restarting");
                    Held::Closing
                }
                Some(s) if s.epoch == epoch => Held::Live,
                _ => Held::Gone,
            };
            match held {
                Held::Parked => break self.move_parked(peer, epoch, to, new_epoch).await,
                Held::Gone => break false,
                Held::Closing if tokio::time::Instant::now() < settle => {
                    drop((gate, recovery));
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
        self.publish(to, &reply);
    }

    /// Moves a parked session away: its queue into the store, its place in this node's
    /// room view to the new node. Late messages for it are forwarded there. The caller
    /// holds the peer's gate.
    async fn move_parked(&self, peer: &str, epoch: Epoch, to: &str, new_epoch: Epoch) -> bool {
        let room = self.read().peers.get(peer).and_then(|s| s.room.clone());
        let _room = match &room {
            Some(room) => Some(self.enter_rooms(&[room]).await),
            None => None,
        };
        let Some((slot, frames)) = self.write().move_out(peer, to, new_epoch, MOVE_TTL) else {
            return false;
        };
        self.note_move();
        // Ends the parking timer.
        slot.outbox.close(None, "moved to another node");
        match self
            .store
            .spool(slot.session_id(peer), &frames, MOVE_TTL)
            .await
        {
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
    /// The caller holds the peer's gate.
    async fn kick(&self, peer: &str, epoch: Epoch) {
        let room = {
            let mut table = self.write();
            if table.owned(peer, epoch).is_none() {
                return;
            }
            let slot = table.peers.remove(peer).expect("checked above");
            slot.outbox
                .close(Some(close::REPLACED), "replaced by a newer connection");
            slot.room
        };
        // Normally the new owner removes this membership; if it could not see it, the
        // fenced leave here does (and does nothing otherwise).
        if let Some(room) = room {
            let _room = self.enter_rooms(&[&room]).await;
            self.depart(&room, peer, epoch, LeaveReason::Replaced).await;
        }
    }

    pub(super) fn note_move(&self) {
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

    pub(super) fn handovers_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, Epoch), oneshot::Sender<bool>>> {
        self.handovers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends what was held for `peer` to its new node, in order, and from then on lets
    /// messages to it go there directly. Idempotent.
    pub async fn release(&self, peer: &str) {
        {
            let mut table = self.write();
            match table.holding.get_mut(peer) {
                Some(held) if !held.releasing => held.releasing = true,
                _ => return,
            }
        }
        loop {
            let (node, frames) = {
                let mut table = self.write();
                let Some(held) = table.holding.get_mut(peer) else {
                    return;
                };
                if held.frames.is_empty() {
                    table.holding.remove(peer);
                    return;
                }
                (held.node.clone(), std::mem::take(&mut held.frames))
            };
            for held in frames {
                let message = BusMessage::Deliver {
                    to: peer.to_string(),
                    frame: held.frame,
                };
                let (sender, failure) = (held.sender, held.failure);
                let lost: OnLost = Box::new(move |_| {
                    sender.deliver(failure);
                });
                self.bus.send(&node, message, Some(lost));
            }
        }
    }
}
