//! What other nodes publish to this one, applied in the order it was published.

use std::sync::Arc;
use std::time::Duration;

use super::{Hub, RoomPass};
use crate::bus::{BusMessage, Subscription};
use crate::room::LeaveReason;
use crate::signaling::protocol::metadata_from;

/// Longest wait for a moved peer's old node to confirm it forwarded what it was sent.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Applies messages from other nodes, in the order they were published.
///
/// Except handovers: answering one may wait for a closing connection to park its session,
/// and waiting here would delay the messages this node forwards for sessions it already
/// handed over (their senders wait for `Flushed`, which comes only after them). A handover
/// is serialised with other membership changes by the hub itself.
pub async fn consume(hub: Arc<Hub>, mut inbox: Subscription) {
    while let Some(message) = inbox.recv().await {
        match message {
            // A moderation waits for its peer's and room's gates, which changes hold across
            // store calls: the reader goes on meanwhile.
            BusMessage::Handover { .. } | BusMessage::Moderate { .. } => {
                let hub = hub.clone();
                tokio::spawn(async move { hub.on_bus(message).await });
            }
            BusMessage::PeerMoved { ref peer, .. } => {
                // Messages held for the moved peer go out even if its old node never
                // answers the flush (it died, or lost its inbox).
                let (later, peer) = (hub.clone(), peer.clone());
                hub.on_bus(message).await;
                tokio::spawn(async move {
                    tokio::time::sleep(FLUSH_WAIT).await;
                    later.release(&peer).await;
                });
            }
            message => hub.on_bus(message).await,
        }
    }
}

impl Hub {
    /// Applies a message from another node. Membership news for a room whose gate is
    /// taken is left with the gate's holder (see the locking rule in the module doc), and
    /// so are relays to that room's peers that would overtake it.
    pub async fn on_bus(&self, message: BusMessage) {
        match message {
            BusMessage::Deliver { ref to, .. } => {
                // The common case, no room news waiting anywhere, costs one atomic load.
                let room = match self.room_gates.holding() {
                    true => self
                        .read()
                        .peers
                        .get(to.as_str())
                        .and_then(|s| s.room.clone()),
                    false => None,
                };
                let message = match room {
                    Some(room) => match self.room_gates.defer_behind(&room, message) {
                        Some(message) => message,
                        None => return,
                    },
                    None => message,
                };
                if let Some((node, forward)) = self.apply_room_event(message) {
                    self.forward(&node, forward);
                }
            }
            BusMessage::PeerJoined { ref room, .. }
            | BusMessage::PeerMoved { ref room, .. }
            | BusMessage::PeerUpdated { ref room, .. }
            | BusMessage::PeerLeft { ref room, .. } => {
                let room: Arc<str> = Arc::from(room.as_str());
                let Some(message) = self.room_gates.enter_or_defer(&room, message) else {
                    return;
                };
                let publish = {
                    let _pass = RoomPass {
                        hub: self,
                        rooms: [Some(&room), None],
                    };
                    self.apply_room_event(message)
                };
                if let Some((node, message)) = publish {
                    self.forward(&node, message);
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
            // Everything received before this was queued for forwarding already
            // (messages are applied in order): answer once the bus has handed it on.
            BusMessage::Flush { peer, reply_to } => {
                let bus = self.bus.clone();
                tokio::spawn(async move {
                    bus.flushed().await;
                    bus.send(&reply_to, BusMessage::Flushed { peer }, None);
                });
            }
            BusMessage::Flushed { peer } => self.release(&peer).await,
            BusMessage::Revoke { peer, epoch } => self.close_revoked(&peer, epoch),
            BusMessage::Moderate {
                room,
                peer,
                epoch,
                action,
            } => self.moderate_here(&room, &peer, epoch, action).await,
        }
    }

    /// Applies a message left with a room's gate, when its holder leaves it.
    pub(super) fn apply_deferred(&self, message: BusMessage) {
        if let Some((node, message)) = self.apply_room_event(message) {
            self.forward(&node, message);
        }
    }

    /// Applies a relay or a room's membership news to the table; returns what must then
    /// be published: a relay to follow a peer that moved away, or a flush request to the
    /// old node of a peer that moved between two others.
    fn apply_room_event(&self, message: BusMessage) -> Option<(Arc<str>, BusMessage)> {
        match message {
            BusMessage::Deliver { to, frame } => {
                let received = tokio::time::Instant::now();
                let outbox = self.read().peers.get(to.as_str()).map(|s| s.outbox.clone());
                let frame = match outbox {
                    Some(outbox) => match outbox.relay(frame, Some(received)) {
                        Ok(_) => return None,
                        Err(frame) => frame,
                    },
                    None => frame,
                };
                // A session handed over to another node: follow it. Otherwise the peer just
                // left, and its departure is being announced to the sender.
                let moved = self.read().moved.get(to.as_str()).map(|(n, _)| n.clone());
                let node = moved?;
                self.note_move();
                Some((node, BusMessage::Deliver { to, frame }))
            }
            BusMessage::PeerJoined {
                room,
                peer,
                node,
                epoch,
                metadata,
            } => self.learn_remote_member(&room, &peer, &node, epoch, false, metadata),
            BusMessage::PeerMoved {
                room,
                peer,
                node,
                epoch,
                metadata,
            } => self.learn_remote_member(&room, &peer, &node, epoch, true, metadata),
            BusMessage::PeerUpdated {
                room,
                peer,
                epoch,
                metadata,
            } => {
                if let Some(metadata) = metadata_from(&metadata) {
                    let mut table = self.write();
                    let notices = table.updated_elsewhere(&room, &peer, epoch, metadata);
                    table.deliver(notices);
                }
                None
            }
            BusMessage::PeerLeft {
                room,
                peer,
                epoch,
                reason,
            } => {
                let mut table = self.write();
                if reason == LeaveReason::NodeLost
                    && let Some(node) = table.member_node(&room, &peer)
                {
                    // What this node sent there and it never read goes back to its senders.
                    self.bus.abandon(&node);
                }
                let notices = table.left_elsewhere(&room, &peer, epoch, reason);
                table.deliver(notices);
                None
            }
            other => {
                debug_assert!(false, "not a room event: {other:?}");
                None
            }
        }
    }

    /// Queues a forward or a flush request worked out while applying a room event. (A
    /// relay forwarded after its peer moved is no longer tied to its sender's socket: if
    /// the bus gives up on it, the log and `bus_undelivered_total` show it.)
    fn forward(&self, node: &str, message: BusMessage) {
        self.publish(node, &message);
    }

    /// Records a member on another node (see [`super::table::RoomTable::learn`]); returns
    /// the flush request for the old node of a peer that moved between two others.
    fn learn_remote_member(
        &self,
        room: &str,
        peer: &str,
        node: &str,
        epoch: crate::store::Epoch,
        moved: bool,
        metadata: Option<String>,
    ) -> Option<(Arc<str>, BusMessage)> {
        let metadata = metadata.as_deref().and_then(metadata_from);
        let flush_at = {
            let mut table = self.write();
            let (notices, flush_at) = table.learn(room, peer, node, epoch, moved, metadata);
            table.deliver(notices);
            flush_at
        }?;
        let flush = BusMessage::Flush {
            peer: peer.to_string(),
            reply_to: self.node.to_string(),
        };
        Some((flush_at, flush))
    }
}
