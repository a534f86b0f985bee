//! The embedded store: one process, no dependencies, same TTL semantics as Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Epoch, JoinOutcome, Member, SessionRecord, Store, StoreError};

/// Longest TTL any entry may have.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// In-memory [`Store`]. A `std::sync::Mutex` is right here: every operation is a few map
/// updates and the lock is never held across an `.await`.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Last epoch handed out.
    epoch: Epoch,
    sessions: HashMap<String, Session>,
    rooms: HashMap<String, Room>,
}

struct Session {
    #[allow(dead_code)] // read by future consumers (resume); kept to mirror the Redis hash
    record: SessionRecord,
    epoch: Epoch,
    expires: Instant,
}

struct Room {
    /// Members in join order.
    members: Vec<Member>,
    expires: Instant,
}

fn deadline(ttl: Duration) -> Instant {
    Instant::now() + ttl.min(MAX_TTL)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of live sessions and rooms (expired entries excluded), for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        let mut inner = self.lock();
        inner.purge();
        (inner.sessions.len(), inner.rooms.len())
    }
}

impl Inner {
    fn purge(&mut self) {
        let now = Instant::now();
        self.sessions.retain(|_, s| s.expires > now);
        self.rooms.retain(|_, r| r.expires > now);
    }

    fn live_session(&mut self, id: &str) -> Option<&mut Session> {
        let now = Instant::now();
        if self.sessions.get(id).is_some_and(|s| s.expires <= now) {
            self.sessions.remove(id);
        }
        self.sessions.get_mut(id)
    }

    fn live_room(&mut self, id: &str) -> Option<&mut Room> {
        let now = Instant::now();
        if self.rooms.get(id).is_some_and(|r| r.expires <= now) {
            self.rooms.remove(id);
        }
        self.rooms.get_mut(id)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn claim_session(
        &self,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<Epoch, StoreError> {
        let mut inner = self.lock();
        inner.epoch += 1;
        let epoch = inner.epoch;
        inner.sessions.insert(
            record.session_id.clone(),
            Session {
                record: record.clone(),
                epoch,
                expires: deadline(ttl),
            },
        );
        Ok(epoch)
    }

    async fn refresh_session(
        &self,
        session_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        Ok(match inner.live_session(session_id) {
            Some(s) if s.epoch == epoch => {
                s.expires = deadline(ttl);
                true
            }
            _ => false,
        })
    }

    async fn release_session(&self, session_id: &str, epoch: Epoch) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let owned = inner
            .live_session(session_id)
            .is_some_and(|s| s.epoch == epoch);
        if owned {
            inner.sessions.remove(session_id);
        }
        Ok(owned)
    }

    async fn join_room(
        &self,
        room: &str,
        member: &Member,
        capacity: usize,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError> {
        let mut inner = self.lock();
        inner.live_room(room); // drops the room if it expired
        let entry = inner.rooms.entry(room.to_string()).or_insert_with(|| Room {
            members: Vec::new(),
            expires: deadline(ttl),
        });
        entry.members.retain(|m| m.peer_id != member.peer_id);
        if entry.members.len() >= capacity {
            let empty = entry.members.is_empty();
            if empty {
                inner.rooms.remove(room);
            }
            return Ok(JoinOutcome::Full);
        }
        let before = entry.members.clone();
        entry.members.push(member.clone());
        entry.expires = deadline(ttl);
        Ok(JoinOutcome::Joined(before))
    }

    async fn leave_room(&self, room: &str, peer_id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(entry) = inner.live_room(room) {
            entry.members.retain(|m| m.peer_id != peer_id);
            if entry.members.is_empty() {
                inner.rooms.remove(room);
            }
        }
        Ok(())
    }

    async fn touch_room(&self, room: &str, ttl: Duration) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().live_room(room) {
            entry.expires = deadline(ttl);
        }
        Ok(())
    }

    async fn room_members(&self, room: &str) -> Result<Vec<Member>, StoreError> {
        Ok(self
            .lock()
            .live_room(room)
            .map(|r| r.members.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(p: &str) -> Member {
        Member {
            peer_id: p.into(),
            node: "n1".into(),
        }
    }

    fn record(s: &str) -> SessionRecord {
        SessionRecord {
            session_id: s.into(),
            user: "u".into(),
            peer_id: format!("u-{s}"),
            node: "n1".into(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn capacity_is_enforced_and_rejoin_is_idempotent() {
        let store = MemoryStore::new();
        assert_eq!(
            store.join_room("r", &member("a"), 2, HOUR).await.unwrap(),
            JoinOutcome::Joined(vec![])
        );
        assert_eq!(
            store.join_room("r", &member("b"), 2, HOUR).await.unwrap(),
            JoinOutcome::Joined(vec![member("a")])
        );
        assert_eq!(
            store.join_room("r", &member("c"), 2, HOUR).await.unwrap(),
            JoinOutcome::Full
        );
        // Re-joining does not count the peer twice.
        assert_eq!(
            store.join_room("r", &member("b"), 2, HOUR).await.unwrap(),
            JoinOutcome::Joined(vec![member("a")])
        );
    }

    #[tokio::test]
    async fn room_is_deleted_only_when_last_member_leaves() {
        let store = MemoryStore::new();
        store.join_room("r", &member("a"), 5, HOUR).await.unwrap();
        store.join_room("r", &member("b"), 5, HOUR).await.unwrap();
        store.leave_room("r", "a").await.unwrap();
        assert_eq!(store.room_members("r").await.unwrap(), vec![member("b")]);
        store.leave_room("r", "b").await.unwrap();
        assert_eq!(store.counts().1, 0);
    }

    #[tokio::test]
    async fn a_stale_epoch_cannot_refresh_or_release_its_successor() {
        let store = MemoryStore::new();
        let old = store.claim_session(&record("s"), HOUR).await.unwrap();
        let new = store.claim_session(&record("s"), HOUR).await.unwrap();
        assert!(new > old);
        assert!(!store.refresh_session("s", old, HOUR).await.unwrap());
        assert!(!store.release_session("s", old).await.unwrap());
        assert_eq!(store.counts().0, 1);
        assert!(store.release_session("s", new).await.unwrap());
        assert_eq!(store.counts().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl_and_refresh_extends_them() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        let epoch = store.claim_session(&record("s"), ttl).await.unwrap();
        store.join_room("r", &member("a"), 5, ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(store.refresh_session("s", epoch, ttl).await.unwrap());
        store.touch_room("r", ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(store.counts(), (1, 1));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(store.counts(), (0, 0));
        assert!(!store.refresh_session("s", epoch, ttl).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_is_capped_at_a_day() {
        let store = MemoryStore::new();
        store
            .claim_session(&record("s"), Duration::from_secs(7 * 24 * 3600))
            .await
            .unwrap();
        tokio::time::advance(MAX_TTL + Duration::from_secs(1)).await;
        assert_eq!(store.counts().0, 0);
    }
}
