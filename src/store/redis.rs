//! The Redis store: the schema of the design, multi-key changes atomic in Lua, session
//! ownership fenced by epochs, every key with a TTL of at most 24 h.

use std::time::Duration;

use ::redis::{Script, cmd, pipe};
use async_trait::async_trait;

use super::{
    Claim, Epoch, Eviction, JoinOutcome, MAX_TTL, Member, Owner, Previous, RoomInfo, RoomSummary,
    Seating, SessionRecord, Store, StoreError,
};
use crate::redis::{Keys, Redis};
use crate::room::LeaveReason;

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

/// Lua helpers of the membership scripts. A member's entry in the members hash is
/// `node|epoch`, as every build writes and reads it; its facts (join time, user id,
/// metadata) live beside it in the facts hash as `joinedAtMs|user\nmetadata`, so nodes of
/// an older build in the same deployment still read every member during a rolling
/// upgrade. Every script takes the keys members, info, seq, events, facts (one slot).
const ENTRY: &str = r#"
local function epoch_of(v)
  local a = string.find(v, '|', 1, true)
  if not a then return nil end
  local b = string.find(v, '|', a + 1, true)
  return string.sub(v, a + 1, b and b - 1 or -1)
end
local function user_of(f)
  if not f then return '' end
  local nl = string.find(f, '\n', 1, true)
  local head = nl and string.sub(f, 1, nl - 1) or f
  local a = string.find(head, '|', 1, true)
  return a and string.sub(head, a + 1) or ''
end
local function meta_of(f)
  if not f then return 'null' end
  local nl = string.find(f, '\n', 1, true)
  if not nl or nl == #f then return 'null' end
  return string.sub(f, nl + 1)
end
-- Appends one event to the room's stream (KEYS[4]) with the room's next seq (KEYS[3]);
-- ev = {id = prefix ('' when events are off), ttl = ms, now = ms, room = id}; facts as
-- kept in KEYS[5]. The JSON is the shape of `store::events::RoomEvent`.
local function emit(ev, kind, peer, facts, reason)
  if ev.id == '' then return end
  local seq = redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ev.ttl)
  local e = '{"id":"' .. ev.id .. '-' .. seq .. '","type":"' .. kind .. '","roomId":'
    .. cjson.encode(ev.room) .. ',"seq":' .. seq .. ',"createdAt":' .. ev.now
  if peer then
    e = e .. ',"peer":{"peerId":' .. cjson.encode(peer) .. ',"userId":'
      .. cjson.encode(user_of(facts)) .. ',"metadata":' .. meta_of(facts) .. '}'
  end
  if reason then e = e .. ',"reason":"' .. reason .. '"' end
  redis.call('XADD', KEYS[4], '*', 'e', e .. '}')
  redis.call('PEXPIRE', KEYS[4], ev.ttl)
end
-- Once the members hash is gone (its last field deleted), so are the room's facts.
local function forget_if_empty()
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[2], KEYS[5])
    return true
  end
  return false
end
"#;

/// Joins with the capacity check; nil when full, else {other members (flat pairs), every
/// member's facts (flat pairs), this member's facts as written}. ARGV[5] = '1' keeps an
/// existing member's facts (join time, user, metadata). The room's `created` is set by
/// the join that finds it empty. A peer not yet in the room is announced
/// (`room_started` first for an empty room).
const JOIN: &str = r"
local ev = {id = ARGV[7], ttl = ARGV[8], now = ARGV[6], room = ARGV[9]}
local members = redis.call('HGETALL', KEYS[1])
local others, own = {}, nil
for i = 1, #members, 2 do
  if members[i] ~= ARGV[1] then
    others[#others + 1] = members[i]
    others[#others + 1] = members[i + 1]
  else
    own = members[i + 1]
  end
end
if #others / 2 >= tonumber(ARGV[3]) then return false end
local facts = ARGV[10]
if ARGV[5] == '1' and own then
  facts = redis.call('HGET', KEYS[5], ARGV[1]) or facts
end
if #members == 0 then redis.call('HSET', KEYS[2], 'created', ARGV[6]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[5], ARGV[1], facts)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
if not own then
  if #members == 0 then emit(ev, 'room_started') end
  emit(ev, 'participant_joined', ARGV[1], facts)
end
return {others, redis.call('HGETALL', KEYS[5]), facts}
";

/// Leaves only if the membership still has epoch ARGV[2]; nil when fenced off, else the
/// remaining members. Redis deletes the hash with its last field; the room's facts go
/// with it. Announces `participant_left` (reason ARGV[3]), and `room_finished` after the last.
const LEAVE: &str = r"
local ev = {id = ARGV[5], ttl = ARGV[6], now = ARGV[4], room = ARGV[7]}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or epoch_of(v) ~= ARGV[2] then return false end
local facts = redis.call('HGET', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
local empty = forget_if_empty()
emit(ev, 'participant_left', ARGV[1], facts, ARGV[3])
if empty then emit(ev, 'room_finished') end
return redis.call('HGETALL', KEYS[1])
";

/// Replaces the metadata of ARGV[1] if its membership has epoch ARGV[2]; nil when fenced
/// off, else every member. Announces `participant_updated`.
const SET_METADATA: &str = r"
local ev = {id = ARGV[5], ttl = ARGV[6], now = ARGV[4], room = ARGV[7]}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or epoch_of(v) ~= ARGV[2] then return false end
local old = redis.call('HGET', KEYS[5], ARGV[1]) or '0|'
local nl = string.find(old, '\n', 1, true)
local facts = (nl and string.sub(old, 1, nl - 1) or old) .. '\n' .. ARGV[3]
redis.call('HSET', KEYS[5], ARGV[1], facts)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
emit(ev, 'participant_updated', ARGV[1], facts)
return redis.call('HGETALL', KEYS[1])
";

/// Removes every member held by node ARGV[1]; returns {removed pairs, remaining pairs}.
/// Each removed member is announced as `participant_left` `node_lost`.
const EVICT: &str = r"
local ev = {id = ARGV[3], ttl = ARGV[4], now = ARGV[2], room = ARGV[5]}
local members = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1] .. '|'
local removed, remaining, facts = {}, {}, {}
for i = 1, #members, 2 do
  if string.sub(members[i + 1], 1, #prefix) == prefix then
    facts[#removed / 2 + 1] = redis.call('HGET', KEYS[5], members[i])
    redis.call('HDEL', KEYS[1], members[i])
    redis.call('HDEL', KEYS[5], members[i])
    removed[#removed + 1] = members[i]
    removed[#removed + 1] = members[i + 1]
  else
    remaining[#remaining + 1] = members[i]
    remaining[#remaining + 1] = members[i + 1]
  end
end
forget_if_empty()
for i = 1, #removed, 2 do
  emit(ev, 'participant_left', removed[i], facts[(i + 1) / 2], 'node_lost')
end
if #removed > 0 and #remaining == 0 then emit(ev, 'room_finished') end
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

/// Runs one command on KEYS[1] (name ARGV[2], further arguments ARGV[3..]) and sets the
/// key's TTL to ARGV[1] ms in the same step, so nobody sees the key without one. A script
/// rather than MULTI: a Cluster client routes a script by its key, a transaction not.
const WITH_TTL: &str = r"
local result = redis.call(ARGV[2], KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return result
";

/// TTL of the per-node indexes and the node registry, refreshed by every heartbeat.
const INDEX_TTL: Duration = Duration::from_secs(3600);

/// [`Store`] on Redis (standalone, Sentinel or Cluster).
pub struct RedisStore {
    pub(super) redis: Redis,
    pub(super) keys: Keys,
    /// How long room events are kept, how many the log holds and whose changes these are,
    /// once they are recorded.
    pub(super) events: std::sync::OnceLock<(Duration, usize, String)>,
    /// Whether this node is listed among the owners of due sets (see [`Keys::due_owners`]).
    pub(super) listed: std::sync::atomic::AtomicBool,
    claim: Script,
    restore: Script,
    fenced: Script,
    join: Script,
    leave: Script,
    set_metadata: Script,
    evict: Script,
    drop_if_node: Script,
    take: Script,
    with_ttl: Script,
}

fn ms(ttl: Duration) -> u64 {
    ttl.min(MAX_TTL).as_millis().max(1) as u64
}

fn members(pairs: Vec<String>) -> Vec<Member> {
    with_facts(pairs, Vec::new())
}

/// Members (flat `peer, node|epoch` pairs) with their facts (flat `peer, facts` pairs);
/// a member without facts (written by an older build) has none.
fn with_facts(pairs: Vec<String>, facts: Vec<String>) -> Vec<Member> {
    let facts: std::collections::HashMap<&str, &str> = facts
        .chunks_exact(2)
        .map(|pair| (pair[0].as_str(), pair[1].as_str()))
        .collect();
    pairs
        .chunks_exact(2)
        .filter_map(|pair| decode(&pair[0], &pair[1], facts.get(pair[0].as_str()).copied()))
        .collect()
}

/// A member's entry in the members hash: `node|epoch`.
fn entry(member: &Member) -> String {
    format!("{}|{}", member.node, member.epoch)
}

/// A member's facts: `joinedAtMs|user\nmetadata`. Identifiers hold no control character,
/// so the newline is unambiguous.
fn facts(member: &Member) -> String {
    format!(
        "{}|{}\n{}",
        member.joined_at,
        member.user,
        member.metadata.as_deref().unwrap_or_default()
    )
}

/// Reads a member from its entry (`node|epoch`; a later build's extra fields are
/// ignored) and its facts, if any.
fn decode(peer_id: &str, entry: &str, facts: Option<&str>) -> Option<Member> {
    let mut parts = entry.splitn(3, '|');
    let node = parts.next()?.to_string();
    let epoch = parts.next()?.parse().ok()?;
    let mut member = Member {
        peer_id: peer_id.to_string(),
        node,
        epoch,
        ..Member::default()
    };
    if let Some(facts) = facts {
        let (head, metadata) = facts.split_once('\n').unwrap_or((facts, ""));
        let (joined_at, user) = head.split_once('|').unwrap_or((head, ""));
        member.joined_at = joined_at.parse().unwrap_or(0);
        member.user = user.to_string();
        member.metadata = (!metadata.is_empty()).then(|| metadata.to_string());
    }
    Some(member)
}

impl RedisStore {
    /// A store over `redis` with keys under `keys`.
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Self {
            redis,
            keys,
            events: std::sync::OnceLock::new(),
            listed: std::sync::atomic::AtomicBool::new(false),
            claim: Script::new(CLAIM),
            restore: Script::new(RESTORE),
            fenced: Script::new(FENCED),
            join: Script::new(&format!("{ENTRY}{JOIN}")),
            leave: Script::new(&format!("{ENTRY}{LEAVE}")),
            set_metadata: Script::new(&format!("{ENTRY}{SET_METADATA}")),
            evict: Script::new(&format!("{ENTRY}{EVICT}")),
            drop_if_node: Script::new(DROP_IF_NODE),
            take: Script::new(TAKE),
            with_ttl: Script::new(WITH_TTL),
        }
    }

    /// Before a change that may write events: marks `room` due now, so a crash right after
    /// the change leaves it found by a dispatcher. Returns the scripts' event arguments:
    /// an id prefix (empty when events are off) and their TTL.
    async fn events_for(&self, room: &str) -> Result<(String, u64), StoreError> {
        let Some((retention, _, node)) = self.events.get() else {
            return Ok((String::new(), 1));
        };
        let due = self.keys.node_due(node);
        let mark = super::events::mark(crate::clock::unix_millis());
        self.with_ttl::<()>(&due, MAX_TTL, &["ZADD", &format!("{mark:.0}"), room])
            .await?;
        self.list_as_owner(node).await;
        let prefix = format!("{:016x}", crate::clock::random_u64());
        Ok((prefix, ms(*retention)))
    }

    /// Lists `node` among the owners of due sets, once per process (and again after a
    /// failure): the one write to a key outside the node's and the room's own slots, and
    /// one that may fail without failing the change.
    pub(super) async fn list_as_owner(&self, node: &str) {
        use std::sync::atomic::Ordering;
        if self.listed.load(Ordering::Relaxed) {
            return;
        }
        let owners = self.keys.due_owners();
        let listed = self.with_ttl::<()>(&owners, MAX_TTL, &["SADD", node]).await;
        match listed {
            Ok(()) => self.listed.store(true, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "could not list this node's due rooms yet"),
        }
    }

    /// Runs `command` (its name and the arguments after the key) on `key` and sets the
    /// key's TTL to `ttl` in one step.
    pub(super) async fn with_ttl<T: ::redis::FromRedisValue>(
        &self,
        key: &str,
        ttl: Duration,
        command: &[&str],
    ) -> Result<T, StoreError> {
        let mut invocation = self.with_ttl.prepare_invoke();
        invocation.key(key).arg(ms(ttl));
        for arg in command {
            invocation.arg(*arg);
        }
        self.redis.script(&invocation).await
    }

    /// The keys every membership script takes: members, info, sequence, events, facts.
    fn room_script<'a>(&self, script: &'a Script, room: &str) -> ::redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.room(room))
            .key(self.keys.room_info(room))
            .key(self.keys.room_seq(room))
            .key(self.keys.room_events(room))
            .key(self.keys.room_facts(room));
        invocation
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
        seating: Seating,
        capacity: usize,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError> {
        // Index first: a crash between the two leaves an index entry, never an orphan member.
        self.index(self.keys.node_rooms(&member.node), room).await?;
        let (event_id, event_ttl) = self.events_for(room).await?;
        let mut invocation = self.room_script(&self.join, room);
        invocation
            .arg(&member.peer_id)
            .arg(entry(member))
            .arg(capacity)
            .arg(ms(ttl))
            .arg(if seating == Seating::Keep { "1" } else { "0" })
            // The room's start and the join's event carry the member's own join time.
            .arg(if member.joined_at > 0 {
                member.joined_at
            } else {
                crate::clock::unix_millis()
            })
            .arg(event_id)
            .arg(event_ttl)
            .arg(room)
            .arg(facts(member));
        let joined: Option<(Vec<String>, Vec<String>, String)> =
            self.redis.script(&invocation).await?;
        Ok(match joined {
            None => JoinOutcome::Full,
            Some((pairs, all_facts, own)) => JoinOutcome::Joined {
                before: with_facts(pairs, all_facts),
                seated: decode(&member.peer_id, &entry(member), Some(&own))
                    .unwrap_or_else(|| member.clone()),
            },
        })
    }

    async fn leave_room(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        reason: LeaveReason,
    ) -> Result<Option<Vec<Member>>, StoreError> {
        let (event_id, event_ttl) = self.events_for(room).await?;
        let mut invocation = self.room_script(&self.leave, room);
        invocation
            .arg(peer_id)
            .arg(epoch.to_string())
            .arg(reason.as_str())
            .arg(crate::clock::unix_millis())
            .arg(event_id)
            .arg(event_ttl)
            .arg(room);
        let remaining: Option<Vec<String>> = self.redis.script(&invocation).await?;
        Ok(remaining.map(members))
    }

    async fn set_metadata(
        &self,
        room: &str,
        peer_id: &str,
        epoch: Epoch,
        metadata: &str,
    ) -> Result<Option<Vec<Member>>, StoreError> {
        let (event_id, event_ttl) = self.events_for(room).await?;
        let mut invocation = self.room_script(&self.set_metadata, room);
        invocation
            .arg(peer_id)
            .arg(epoch.to_string())
            .arg(metadata)
            .arg(crate::clock::unix_millis())
            .arg(event_id)
            .arg(event_ttl)
            .arg(room);
        let all: Option<Vec<String>> = self.redis.script(&invocation).await?;
        Ok(all.map(members))
    }

    async fn room_info(&self, room: &str) -> Result<Option<RoomInfo>, StoreError> {
        let (pairs, facts, created): (Vec<String>, Vec<String>, Option<u64>) = self
            .redis
            .pipe(
                pipe()
                    .cmd("HGETALL")
                    .arg(self.keys.room(room))
                    .cmd("HGETALL")
                    .arg(self.keys.room_facts(room))
                    .cmd("HGET")
                    .arg(self.keys.room_info(room))
                    .arg("created"),
            )
            .await?;
        let members = with_facts(pairs, facts);
        Ok((!members.is_empty()).then(|| RoomInfo {
            created_at: created.unwrap_or(0),
            members,
        }))
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let nodes: Vec<String> = self
            .redis
            .query(cmd("HKEYS").arg(self.keys.nodes()))
            .await?;
        let mut names = std::collections::BTreeSet::new();
        for node in nodes {
            let rooms: Vec<String> = self
                .redis
                .query(cmd("SMEMBERS").arg(self.keys.node_rooms(&node)))
                .await?;
            names.extend(rooms);
        }
        let mut rooms = Vec::with_capacity(names.len());
        for room in names {
            // A node's index may name a room it just left; the members hash decides.
            let (peers, created): (usize, Option<u64>) = self
                .redis
                .pipe(
                    pipe()
                        .cmd("HLEN")
                        .arg(self.keys.room(&room))
                        .cmd("HGET")
                        .arg(self.keys.room_info(&room))
                        .arg("created"),
                )
                .await?;
            if peers > 0 {
                rooms.push(RoomSummary {
                    room,
                    peers,
                    created_at: created.unwrap_or(0),
                });
            }
        }
        Ok(rooms)
    }

    async fn unindex_room(&self, node: &str, room: &str) -> Result<(), StoreError> {
        self.redis
            .query(cmd("SREM").arg(self.keys.node_rooms(node)).arg(room))
            .await
    }

    async fn touch_room(&self, room: &str, ttl: Duration) -> Result<(), StoreError> {
        self.redis
            .pipe(
                pipe()
                    .cmd("PEXPIRE")
                    .arg(self.keys.room(room))
                    .arg(ms(ttl))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(self.keys.room_info(room))
                    .arg(ms(ttl))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(self.keys.room_facts(room))
                    .arg(ms(ttl))
                    .ignore(),
            )
            .await
    }

    async fn room_members(&self, room: &str) -> Result<Vec<Member>, StoreError> {
        let (pairs, facts): (Vec<String>, Vec<String>) = self
            .redis
            .pipe(
                pipe()
                    .cmd("HGETALL")
                    .arg(self.keys.room(room))
                    .cmd("HGETALL")
                    .arg(self.keys.room_facts(room)),
            )
            .await?;
        Ok(with_facts(pairs, facts))
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
            let (event_id, event_ttl) = self.events_for(&room).await?;
            let mut invocation = self.room_script(&self.evict, &room);
            invocation
                .arg(dead)
                .arg(crate::clock::unix_millis())
                .arg(event_id)
                .arg(event_ttl)
                .arg(&room);
            let (removed, remaining): (Vec<String>, Vec<String>) =
                self.redis.script(&invocation).await?;
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
