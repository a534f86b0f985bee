//! Room events on the embedded store: the same sequences, deliveries and log as on Redis,
//! kept in this process (lost with it, which docs/SERVER_API.md says).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::MemoryStore;
use crate::room::LeaveReason;
use crate::store::StoreError;
use crate::store::events::{Delivery, EventLog, EventPeer, RoomEvent, StoredEvent, kind, mark};

/// The participant of an event, as the embedded store has it.
pub(super) struct Participant<'a> {
    pub peer_id: &'a str,
    pub user: &'a str,
    pub metadata: Option<&'a str>,
}

/// Every room's events and their delivery.
pub(super) struct EventBook {
    retention: Duration,
    /// Most events the log keeps.
    log_max: usize,
    /// Last `seq` per room, kept (like on Redis) for `retention` after its last event.
    seqs: HashMap<String, (u64, Instant)>,
    /// Undelivered events per room: (position, JSON).
    streams: HashMap<String, VecDeque<(u64, String)>>,
    /// Last position handed out, in streams and the log alike.
    position: u64,
    /// Rooms due a look, by mark (see [`mark`]).
    due: HashMap<String, f64>,
    leases: HashMap<String, (String, Instant)>,
    deliveries: HashMap<String, HashMap<String, Delivery>>,
    /// Delivered events in delivery order: (position, unix ms, JSON).
    log: VecDeque<(u64, u64, String)>,
}

impl EventBook {
    pub fn new(retention: Duration, log_max: usize) -> Self {
        Self {
            retention,
            log_max,
            seqs: HashMap::new(),
            streams: HashMap::new(),
            position: 0,
            due: HashMap::new(),
            leases: HashMap::new(),
            deliveries: HashMap::new(),
            log: VecDeque::new(),
        }
    }

    /// Records one event of `room` and marks the room due now.
    pub fn emit(
        &mut self,
        room: &str,
        kind: &str,
        peer: Option<&Participant<'_>>,
        reason: Option<LeaveReason>,
    ) {
        let now = Instant::now();
        // Rooms come and go: forget lapsed sequences now and then.
        if self.seqs.len() >= 1024 && self.seqs.len().is_power_of_two() {
            self.seqs.retain(|_, (_, expires)| *expires > now);
        }
        let seq = match self.seqs.get(room) {
            Some((seq, expires)) if *expires > now => seq + 1,
            _ => 1,
        };
        self.seqs
            .insert(room.to_string(), (seq, now + self.retention));
        let id = format!("{:016x}-{seq}", crate::clock::random_u64());
        let metadata = peer
            .and_then(|p| p.metadata)
            .and_then(|m| serde_json::from_str::<&RawValue>(m).ok());
        let event = RoomEvent {
            id: &id,
            kind,
            room_id: room,
            seq,
            created_at: crate::clock::unix_millis(),
            peer: peer.map(|p| EventPeer {
                peer_id: p.peer_id,
                user_id: p.user,
                metadata,
            }),
            reason,
        };
        self.position += 1;
        self.streams
            .entry(room.to_string())
            .or_default()
            .push_back((self.position, event.to_json()));
        self.due
            .insert(room.to_string(), mark(crate::clock::unix_millis()));
    }

    /// `room_started` (when `first`) and `participant_joined`.
    pub fn joined(&mut self, room: &str, peer: &Participant<'_>, first: bool) {
        if first {
            self.emit(room, kind::ROOM_STARTED, None, None);
        }
        self.emit(room, kind::PARTICIPANT_JOINED, Some(peer), None);
    }

    /// `participant_left` and, when `last`, `room_finished`.
    pub fn left(&mut self, room: &str, peer: &Participant<'_>, reason: LeaveReason, last: bool) {
        self.emit(room, kind::PARTICIPANT_LEFT, Some(peer), Some(reason));
        if last {
            self.emit(room, kind::ROOM_FINISHED, None, None);
        }
    }
}

fn position(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

#[async_trait]
impl EventLog for MemoryStore {
    fn record_events(&self, retention: Duration, log_max: usize, _node: &str) {
        let mut inner = self.lock();
        if inner.events.is_none() {
            inner.events = Some(EventBook::new(retention, log_max));
        }
    }

    /// One due set for every node of this process: nothing is ever orphaned.
    async fn adopt_orphans(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn due_rooms(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, f64)>, StoreError> {
        let mut inner = self.lock();
        let Some(book) = inner.events.as_mut() else {
            return Ok(Vec::new());
        };
        let mut due: Vec<(String, f64)> = book
            .due
            .iter()
            .filter(|(_, m)| **m < ((now_ms + 1) * 1000) as f64)
            .map(|(r, m)| (r.clone(), *m))
            .collect();
        due.sort_by(|a, b| a.1.total_cmp(&b.1));
        due.truncate(limit);
        Ok(due)
    }

    async fn pending_rooms(&self) -> Result<usize, StoreError> {
        Ok(self.lock().events.as_ref().map_or(0, |b| b.due.len()))
    }

    async fn reschedule(
        &self,
        room: &str,
        seen: f64,
        next: Option<f64>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(book) = inner.events.as_mut() else {
            return Ok(false);
        };
        if book.due.get(room) != Some(&seen) {
            return Ok(false);
        }
        match next {
            Some(next) => {
                book.due.insert(room.to_string(), next);
            }
            None => {
                book.due.remove(room);
            }
        }
        Ok(true)
    }

    async fn lease(&self, room: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(book) = inner.events.as_mut() else {
            return Ok(false);
        };
        let now = Instant::now();
        match book.leases.get(room) {
            Some((who, until)) if *until > now && who != holder => Ok(false),
            _ => {
                book.leases
                    .insert(room.to_string(), (holder.to_string(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn unlease(&self, room: &str, holder: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(book) = inner.events.as_mut()
            && book.leases.get(room).is_some_and(|(who, _)| who == holder)
        {
            book.leases.remove(room);
        }
        Ok(())
    }

    async fn events_after(
        &self,
        room: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let after = position(after);
        Ok(inner
            .events
            .as_ref()
            .and_then(|b| b.streams.get(room))
            .map(|stream| {
                stream
                    .iter()
                    .filter(|(p, _)| *p > after)
                    .take(limit)
                    .map(|(p, json)| StoredEvent {
                        position: p.to_string(),
                        json: json.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn deliveries(&self, room: &str) -> Result<HashMap<String, Delivery>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .as_ref()
            .and_then(|b| b.deliveries.get(room).cloned())
            .unwrap_or_default())
    }

    async fn set_delivery(
        &self,
        room: &str,
        endpoint: &str,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        if let Some(book) = self.lock().events.as_mut() {
            book.deliveries
                .entry(room.to_string())
                .or_default()
                .insert(endpoint.to_string(), delivery.clone());
        }
        Ok(())
    }

    async fn trim_events(&self, room: &str, through: &str) -> Result<(), StoreError> {
        let through = position(through);
        if let Some(book) = self.lock().events.as_mut()
            && let Some(stream) = book.streams.get_mut(room)
        {
            while stream.front().is_some_and(|(p, _)| *p <= through) {
                stream.pop_front();
            }
            if stream.is_empty() {
                book.streams.remove(room);
                book.deliveries.remove(room);
            }
        }
        Ok(())
    }

    async fn log_append(&self, json: &str) -> Result<String, StoreError> {
        let mut inner = self.lock();
        let Some(book) = inner.events.as_mut() else {
            return Err(StoreError("room events are off".into()));
        };
        book.position += 1;
        let at = book.position;
        book.log
            .push_back((at, crate::clock::unix_millis(), json.to_string()));
        while book.log.len() > book.log_max {
            book.log.pop_front();
        }
        Ok(at.to_string())
    }

    async fn log_read(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let after = after.map_or(0, position);
        Ok(inner
            .events
            .as_ref()
            .map(|b| {
                b.log
                    .iter()
                    .filter(|(p, _, _)| *p > after)
                    .take(limit)
                    .map(|(p, _, json)| StoredEvent {
                        position: p.to_string(),
                        json: json.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn log_trim(&self, before_ms: u64) -> Result<(), StoreError> {
        if let Some(book) = self.lock().events.as_mut() {
            while book.log.front().is_some_and(|(_, at, _)| *at < before_ms) {
                book.log.pop_front();
            }
        }
        Ok(())
    }
}
