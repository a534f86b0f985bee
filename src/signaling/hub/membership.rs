//! Joining and leaving rooms: recorded in the store first (which checks capacity and says
//! who is there), then in the local table, then announced to the other nodes involved.

use std::sync::Arc;

use super::{Hub, MembershipError, ROOM_TTL};
use crate::bus::BusMessage;
use crate::signaling::protocol::{LeaveReason, Metadata, Participant, metadata_from};
use crate::store::{Epoch, JoinOutcome, Member, Seating};

/// What a joiner is told: the members already there, and its own metadata.
pub struct Joined {
    /// Everyone else in the room.
    pub peers: Vec<Participant>,
    /// The joiner's own metadata.
    pub metadata: Option<Metadata>,
}

/// The participants among `members`, without `peer_id`.
pub(super) fn participants(members: Vec<Member>, peer_id: &str) -> Vec<Participant> {
    members
        .into_iter()
        .filter(|m| m.peer_id != peer_id)
        .map(|m| Participant {
            metadata: m.metadata.as_deref().and_then(metadata_from),
            peer_id: m.peer_id,
        })
        .collect()
}

impl Hub {
    /// Joins `room` (leaving any other room first); returns the peers already there.
    pub async fn join(
        &self,
        peer_id: &str,
        epoch: Epoch,
        room: &str,
    ) -> Result<Joined, MembershipError> {
        let _recovery = self.recovery.read().await;
        let _peer = self.enter_peer(peer_id).await;
        let (current, session_id) = self.owned(peer_id, epoch)?;
        let metadata = self.metadata_of(peer_id);
        if current.as_deref() == Some(room) {
            let members = self.store.room_members(room).await?;
            return Ok(Joined {
                peers: participants(members, peer_id),
                metadata,
            });
        }
        let _rooms = match &current {
            Some(old) => self.enter_rooms(&[old, room]).await,
            None => self.enter_rooms(&[room]).await,
        };
        let member = self.member_of(peer_id, epoch);
        let joined = self
            .store
            .join_room(room, &member, Seating::Fresh, self.capacity, ROOM_TTL)
            .await;
        let before = match joined {
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable: joining on this node only");
                return self
                    .join_locally(peer_id, epoch, current.as_deref(), room)
                    .await;
            }
            Ok(outcome) => outcome,
        };
        let before = match before {
            JoinOutcome::Full => {
                if !self.read().has_room(room) {
                    let _ = self.store.unindex_room(&self.node, room).await;
                }
                return Err(MembershipError::RoomFull);
            }
            JoinOutcome::Joined { before, .. } => before,
        };
        if let Some(old) = &current {
            self.depart(old, peer_id, epoch, LeaveReason::Left).await;
        }
        self.record_room(session_id, epoch, Some(room)).await;
        {
            let mut table = self.write();
            let notices = table.join(room, peer_id, &before, &self.node);
            table.deliver(notices);
        }
        let joined = BusMessage::PeerJoined {
            room: room.to_string(),
            peer: peer_id.to_string(),
            node: String::from(&*self.node),
            epoch,
            metadata: member.metadata,
        };
        self.tell_other_nodes(&before, &joined);
        Ok(Joined {
            peers: participants(before, peer_id),
            metadata,
        })
    }

    /// The metadata of local peer `peer_id`.
    pub(super) fn metadata_of(&self, peer_id: &str) -> Option<Metadata> {
        self.read()
            .peers
            .get(peer_id)
            .and_then(|s| s.metadata.clone())
    }

    /// Local peer `peer_id` as a room member of `epoch` joining now.
    pub(super) fn member_of(&self, peer_id: &str, epoch: Epoch) -> Member {
        let table = self.read();
        let slot = table.peers.get(peer_id);
        Member {
            peer_id: peer_id.to_string(),
            node: String::from(&*self.node),
            epoch,
            user: slot.map_or(peer_id, |s| s.user(peer_id)).to_string(),
            joined_at: crate::clock::unix_millis(),
            metadata: slot
                .and_then(|s| s.metadata.as_ref())
                .map(|m| m.get().to_string()),
        }
    }

    /// Degraded join while the store is unavailable: the room as this node knows it, with
    /// the capacity checked against that view. The membership reaches the store (and the
    /// other nodes) when this node re-registers after the outage.
    async fn join_locally(
        &self,
        peer_id: &str,
        epoch: Epoch,
        current: Option<&str>,
        room: &str,
    ) -> Result<Joined, MembershipError> {
        if self.read().known_members(room) >= self.capacity {
            return Err(MembershipError::RoomFull);
        }
        self.unwritten();
        if let Some(old) = current {
            self.depart(old, peer_id, epoch, LeaveReason::Left).await;
        }
        let mut table = self.write();
        let (peers, notices) = table.join_alone(room, peer_id);
        table.deliver(notices);
        let metadata = table.peers.get(peer_id).and_then(|s| s.metadata.clone());
        Ok(Joined { peers, metadata })
    }

    /// Leaves the current room; `room`, when given, must name it.
    pub async fn leave(
        &self,
        peer_id: &str,
        epoch: Epoch,
        room: Option<&str>,
    ) -> Result<(), MembershipError> {
        let _recovery = self.recovery.read().await;
        let _peer = self.enter_peer(peer_id).await;
        let (current, session_id) = self.owned(peer_id, epoch)?;
        let current = current.ok_or(MembershipError::NotInRoom)?;
        if room.is_some_and(|r| r != &*current) {
            return Err(MembershipError::NotInRoom);
        }
        let _room = self.enter_rooms(&[&current]).await;
        self.depart(&current, peer_id, epoch, LeaveReason::Left)
            .await;
        self.record_room(session_id, epoch, None).await;
        Ok(())
    }

    fn departures_lock(&self) -> std::sync::MutexGuard<'_, Vec<super::Departure>> {
        self.departures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the departures the store missed and tells the other nodes involved.
    pub(super) async fn retry_departures(&self) -> Result<(), crate::store::StoreError> {
        let pending = std::mem::take(&mut *self.departures_lock());
        let mut pending = pending.into_iter();
        while let Some((room, peer, epoch, reason)) = pending.next() {
            let remaining = match self.store.leave_room(&room, &peer, epoch, reason).await {
                Ok(remaining) => remaining.unwrap_or_default(),
                Err(e) => {
                    let mut left = self.departures_lock();
                    left.push((room, peer, epoch, reason));
                    left.extend(pending);
                    return Err(e);
                }
            };
            if !self.read().has_room(&room) {
                let _ = self.store.unindex_room(&self.node, &room).await;
            }
            let left = BusMessage::PeerLeft {
                room: room.to_string(),
                peer: peer.to_string(),
                epoch,
                reason,
            };
            self.tell_other_nodes(&remaining, &left);
        }
        Ok(())
    }

    /// Takes `peer_id` (membership `epoch`) out of `room`: tells this node's members now,
    /// and the other nodes that still have members there through the bus. The caller
    /// holds the room's gate.
    pub(super) async fn depart(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        reason: LeaveReason,
    ) {
        let emptied = {
            let mut table = self.write();
            let (emptied, notices) = table.depart(room, peer_id, epoch, reason);
            table.deliver(notices);
            emptied
        };
        self.record_departure(room, peer_id, epoch, reason, emptied)
            .await;
    }

    /// Records in the store that `peer_id` (membership `epoch`) left `room`, already
    /// taken out of the table (`emptied`: this node has nobody left there), and tells the
    /// other nodes that still have members there. A store failure is retried later.
    pub(super) async fn record_departure(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        reason: LeaveReason,
        emptied: bool,
    ) {
        let remaining = match self.store.leave_room(room, peer_id, epoch, reason).await {
            Ok(Some(remaining)) => remaining,
            Ok(None) => Vec::new(),
            Err(e) => {
                // Held and retried when the store answers; the index entry stays, so a
                // cleanup after this node's death still finds it.
                tracing::warn!(error = %e, "could not record a departure in the store yet");
                self.departures_lock()
                    .push((Arc::from(room), Arc::from(peer_id), epoch, reason));
                self.unwritten();
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
        self.tell_other_nodes(&remaining, &left);
    }
}
