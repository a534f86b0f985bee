//! Room events: what the store records, in the same atomic step as the membership change
//! that causes it, and the bookkeeping of their delivery.
//!
//! A room's events form one sequence (`seq` 1, 2, 3, …, no gaps) because only the store
//! allocates them, inside the change itself: a join of a peer not yet in the room writes
//! `room_started` (when the room was empty) and `participant_joined`; a leave that removes
//! a membership writes `participant_left` and, for the last member, `room_finished`; a
//! metadata change writes `participant_updated`; evicting a dead node writes
//! `participant_left` `node_lost`. A session moving between connections or nodes changes
//! nothing, and so writes nothing.
//!
//! Delivery state lives beside the events (per room, per endpoint: the last entry
//! delivered, the failed attempts at the next and when the next attempt is due). Each
//! node keeps a set of the rooms it changed that may have undelivered events, each due at
//! a time, which tells its dispatcher where to look: a room is marked due before its
//! change runs, so a crash between the two leaves a due room, never a lost event, and a
//! live node takes over the set of a node that is gone. A change marks its room due now
//! even while an endpoint waits out a backoff: the room's other endpoints need the new
//! event, and the waiting one is skipped until its own time, which its delivery state
//! keeps.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;

use super::StoreError;
use crate::room::LeaveReason;

/// How long a room may stay marked due after its last change even if nothing seems
/// pending: a change marks the room before it runs, so one still on its way (a slow call)
/// lands well within this margin and is found on the room's next look.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(30);

/// A mark for a room due at `due_ms`: the due time in thousandths of a millisecond (an
/// integer, exact in a double as Redis keeps scores), whose last three digits tell marks of
/// one millisecond apart: 0–998 at random for a change (or a retry), 999 for a dispatcher's
/// own settling check.
pub fn mark(due_ms: u64) -> f64 {
    (due_ms * 1000 + crate::clock::random_u64() % 999) as f64
}

/// The mark of a dispatcher's settling check at `due_ms` (see [`mark`]).
pub fn settle_mark(due_ms: u64) -> f64 {
    (due_ms * 1000 + 999) as f64
}

/// Whether `mark` is a settling check's: nothing marked the room since it was set.
pub fn is_settle_mark(mark: f64) -> bool {
    (mark as u64) % 1000 == 999
}

/// Event types, by their wire names.
pub mod kind {
    /// The first member joined an empty room.
    pub const ROOM_STARTED: &str = "room_started";
    /// A peer joined.
    pub const PARTICIPANT_JOINED: &str = "participant_joined";
    /// A member's metadata changed.
    pub const PARTICIPANT_UPDATED: &str = "participant_updated";
    /// A member left, with a `reason`.
    pub const PARTICIPANT_LEFT: &str = "participant_left";
    /// The last member left.
    pub const ROOM_FINISHED: &str = "room_finished";
}

/// One room event as JSON consumers read it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomEvent<'a> {
    /// Unique: a consumer drops a repeated delivery by it.
    pub id: &'a str,
    /// One of [`kind`].
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The room.
    pub room_id: &'a str,
    /// Position in the room's sequence, from 1.
    pub seq: u64,
    /// When the change happened (unix ms).
    pub created_at: u64,
    /// The participant, for participant events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<EventPeer<'a>>,
    /// Why it left, for `participant_left`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<LeaveReason>,
}

/// The participant of an event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPeer<'a> {
    /// Peer id.
    pub peer_id: &'a str,
    /// User id.
    pub user_id: &'a str,
    /// Its metadata (a JSON object), or `null`.
    pub metadata: Option<&'a RawValue>,
}

impl RoomEvent<'_> {
    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialise")
    }
}

/// An event as stored: its position in its room's stream or the log, and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Where it is: pass it back as `after` to read what follows.
    pub position: String,
    /// The event.
    pub json: String,
}

/// How far one endpoint got with one room's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Position of the last event acknowledged (or given up on); empty before the first.
    pub cursor: String,
    /// Attempts at the next event that failed.
    pub attempts: u32,
    /// When the next attempt is due (unix ms); 0 when it may go now.
    pub retry_at: u64,
    /// The `seq` the next event must carry (else events went missing); 0 while unknown.
    pub next_seq: u64,
}

impl Delivery {
    /// `cursor|attempts|retry_at|next_seq`.
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.cursor, self.attempts, self.retry_at, self.next_seq
        )
    }

    /// Reads [`Delivery::encode`]'s text; a malformed one reads as a fresh start, missing
    /// fields as 0.
    pub fn decode(text: &str) -> Self {
        let mut parts = text.splitn(4, '|');
        let cursor = parts.next().unwrap_or_default().to_string();
        let mut number = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Delivery {
            cursor,
            attempts: number() as u32,
            retry_at: number(),
            next_seq: number(),
        }
    }
}

/// Where events wait for delivery: per room a stream and its deliveries, the rooms due a
/// look, and one log of every delivered event in delivery order (for the pull API).
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Records room events from now on (they are off until called), keeping them and the
    /// room sequences for `retention`, and at most `log_max` events in the log; `node` is
    /// the node whose changes this store records (its rooms due are kept under its id).
    fn record_events(&self, retention: Duration, log_max: usize, node: &str);

    /// Takes over the rooms due of nodes that are gone (crashed, or shut down with rooms
    /// still due); returns how many rooms moved.
    async fn adopt_orphans(&self) -> Result<usize, StoreError>;

    /// Rooms due a look at `now_ms`, at most `limit`, each with its mark (for
    /// [`EventLog::reschedule`]).
    async fn due_rooms(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, f64)>, StoreError>;

    /// Rooms in this node's due set: possibly undelivered, waiting out a backoff, or
    /// awaiting their settling check.
    async fn pending_rooms(&self) -> Result<usize, StoreError>;

    /// If `room` still has the mark `seen` (no change marked it since), gives it the mark
    /// `next` (see [`mark`]), or forgets it when `None`; false when a change marked it
    /// meanwhile.
    async fn reschedule(
        &self,
        room: &str,
        seen: f64,
        next: Option<f64>,
    ) -> Result<bool, StoreError>;

    /// Takes the right to deliver `room`'s events for `ttl`; one holder at a time.
    async fn lease(&self, room: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the right back, if `holder` has it.
    async fn unlease(&self, room: &str, holder: &str) -> Result<(), StoreError>;

    /// Up to `limit` events of `room` after position `after` (all when empty), in order.
    async fn events_after(
        &self,
        room: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Each endpoint's delivery of `room`'s events, by endpoint name.
    async fn deliveries(&self, room: &str) -> Result<HashMap<String, Delivery>, StoreError>;

    /// Records `endpoint`'s delivery of `room`'s events.
    async fn set_delivery(
        &self,
        room: &str,
        endpoint: &str,
        delivery: &Delivery,
    ) -> Result<(), StoreError>;

    /// Drops `room`'s events up to and including position `through` (every endpoint has them).
    async fn trim_events(&self, room: &str, through: &str) -> Result<(), StoreError>;

    /// Appends an event to the log; returns its position there.
    async fn log_append(&self, json: &str) -> Result<String, StoreError>;

    /// Up to `limit` events of the log after position `after` (from the oldest when `None`).
    async fn log_read(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Drops log entries older than `before_ms`.
    async fn log_trim(&self, before_ms: u64) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_reads_back_as_written_and_older_records_read_as_a_start() {
        let delivery = Delivery {
            cursor: "1767225600123-4".into(),
            attempts: 3,
            retry_at: 1_767_225_607_000,
            next_seq: 12,
        };
        assert_eq!(Delivery::decode(&delivery.encode()), delivery);
        // An older build's `cursor|attempts|failing_since`: its time is past, so due now.
        let older = Delivery::decode("5-1|2|1767225600000");
        assert_eq!(
            (older.cursor.as_str(), older.attempts, older.next_seq),
            ("5-1", 2, 0)
        );
        assert_eq!(
            Delivery::decode("garbage"),
            Delivery {
                cursor: "garbage".into(),
                ..Delivery::default()
            }
        );
    }
}
