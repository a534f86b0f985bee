//! Shared state behind a trait: sessions and room membership, every entry with a TTL.
//!
//! The embedded [`MemoryStore`] serves one node; a Redis store implements the same trait so
//! several nodes can share rooms.

mod memory;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryStore;

/// Fencing token of one connection's claim on a session; later claims get larger epochs.
pub type Epoch = u64;

/// What the store knows of a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The token's `session_id`.
    pub session_id: String,
    /// The token's `sub`.
    pub user: String,
    /// `<sub>-<session_id>`.
    pub peer_id: String,
    /// The node holding the connection.
    pub node: String,
}

/// One member of a room and the node that holds its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Peer id.
    pub peer_id: String,
    /// Node id.
    pub node: String,
}

/// Result of a join attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined; the members present before this peer (never including it).
    Joined(Vec<Member>),
    /// The room is at capacity; nothing changed.
    Full,
}

/// A store operation that failed; the hub turns it into `error` `unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the state store is unavailable: {0}")]
pub struct StoreError(pub String);

/// Sessions and rooms. Every write carries a TTL; nothing lives longer than 24 h.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes ownership of a session (replacing any earlier owner) and returns the new epoch.
    async fn claim_session(
        &self,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<Epoch, StoreError>;

    /// Extends a session's TTL if `epoch` still owns it; false when a successor took over.
    async fn refresh_session(
        &self,
        session_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Deletes a session if `epoch` still owns it; false when a successor took over.
    async fn release_session(&self, session_id: &str, epoch: Epoch) -> Result<bool, StoreError>;

    /// Adds `member` to `room` unless the room already holds `capacity` others, atomically.
    async fn join_room(
        &self,
        room: &str,
        member: &Member,
        capacity: usize,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError>;

    /// Removes `peer_id` from `room`; the room is deleted when its last member leaves.
    async fn leave_room(&self, room: &str, peer_id: &str) -> Result<(), StoreError>;

    /// Extends a room's TTL while members are active in it.
    async fn touch_room(&self, room: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Current members of `room` (empty when it does not exist).
    async fn room_members(&self, room: &str) -> Result<Vec<Member>, StoreError>;
}
