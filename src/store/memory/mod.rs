//! The embedded store: no dependencies, the same semantics and TTLs as the Redis store.
//! Several hubs may share one instance, which is how tests run "many nodes" in one process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

mod events;

use crate::identifier;
use crate::room::LeaveReason;
use events::{EventBook, Participant};

use super::{
    Claim, Epoch, Eviction, JoinOutcome, MAX_TTL, Member, Owner, Previous, RoomInfo, RoomSummary,
    Seating, SessionRecord, Store, StoreError,
};

/// In-memory [`Store`]. A `std::sync::Mutex` is right here: every operation is a few map
/// updates and the lock is never held across an `.await`.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Last epoch handed out; never reset, so epochs only grow.
    epoch: Epoch,
    /// Keyed by session id; the key is shared with the node's index.
    sessions: HashMap<Arc<str>, Session>,
    /// Keyed by room id; the key is shared with the node indexes and the members' sessions.
    rooms: HashMap<Arc<str>, Room>,
    /// Heartbeat expiry per node.
    alive: HashMap<String, Instant>,
    /// Registered nodes with the rooms and sessions they hold; the key is the one copy of
    /// the node's id its sessions share.
    nodes: HashMap<Arc<str>, NodeIndex>,
    /// Cleanup locks per dead node.
    cleanup: HashMap<String, Instant>,
    /// Revoked sessions and when the revocation lapses.
    revoked: HashMap<String, Instant>,
    /// Resume queues of sessions moving between nodes, and when each lapses.
    spools: HashMap<String, (Vec<String>, Instant)>,
    /// Nodes evicted while they may still be alive, until they ask.
    evicted: HashSet<String>,
    /// Room events, when they are recorded.
    events: Option<EventBook>,
}

/// A live session, kept compact (one per connection of every node): the session id is
/// the map's key, the node, room and peer ids are shared, and the user is not kept
/// (nothing reads it back).
struct Session {
    node: Arc<str>,
    peer_id: Arc<str>,
    epoch: Epoch,
    room: Option<Arc<str>>,
    expires: Instant,
}

/// A room member, kept compact (one per joined connection): its node id is the node
/// index's copy, and its peer id the session's once the session records the room.
#[derive(Clone)]
struct Seat {
    peer_id: Arc<str>,
    node: Arc<str>,
    epoch: Epoch,
    /// Boxed: only the server API and joins read them.
    facts: Box<Facts>,
}

/// What a seat keeps for the server API: user, join time, metadata.
#[derive(Clone)]
struct Facts {
    user: Box<str>,
    joined_at: u64,
    metadata: Option<Box<str>>,
}

impl Seat {
    /// The seat as the participant of an event.
    fn participant(&self) -> Participant<'_> {
        Participant {
            peer_id: &self.peer_id,
            user: &self.facts.user,
            metadata: self.facts.metadata.as_deref(),
        }
    }

    fn to_member(&self) -> Member {
        Member {
            // `String::from`, not `to_string`: on an `Arc<str>` that formats.
            peer_id: String::from(&*self.peer_id),
            node: String::from(&*self.node),
            epoch: self.epoch,
            user: self.facts.user.to_string(),
            joined_at: self.facts.joined_at,
            metadata: self.facts.metadata.as_deref().map(str::to_string),
        }
    }
}

fn members(seats: &[Seat]) -> Vec<Member> {
    seats.iter().map(Seat::to_member).collect()
}

struct Room {
    /// Members in join order, without spare capacity.
    members: Vec<Seat>,
    expires: Instant,
    /// When the first member joined (unix ms).
    created_at: u64,
}

#[derive(Default)]
struct NodeIndex {
    rooms: HashSet<Arc<str>>,
    sessions: HashSet<Arc<str>>,
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

    /// Number of live sessions and rooms (expired entries excluded), for tests.
    pub fn counts(&self) -> (usize, usize) {
        let mut inner = self.lock();
        inner.purge();
        (inner.sessions.len(), inner.rooms.len())
    }
}

impl Inner {
    /// Writes a session and indexes it under its node.
    fn put_session(
        &mut self,
        record: &SessionRecord,
        epoch: Epoch,
        room: Option<&str>,
        ttl: Duration,
    ) {
        let id: Arc<str> = Arc::from(record.session_id.as_str());
        let room = room.map(|r| self.room_key(r));
        let (node, index) = self.node_index(&record.node);
        index.sessions.insert(id.clone());
        self.sessions.insert(
            id.clone(),
            Session {
                node,
                peer_id: record.peer_id.as_str().into(),
                epoch,
                room,
                expires: deadline(ttl),
            },
        );
        self.share_peer_id(&id);
    }

    /// The one copy of a room's id: the rooms map's key when the room exists.
    fn room_key(&self, room: &str) -> Arc<str> {
        identifier::shared(&self.rooms, room)
    }

    /// Lets a session's seat in its room hold the session's copy of the peer id.
    fn share_peer_id(&mut self, session_id: &str) {
        let Some(session) = self.sessions.get(session_id) else {
            return;
        };
        let Some(room) = session.room.as_deref().and_then(|r| self.rooms.get_mut(r)) else {
            return;
        };
        for seat in room
            .members
            .iter_mut()
            .filter(|m| m.peer_id == session.peer_id)
        {
            seat.peer_id = session.peer_id.clone();
        }
    }

    /// The index of `node` (created when missing) and the shared copy of its id.
    fn node_index(&mut self, node: &str) -> (Arc<str>, &mut NodeIndex) {
        let id = identifier::shared(&self.nodes, node);
        let index = self.nodes.entry(id.clone()).or_default();
        (id, index)
    }

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
    ) -> Result<Claim, StoreError> {
        let mut inner = self.lock();
        inner.epoch += 1;
        let epoch = inner.epoch;
        let previous = inner.live_session(&record.session_id).map(|s| Previous {
            node: s.node.to_string(),
            epoch: s.epoch,
            room: s.room.as_deref().map(str::to_string),
        });
        inner.put_session(record, epoch, None, ttl);
        Ok(Claim { epoch, previous })
    }

    async fn restore_session(
        &self,
        record: &SessionRecord,
        epoch: Epoch,
        room: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner
            .live_session(&record.session_id)
            .is_some_and(|s| s.epoch > epoch)
        {
            return Ok(false);
        }
        inner.put_session(record, epoch, room, ttl);
        Ok(true)
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

    async fn set_session_room(
        &self,
        session_id: &str,
        epoch: Epoch,
        room: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let room = room.map(|r| inner.room_key(r));
        let Some(session) = inner.live_session(session_id).filter(|s| s.epoch == epoch) else {
            return Ok(false);
        };
        session.room = room;
        inner.share_peer_id(session_id);
        Ok(true)
    }

    async fn release_session(
        &self,
        _node: &str,
        session_id: &str,
        epoch: Epoch,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(node) = inner
            .live_session(session_id)
            .filter(|s| s.epoch == epoch)
            .map(|s| s.node.clone())
        else {
            return Ok(false);
        };
        inner.sessions.remove(session_id);
        if let Some(index) = inner.nodes.get_mut(&*node) {
            index.sessions.remove(session_id);
        }
        Ok(true)
    }

    async fn join_room(
        &self,
        room: &str,
        member: &Member,
        seating: Seating,
        capacity: usize,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError> {
        let mut inner = self.lock();
        inner.live_room(room); // drops the room if it expired
        let key = inner.room_key(room);
        let node = identifier::shared(&inner.nodes, &member.node);
        let entry = inner.rooms.entry(key.clone()).or_insert_with(|| Room {
            members: Vec::new(),
            expires: deadline(ttl),
            created_at: match member.joined_at {
                0 => crate::clock::unix_millis(),
                at => at,
            },
        });
        let mut seats = Vec::with_capacity(entry.members.len() + 1);
        let mut own = None;
        for seat in &entry.members {
            if *seat.peer_id == *member.peer_id {
                own = Some(seat.facts.clone());
            } else {
                seats.push(seat.clone());
            }
        }
        if seats.len() >= capacity {
            if entry.members.is_empty() {
                inner.rooms.remove(room);
            }
            return Ok(JoinOutcome::Full);
        }
        let before = members(&seats);
        let arrived = own.is_none();
        let facts = match own {
            Some(kept) if seating == Seating::Keep => kept,
            _ => Box::new(Facts {
                user: member.user.as_str().into(),
                joined_at: member.joined_at,
                metadata: member.metadata.as_deref().map(Box::from),
            }),
        };
        let seat = Seat {
            peer_id: Arc::from(member.peer_id.as_str()),
            node,
            epoch: member.epoch,
            facts,
        };
        let seated = seat.to_member();
        let first = entry.members.is_empty();
        if arrived && let Some(book) = inner.events.as_mut() {
            book.joined(room, &seat.participant(), first);
        }
        let entry = inner.rooms.get_mut(&key).expect("inserted above");
        seats.push(seat);
        seats.shrink_to_fit();
        entry.members = seats;
        entry.expires = deadline(ttl);
        inner.node_index(&member.node).1.rooms.insert(key);
        Ok(JoinOutcome::Joined { before, seated })
    }

    async fn set_metadata(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        metadata: &str,
    ) -> Result<Option<Vec<Member>>, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.live_room(room) else {
            return Ok(None);
        };
        let Some(seat) = entry
            .members
            .iter_mut()
            .find(|m| *m.peer_id == *peer_id && m.epoch == epoch)
        else {
            return Ok(None);
        };
        seat.facts.metadata = Some(metadata.into());
        let all = members(&entry.members);
        let seat = entry
            .members
            .iter()
            .find(|m| *m.peer_id == *peer_id)
            .cloned()
            .expect("found above");
        if let Some(book) = inner.events.as_mut() {
            book.emit(
                room,
                super::events::kind::PARTICIPANT_UPDATED,
                Some(&seat.participant()),
                None,
            );
        }
        Ok(Some(all))
    }

    async fn room_info(&self, room: &str) -> Result<Option<RoomInfo>, StoreError> {
        Ok(self.lock().live_room(room).map(|r| RoomInfo {
            created_at: r.created_at,
            members: members(&r.members),
        }))
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let mut inner = self.lock();
        inner.purge();
        let mut rooms: Vec<RoomSummary> = inner
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(id, r)| RoomSummary {
                room: id.to_string(),
                peers: r.members.len(),
                created_at: r.created_at,
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        Ok(rooms)
    }

    async fn leave_room(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        reason: LeaveReason,
    ) -> Result<Option<Vec<Member>>, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.live_room(room) else {
            return Ok(None);
        };
        let Some(at) = entry
            .members
            .iter()
            .position(|m| *m.peer_id == *peer_id && m.epoch == epoch)
        else {
            return Ok(None);
        };
        let gone = entry.members.remove(at);
        entry.members.shrink_to_fit();
        let remaining = members(&entry.members);
        if remaining.is_empty() {
            inner.rooms.remove(room);
        }
        if let Some(book) = inner.events.as_mut() {
            book.left(room, &gone.participant(), reason, remaining.is_empty());
        }
        Ok(Some(remaining))
    }

    async fn unindex_room(&self, node: &str, room: &str) -> Result<(), StoreError> {
        if let Some(index) = self.lock().nodes.get_mut(node) {
            index.rooms.remove(room);
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
            .map(|r| members(&r.members))
            .unwrap_or_default())
    }

    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.alive.insert(node.to_string(), deadline(ttl));
        let registered = inner.nodes.contains_key(node);
        inner.node_index(node);
        Ok(registered)
    }

    async fn dead_nodes(&self, me: &str) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let now = Instant::now();
        Ok(inner
            .nodes
            .keys()
            .map(|n| &**n)
            .filter(|n| *n != me && inner.alive.get(*n).is_none_or(|e| *e <= now))
            .map(str::to_string)
            .collect())
    }

    async fn live_node_count(&self) -> Result<usize, StoreError> {
        let now = Instant::now();
        Ok(self.lock().alive.values().filter(|e| **e > now).count())
    }

    async fn claim_cleanup(
        &self,
        dead: &str,
        _me: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.cleanup.get(dead).is_some_and(|e| *e > now) {
            return Ok(false);
        }
        inner.cleanup.insert(dead.to_string(), deadline(ttl));
        Ok(true)
    }

    async fn evict_node(&self, dead: &str) -> Result<Vec<Eviction>, StoreError> {
        let mut inner = self.lock();
        let index = inner.nodes.remove(dead).unwrap_or_default();
        inner.alive.remove(dead);
        inner.evicted.insert(dead.to_string());
        let mut evictions = Vec::new();
        for room in index.rooms {
            let Some(entry) = inner.live_room(&room) else {
                continue;
            };
            let (removed, remaining): (Vec<Seat>, Vec<Seat>) =
                entry.members.drain(..).partition(|m| &*m.node == dead);
            entry.members = remaining;
            entry.members.shrink_to_fit();
            let remaining = members(&entry.members);
            if remaining.is_empty() {
                inner.rooms.remove(&room);
            }
            if let Some(book) = inner.events.as_mut() {
                for (i, seat) in removed.iter().enumerate() {
                    let last = remaining.is_empty() && i + 1 == removed.len();
                    book.left(&room, &seat.participant(), LeaveReason::NodeLost, last);
                }
            }
            if !removed.is_empty() {
                evictions.push(Eviction {
                    room: room.to_string(),
                    removed: members(&removed),
                    remaining,
                });
            }
        }
        for session in index.sessions {
            if inner
                .sessions
                .get(&session)
                .is_some_and(|s| &*s.node == dead)
            {
                inner.sessions.remove(&session);
            }
        }
        Ok(evictions)
    }

    async fn take_eviction_notice(&self, node: &str) -> Result<bool, StoreError> {
        Ok(self.lock().evicted.remove(node))
    }

    async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.alive.remove(node);
        inner.nodes.remove(node);
        Ok(())
    }

    async fn session_owner(&self, session_id: &str) -> Result<Option<Owner>, StoreError> {
        let mut inner = self.lock();
        Ok(inner.live_session(session_id).map(|s| Owner {
            node: s.node.to_string(),
            epoch: s.epoch,
            peer_id: s.peer_id.to_string(),
            ttl: s.expires.saturating_duration_since(Instant::now()),
        }))
    }

    async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.revoked.retain(|_, until| *until > now);
        inner.revoked.insert(session_id.to_string(), deadline(ttl));
        Ok(())
    }

    async fn is_revoked(&self, session_id: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .revoked
            .get(session_id)
            .is_some_and(|until| *until > now))
    }

    async fn spool(
        &self,
        session_id: &str,
        frames: &[String],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.spools.retain(|_, (_, until)| *until > now);
        let entry = inner
            .spools
            .entry(session_id.to_string())
            .or_insert_with(|| (Vec::new(), now));
        entry.0.extend_from_slice(frames);
        entry.1 = deadline(ttl);
        Ok(())
    }

    async fn take_spool(&self, session_id: &str) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .spools
            .remove(session_id)
            .filter(|(_, until)| *until > now)
            .map(|(frames, _)| frames)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One copy of each id per connection: the seat shares the node's id and, once the
    /// session records its room, the session's peer id; the session shares the room's id.
    #[tokio::test]
    async fn a_member_shares_its_ids_with_its_session_and_node() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        let record = SessionRecord {
            session_id: "s1".into(),
            user: "ann".into(),
            peer_id: "ann-s1".into(),
            node: "n1".into(),
        };
        let epoch = store.claim_session(&record, ttl).await.unwrap().epoch;
        let ann = member("ann-s1", epoch);
        let joined = store
            .join_room("r", &ann, Seating::Fresh, 4, ttl)
            .await
            .unwrap();
        assert!(matches!(joined, JoinOutcome::Joined { before, .. } if before.is_empty()));
        assert!(
            store
                .set_session_room("s1", epoch, Some("r"))
                .await
                .unwrap()
        );
        {
            let inner = store.lock();
            let session = &inner.sessions["s1"];
            let (room_id, room) = inner.rooms.get_key_value("r").unwrap();
            let seat = &room.members[0];
            assert!(Arc::ptr_eq(&seat.peer_id, &session.peer_id));
            assert!(Arc::ptr_eq(&seat.node, &session.node));
            assert!(Arc::ptr_eq(room_id, session.room.as_ref().unwrap()));
        }
        let members = store.room_members("r").await.unwrap();
        assert_eq!(members, [ann]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resume_queue_lapses_after_its_ttl() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        store.spool("s", &["a".to_string()], ttl).await.unwrap();
        tokio::time::advance(ttl - Duration::from_secs(1)).await;
        // Appending keeps the queue for another full TTL.
        store.spool("s", &["b".to_string()], ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(store.take_spool("s").await.unwrap(), ["a", "b"]);
        store.spool("s", &["c".to_string()], ttl).await.unwrap();
        tokio::time::advance(ttl).await;
        assert!(store.take_spool("s").await.unwrap().is_empty());
    }

    fn member(p: &str, epoch: Epoch) -> Member {
        Member {
            peer_id: p.into(),
            node: "n1".into(),
            epoch,
            ..Member::default()
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
    async fn capacity_is_enforced_and_rejoin_replaces_the_older_epoch() {
        let store = MemoryStore::new();
        let joined = |v: Vec<Member>| Some(v);
        let before = |o: JoinOutcome| match o {
            JoinOutcome::Joined { before, .. } => Some(before),
            JoinOutcome::Full => None,
        };
        assert_eq!(
            before(
                store
                    .join_room("r", &member("a", 1), Seating::Fresh, 2, HOUR)
                    .await
                    .unwrap()
            ),
            joined(vec![])
        );
        assert_eq!(
            before(
                store
                    .join_room("r", &member("b", 2), Seating::Fresh, 2, HOUR)
                    .await
                    .unwrap()
            ),
            joined(vec![member("a", 1)])
        );
        assert_eq!(
            before(
                store
                    .join_room("r", &member("c", 3), Seating::Fresh, 2, HOUR)
                    .await
                    .unwrap()
            ),
            None
        );
        assert_eq!(
            before(
                store
                    .join_room("r", &member("b", 4), Seating::Fresh, 2, HOUR)
                    .await
                    .unwrap()
            ),
            joined(vec![member("a", 1)])
        );
        // The older epoch's late leave is fenced off.
        assert_eq!(
            store
                .leave_room("r", "b", 2, LeaveReason::Left)
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.room_members("r").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn room_is_deleted_only_when_last_member_leaves() {
        let store = MemoryStore::new();
        store
            .join_room("r", &member("a", 1), Seating::Fresh, 5, HOUR)
            .await
            .unwrap();
        store
            .join_room("r", &member("b", 2), Seating::Fresh, 5, HOUR)
            .await
            .unwrap();
        assert_eq!(
            store
                .leave_room("r", "a", 1, LeaveReason::Left)
                .await
                .unwrap(),
            Some(vec![member("b", 2)])
        );
        assert_eq!(
            store
                .leave_room("r", "b", 2, LeaveReason::Left)
                .await
                .unwrap(),
            Some(vec![])
        );
        assert_eq!(store.counts().1, 0);
    }

    #[tokio::test]
    async fn a_stale_epoch_cannot_refresh_or_release_its_successor() {
        let store = MemoryStore::new();
        let old = store.claim_session(&record("s"), HOUR).await.unwrap();
        assert_eq!(old.previous, None);
        assert!(
            store
                .set_session_room("s", old.epoch, Some("r"))
                .await
                .unwrap()
        );
        let new = store.claim_session(&record("s"), HOUR).await.unwrap();
        assert!(new.epoch > old.epoch);
        assert_eq!(
            new.previous,
            Some(Previous {
                node: "n1".into(),
                epoch: old.epoch,
                room: Some("r".into())
            })
        );
        assert!(!store.refresh_session("s", old.epoch, HOUR).await.unwrap());
        assert!(!store.release_session("n1", "s", old.epoch).await.unwrap());
        assert_eq!(store.counts().0, 1);
        assert!(store.release_session("n1", "s", new.epoch).await.unwrap());
        assert_eq!(store.counts().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl_and_refresh_extends_them() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        let claim = store.claim_session(&record("s"), ttl).await.unwrap();
        store
            .join_room("r", &member("a", 1), Seating::Fresh, 5, ttl)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(store.refresh_session("s", claim.epoch, ttl).await.unwrap());
        store.touch_room("r", ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(store.counts(), (1, 1));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(store.counts(), (0, 0));
        assert!(!store.refresh_session("s", claim.epoch, ttl).await.unwrap());
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

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_found_dead_and_evicted_once() {
        let store = MemoryStore::new();
        let hb = Duration::from_secs(2);
        store.heartbeat("n1", hb).await.unwrap();
        store.heartbeat("n2", hb).await.unwrap();
        store.claim_session(&record("s"), HOUR).await.unwrap();
        store
            .join_room("r", &member("a", 1), Seating::Fresh, 5, HOUR)
            .await
            .unwrap();
        let b = Member {
            peer_id: "b".into(),
            node: "n2".into(),
            epoch: 2,
            ..Member::default()
        };
        store
            .join_room("r", &b, Seating::Fresh, 5, HOUR)
            .await
            .unwrap();
        assert!(store.dead_nodes("n2").await.unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(3)).await;
        store.heartbeat("n2", hb).await.unwrap();
        assert_eq!(
            store.dead_nodes("n2").await.unwrap(),
            vec!["n1".to_string()]
        );
        assert_eq!(store.live_node_count().await.unwrap(), 1);
        assert!(store.claim_cleanup("n1", "n2", hb).await.unwrap());
        assert!(!store.claim_cleanup("n1", "n3", hb).await.unwrap());
        let evictions = store.evict_node("n1").await.unwrap();
        assert_eq!(evictions.len(), 1);
        assert_eq!(evictions[0].removed, vec![member("a", 1)]);
        assert_eq!(evictions[0].remaining, vec![b]);
        assert_eq!(store.counts(), (0, 1));
        assert!(store.dead_nodes("n2").await.unwrap().is_empty());
    }
}
