//! The local routing table: this node's peers and its view of the rooms they are in.
//!
//! Plain synchronous data: every change returns the [`Notice`]s it calls for, and the hub
//! hands them to [`RoomTable::deliver`] under the same lock, so notices leave in the order
//! the changes were made. No store, bus or runtime is involved, which keeps it testable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{RelayError, Route};
use crate::identifier;
use crate::net::websocket::Utf8Bytes;
use crate::signaling::outbox::{Inbox, Outbox};
use crate::signaling::protocol::{LeaveReason, Metadata, Outgoing, Participant, metadata_from};
use crate::store::{Epoch, Member};

/// A local session. One per connection, kept small: the peer id (`<user>-<session_id>`)
/// is the table's key and holds the user and session ids, and the room id is the room
/// view's key.
pub(super) struct PeerSlot {
    pub epoch: Epoch,
    /// How long the session id at the end of the peer id is.
    pub session_len: u32,
    /// When the session's store record should lapse (token expiry plus margin).
    pub expires: tokio::time::Instant,
    pub outbox: Outbox,
    pub room: Option<Arc<str>>,
    /// The participant's metadata (from its token, then `update`), kept across rooms.
    pub metadata: Option<Metadata>,
    /// Set while the connection is gone but the session waits for a resume: the queue its
    /// messages collect in, and frames whose write failed when the connection dropped.
    pub parked: Option<Box<(Inbox, Vec<Utf8Bytes>)>>,
}

impl PeerSlot {
    /// The length to keep for the session id `session_id`.
    pub fn session_len(session_id: &str) -> u32 {
        // Ids come from tokens, which are at most MAX_TOKEN_BYTES long.
        u32::try_from(session_id.len()).expect("a session id is shorter than a token")
    }

    /// The session id in `peer`, this slot's peer id.
    pub fn session_id<'a>(&self, peer: &'a str) -> &'a str {
        peer.get(peer.len().saturating_sub(self.session_len as usize)..)
            .unwrap_or(peer)
    }

    /// The user in `peer`, this slot's peer id.
    pub fn user<'a>(&self, peer: &'a str) -> &'a str {
        peer.strip_suffix(self.session_id(peer))
            .and_then(|p| p.strip_suffix('-'))
            .unwrap_or(peer)
    }
}

/// A member on another node.
#[derive(Debug, Clone)]
struct RemoteMember {
    node: Arc<str>,
    epoch: Epoch,
    metadata: Option<Metadata>,
}

impl RemoteMember {
    fn of(m: &Member) -> Self {
        Self {
            node: Arc::from(m.node.as_str()),
            epoch: m.epoch,
            metadata: m.metadata.as_deref().and_then(metadata_from),
        }
    }
}

/// The same membership: node and epoch (metadata changes do not make a member new).
impl PartialEq for RemoteMember {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node && self.epoch == other.epoch
    }
}

/// This node's view of a room that has at least one local member.
#[derive(Default)]
struct RoomView {
    local: HashSet<Arc<str>>,
    remote: HashMap<Arc<str>, RemoteMember>,
}

/// Messages held for a remote peer that moved, until its old node is flushed.
pub(super) struct Holding {
    /// The peer's new node.
    pub node: Arc<str>,
    pub frames: Vec<HeldFrame>,
    /// A release is sending the held messages; new ones still queue behind them.
    pub releasing: bool,
}

/// A message held for a moved peer: its sender was told nothing yet, so it gets `failure`
/// if the message cannot be sent on.
pub(super) struct HeldFrame {
    pub frame: Utf8Bytes,
    pub sender: Outbox,
    pub failure: Utf8Bytes,
}

/// A frame for some of this node's peers, called for by a change to the table.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a notice does nothing until it is delivered"]
pub(super) struct Notice {
    /// Local peers to tell.
    pub to: Vec<Arc<str>>,
    /// What to tell them.
    pub frame: Utf8Bytes,
}

/// This node's peers and rooms.
#[derive(Default)]
pub(super) struct RoomTable {
    pub peers: HashMap<Arc<str>, PeerSlot>,
    rooms: HashMap<Arc<str>, RoomView>,
    /// Sessions handed over to another node: where late messages for them are forwarded,
    /// and since when.
    pub moved: HashMap<Arc<str>, (Arc<str>, tokio::time::Instant)>,
    /// Remote peers that moved between two other nodes: what this node's members send them
    /// waits here until the old node has forwarded everything sent to it before (see
    /// [`crate::bus::BusMessage::Flush`]), so nothing sent directly to the new node
    /// overtakes it.
    pub holding: HashMap<Arc<str>, Holding>,
}

// === impl RoomTable ===

impl RoomTable {
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

    /// Hands each notice's frame to the peers it names that are still here.
    pub fn deliver(&self, notices: Vec<Notice>) {
        for notice in notices {
            for peer in &notice.to {
                if let Some(slot) = self.peers.get(peer) {
                    slot.outbox.deliver(notice.frame.clone());
                }
            }
        }
    }

    /// Whether this node has a peer in `room`.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Number of rooms with at least one peer on this node.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The session of `peer_id` if `epoch` still owns it.
    pub fn owned(&self, peer_id: &str, epoch: Epoch) -> Option<&PeerSlot> {
        self.peers.get(peer_id).filter(|s| s.epoch == epoch)
    }

    /// Members of `room` this node knows of, local and remote.
    pub fn known_members(&self, room: &str) -> usize {
        self.rooms
            .get(room)
            .map_or(0, |v| v.local.len() + v.remote.len())
    }

    /// Everyone in `room` but `peer_id`, as this node knows them.
    pub fn room_peers(&self, room: &str, peer_id: &str) -> Vec<Participant> {
        let Some(view) = self.rooms.get(room) else {
            return Vec::new();
        };
        let local = view
            .local
            .iter()
            .filter(|p| ***p != *peer_id)
            .map(|p| Participant {
                peer_id: p.to_string(),
                metadata: self.peers.get(p).and_then(|s| s.metadata.clone()),
            });
        let remote = view.remote.iter().map(|(p, r)| Participant {
            peer_id: p.to_string(),
            metadata: r.metadata.clone(),
        });
        local.chain(remote).collect()
    }

    /// Where each member of `room` but `except` is: its outbox here, or its node.
    pub fn routes(&self, room: &str, except: &str) -> Vec<(Arc<str>, Route)> {
        let Some(view) = self.rooms.get(room) else {
            return Vec::new();
        };
        let local = view
            .local
            .iter()
            .filter(|p| ***p != *except)
            .filter_map(|p| Some((p.clone(), Route::Local(self.peers.get(p)?.outbox.clone()))));
        let remote = view
            .remote
            .iter()
            .map(|(p, r)| (p.clone(), Route::Remote(r.node.clone())));
        local.chain(remote).collect()
    }

    /// Sets local `peer_id`'s metadata (if `epoch` still owns it); the other local members
    /// of its room hear of it, and so does the peer itself when `tell_self`.
    pub fn update(
        &mut self,
        peer_id: &str,
        epoch: Epoch,
        metadata: Metadata,
        tell_self: bool,
    ) -> Vec<Notice> {
        let Some(slot) = self.peers.get_mut(peer_id).filter(|s| s.epoch == epoch) else {
            return Vec::new();
        };
        slot.metadata = Some(metadata.clone());
        let mut notices = match slot.room.clone() {
            Some(room) => self.updated_notice(&room, peer_id, &metadata),
            None => Vec::new(),
        };
        if tell_self {
            notices.push(Notice {
                to: vec![self.peer_key(peer_id)],
                frame: Outgoing::PeerUpdated {
                    peer_id,
                    metadata: &metadata,
                }
                .to_frame(),
            });
        }
        notices
    }

    /// Another node says member `peer` (of `epoch`) of `room` has new metadata.
    pub fn updated_elsewhere(
        &mut self,
        room: &str,
        peer: &str,
        epoch: Epoch,
        metadata: Metadata,
    ) -> Vec<Notice> {
        let Some(remote) = self
            .rooms
            .get_mut(room)
            .and_then(|v| v.remote.get_mut(peer))
            .filter(|r| r.epoch == epoch)
        else {
            return Vec::new();
        };
        remote.metadata = Some(metadata.clone());
        self.updated_notice(room, peer, &metadata)
    }

    /// `peer_updated` for the local members of `room` other than `peer`.
    fn updated_notice(&self, room: &str, peer: &str, metadata: &Metadata) -> Vec<Notice> {
        let Some(view) = self.rooms.get(room) else {
            return Vec::new();
        };
        let to: Vec<Arc<str>> = view
            .local
            .iter()
            .filter(|p| ***p != *peer)
            .cloned()
            .collect();
        if to.is_empty() {
            return Vec::new();
        }
        let frame = Outgoing::PeerUpdated {
            peer_id: peer,
            metadata,
        }
        .to_frame();
        vec![Notice { to, frame }]
    }

    /// The local members of each room and their epochs, for writing back to the store.
    pub fn local_members(&self, node: &str) -> Vec<(Arc<str>, Vec<Member>)> {
        self.rooms
            .iter()
            .map(|(room, view)| {
                let members = view
                    .local
                    .iter()
                    .filter_map(|p| self.peers.get(p).map(|s| (p, s)))
                    .map(|(p, slot)| Member {
                        peer_id: p.to_string(),
                        node: node.to_string(),
                        epoch: slot.epoch,
                        user: slot.user(p).to_string(),
                        joined_at: crate::clock::unix_millis(),
                        metadata: slot.metadata.as_ref().map(|m| m.get().to_string()),
                    })
                    .collect();
                (room.clone(), members)
            })
            .collect()
    }

    /// `peer_id` joins `room` on this node, whose store entry listed `before` as the
    /// members already there: the local members hear of members on other nodes they did
    /// not know yet, then of the newcomer.
    pub fn join(&mut self, room: &str, peer_id: &str, before: &[Member], me: &str) -> Vec<Notice> {
        let peer = self.peer_key(peer_id);
        let metadata = self.peers.get(peer_id).and_then(|s| s.metadata.clone());
        let (room, view) = self.room_view(room);
        let learned = learn_remote(view, before, me);
        let to: Vec<Arc<str>> = view.local.iter().cloned().collect();
        let mut notices = Vec::new();
        // The first member here has nobody to tell (the common case of a room's join).
        if !to.is_empty() {
            notices.extend(learned.iter().map(|(p, metadata)| Notice {
                to: to.clone(),
                frame: joined_frame(p, metadata.as_ref()),
            }));
            notices.push(Notice {
                to,
                frame: joined_frame(peer_id, metadata.as_ref()),
            });
        }
        view.local.insert(peer);
        self.set_room(peer_id, Some(room));
        notices
    }

    /// `peer_id`, taking its session over from another node, takes its place in `room`
    /// here: messages for it from this node's members come here from now on.
    pub fn take_place(&mut self, room: &str, peer_id: &str) {
        let peer = self.peer_key(peer_id);
        let (_, view) = self.room_view(room);
        view.remote.remove(peer_id);
        view.local.insert(peer);
    }

    /// `peer_id` joins `room` as this node alone knows it (the store is unavailable);
    /// returns the members it found there and what the local members are told.
    pub fn join_alone(&mut self, room: &str, peer_id: &str) -> (Vec<Participant>, Vec<Notice>) {
        let peer = self.peer_key(peer_id);
        let metadata = self.peers.get(peer_id).and_then(|s| s.metadata.clone());
        let peers = self.room_peers(room, peer_id);
        let (room, view) = self.room_view(room);
        let notice = Notice {
            to: view.local.iter().cloned().collect(),
            frame: joined_frame(peer_id, metadata.as_ref()),
        };
        view.local.insert(peer);
        self.set_room(peer_id, Some(room));
        (peers, vec![notice])
    }

    /// A resumed `peer_id` takes its membership of `room` here, quietly: only members on
    /// other nodes the local members had not heard of are announced (`others` is the
    /// store's list).
    pub fn move_in(
        &mut self,
        room: &str,
        peer_id: &str,
        others: &[Member],
        me: &str,
    ) -> Vec<Notice> {
        let peer = self.peer_key(peer_id);
        let (room, view) = self.room_view(room);
        view.local.insert(peer);
        let learned = learn_remote(view, others, me);
        let to: Vec<Arc<str>> = view
            .local
            .iter()
            .filter(|m| ***m != *peer_id)
            .cloned()
            .collect();
        let notices = learned
            .iter()
            .map(|(p, metadata)| Notice {
                to: to.clone(),
                frame: joined_frame(p, metadata.as_ref()),
            })
            .collect();
        self.set_room(peer_id, Some(room));
        notices
    }

    /// A parked `peer_id` (of `epoch`) moves to node `to`, taking `new_epoch` there: its
    /// slot leaves the table, its place in the room view becomes a remote member, and late
    /// messages for it are forwarded for a while. Returns the slot and its queued frames.
    pub fn move_out(
        &mut self,
        peer_id: &str,
        to: &str,
        new_epoch: Epoch,
        forward_for: std::time::Duration,
    ) -> Option<(PeerSlot, Vec<String>)> {
        if self.peers.get(peer_id).is_none_or(|s| s.parked.is_none()) {
            return None;
        }
        let mut slot = self.peers.remove(peer_id).expect("checked above");
        let (inbox, unsent) = *slot.parked.take().expect("checked above");
        // From here on a sender gets its frame back and routes it again (to `to`).
        inbox.close();
        let mut frames: Vec<String> = unsent.iter().map(|f| f.as_str().to_owned()).collect();
        while let Some(queued) = inbox.try_recv() {
            frames.push(queued.frame.as_str().to_owned());
        }
        if let Some(room) = &slot.room
            && let Some(view) = self.rooms.get_mut(room)
        {
            view.local.remove(peer_id);
            if view.local.is_empty() {
                self.rooms.remove(room);
            } else {
                let remote = RemoteMember {
                    node: Arc::from(to),
                    epoch: new_epoch,
                    metadata: slot.metadata.clone(),
                };
                view.remote.insert(Arc::from(peer_id), remote);
            }
        }
        let now = tokio::time::Instant::now();
        self.moved
            .retain(|_, (_, since)| now - *since < forward_for);
        self.moved.insert(Arc::from(peer_id), (Arc::from(to), now));
        Some((slot, frames))
    }

    /// `peer_id`'s membership of `epoch` ends in `room`: its slot (if still that epoch)
    /// forgets the room, and the local members hear why. Returns whether this node no
    /// longer has anyone in the room.
    pub fn depart(
        &mut self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        reason: LeaveReason,
    ) -> (bool, Vec<Notice>) {
        if let Some(slot) = self.peers.get_mut(peer_id)
            && slot.epoch == epoch
        {
            slot.room = None;
        }
        self.remove_member(room, peer_id, reason)
    }

    /// Another node says `peer` (of `epoch`) left `room`; applied only if that is the
    /// membership this node knows.
    pub fn left_elsewhere(
        &mut self,
        room: &str,
        peer: &str,
        epoch: Epoch,
        reason: LeaveReason,
    ) -> Vec<Notice> {
        let known = self
            .rooms
            .get(room)
            .is_some_and(|v| v.remote.get(peer).is_some_and(|r| r.epoch == epoch))
            || self
                .peers
                .get(peer)
                .is_some_and(|s| s.epoch == epoch && s.room.as_deref() == Some(room));
        if !known {
            return Vec::new();
        }
        let (_, notices) = self.remove_member(room, peer, reason);
        if let Some(slot) = self.peers.get_mut(peer)
            && slot.epoch == epoch
        {
            slot.room = None;
        }
        notices
    }

    /// The node holding remote member `peer` of `room`, as this node knows it.
    pub fn member_node(&self, room: &str, peer: &str) -> Option<Arc<str>> {
        Some(self.rooms.get(room)?.remote.get(peer)?.node.clone())
    }

    /// A dead node's member `peer` is gone from `room` (if this node knew it there).
    pub fn lost(&mut self, room: &str, peer: &str) -> Vec<Notice> {
        let known = self
            .rooms
            .get(room)
            .is_some_and(|v| v.remote.contains_key(peer));
        if !known {
            return Vec::new();
        }
        self.remove_member(room, peer, LeaveReason::NodeLost).1
    }

    /// Records a member on another node in this node's view of `room` (when this node has
    /// members there) and tells the local members if it is news to them: a peer they never
    /// heard of or, unless it merely `moved` between nodes, one back with another epoch.
    /// Returns, for a peer that moved between two other nodes, its old node: what this
    /// node sent through it may still be on its way, so what follows is held until that
    /// node is flushed.
    pub fn learn(
        &mut self,
        room: &str,
        peer: &str,
        node: &str,
        epoch: Epoch,
        moved: bool,
        metadata: Option<Metadata>,
    ) -> (Vec<Notice>, Option<Arc<str>>) {
        let Some(view) = self.rooms.get_mut(room) else {
            return (Vec::new(), None);
        };
        if view.local.contains(peer) {
            return (Vec::new(), None);
        }
        // A move without metadata keeps what this node knew.
        let metadata = metadata.or_else(|| view.remote.get(peer).and_then(|r| r.metadata.clone()));
        let remote = RemoteMember {
            node: Arc::from(node),
            epoch,
            metadata: metadata.clone(),
        };
        let previous = view.remote.insert(Arc::from(peer), remote.clone());
        let news = match &previous {
            None => true,
            Some(known) => !moved && *known != remote,
        };
        let mut notices = Vec::new();
        if news {
            notices.push(Notice {
                to: view.local.iter().cloned().collect(),
                frame: joined_frame(peer, metadata.as_ref()),
            });
        }
        let flush_at = match previous {
            Some(known) if moved && *known.node != *node => {
                let held = self.holding.entry(Arc::from(peer)).or_insert(Holding {
                    node: remote.node.clone(),
                    frames: Vec::new(),
                    releasing: false,
                });
                held.node = remote.node;
                Some(known.node)
            }
            _ => None,
        };
        (notices, flush_at)
    }

    /// Makes this node's view of `room` match the store's `truth`: remote members that
    /// left during an outage are announced as gone, ones that came as joined. With
    /// `reintroduce` (this node was declared lost while it was cut off, so the other side
    /// saw its peers leave) every remote member is announced as joined, so both sides
    /// renegotiate. Without `prune`, members missing from the store are kept: after Redis
    /// lost its data, their nodes are writing them back.
    pub fn reconcile(
        &mut self,
        room: &str,
        truth: &[Member],
        me: &str,
        reintroduce: bool,
        prune: bool,
    ) -> Vec<Notice> {
        let Some(view) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let remote_truth: HashMap<Arc<str>, RemoteMember> = truth
            .iter()
            .filter(|m| *m.node != *me)
            .map(|m| (Arc::from(m.peer_id.as_str()), RemoteMember::of(m)))
            .collect();
        let gone: Vec<Arc<str>> = view
            .remote
            .keys()
            .filter(|p| prune && !remote_truth.contains_key(*p))
            .cloned()
            .collect();
        let came: Vec<(Arc<str>, Option<Metadata>)> = remote_truth
            .iter()
            .filter(|(p, r)| reintroduce || view.remote.get(*p) != Some(r))
            .map(|(p, r)| (p.clone(), r.metadata.clone()))
            .collect();
        let kept: Vec<(Arc<str>, RemoteMember)> = view
            .remote
            .drain()
            .filter(|(p, _)| !prune && !remote_truth.contains_key(p))
            .collect();
        view.remote = remote_truth;
        view.remote.extend(kept);
        let to: Vec<Arc<str>> = view.local.iter().cloned().collect();
        let left = gone.iter().map(|peer| {
            Outgoing::PeerLeft {
                peer_id: peer,
                reason: LeaveReason::Disconnected,
            }
            .to_frame()
        });
        let joined = came
            .iter()
            .map(|(peer, metadata)| joined_frame(peer, metadata.as_ref()));
        left.chain(joined)
            .map(|frame| Notice {
                to: to.clone(),
                frame,
            })
            .collect()
    }

    /// Where a message from `from` to `to` goes, if they share a room.
    pub fn route(&self, from: &str, to: &str) -> Result<Route, RelayError> {
        let room = self
            .peers
            .get(from)
            .and_then(|s| s.room.as_ref())
            .ok_or(RelayError::NotInRoom)?;
        if from == to {
            return Err(RelayError::PeerNotFound);
        }
        let view = self.rooms.get(room).ok_or(RelayError::PeerNotFound)?;
        if view.local.contains(to) {
            return self
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

    /// Records the room of `peer_id`'s slot.
    fn set_room(&mut self, peer_id: &str, room: Option<Arc<str>>) {
        if let Some(slot) = self.peers.get_mut(peer_id) {
            slot.room = room;
        }
    }

    /// Removes `peer` (local or remote) from this node's view of `room` and tells the
    /// local members why; a view without local members is dropped. Returns true when this
    /// node no longer has anyone in the room.
    fn remove_member(
        &mut self,
        room: &str,
        peer: &str,
        reason: LeaveReason,
    ) -> (bool, Vec<Notice>) {
        let Some(view) = self.rooms.get_mut(room) else {
            return (false, Vec::new());
        };
        let was_local = view.local.remove(peer);
        let was_remote = view.remote.remove(peer).is_some();
        if view.local.is_empty() {
            self.rooms.remove(room);
            return (was_local, Vec::new());
        }
        if !(was_local || was_remote) {
            return (false, Vec::new());
        }
        let notice = Notice {
            to: view.local.iter().cloned().collect(),
            frame: Outgoing::PeerLeft {
                peer_id: peer,
                reason,
            }
            .to_frame(),
        };
        (false, vec![notice])
    }
}

/// Records the members on other nodes in `view`; returns those it did not know as they
/// are, with their metadata.
fn learn_remote(
    view: &mut RoomView,
    members: &[Member],
    me: &str,
) -> Vec<(Arc<str>, Option<Metadata>)> {
    let mut learned = Vec::new();
    for m in members.iter().filter(|m| m.node != me) {
        let peer: Arc<str> = Arc::from(m.peer_id.as_str());
        let remote = RemoteMember::of(m);
        let metadata = remote.metadata.clone();
        if view.remote.insert(peer.clone(), remote.clone()) != Some(remote) {
            learned.push((peer, metadata));
        }
    }
    learned
}

/// `peer_joined` for `peer` with its metadata.
fn joined_frame(peer: &str, metadata: Option<&Metadata>) -> Utf8Bytes {
    Outgoing::PeerJoined {
        peer_id: peer,
        metadata: metadata.map(|m| &**m),
    }
    .to_frame()
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
