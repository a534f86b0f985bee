//! Room vocabulary shared by the wire protocol and the bus between nodes.
//!
//! A leaf, so the bus can carry why a peer left without depending on the signaling
//! service that tells clients.

use serde::Serialize;

/// Why a peer left a room, as told to the others in `peer_left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave` or joined another room.
    Left,
    /// Its connection closed.
    Disconnected,
    /// It stopped answering.
    Timeout,
    /// A newer connection of its session took over.
    Replaced,
    /// The node holding its connection died.
    NodeLost,
    /// The app's backend removed it (server API).
    Removed,
    /// Its session was revoked (`POST /auth/revoke`).
    Revoked,
}

impl LeaveReason {
    /// The wire name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Timeout => "timeout",
            LeaveReason::Replaced => "replaced",
            LeaveReason::NodeLost => "node_lost",
            LeaveReason::Removed => "removed",
            LeaveReason::Revoked => "revoked",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            LeaveReason::Left,
            LeaveReason::Disconnected,
            LeaveReason::Timeout,
            LeaveReason::Replaced,
            LeaveReason::NodeLost,
            LeaveReason::Removed,
            LeaveReason::Revoked,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}
