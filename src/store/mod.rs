//! Shared state behind a trait: sessions, room membership and node liveness, every entry
//! with a TTL.
//!
//! The embedded [`MemoryStore`] serves one process (and can be shared by several hubs in
//! one process, as tests do); [`RedisStore`] lets many nodes share rooms.

pub mod events;
mod memory;
mod redis;
mod redis_events;

use std::time::Duration;

use async_trait::async_trait;

/// Re-exported: store callers name it here, while Redis and the bus take it from the leaf.
pub use crate::error::StoreError;
use crate::room::LeaveReason;
pub use events::EventLog;
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Fencing token of one connection's claim on a session; later claims get larger epochs.
pub type Epoch = u64;

/// Longest TTL any entry may have.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

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

/// The owner a claim displaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// Node that held the session.
    pub node: String,
    /// Its epoch.
    pub epoch: Epoch,
    /// The room it was in, if any.
    pub room: Option<String>,
}

/// Result of claiming a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// This connection's epoch.
    pub epoch: Epoch,
    /// The connection it replaces, if the session was live.
    pub previous: Option<Previous>,
}

/// One member of a room: which connection (epoch) on which node, and the participant
/// facts the server API reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Peer id.
    pub peer_id: String,
    /// Node id.
    pub node: String,
    /// Epoch of the connection that joined.
    pub epoch: Epoch,
    /// The user id (the token's `sub`); empty for entries written before it was kept.
    pub user: String,
    /// When the peer joined the room (unix ms); 0 when unknown.
    pub joined_at: u64,
    /// The participant's metadata: a JSON object as text.
    pub metadata: Option<String>,
}

/// How a join writes a member that is already in the room (a session moving between
/// connections or nodes, or written back after the store lost it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seating {
    /// Write the member as given.
    Fresh,
    /// Keep the entry's join time, user and metadata; take only the node and epoch.
    Keep,
}

/// Result of a join attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined; the members present before this peer (never including it), and the entry
    /// as written (with what [`Seating::Keep`] kept).
    Joined {
        /// The other members.
        before: Vec<Member>,
        /// This member as the store now holds it.
        seated: Member,
    },
    /// The room is at capacity; nothing changed.
    Full,
}

/// A room as the server API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// Room id.
    pub room: String,
    /// Number of members.
    pub peers: usize,
    /// When its first member joined (unix ms); 0 when unknown.
    pub created_at: u64,
}

/// A room with its members, for the server API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// When its first member joined (unix ms); 0 when unknown.
    pub created_at: u64,
    /// Its members, in no particular order.
    pub members: Vec<Member>,
}

/// What removing a dead node changed in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The room.
    pub room: String,
    /// The dead node's members that were removed.
    pub removed: Vec<Member>,
    /// Who is still in the room and must be told.
    pub remaining: Vec<Member>,
}

/// Sessions, rooms and nodes. Every write carries a TTL; nothing lives longer than 24 h.
#[async_trait]
pub trait Store: EventLog + Send + Sync + 'static {
    /// Takes ownership of a session (displacing any earlier owner) and returns the new epoch.
    async fn claim_session(
        &self,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<Claim, StoreError>;

    /// Writes a session back after the store lost it (outage, restart), keeping `epoch`;
    /// false when a newer connection owns it meanwhile.
    async fn restore_session(
        &self,
        record: &SessionRecord,
        epoch: Epoch,
        room: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Extends a session's TTL if `epoch` still owns it; false when a successor took over.
    async fn refresh_session(
        &self,
        session_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Records the room a session is in, if `epoch` still owns it.
    async fn set_session_room(
        &self,
        session_id: &str,
        epoch: Epoch,
        room: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Deletes a session of `node` if `epoch` still owns it; false when a successor took over.
    async fn release_session(
        &self,
        node: &str,
        session_id: &str,
        epoch: Epoch,
    ) -> Result<bool, StoreError>;

    /// Adds `member` to `room` unless the room already holds `capacity` others, atomically.
    /// A peer already present (an older epoch) is replaced, not counted twice; `seating`
    /// says whether its join time and metadata are kept.
    async fn join_room(
        &self,
        room: &str,
        member: &Member,
        seating: Seating,
        capacity: usize,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError>;

    /// Sets the metadata of `peer_id` in `room` if it is there with `epoch`, returning
    /// every member (it included); `None` when it is not.
    async fn set_metadata(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        metadata: &str,
    ) -> Result<Option<Vec<Member>>, StoreError>;

    /// A room and its members; `None` when it has none.
    async fn room_info(&self, room: &str) -> Result<Option<RoomInfo>, StoreError>;

    /// Every room with members, on every registered node.
    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError>;

    /// Removes `peer_id` from `room` if it is there with `epoch` (it left for `reason`),
    /// returning who remains; `None` when it was not (a successor owns the membership). An
    /// empty room is deleted.
    async fn leave_room(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        reason: LeaveReason,
    ) -> Result<Option<Vec<Member>>, StoreError>;

    /// Notes that `node` has no members left in `room` (keeps the cleanup index small).
    async fn unindex_room(&self, node: &str, room: &str) -> Result<(), StoreError>;

    /// Extends a room's TTL while members are active in it.
    async fn touch_room(&self, room: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Current members of `room` (empty when it does not exist).
    async fn room_members(&self, room: &str) -> Result<Vec<Member>, StoreError>;

    /// Marks `node` alive for `ttl` and keeps its registration; returns false when the
    /// registration had vanished (first heartbeat, eviction while alive, or lost data).
    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Registered nodes other than `me` whose heartbeat has expired.
    async fn dead_nodes(&self, me: &str) -> Result<Vec<String>, StoreError>;

    /// Number of live nodes.
    async fn live_node_count(&self) -> Result<usize, StoreError>;

    /// Takes the right to clean up `dead` for `ttl`; exactly one caller gets true.
    async fn claim_cleanup(&self, dead: &str, me: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Removes a dead node's members from every room and its sessions, then forgets it.
    async fn evict_node(&self, dead: &str) -> Result<Vec<Eviction>, StoreError>;

    /// Whether `node` was evicted (declared dead) since it last asked; clears the notice.
    /// A node that finds its registration gone tells eviction from lost data this way.
    async fn take_eviction_notice(&self, node: &str) -> Result<bool, StoreError>;

    /// Removes a node's heartbeat and registration (clean shutdown).
    async fn forget_node(&self, node: &str) -> Result<(), StoreError>;

    /// Who holds a live session: its node, epoch, peer id and remaining TTL.
    async fn session_owner(&self, session_id: &str) -> Result<Option<Owner>, StoreError>;

    /// Marks a session revoked for `ttl`.
    async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError>;

    /// True while a session is revoked.
    async fn is_revoked(&self, session_id: &str) -> Result<bool, StoreError>;

    /// Appends frames to a session's resume queue, kept for `ttl`: how a parked session's
    /// messages move to the node it resumes on.
    async fn spool(
        &self,
        session_id: &str,
        frames: &[String],
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Takes a session's resume queue (in order) and deletes it.
    async fn take_spool(&self, session_id: &str) -> Result<Vec<String>, StoreError>;
}

/// The connection that currently owns a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Node holding it.
    pub node: String,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its peer id.
    pub peer_id: String,
    /// How long the session record still lives.
    pub ttl: Duration,
}
