//! Cross-node delivery: each node reads its own ordered, durable inbox, so a message for a
//! peer on another node is handed to that node without being lost while it reconnects.

mod courier;
mod memory;
mod redis;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use courier::{
    AppendError, Courier, EntryId, Fate, HoldLimits, Outgoing, Pin, Progress, Transport,
};
pub use memory::MemoryBus;
pub use redis::RedisBus;

use crate::error::StoreError;
use crate::net::websocket::Utf8Bytes;
use crate::room::LeaveReason;
use crate::store::Epoch;

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// Write `frame` to local peer `to`.
    Deliver {
        /// Target peer id.
        to: String,
        /// The serialised server message.
        frame: Utf8Bytes,
    },
    /// A peer on another node joined `room`.
    PeerJoined {
        /// Room id.
        room: String,
        /// Peer id.
        peer: String,
        /// Node holding it.
        node: String,
        /// Its connection's epoch.
        epoch: Epoch,
        /// Its metadata (a JSON object), if any.
        metadata: Option<String>,
    },
    /// A member's metadata changed (the membership with `epoch` only).
    PeerUpdated {
        /// Room id.
        room: String,
        /// Peer id.
        peer: String,
        /// Epoch of its membership.
        epoch: Epoch,
        /// Its metadata now (a JSON object).
        metadata: String,
    },
    /// The app's backend acts on local member `peer` (membership `epoch`) of `room`.
    Moderate {
        /// Room id.
        room: String,
        /// Peer id.
        peer: String,
        /// Epoch of its membership.
        epoch: Epoch,
        /// What to do.
        action: Moderation,
    },
    /// A peer left `room` (the membership with `epoch` only).
    PeerLeft {
        /// Room id.
        room: String,
        /// Peer id.
        peer: String,
        /// Epoch of the membership that ended.
        epoch: Epoch,
        /// Why, for `peer_left`.
        reason: LeaveReason,
    },
    /// The session reconnected on `node` with `new_epoch`: a parked connection with `epoch`
    /// moves its queue to the store and answers [`BusMessage::HandedOver`]; a live one is
    /// closed as replaced (4004).
    Handover {
        /// Peer id.
        peer: String,
        /// Epoch of the displaced connection.
        epoch: Epoch,
        /// Node of the new connection.
        node: String,
        /// Epoch of the new connection.
        new_epoch: Epoch,
    },
    /// Answer to [`BusMessage::Handover`]: whether the new connection resumes the session.
    HandedOver {
        /// Peer id.
        peer: String,
        /// Epoch of the new connection.
        epoch: Epoch,
        /// True when the session was parked and its queue is in the store.
        resumed: bool,
    },
    /// A peer's session resumed on another node: route to it there; nobody is told.
    PeerMoved {
        /// Room id.
        room: String,
        /// Peer id.
        peer: String,
        /// Node now holding it.
        node: String,
        /// Epoch of its new connection.
        epoch: Epoch,
        /// Its metadata (a JSON object), if any.
        metadata: Option<String>,
    },
    /// Sent to the node a peer moved away from by a node that was routing to it there:
    /// answer [`BusMessage::Flushed`] to `reply_to` once every message received before this
    /// one was forwarded.
    Flush {
        /// Peer id.
        peer: String,
        /// Node to answer.
        reply_to: String,
    },
    /// Answer to [`BusMessage::Flush`]: what was sent to `peer` through the old node is on
    /// its way to the new one, so messages may now go there directly.
    Flushed {
        /// Peer id.
        peer: String,
    },
    /// The session was revoked: close the connection with `epoch` (1008).
    Revoke {
        /// Peer id.
        peer: String,
        /// Epoch of the connection to close.
        epoch: Epoch,
    },
}

/// What the app's backend does to a member through the server API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderation {
    /// Take it out of the room (`removed`; the others hear `peer_left` `removed`).
    Remove,
    /// The room is closed: take it out (`room_closed`).
    Close,
    /// Set its metadata (a JSON object).
    SetMetadata(String),
}

impl Moderation {
    fn encode(&self) -> (String, String) {
        match self {
            Moderation::Remove => ("remove".into(), String::new()),
            Moderation::Close => ("close".into(), String::new()),
            Moderation::SetMetadata(m) => ("metadata".into(), m.clone()),
        }
    }

    fn decode(action: &str, value: String) -> Option<Self> {
        match action {
            "remove" => Some(Moderation::Remove),
            "close" => Some(Moderation::Close),
            "metadata" => Some(Moderation::SetMetadata(value)),
            _ => None,
        }
    }
}

/// What a node reads its messages from, in publish order, each once.
pub type Subscription = mpsc::Receiver<BusMessage>;

/// Why a message was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// Its node could not be reached within the hold (`FAILOVER_HOLD`).
    Expired,
    /// Its node was declared lost before reading it.
    NodeLost,
    /// Too much is already held for its node.
    Full,
}

impl Undelivered {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Undelivered::Expired => "expired",
            Undelivered::NodeLost => "node_lost",
            Undelivered::Full => "full",
        }
    }
}

/// Runs once if a message cannot be delivered, so its sender can be told.
pub type OnLost = Box<dyn FnOnce(Undelivered) + Send + Sync>;

/// Hands messages to other nodes.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Queues `message` for `node`, behind what was queued for it before, and returns at
    /// once. It is delivered once, or `lost` runs (once).
    fn send(&self, node: &str, message: BusMessage, lost: Option<OnLost>);

    /// Resolves once everything queued before the call was handed to its node's inbox or
    /// given up on.
    async fn flushed(&self);

    /// `node` was declared lost: what it has not read is withdrawn and reported now.
    fn abandon(&self, node: &str);

    /// Closes a lost node's inbox: later sends to it are reported at once.
    async fn close(&self, node: &str) -> Result<(), StoreError>;

    /// Starts reading this node's inbox from now on.
    async fn subscribe(&self, node: &str) -> Result<Subscription, StoreError>;
}

impl BusMessage {
    /// Flat field/value pairs (the shape of a Redis stream entry).
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        match self {
            BusMessage::Deliver { to, frame } => {
                vec![
                    ("k", "d".into()),
                    ("to", to.clone()),
                    ("f", frame.to_string()),
                ]
            }
            BusMessage::PeerJoined {
                room,
                peer,
                node,
                epoch,
                metadata,
            } => with_metadata(
                vec![
                    ("k", "j".into()),
                    ("room", room.clone()),
                    ("peer", peer.clone()),
                    ("node", node.clone()),
                    ("epoch", epoch.to_string()),
                ],
                metadata,
            ),
            BusMessage::PeerUpdated {
                room,
                peer,
                epoch,
                metadata,
            } => vec![
                ("k", "u".into()),
                ("room", room.clone()),
                ("peer", peer.clone()),
                ("epoch", epoch.to_string()),
                ("meta", metadata.clone()),
            ],
            BusMessage::Moderate {
                room,
                peer,
                epoch,
                action,
            } => {
                let (action, value) = action.encode();
                vec![
                    ("k", "a".into()),
                    ("room", room.clone()),
                    ("peer", peer.clone()),
                    ("epoch", epoch.to_string()),
                    ("act", action),
                    ("meta", value),
                ]
            }
            BusMessage::PeerLeft {
                room,
                peer,
                epoch,
                reason,
            } => vec![
                ("k", "l".into()),
                ("room", room.clone()),
                ("peer", peer.clone()),
                ("epoch", epoch.to_string()),
                ("reason", reason.as_str().into()),
            ],
            BusMessage::Handover {
                peer,
                epoch,
                node,
                new_epoch,
            } => vec![
                ("k", "h".into()),
                ("peer", peer.clone()),
                ("epoch", epoch.to_string()),
                ("node", node.clone()),
                ("new", new_epoch.to_string()),
            ],
            BusMessage::HandedOver {
                peer,
                epoch,
                resumed,
            } => vec![
                ("k", "o".into()),
                ("peer", peer.clone()),
                ("epoch", epoch.to_string()),
                ("resumed", u8::from(*resumed).to_string()),
            ],
            BusMessage::PeerMoved {
                room,
                peer,
                node,
                epoch,
                metadata,
            } => with_metadata(
                vec![
                    ("k", "m".into()),
                    ("room", room.clone()),
                    ("peer", peer.clone()),
                    ("node", node.clone()),
                    ("epoch", epoch.to_string()),
                ],
                metadata,
            ),
            BusMessage::Flush { peer, reply_to } => vec![
                ("k", "x".into()),
                ("peer", peer.clone()),
                ("reply", reply_to.clone()),
            ],
            BusMessage::Flushed { peer } => vec![("k", "y".into()), ("peer", peer.clone())],
            BusMessage::Revoke { peer, epoch } => vec![
                ("k", "r".into()),
                ("peer", peer.clone()),
                ("epoch", epoch.to_string()),
            ],
        }
    }

    /// Rebuilds a message from field/value pairs; `None` for anything malformed.
    pub fn from_fields(mut fields: std::collections::HashMap<String, String>) -> Option<Self> {
        let mut take = |name: &str| fields.remove(name);
        let kind = take("k")?;
        Some(match kind.as_str() {
            "d" => BusMessage::Deliver {
                to: take("to")?,
                frame: take("f")?.into(),
            },
            "j" => BusMessage::PeerJoined {
                room: take("room")?,
                peer: take("peer")?,
                node: take("node")?,
                epoch: take("epoch")?.parse().ok()?,
                metadata: take("meta"),
            },
            "u" => BusMessage::PeerUpdated {
                room: take("room")?,
                peer: take("peer")?,
                epoch: take("epoch")?.parse().ok()?,
                metadata: take("meta")?,
            },
            "a" => BusMessage::Moderate {
                room: take("room")?,
                peer: take("peer")?,
                epoch: take("epoch")?.parse().ok()?,
                action: Moderation::decode(&take("act")?, take("meta").unwrap_or_default())?,
            },
            "l" => BusMessage::PeerLeft {
                room: take("room")?,
                peer: take("peer")?,
                epoch: take("epoch")?.parse().ok()?,
                reason: LeaveReason::parse(&take("reason")?)?,
            },
            "h" => BusMessage::Handover {
                peer: take("peer")?,
                epoch: take("epoch")?.parse().ok()?,
                node: take("node")?,
                new_epoch: take("new")?.parse().ok()?,
            },
            "o" => BusMessage::HandedOver {
                peer: take("peer")?,
                epoch: take("epoch")?.parse().ok()?,
                resumed: take("resumed")? == "1",
            },
            "m" => BusMessage::PeerMoved {
                room: take("room")?,
                peer: take("peer")?,
                node: take("node")?,
                epoch: take("epoch")?.parse().ok()?,
                metadata: take("meta"),
            },
            "x" => BusMessage::Flush {
                peer: take("peer")?,
                reply_to: take("reply")?,
            },
            "y" => BusMessage::Flushed {
                peer: take("peer")?,
            },
            "r" => BusMessage::Revoke {
                peer: take("peer")?,
                epoch: take("epoch")?.parse().ok()?,
            },
            _ => return None,
        })
    }
}

/// `fields` with the `meta` field when there is metadata.
fn with_metadata(
    mut fields: Vec<(&'static str, String)>,
    metadata: &Option<String>,
) -> Vec<(&'static str, String)> {
    if let Some(metadata) = metadata {
        fields.push(("meta", metadata.clone()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let messages = [
            BusMessage::Deliver {
                to: "a-1".into(),
                frame: r#"{"type":"offer","sdp":"ü"}"#.into(),
            },
            BusMessage::PeerJoined {
                room: "r".into(),
                peer: "p".into(),
                node: "n".into(),
                epoch: 7,
                metadata: None,
            },
            BusMessage::PeerJoined {
                room: "r".into(),
                peer: "p".into(),
                node: "n".into(),
                epoch: 7,
                metadata: Some(r#"{"name":"Ann"}"#.into()),
            },
            BusMessage::PeerUpdated {
                room: "r".into(),
                peer: "p".into(),
                epoch: 7,
                metadata: r#"{"muted":true}"#.into(),
            },
            BusMessage::Moderate {
                room: "r".into(),
                peer: "p".into(),
                epoch: 7,
                action: Moderation::Remove,
            },
            BusMessage::Moderate {
                room: "r".into(),
                peer: "p".into(),
                epoch: 7,
                action: Moderation::Close,
            },
            BusMessage::Moderate {
                room: "r".into(),
                peer: "p".into(),
                epoch: 7,
                action: Moderation::SetMetadata("{}".into()),
            },
            BusMessage::PeerLeft {
                room: "r".into(),
                peer: "p".into(),
                epoch: 7,
                reason: LeaveReason::NodeLost,
            },
            BusMessage::Handover {
                peer: "p".into(),
                epoch: 3,
                node: "n2".into(),
                new_epoch: 9,
            },
            BusMessage::Flush {
                peer: "p".into(),
                reply_to: "n1".into(),
            },
            BusMessage::Flushed { peer: "p".into() },
            BusMessage::HandedOver {
                peer: "p".into(),
                epoch: 9,
                resumed: true,
            },
            BusMessage::PeerMoved {
                room: "r".into(),
                peer: "p".into(),
                node: "n2".into(),
                epoch: 9,
                metadata: Some("{}".into()),
            },
            BusMessage::Revoke {
                peer: "p".into(),
                epoch: 4,
            },
        ];
        for m in messages {
            let fields = m
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(BusMessage::from_fields(fields), Some(m));
        }
    }
}
