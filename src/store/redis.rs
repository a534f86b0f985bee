//! The Redis store: the schema of the design, multi-key changes atomic in Lua, session
//! ownership fenced by epochs, every key with a TTL of at most 24 h.

use std::time::Duration;

use ::redis::{Script, cmd, pipe};
use async_trait::async_trait;

use super::{
    Claim, Epoch, Eviction, JoinOutcome, MAX_TTL, Member, Owner, Previous, SessionRecord, Store,
    StoreError,
};
use crate::redis::{Keys, Redis};

/// Takes over a session: a new epoch (from the server clock, so it grows even after the key
/// expired), the previous owner returned so the caller can displace it.
const CLAIM: &str = r"
local t = redis.call('TIME')
local epoch = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'room')
if old[2] and tonumber(old[2]) >= epoch then epoch = tonumber(old[2]) + 1 end
-- Lua numbers are doubles: format explicitly so the 16-digit epoch keeps every digit.
local e = string.format('%.0f', epoch)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'peer', ARGV[2], 'node', ARGV[3], 'epoch', e, 'state', 'live')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {e, old[1] or false, old[2] or false, old[3] or false}
";

/// Writes a session back with its known epoch unless a newer owner took it meanwhile.
const RESTORE: &str = r"
local current = redis.call('HGET', KEYS[1], 'epoch')
if current and tonumber(current) > tonumber(ARGV[4]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'peer', ARGV[2], 'node', ARGV[3], 'epoch', ARGV[4], 'state', 'live')
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'room', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
";

/// Runs ARGV[2..] only if the session's epoch is still ARGV[1].
const FENCED: &str = r"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
if ARGV[2] == 'refresh' then redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif ARGV[2] == 'room' then redis.call('HSET', KEYS[1], 'room', ARGV[3])
elseif ARGV[2] == 'noroom' then redis.call('HDEL', KEYS[1], 'room')
elseif ARGV[2] == 'release' then redis.call('DEL', KEYS[1])
end
return 1
";

/// Joins with the capacity check; nil when full, else the other members (flat pairs).
const JOIN: &str = r"
local members = redis.call('HGETALL', KEYS[1])
local others = {}
for i = 1, #members, 2 do
  if members[i] ~= ARGV[1] then
    others[#others + 1] = members[i]
    others[#others + 1] = members[i + 1]
  end
end
if #others / 2 >= tonumber(ARGV[3]) then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return others
";

/// Leaves only if the membership still has epoch ARGV[2]; nil when fenced off, else the
/// remaining members. Redis deletes the hash with its last field.
const LEAVE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local sep = string.find(v, '|', 1, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
";

/// Removes every member held by node ARGV[1]; returns {removed pairs, remaining pairs}.
const EVICT: &str = r"
local members = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1] .. '|'
local removed, remaining = {}, {}
for i = 1, #members, 2 do
  if string.sub(members[i + 1], 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], members[i])
    removed[#removed + 1] = members[i]
    removed[#removed + 1] = members[i + 1]
  else
    remaining[#remaining + 1] = members[i]
    remaining[#remaining + 1] = members[i + 1]
  end
end
return {removed, remaining}
";

/// Deletes a session only if it still belongs to node ARGV[1].
const DROP_IF_NODE: &str = r"
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
";

/// Reads and deletes a list in one step.
const TAKE: &str = r"
local frames = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return frames
";

/// TTL of the per-node indexes and the node registry, refreshed by every heartbeat.
const INDEX_TTL: Duration = Duration::from_secs(3600);

/// [`Store`] on Redis (standalone, Sentinel or Cluster).
pub struct RedisStore {
    redis: Redis,
    keys: Keys,
    claim: Script,
    restore: Script,
    fenced: Script,
    join: Script,
    leave: Script,
    evict: Script,
    drop_if_node: Script,
    take: Script,
}

fn ms(ttl: Duration) -> u64 {
    ttl.min(MAX_TTL).as_millis().max(1) as u64
}

fn members(pairs: Vec<String>) -> Vec<Member> {
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let (node, epoch) = pair[1].split_once('|')?;
            Some(Member {
                peer_id: pair[0].clone(),
                node: node.to_string(),
                epoch: epoch.parse().ok()?,
            })
        })
        .collect()
}

impl RedisStore {
    /// A store over `redis` with keys under `keys`.
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Self {
            redis,
            keys,
            claim: Script::new(CLAIM),
            restore: Script::new(RESTORE),
            fenced: Script::new(FENCED),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            evict: Script::new(EVICT),
            drop_if_node: Script::new(DROP_IF_NODE),
            take: Script::new(TAKE),
        }
    }

    async fn fenced(
        &self,
        session: &str,
        epoch: Epoch,
        op: &str,
        arg: &str,
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .redis
            .script(
                self.fenced
                    .key(self.keys.session(session))
                    .arg(epoch.to_string())
                    .arg(op)
                    .arg(arg),
            )
            .await?;
        Ok(done == 1)
    }

    /// Adds `member` to a per-node index set and keeps the set's TTL.
    async fn index(&self, key: String, member: &str) -> Result<(), StoreError> {
        self.redis
            .pipe::<()>(
                pipe()
                    .cmd("SADD")
                    .arg(&key)
                    .arg(member)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ms(INDEX_TTL))
                    .ignore(),
            )
            .await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn claim_session(
        &self,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        self.index(self.keys.node_sessions(&record.node), &record.session_id)
            .await?;
        let (epoch, node, old_epoch, room): (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = self
            .redis
            .script(
                self.claim
                    .key(self.keys.session(&record.session_id))
                    .arg(&record.user)
                    .arg(&record.peer_id)
                    .arg(&record.node)
                    .arg(ms(ttl)),
            )
            .await?;
        let epoch = epoch
            .parse()
            .map_err(|_| StoreError("Redis returned a malformed epoch".into()))?;
        let previous = match (node, old_epoch.and_then(|e| e.parse().ok())) {
            (Some(node), Some(epoch)) => Some(Previous { node, epoch, room }),
            _ => None,
        };
        Ok(Claim { epoch, previous })
    }

    async fn restore_session(
        &self,
        record: &SessionRecord,
        epoch: Epoch,
        room: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.index(self.keys.node_sessions(&record.node), &record.session_id)
            .await?;
        let done: i64 = self
            .redis
            .script(
                self.restore
                    .key(self.keys.session(&record.session_id))
                    .arg(&record.user)
                    .arg(&record.peer_id)
                    .arg(&record.node)
                    .arg(epoch.to_string())
                    .arg(room.unwrap_or_default())
                    .arg(ms(ttl)),
            )
            .await?;
        Ok(done == 1)
    }

    async fn refresh_session(
        &self,
        session_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.fenced(session_id, epoch, "refresh", &ms(ttl).to_string())
            .await
    }

    async fn set_session_room(
        &self,
        session_id: &str,
        epoch: Epoch,
        room: Option<&str>,
    ) -> Result<bool, StoreError> {
        match room {
            Some(room) => self.fenced(session_id, epoch, "room", room).await,
            None => self.fenced(session_id, epoch, "noroom", "").await,
        }
    }

    async fn release_session(
        &self,
        node: &str,
        session_id: &str,
        epoch: Epoch,
    ) -> Result<bool, StoreError> {
        let released = self.fenced(session_id, epoch, "release", "").await?;
        if released {
            self.redis
                .query::<()>(
                    cmd("SREM")
                        .arg(self.keys.node_sessions(node))
                        .arg(session_id),
                )
                .await?;
        }
        Ok(released)
    }

    async fn join_room(
        &self,
        room: &str,
        member: &Member,
        capacity: usize,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError> {
        // Index first: a crash between the two leaves an index entry, never an orphan member.
        self.index(self.keys.node_rooms(&member.node), room).await?;
        let others: Option<Vec<String>> = self
            .redis
            .script(
                self.join
                    .key(self.keys.room(room))
                    .arg(&member.peer_id)
                    .arg(format!("{}|{}", member.node, member.epoch))
                    .arg(capacity)
                    .arg(ms(ttl)),
            )
            .await?;
        Ok(match others {
            None => JoinOutcome::Full,
            Some(pairs) => JoinOutcome::Joined(members(pairs)),
        })
    }

    async fn leave_room(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
    ) -> Result<Option<Vec<Member>>, StoreError> {
        let remaining: Option<Vec<String>> = self
            .redis
            .script(
                self.leave
                    .key(self.keys.room(room))
                    .arg(peer_id)
                    .arg(epoch.to_string()),
            )
            .await?;
        Ok(remaining.map(members))
    }

    async fn unindex_room(&self, node: &str, room: &str) -> Result<(), StoreError> {
        self.redis
            .query(cmd("SREM").arg(self.keys.node_rooms(node)).arg(room))
            .await
    }

    async fn touch_room(&self, room: &str, ttl: Duration) -> Result<(), StoreError> {
        self.redis
            .query(cmd("PEXPIRE").arg(self.keys.room(room)).arg(ms(ttl)))
            .await
    }

    async fn room_members(&self, room: &str) -> Result<Vec<Member>, StoreError> {
        let pairs: Vec<String> = self
            .redis
            .query(cmd("HGETALL").arg(self.keys.room(room)))
            .await?;
        Ok(members(pairs))
    }

    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = crate::clock::unix_now();
        self.redis
            .query::<()>(
                cmd("SET")
                    .arg(self.keys.node(node))
                    .arg(now)
                    .arg("PX")
                    .arg(ms(ttl)),
            )
            .await?;
        let registry = self.keys.nodes();
        let (added,): (i64,) = self
            .redis
            .pipe(
                pipe()
                    .cmd("HSET")
                    .arg(&registry)
                    .arg(node)
                    .arg(now)
                    .cmd("PEXPIRE")
                    .arg(&registry)
                    .arg(ms(INDEX_TTL))
                    .ignore(),
            )
            .await?;
        // The inbox lives as long as its node: a quiet call must not let it expire.
        for key in [
            self.keys.node_rooms(node),
            self.keys.node_sessions(node),
            self.keys.inbox(node),
            self.keys.inbox_read(node),
        ] {
            self.redis
                .query::<()>(cmd("PEXPIRE").arg(key).arg(ms(INDEX_TTL)))
                .await?;
        }
        Ok(added == 0)
    }

    async fn dead_nodes(&self, me: &str) -> Result<Vec<String>, StoreError> {
        let nodes: Vec<String> = self
            .redis
            .query(cmd("HKEYS").arg(self.keys.nodes()))
            .await?;
        let mut dead = Vec::new();
        for node in nodes.into_iter().filter(|n| n != me) {
            let alive: bool = self
                .redis
                .query(cmd("EXISTS").arg(self.keys.node(&node)))
                .await?;
            if !alive {
                dead.push(node);
            }
        }
        Ok(dead)
    }

    async fn live_node_count(&self) -> Result<usize, StoreError> {
        let nodes: Vec<String> = self
            .redis
            .query(cmd("HKEYS").arg(self.keys.nodes()))
            .await?;
        let mut alive = 0;
        for node in nodes {
            let exists: bool = self
                .redis
                .query(cmd("EXISTS").arg(self.keys.node(&node)))
                .await?;
            alive += usize::from(exists);
        }
        Ok(alive)
    }

    async fn claim_cleanup(&self, dead: &str, me: &str, ttl: Duration) -> Result<bool, StoreError> {
        let taken: Option<String> = self
            .redis
            .query(
                cmd("SET")
                    .arg(self.keys.cleanup(dead))
                    .arg(me)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl)),
            )
            .await?;
        Ok(taken.is_some())
    }

    async fn evict_node(&self, dead: &str) -> Result<Vec<Eviction>, StoreError> {
        let rooms: Vec<String> = self
            .redis
            .query(cmd("SMEMBERS").arg(self.keys.node_rooms(dead)))
            .await?;
        let mut evictions = Vec::new();
        for room in rooms {
            let (removed, remaining): (Vec<String>, Vec<String>) = self
                .redis
                .script(self.evict.key(self.keys.room(&room)).arg(dead))
                .await?;
            let removed = members(removed);
            if !removed.is_empty() {
                evictions.push(Eviction {
                    room,
                    removed,
                    remaining: members(remaining),
                });
            }
        }
        let sessions: Vec<String> = self
            .redis
            .query(cmd("SMEMBERS").arg(self.keys.node_sessions(dead)))
            .await?;
        for session in sessions {
            self.redis
                .script::<i64>(self.drop_if_node.key(self.keys.session(&session)).arg(dead))
                .await?;
        }
        self.forget_node(dead).await?;
        self.redis
            .query::<()>(
                cmd("SET")
                    .arg(self.keys.evicted(dead))
                    .arg(1)
                    .arg("PX")
                    .arg(ms(INDEX_TTL)),
            )
            .await?;
        Ok(evictions)
    }

    async fn take_eviction_notice(&self, node: &str) -> Result<bool, StoreError> {
        let notice: Option<String> = self
            .redis
            .query(cmd("GETDEL").arg(self.keys.evicted(node)))
            .await?;
        Ok(notice.is_some())
    }

    async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        // The inbox stays (it expires by itself): senders withdraw from it what the node
        // never read, and report it, instead of taking its absence for delivery.
        for key in [
            self.keys.node(node),
            self.keys.node_rooms(node),
            self.keys.node_sessions(node),
        ] {
            self.redis.query::<()>(cmd("DEL").arg(key)).await?;
        }
        self.redis
            .query::<()>(cmd("HDEL").arg(self.keys.nodes()).arg(node))
            .await
    }

    async fn session_owner(&self, session_id: &str) -> Result<Option<Owner>, StoreError> {
        let key = self.keys.session(session_id);
        let ((node, epoch, peer), ttl): ((Option<String>, Option<String>, Option<String>), i64) =
            self.redis
                .pipe(
                    pipe()
                        .cmd("HMGET")
                        .arg(&key)
                        .arg("node")
                        .arg("epoch")
                        .arg("peer")
                        .cmd("PTTL")
                        .arg(&key),
                )
                .await?;
        Ok(match (node, epoch.and_then(|e| e.parse().ok()), peer) {
            (Some(node), Some(epoch), Some(peer_id)) => Some(Owner {
                node,
                epoch,
                peer_id,
                ttl: Duration::from_millis(ttl.max(0) as u64),
            }),
            _ => None,
        })
    }

    async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.redis
            .query(
                cmd("SET")
                    .arg(self.keys.revoked(session_id))
                    .arg(1)
                    .arg("PX")
                    .arg(ms(ttl)),
            )
            .await
    }

    async fn is_revoked(&self, session_id: &str) -> Result<bool, StoreError> {
        self.redis
            .query(cmd("EXISTS").arg(self.keys.revoked(session_id)))
            .await
    }

    async fn spool(
        &self,
        session_id: &str,
        frames: &[String],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if frames.is_empty() {
            return Ok(());
        }
        let key = self.keys.spool(session_id);
        let mut p = pipe();
        p.cmd("RPUSH").arg(&key).arg(frames).ignore();
        p.cmd("PEXPIRE").arg(&key).arg(ms(ttl)).ignore();
        self.redis.pipe::<()>(&p).await
    }

    async fn take_spool(&self, session_id: &str) -> Result<Vec<String>, StoreError> {
        self.redis
            .script(&self.take.key(self.keys.spool(session_id)))
            .await
    }
}
