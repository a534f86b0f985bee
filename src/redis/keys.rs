//! Key names of the Redis schema. Room keys carry a hash tag so a room lives on one
//! Cluster shard; per-node keys carry the node as tag.

/// Builds keys under a prefix (default `sb:`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix, for SCAN patterns.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Session hash: user, peer, node, epoch, room, state.
    pub fn session(&self, session: &str) -> String {
        format!("{}sess:{session}", self.prefix)
    }

    /// Room membership hash: peer → `node|epoch`.
    pub fn room(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:members", self.prefix)
    }

    /// Room facts hash, in the members' slot: `created` (unix ms).
    pub fn room_info(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:info", self.prefix)
    }

    /// Members' facts, in the members' slot: peer → `joinedAtMs|user\nmetadata`.
    pub fn room_facts(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:facts", self.prefix)
    }

    /// Last event sequence number of a room (kept between room lifetimes).
    pub fn room_seq(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:seq", self.prefix)
    }

    /// A room's undelivered events (a stream of `e` = event JSON).
    pub fn room_events(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:events", self.prefix)
    }

    /// Which node delivers a room's events now.
    pub fn room_lease(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:lease", self.prefix)
    }

    /// Per webhook endpoint, how far it got with a room's events.
    pub fn room_delivery(&self, room: &str) -> String {
        format!("{}room:{{{room}}}:delivery", self.prefix)
    }

    /// Rooms a node changed that may have undelivered events, scored by when to look at
    /// them; in the node's own slot, so a room's change fails only with its own shard or
    /// its node's.
    pub fn node_due(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:due", self.prefix)
    }

    /// Nodes that have (or had) a due set: where a dispatcher looks for the sets of nodes
    /// that are gone, to take them over.
    pub fn due_owners(&self) -> String {
        format!("{}events:owners", self.prefix)
    }

    /// Every delivered event in delivery order, for the pull API.
    pub fn events_log(&self) -> String {
        format!("{}events:log", self.prefix)
    }

    /// A node's heartbeat key.
    pub fn node(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }

    /// Registry of nodes: node → last heartbeat (unix seconds).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Rooms a node has (or had) members in, for cleanup after its death.
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:rooms", self.prefix)
    }

    /// Sessions a node holds, for cleanup after its death.
    pub fn node_sessions(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:sessions", self.prefix)
    }

    /// A node's inbox stream.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:inbox", self.prefix)
    }

    /// The read marker of a node's inbox: `generation|last read id`, with `|closed` once
    /// the node was declared lost. Same hash tag as the inbox, so scripts touch both.
    pub fn inbox_read(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:read", self.prefix)
    }

    /// Per sending process, the oldest entry of `node`'s inbox it still needs kept (read or
    /// not) until it knows what became of it: `id|expiry ms`.
    pub fn inbox_pins(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:pins", self.prefix)
    }

    /// A value that changes whenever a sender deletes unread entries from `node`'s inbox
    /// (and never returns to one it had): while it stands still, every entry the node read
    /// since is still there, and its commits need not look.
    pub fn inbox_withdrawals(&self, node: &str) -> String {
        format!("{}node:{{{node}}}:withdrawals", self.prefix)
    }

    /// Resume queue of a session moving between nodes.
    pub fn spool(&self, session: &str) -> String {
        format!("{}queue:{session}", self.prefix)
    }

    /// Revocation marker of a session.
    pub fn revoked(&self, session: &str) -> String {
        format!("{}revoked:{session}", self.prefix)
    }

    /// Notice left for a node evicted while it may still be alive (cut off from Redis).
    pub fn evicted(&self, node: &str) -> String {
        format!("{}evicted:{node}", self.prefix)
    }

    /// Lock taken by the survivor cleaning up a dead node.
    pub fn cleanup(&self, node: &str) -> String {
        format!("{}cleanup:{node}", self.prefix)
    }
}
