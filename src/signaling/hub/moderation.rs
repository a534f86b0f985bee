//! Participant metadata, and what the app's backend does to rooms through the server API:
//! list them, close one, remove a member, set a member's metadata, send a message. The
//! store answers for the whole cluster; a change to a member goes to the node holding it.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Hub, MembershipError, RelayError, Route};
use crate::bus::{BusMessage, Moderation};
use crate::signaling::protocol::{LeaveReason, Metadata, Outgoing, metadata_from};
use crate::store::{Epoch, Member, RoomInfo, RoomSummary, StoreError};

/// The sender the server API's messages carry.
pub const SERVER_SENDER: &str = "server";

impl Hub {
    /// Sets `peer_id`'s metadata: recorded in the store, told to the other members as
    /// `peer_updated` (and to the peer itself when the app's backend set it, `by_server`).
    /// In no room it is only kept, for the next join.
    pub async fn update(
        &self,
        peer_id: &str,
        epoch: Epoch,
        metadata: Metadata,
        by_server: bool,
    ) -> Result<(), MembershipError> {
        let _recovery = self.recovery.read().await;
        let _peer = self.enter_peer(peer_id).await;
        let (current, _) = self.owned(peer_id, epoch)?;
        let Some(room) = current else {
            let mut table = self.write();
            let notices = table.update(peer_id, epoch, metadata, by_server);
            table.deliver(notices);
            return Ok(());
        };
        let _room = self.enter_rooms(&[&room]).await;
        let members = self
            .store
            .set_metadata(&room, peer_id, epoch, metadata.get())
            .await?;
        {
            let mut table = self.write();
            let notices = table.update(peer_id, epoch, metadata.clone(), by_server);
            table.deliver(notices);
        }
        // `None`: the store has not recorded this membership yet (it was away); the
        // rewrite after the outage carries the metadata to the other nodes.
        if let Some(members) = members {
            let updated = BusMessage::PeerUpdated {
                room: room.to_string(),
                peer: peer_id.to_string(),
                epoch,
                metadata: metadata.get().to_string(),
            };
            self.tell_other_nodes(&members, &updated);
        }
        Ok(())
    }

    /// Where each other member of `from`'s room is, for a message to all of them.
    pub fn routes_from(&self, from: &str) -> Result<Vec<(Arc<str>, Route)>, RelayError> {
        let table = self.read();
        let room = table
            .peers
            .get(from)
            .and_then(|s| s.room.clone())
            .ok_or(RelayError::NotInRoom)?;
        Ok(table.routes(&room, from))
    }

    /// Every room with members, across the cluster.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        self.store.rooms().await
    }

    /// A room and its members, across the cluster; `None` when it has none.
    pub async fn room(&self, room: &str) -> Result<Option<RoomInfo>, StoreError> {
        self.store.room_info(room).await
    }

    /// Closes `room`: every member gets `room_closed` and is out of it (its connection
    /// stays). False when the room has no members.
    pub async fn close_room(&self, room: &str) -> Result<bool, StoreError> {
        let Some(info) = self.store.room_info(room).await? else {
            return Ok(false);
        };
        for member in &info.members {
            self.moderate(room, member, Moderation::Close).await;
        }
        Ok(true)
    }

    /// Removes `peer` from `room` (it gets `removed`, the others `peer_left` `removed`);
    /// false when it is not there.
    pub async fn remove_peer(&self, room: &str, peer: &str) -> Result<bool, StoreError> {
        let Some(member) = self.member(room, peer).await? else {
            return Ok(false);
        };
        self.moderate(room, &member, Moderation::Remove).await;
        Ok(true)
    }

    /// Sets the metadata of `peer` in `room`; returns the member as it now is, or `None`
    /// when it is not there.
    pub async fn set_peer_metadata(
        &self,
        room: &str,
        peer: &str,
        metadata: &Metadata,
    ) -> Result<Option<Member>, StoreError> {
        let Some(mut member) = self.member(room, peer).await? else {
            return Ok(None);
        };
        let action = Moderation::SetMetadata(metadata.get().to_string());
        self.moderate(room, &member, action).await;
        member.metadata = Some(metadata.get().to_string());
        Ok(Some(member))
    }

    /// Sends `data` from the server to the members of `room` (or those of them named in
    /// `to`); returns how many it went to, or `None` when the room has no members.
    pub async fn send_from_server(
        &self,
        room: &str,
        to: Option<&[String]>,
        data: &RawValue,
    ) -> Result<Option<usize>, StoreError> {
        let Some(info) = self.store.room_info(room).await? else {
            return Ok(None);
        };
        let frame = Outgoing::Message {
            from: SERVER_SENDER,
            data,
        }
        .to_frame();
        let mut sent = 0;
        for member in info
            .members
            .iter()
            .filter(|m| to.is_none_or(|to| to.contains(&m.peer_id)))
        {
            sent += 1;
            if *member.node == *self.node {
                if let Some(slot) = self.read().owned(&member.peer_id, member.epoch) {
                    slot.outbox.deliver(frame.clone());
                }
            } else {
                let deliver = BusMessage::Deliver {
                    to: member.peer_id.clone(),
                    frame: frame.clone(),
                };
                self.publish(&member.node, &deliver);
            }
        }
        Ok(Some(sent))
    }

    /// `peer` as the store has it in `room`.
    async fn member(&self, room: &str, peer: &str) -> Result<Option<Member>, StoreError> {
        Ok(self
            .store
            .room_members(room)
            .await?
            .into_iter()
            .find(|m| m.peer_id == peer))
    }

    /// Applies `action` to `member` of `room` here, or hands it to the member's node.
    async fn moderate(&self, room: &str, member: &Member, action: Moderation) {
        if *member.node == *self.node {
            self.moderate_here(room, &member.peer_id, member.epoch, action)
                .await;
        } else {
            let message = BusMessage::Moderate {
                room: room.to_string(),
                peer: member.peer_id.clone(),
                epoch: member.epoch,
                action,
            };
            self.publish(&member.node, &message);
        }
    }

    /// Applies the server API's `action` to local member `peer` (membership `epoch`) of
    /// `room`; nothing if that membership has ended meanwhile.
    pub(super) async fn moderate_here(
        &self,
        room: &str,
        peer: &str,
        epoch: Epoch,
        action: Moderation,
    ) {
        match action {
            Moderation::SetMetadata(text) => {
                let Some(metadata) = metadata_from(&text) else {
                    return;
                };
                if let Err(e) = self.update(peer, epoch, metadata, true).await {
                    tracing::warn!(error = %e, "could not set a member's metadata");
                }
            }
            Moderation::Remove => self.expel(room, peer, epoch, false).await,
            Moderation::Close => self.expel(room, peer, epoch, true).await,
        }
    }

    /// Takes local `peer` out of `room`, telling it why first (`removed`, or
    /// `room_closed` when `closing`); the others hear `peer_left` with `removed`.
    async fn expel(&self, room: &str, peer: &str, epoch: Epoch, closing: bool) {
        let _recovery = self.recovery.read().await;
        let _peer = self.enter_peer(peer).await;
        let Ok((Some(current), session_id)) = self.owned(peer, epoch) else {
            return;
        };
        if *current != *room {
            return;
        }
        let _room = self.enter_rooms(&[room]).await;
        let emptied = {
            let mut table = self.write();
            let Some(slot) = table.owned(peer, epoch) else {
                return;
            };
            let frame = match closing {
                true => Outgoing::RoomClosed { room_id: room },
                false => Outgoing::Removed { room_id: room },
            };
            slot.outbox.deliver(frame.to_frame());
            let (emptied, notices) = table.depart(room, peer, epoch, LeaveReason::Removed);
            table.deliver(notices);
            emptied
        };
        self.record_departure(room, peer, epoch, LeaveReason::Removed, emptied)
            .await;
        self.record_room(session_id, epoch, None).await;
    }
}
