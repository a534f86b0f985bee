//! The Redis bus: one stream per node, its inbox, and beside it a read marker
//! (`generation|last read id`).
//!
//! Senders append through their [`Courier`] lanes, which hold and retry across failovers.
//! The node reads with a blocking XREAD and commits each batch before delivering it: one
//! script moves the marker past the batch, now and then trims what earlier commits
//! covered, and says which of the batch's entries are still there (a sender may have
//! withdrawn one it gave up on; it looks only when one did since the last commit). Only
//! those are delivered, repeats dropped by (origin, sequence number). So each message is
//! either delivered or reported to its sender, never both: a node cut off after reading
//! cannot deliver what the others already reported, and a commit repeated because its
//! answer was lost finds the same entries. Senders give up on a message by origin and
//! sequence number (every unread copy goes), and Redis refuses an append past its
//! deadline, so a delayed append cannot land after its sender was told. When the marker is
//! missing (Redis lost its data) or closed (the node was declared lost while alive) the
//! node opens a new generation and reads its inbox from the start; senders see the new
//! generation and append again what was not read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::{FromRedisValue, Script, Value, cmd, pipe};
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::courier::{
    AppendError, Courier, EntryId, Fate, HoldLimits, Outgoing, Pin, Progress, Transport,
};
use super::{Bus, BusMessage, OnLost, Subscription};
use crate::error::StoreError;
use crate::redis::{Keys, Redis};
use crate::telemetry::Metrics;

/// An inbox (and its marker) nobody keeps alive (its node died) disappears after this long.
const INBOX_TTL: Duration = Duration::from_secs(600);
/// How long one XREAD waits for new entries; an idle reader re-checks its marker this often.
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries fetched per XREAD.
const BATCH: usize = 512;
/// A commit trims what earlier ones covered once this many entries were committed since
/// the last trim, or [`TRIM_INTERVAL`] passed, or the reader is idle. Trimming is most of
/// a commit's work in Redis (its clock, the pins, XTRIM); under load doing it on every
/// batch of one or two entries doubled what a cross-node message cost Redis. Deferring it
/// only keeps entries already read a little longer.
const TRIM_EVERY: usize = 256;
/// See [`TRIM_EVERY`].
const TRIM_INTERVAL: Duration = Duration::from_millis(100);
/// The field that marks an entry whose sender gives the withdrawals key a new value
/// whenever it deletes unread entries (see MARK); a sender of an older build does not, so
/// a batch holding one of its entries is checked entry by entry, as before.
const COUNTED: &str = "w";
/// How long an append waits for a replica to confirm it, where there are replicas: an
/// entry a master acknowledged and lost in a failover would otherwise look delivered.
const REPLICA_WAIT_MS: u64 = 50;
/// How long appends skip the replica wait after one found no replica to confirm: WAIT
/// blocks the connection it runs on, so while a master has no replica (its own was
/// promoted away in a failover) every call sharing that connection would stall for it.
const REPLICA_RECHECK: Duration = Duration::from_secs(2);

/// Appends entries if the inbox is open and of the expected generation, skipping those
/// whose deadline Redis's clock has passed (a delayed append must not land after its
/// sender was told), and pins the first entry appended for its origin when it has no
/// pin, so no copy is trimmed before the sender knows its fate. KEYS: marker, inbox, pins.
/// ARGV: TTL, expected generation ('' for any), origin, pin lifetime (ms), then per entry
/// its field count, deadline (unix ms) and fields. Returns nil (no inbox), {'closed'},
/// {'generation'}, or {generation, ids} with '' for a skipped entry.
const APPEND: &str = r"
local m = redis.call('GET', KEYS[1])
if not m then return false end
if string.find(m, '|closed', 1, true) then return {'closed'} end
local gen = string.match(m, '^([^|]*)')
if ARGV[2] ~= '' and ARGV[2] ~= gen then return {'generation'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = {}
local first
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if tonumber(ARGV[i + 1]) < now then
    ids[#ids + 1] = ''
  else
    local args = {}
    for j = 1, n do args[j] = ARGV[i + 1 + j] end
    local id = redis.call('XADD', KEYS[2], '*', unpack(args))
    ids[#ids + 1] = id
    first = first or id
  end
  i = i + n + 2
end
if first then
  local pin = redis.call('HGET', KEYS[3], ARGV[3])
  local expiry = pin and tonumber(string.match(pin, '|(%d+)$'))
  if not expiry or expiry < now then
    redis.call('HSET', KEYS[3], ARGV[3], first .. '|' .. (now + tonumber(ARGV[4])))
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {gen, ids}
";

/// Reads the marker and moves this origin's pin: ARGV[2] an entry id to keep from for
/// ARGV[3] ms, or '' to release it. KEYS: marker, pins. ARGV[1]: origin, ARGV[4]: the
/// pins' TTL.
const PROGRESS: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. (now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return redis.call('GET', KEYS[1]) or ''
";

/// Commits a batch read under generation ARGV[1]: moves the marker to ARGV[2], trims
/// entries below ARGV[3], those earlier commits covered (none when empty), but none that
/// a live pin keeps, and with the trim keeps the inbox and the withdrawals key alive for
/// ARGV[4] ms (a reader trims at least once a second: see TRIM_EVERY). Returns {1,
/// present, withdrawals} with 1/0 per entry id ARGV[6..] still in the inbox; {0} when the
/// marker is gone, closed or of another generation.
/// ARGV[5] is the withdrawals value the previous commit returned, or '' when the batch
/// holds an entry whose sender does not count its withdrawals: if it still stands, no
/// sender deleted anything since that commit, so every entry read after it is still there
/// and none is looked up (copying each entry into Lua to see it was most of a commit's
/// cost). KEYS: marker, inbox, pins, withdrawals. Atomic with WITHDRAW, so an entry is
/// delivered or withdrawn, not both.
const MARK: &str = r"
local m = redis.call('GET', KEYS[1])
if not m then return {0} end
if string.match(m, '^([^|]*)') ~= ARGV[1] or string.find(m, '|closed', 1, true) then return {0} end
local w = redis.call('GET', KEYS[4])
local present = {}
if w and w == ARGV[5] then
  for i = 6, #ARGV do present[#present + 1] = 1 end
else
  for i = 6, #ARGV do
    present[#present + 1] = #redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i], 'COUNT', 1)
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[4])
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local bms, bseq = string.match(ARGV[3], '^(%d+)-(%d+)$')
  bms, bseq = tonumber(bms), tonumber(bseq)
  local pins = redis.call('HGETALL', KEYS[3])
  for i = 1, #pins, 2 do
    local pms, pseq, expiry = string.match(pins[i + 1], '^(%d+)-(%d+)|(%d+)$')
    if not expiry or tonumber(expiry) < now then
      redis.call('HDEL', KEYS[3], pins[i])
    elseif tonumber(pms) < bms or (tonumber(pms) == bms and tonumber(pseq) < bseq) then
      bms, bseq = tonumber(pms), tonumber(pseq)
    end
  end
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-%d', bms, bseq))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  if w then redis.call('PEXPIRE', KEYS[4], ARGV[4]) end
end
if not w then
  local t = redis.call('TIME')
  w = t[1] .. '.' .. t[2]
  redis.call('SET', KEYS[4], w, 'PX', ARGV[4])
end
return {1, present, w}
";

/// Gives up on messages of origin ARGV[1] with sequence numbers ARGV[2..]: a copy at or
/// below the marker was read (2, delivered); otherwise every unread copy is deleted (1,
/// withdrawn); with no copy left it never landed (0): the origin's pin keeps every copy
/// until it asks. A deletion gives the withdrawals key a new value (Redis's clock, never
/// the value it had) for ARGV[2] ms. KEYS: marker, inbox, withdrawals. Returns the marker
/// ('' when none) and the fates. Atomic with the reader's commit, which checks the
/// presence of what it delivers: a message is delivered or withdrawn, never both.
const WITHDRAW: &str = r"
local m = redis.call('GET', KEYS[1]) or ''
local rms, rseq = string.match(m, '^[^|]*|(%d+)-(%d+)')
rms = tonumber(rms or '0')
rseq = tonumber(rseq or '0')
local state = {}
for i = 3, #ARGV do state[ARGV[i]] = 0 end
local unread = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  local f = e[2]
  local o, q
  for j = 1, #f, 2 do
    if f[j] == 'o' then o = f[j + 1] elseif f[j] == 'q' then q = f[j + 1] end
  end
  if o == ARGV[1] and q and state[q] then
    local ms, sq = string.match(e[1], '^(%d+)-(%d+)$')
    ms = tonumber(ms)
    sq = tonumber(sq)
    if ms < rms or (ms == rms and sq <= rseq) then
      state[q] = 2
    else
      if state[q] == 0 then state[q] = 1 end
      unread[#unread + 1] = {e[1], q}
    end
  end
end
local deleted = false
for _, u in ipairs(unread) do
  if state[u[2]] == 1 then
    redis.call('XDEL', KEYS[2], u[1])
    deleted = true
  end
end
if deleted then
  local t = redis.call('TIME')
  local v = t[1] .. '.' .. t[2]
  if v == redis.call('GET', KEYS[3]) then v = v .. '+' end
  redis.call('SET', KEYS[3], v, 'PX', ARGV[2])
end
local out = {}
for i = 3, #ARGV do out[#out + 1] = state[ARGV[i]] end
return {m, out}
";

/// Closes the marker of a node declared lost.
const CLOSE: &str = r"
local m = redis.call('GET', KEYS[1])
if m and not string.find(m, '|closed', 1, true) then
  redis.call('SET', KEYS[1], m .. '|closed', 'KEEPTTL')
end
return 1
";

/// Whether an append waits (briefly) for a replica to confirm it: on replicated
/// deployments, except for a while after a wait found none.
struct ReplicaWait {
    replicated: bool,
    /// Until when appends skip the wait.
    skip_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl ReplicaWait {
    fn new(replicated: bool) -> Self {
        Self {
            replicated,
            skip_until: std::sync::Mutex::new(None),
        }
    }

    /// Whether the next append waits.
    fn due(&self) -> bool {
        self.replicated
            && self
                .skip_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|until| tokio::time::Instant::now() >= until)
    }

    /// Records whether a wait saw a replica confirm.
    fn confirmed(&self, any: bool) {
        let until = (!any).then(|| tokio::time::Instant::now() + REPLICA_RECHECK);
        *self.skip_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

/// [`Bus`] over Redis streams.
pub struct RedisBus {
    redis: Redis,
    /// A separate connection: a blocking XREAD must not delay other commands.
    reader: Redis,
    keys: Keys,
    courier: Arc<Courier>,
    mark: Script,
    close: Script,
}

/// The lanes' view of Redis.
struct Streams {
    redis: Redis,
    keys: Keys,
    origin: Arc<str>,
    /// Whether appends wait for a replica to confirm them.
    replicas: ReplicaWait,
    /// How long a pin outlives its last renewal: past twice the hold, by when a sender
    /// has given up on asking.
    pin_ttl: u64,
    withdraw: Script,
    progress: Script,
}

impl RedisBus {
    /// A bus sending through `redis` and reading through `reader` (its own connection).
    /// `replicated` makes appends wait for a replica; `origin` names this process.
    pub fn new(
        redis: Redis,
        reader: Redis,
        keys: Keys,
        replicated: bool,
        limits: HoldLimits,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let origin = format!("{:016x}", crate::clock::random_u64());
        let streams = Streams {
            redis: redis.clone(),
            keys: keys.clone(),
            origin: Arc::from(origin.as_str()),
            replicas: ReplicaWait::new(replicated),
            pin_ttl: (limits.hold * 3).as_millis() as u64,
            withdraw: Script::new(WITHDRAW),
            progress: Script::new(PROGRESS),
        };
        Self {
            redis,
            reader: reader.with_timeout(BLOCK * 3),
            keys,
            courier: Courier::new(&origin, Arc::new(streams), limits, metrics),
            mark: Script::new(MARK),
            close: Script::new(CLOSE),
        }
    }

    /// Messages and bytes held for other nodes.
    pub fn held(&self) -> (usize, usize) {
        self.courier.held()
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn send(&self, node: &str, message: BusMessage, lost: Option<OnLost>) {
        self.courier.send(node, &message, lost);
    }

    async fn flushed(&self) {
        self.courier.flushed().await
    }

    fn abandon(&self, node: &str) {
        self.courier.abandon(node);
    }

    async fn close(&self, node: &str) -> Result<(), StoreError> {
        self.redis
            .script(&self.close.key(self.keys.inbox_read(node)))
            .await
    }

    async fn subscribe(&self, node: &str) -> Result<Subscription, StoreError> {
        // Start at the server's "now": entries left by an earlier process with this node
        // id are appended again by their senders, who see the new generation.
        let (secs, micros): (u64, u64) = self.redis.query(&cmd("TIME")).await?;
        let reader = Reader {
            redis: self.redis.clone(),
            reader: self.reader.clone(),
            marker: self.keys.inbox_read(node),
            inbox: self.keys.inbox(node),
            pins: self.keys.inbox_pins(node),
            withdrawals: self.keys.inbox_withdrawals(node),
            mark: self.mark.clone(),
            generation: String::new(),
            last: format!("{}-0", secs * 1000 + micros / 1000),
            withdrawn: String::new(),
            seen: HashMap::new(),
            trims: TrimSchedule::new(),
        };
        let mut reader = reader;
        reader.open().await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(reader.run(tx));
        Ok(rx)
    }
}

/// Reads one node's inbox.
struct Reader {
    redis: Redis,
    reader: Redis,
    marker: String,
    inbox: String,
    pins: String,
    withdrawals: String,
    mark: Script,
    generation: String,
    /// Last entry read and committed.
    last: String,
    /// The withdrawals value the last commit returned ('' before the first).
    withdrawn: String,
    /// Highest sequence number seen per origin: repeats are dropped.
    seen: HashMap<String, u64>,
    /// When the next commit trims.
    trims: TrimSchedule,
}

/// When a reader's commit trims what earlier commits covered: see [`TRIM_EVERY`].
struct TrimSchedule {
    /// Entries committed since the last trim.
    untrimmed: usize,
    /// When that trim was.
    at: tokio::time::Instant,
}

impl TrimSchedule {
    fn new() -> Self {
        Self {
            untrimmed: 0,
            at: tokio::time::Instant::now(),
        }
    }

    /// Whether a commit of `batch` entries trims.
    fn due(&self, batch: usize) -> bool {
        batch == 0 || self.untrimmed >= TRIM_EVERY || self.at.elapsed() >= TRIM_INTERVAL
    }

    /// Records a commit of `batch` entries that did (or did not) trim.
    fn committed(&mut self, batch: usize, trimmed: bool) {
        if trimmed {
            self.untrimmed = 0;
            self.at = tokio::time::Instant::now();
        }
        self.untrimmed += batch;
    }
}

impl Reader {
    /// Opens a new generation of the inbox, read from `last`.
    async fn open(&mut self) -> Result<(), StoreError> {
        let generation = format!("{:016x}", crate::clock::random_u64());
        self.redis
            .query::<()>(
                cmd("SET")
                    .arg(&self.marker)
                    .arg(format!("{generation}|{}", self.last))
                    .arg("PX")
                    .arg(INBOX_TTL.as_millis() as u64),
            )
            .await?;
        self.generation = generation;
        Ok(())
    }

    /// Commits a batch (`ids`, in order; none to keep the marker and inbox alive): moves
    /// the marker past it and, every [`TRIM_EVERY`] entries or [`TRIM_INTERVAL`], trims
    /// what earlier commits covered. Returns which entries were still there, or `None` when
    /// the marker was gone or closed and a new generation was opened, read from the start:
    /// the batch is then dropped and read again if it is still there. `in_doubt` says an
    /// earlier attempt at this commit may have run (its answer was lost). `counted` says
    /// every entry of the batch comes from a sender that counts its withdrawals.
    async fn commit(
        &mut self,
        ids: &[String],
        counted: bool,
        in_doubt: bool,
    ) -> Result<Option<Vec<bool>>, StoreError> {
        // Trim what earlier commits covered, not this batch: should this commit's answer
        // be lost and the commit repeated, the batch is still there to be checked again
        // (and senders never withdraw entries at or below the marker).
        let last = ids.last().unwrap_or(&self.last).clone();
        let trims = self.trims.due(ids.len());
        let trim = match parse_id(&self.last) {
            Some((ms, seq)) if trims && (ms, seq) != (0, 0) => format!("{ms}-{}", seq + 1),
            _ => String::new(),
        };
        let mut invocation = self.mark.key(&self.marker);
        invocation
            .key(&self.inbox)
            .key(&self.pins)
            .key(&self.withdrawals)
            .arg(&self.generation)
            .arg(&last)
            .arg(trim)
            .arg(INBOX_TTL.as_millis() as u64)
            .arg(if counted { self.withdrawn.as_str() } else { "" });
        for id in ids {
            invocation.arg(id);
        }
        let reply: (i64, Vec<i64>, String) = match self.redis.script::<Value>(&invocation).await? {
            Value::Array(parts) if parts.len() == 1 => (0, Vec::new(), String::new()),
            other => FromRedisValue::from_redis_value(other)
                .map_err(|e| StoreError(format!("Redis returned a malformed inbox commit: {e}")))?,
        };
        if reply.0 == 1 {
            self.last = last;
            self.withdrawn = reply.2;
            self.trims.committed(ids.len(), trims);
            return Ok(Some(reply.1.into_iter().map(|p| p == 1).collect()));
        }
        // Redis lost the marker, or other nodes declared this one lost: read the inbox
        // from its start (repeats are dropped) under a new generation, so senders append
        // again whatever this node did not read.
        let ran = if in_doubt {
            self.committed_before(ids).await?
        } else {
            None
        };
        tracing::warn!("this node's inbox marker was lost or closed; opening a new generation");
        self.last = "0-0".into();
        self.open().await?;
        Ok(ran)
    }

    /// After a commit whose answer was lost found the marker gone or closed: whether that
    /// commit ran, and then which entries of its batch to deliver. Senders that saw the
    /// marker past the batch count it read and never send it again, so dropping it would
    /// lose it silently.
    async fn committed_before(&self, ids: &[String]) -> Result<Option<Vec<bool>>, StoreError> {
        let Some(last) = ids.last() else {
            return Ok(None);
        };
        let marker: Option<String> = self.redis.query(cmd("GET").arg(&self.marker)).await?;
        let Some(marker) = marker else {
            // Redis lost its data, maybe after the commit ran: deliver the whole batch.
            // What senders had not seen read they append again, and repeats are dropped.
            return Ok(Some(vec![true; ids.len()]));
        };
        let ran = parse_marker(&marker).is_some_and(|m| {
            *m.generation == *self.generation && parse_id(last).is_some_and(|l| m.read >= l)
        });
        if !ran {
            return Ok(None);
        }
        // Closed after the commit ran: what a sender withdrew before it is gone from the
        // stream (a commit trims only earlier batches), so presence is checked again.
        let mut p = pipe();
        for id in ids {
            p.cmd("XRANGE")
                .arg(&self.inbox)
                .arg(id)
                .arg(id)
                .arg("COUNT")
                .arg(1);
        }
        let found: Vec<Vec<Value>> = self.redis.pipe(&p).await?;
        Ok(Some(found.iter().map(|f| !f.is_empty()).collect()))
    }

    /// Commits `ids` until Redis answers; `None` when the batch must be dropped (a new
    /// generation was opened, or the receiver is gone).
    async fn commit_patiently(
        &mut self,
        ids: &[String],
        counted: bool,
        tx: &mpsc::Sender<BusMessage>,
    ) -> Option<Vec<bool>> {
        let mut failures = 0u32;
        loop {
            match self.commit(ids, counted, failures > 0).await {
                Ok(present) => return present,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "could not commit what this node read; retrying");
                    }
                    if tx.is_closed() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10))))
                        .await;
                }
            }
        }
    }

    /// Reads until the receiver is dropped; on errors retries from the last id committed.
    async fn run(mut self, tx: mpsc::Sender<BusMessage>) {
        let mut failures = 0u32;
        loop {
            let mut xread = cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.inbox)
                .arg(&self.last);
            let reply: Value = match self.reader.query(&xread).await {
                Ok(r) => {
                    if failures > 0 {
                        tracing::info!("bus reader reconnected to Redis");
                        failures = 0;
                    }
                    r
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "bus reader lost Redis; retrying from the last id");
                    }
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10))))
                        .await;
                    continue;
                }
            };
            let (ids, entries) = read_entries(reply);
            let counted = all_counted(&entries);
            // With nothing new, the commit checks the marker is still there and ours.
            let Some(present) = self.commit_patiently(&ids, counted, &tx).await else {
                if tx.is_closed() {
                    return;
                }
                continue;
            };
            for ((id, mut fields), present) in ids.iter().zip(entries).zip(present) {
                if !present || self.repeated(&mut fields) {
                    continue;
                }
                match BusMessage::from_fields(fields) {
                    Some(message) => {
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    None => tracing::warn!(%id, "skipped a malformed bus entry"),
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    }

    /// True when this entry's (origin, sequence number) was seen already.
    fn repeated(&mut self, fields: &mut HashMap<String, String>) -> bool {
        let (Some(origin), Some(seq)) = (fields.remove("o"), fields.remove("q")) else {
            return false;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return false;
        };
        let seen = self.seen.entry(origin).or_default();
        if seq <= *seen {
            return true;
        }
        *seen = seq;
        false
    }
}

#[async_trait]
impl Transport for Streams {
    async fn append(
        &self,
        node: &str,
        expected: Option<&str>,
        entries: &[Outgoing],
    ) -> Result<(Arc<str>, Vec<Option<EntryId>>), AppendError> {
        let mut eval = cmd("EVAL");
        eval.arg(APPEND)
            .arg(3)
            .arg(self.keys.inbox_read(node))
            .arg(self.keys.inbox(node))
            .arg(self.keys.inbox_pins(node))
            .arg(INBOX_TTL.as_millis() as u64)
            .arg(expected.unwrap_or_default())
            .arg(&*self.origin)
            .arg(self.pin_ttl);
        for entry in entries {
            eval.arg((entry.fields.len() + 3) * 2).arg(entry.deadline);
            eval.arg("o").arg(&*self.origin);
            eval.arg("q").arg(entry.seq);
            eval.arg(COUNTED).arg(1);
            for (field, value) in &entry.fields {
                eval.arg(*field).arg(value);
            }
        }
        let mut p = pipe();
        p.add_command(eval);
        let waits = self.replicas.due();
        if waits {
            p.cmd("WAIT").arg(1).arg(REPLICA_WAIT_MS);
        }
        let replies: Vec<Value> = self.redis.pipe_or_unsent(&p).await.map_err(
            |(e, may_have_run)| match may_have_run {
                true => AppendError::Store(e),
                false => AppendError::Unsent(e),
            },
        )?;
        let mut replies = replies.into_iter();
        let reply = replies.next().unwrap_or(Value::Nil);
        if waits && let Some(Value::Int(confirmed)) = replies.next() {
            self.replicas.confirmed(confirmed > 0);
        }
        let Value::Array(parts) = reply else {
            return Err(AppendError::NoInbox);
        };
        if parts.len() == 1 {
            let why = String::from_redis_value(parts.into_iter().next().expect("one part"));
            return Err(match why.as_deref() {
                Ok("generation") => AppendError::Generation,
                _ => AppendError::Closed,
            });
        }
        let malformed =
            || AppendError::Store(StoreError("Redis returned a malformed append".into()));
        let mut parts = parts.into_iter();
        let generation = parts
            .next()
            .and_then(|v| String::from_redis_value(v).ok())
            .ok_or_else(malformed)?;
        let ids: Vec<String> = parts
            .next()
            .and_then(|v| Vec::<String>::from_redis_value(v).ok())
            .ok_or_else(malformed)?;
        if ids.len() != entries.len()
            || ids
                .iter()
                .any(|id| !id.is_empty() && parse_id(id).is_none())
        {
            return Err(malformed());
        }
        let ids = ids.iter().map(|id| parse_id(id)).collect();
        Ok((Arc::from(generation.as_str()), ids))
    }

    async fn progress(&self, node: &str, pin: Pin) -> Result<Option<Progress>, StoreError> {
        let marker: String = match pin {
            Pin::Leave => {
                let marker: Option<String> = self
                    .redis
                    .query(cmd("GET").arg(self.keys.inbox_read(node)))
                    .await?;
                marker.unwrap_or_default()
            }
            Pin::Keep(_) | Pin::Release => {
                let from = match pin {
                    Pin::Keep((ms, seq)) => format!("{ms}-{seq}"),
                    _ => String::new(),
                };
                let mut invocation = self.progress.key(self.keys.inbox_read(node));
                invocation
                    .key(self.keys.inbox_pins(node))
                    .arg(&*self.origin)
                    .arg(from)
                    .arg(self.pin_ttl)
                    .arg(INBOX_TTL.as_millis() as u64);
                self.redis.script(&invocation).await?
            }
        };
        Ok(parse_marker(&marker))
    }

    async fn withdraw(
        &self,
        node: &str,
        seqs: &[u64],
    ) -> Result<(Vec<Fate>, Option<Progress>), StoreError> {
        let mut invocation = self.withdraw.key(self.keys.inbox_read(node));
        invocation
            .key(self.keys.inbox(node))
            .key(self.keys.inbox_withdrawals(node))
            .arg(&*self.origin)
            .arg(INBOX_TTL.as_millis() as u64);
        for seq in seqs {
            invocation.arg(seq);
        }
        let (marker, fates): (String, Vec<i64>) = self.redis.script(&invocation).await?;
        let fates = fates
            .into_iter()
            .map(|f| match f {
                2 => Fate::Delivered,
                1 => Fate::Withdrawn,
                _ => Fate::Absent,
            })
            .collect();
        Ok((fates, parse_marker(&marker)))
    }
}

/// Whether every entry comes from a sender that counts its withdrawals (see [`COUNTED`]).
fn all_counted(entries: &[HashMap<String, String>]) -> bool {
    entries.iter().all(|fields| fields.contains_key(COUNTED))
}

/// The ids and fields of an XREAD reply's entries (none for a nil reply). Parsed from the
/// reply as it is, moving its strings: the client's `StreamReadReply` clones the whole
/// reply (every 2 KB frame among it) before converting it, and measurably so on the
/// cross-node path. An entry or field that is not a string pair is skipped.
fn read_entries(reply: Value) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let (mut ids, mut entries) = (Vec::new(), Vec::new());
    // RESP2 answers [[key, entries]]; RESP3 may answer {key: entries}.
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(pair) => pair.into_iter().nth(1),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    for stream in streams {
        let Value::Array(stream) = stream else {
            continue;
        };
        for entry in stream {
            let Value::Array(entry) = entry else { continue };
            let mut entry = entry.into_iter();
            let (Some(id), Some(Value::Array(flat))) = (entry.next(), entry.next()) else {
                continue;
            };
            let Ok(id) = String::from_redis_value(id) else {
                continue;
            };
            let mut fields = HashMap::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let (Ok(k), Ok(v)) = (String::from_redis_value(k), String::from_redis_value(v)) {
                    fields.insert(k, v);
                }
            }
            ids.push(id);
            entries.push(fields);
        }
    }
    (ids, entries)
}

/// Parses a stream id `ms-seq`.
fn parse_id(id: &str) -> Option<EntryId> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Parses a marker `generation|ms-seq[|closed]`.
fn parse_marker(marker: &str) -> Option<Progress> {
    let mut parts = marker.split('|');
    let generation = parts.next().filter(|g| !g.is_empty())?;
    let read = parse_id(parts.next()?)?;
    Some(Progress {
        generation: Arc::from(generation),
        read,
        closed: parts.next() == Some("closed"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_parse_without_the_client_stream_types() {
        let entry = |id: &str, fields: &[&str]| {
            Value::Array(vec![
                bulk(id),
                Value::Array(fields.iter().map(|f| bulk(f)).collect()),
            ])
        };
        let entries = Value::Array(vec![
            entry("1-1", &["k", "d", "to", "p1"]),
            Value::Int(7),
            entry("1-2", &["k", "d", "odd"]),
        ]);
        let expected = (
            vec!["1-1".to_string(), "1-2".to_string()],
            vec![
                HashMap::from([("k".into(), "d".into()), ("to".into(), "p1".into())]),
                HashMap::from([("k".into(), "d".into())]),
            ],
        );
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("inbox"), entries.clone()])]);
        assert_eq!(read_entries(resp2), expected);
        let resp3 = Value::Map(vec![(bulk("inbox"), entries)]);
        assert_eq!(read_entries(resp3), expected);
        assert_eq!(read_entries(Value::Nil), (vec![], vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_reader_trims_every_so_many_entries_or_so_often() {
        let mut trims = TrimSchedule::new();
        assert!(trims.due(0), "an idle reader's commit trims");
        assert!(!trims.due(1));
        trims.committed(1, false);
        for _ in 0..TRIM_EVERY - 2 {
            assert!(!trims.due(1));
            trims.committed(1, false);
        }
        assert!(!trims.due(1), "{} entries are not yet due", TRIM_EVERY - 1);
        trims.committed(1, false);
        assert!(trims.due(1), "{TRIM_EVERY} entries are due");
        trims.committed(3, true);
        assert!(!trims.due(1), "a trim starts the count again");
        tokio::time::advance(TRIM_INTERVAL - Duration::from_millis(1)).await;
        assert!(!trims.due(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            trims.due(1),
            "a trim is due {TRIM_INTERVAL:?} after the last"
        );
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(parse_id("1700000000000-10") > parse_id("1700000000000-9"));
        assert!(parse_id("1700000000001-0") > parse_id("1700000000000-99"));
        assert_eq!(parse_id("nope"), None);
    }

    #[test]
    fn markers_parse_with_and_without_closing() {
        let open = parse_marker("ab12|1700-3").unwrap();
        assert_eq!(
            (&*open.generation, open.read, open.closed),
            ("ab12", (1700, 3), false)
        );
        assert!(parse_marker("ab12|1700-3|closed").unwrap().closed);
        assert_eq!(parse_marker(""), None);
        assert_eq!(parse_marker("ab12|junk"), None);
    }

    /// A master left without a replica (its own was promoted away) is not waited for on
    /// every append, only re-checked now and then; unreplicated deployments never wait.
    #[tokio::test(start_paused = true)]
    async fn appends_stop_waiting_for_a_missing_replica_until_the_recheck() {
        let wait = ReplicaWait::new(true);
        assert!(wait.due());
        wait.confirmed(true);
        assert!(wait.due(), "a replica answered: keep waiting for it");
        wait.confirmed(false);
        assert!(!wait.due(), "no replica answered: appends skip the wait");
        tokio::time::advance(REPLICA_RECHECK).await;
        assert!(wait.due(), "the recheck waits once more");
        assert!(!ReplicaWait::new(false).due());
    }

    /// A `redis-server` of its own, killed when dropped.
    struct Server(std::process::Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts one on a free port and connects to it. The port is free when chosen but
    /// another process may take it first: a server that exits at once (it could not bind)
    /// is started again on another port.
    async fn redis_server() -> (Server, Redis) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        'start: loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test.sh installs it)");
            let mut server = Server(child);
            let topology = crate::redis::Topology::Standalone {
                url: format!("redis://127.0.0.1:{port}"),
            };
            loop {
                if let Ok(redis) = Redis::connect(&topology, Duration::from_secs(2)).await
                    && redis.query::<String>(&cmd("PING")).await.is_ok()
                {
                    return (server, redis);
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server on port {port} did not answer within 10 s"
                );
                if matches!(server.0.try_wait(), Ok(Some(_))) {
                    continue 'start;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// How often Redis ran `command` since the last `CONFIG RESETSTAT`.
    async fn calls(redis: &Redis, command: &str) -> u64 {
        let stats: String = redis.query(cmd("INFO").arg("commandstats")).await.unwrap();
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// What the reader's next XREAD would return.
    async fn read(reader: &Reader) -> (Vec<String>, Vec<HashMap<String, String>>) {
        let mut xread = cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(&reader.inbox)
            .arg(&reader.last);
        read_entries(reader.redis.query(&xread).await.unwrap())
    }

    /// Commits skip looking up each entry while no sender deleted any since the last
    /// commit, yet an entry withdrawn between the read and the commit is still found gone;
    /// so is one an older sender (which does not count its withdrawals) deleted.
    #[tokio::test]
    async fn commits_look_entries_up_only_after_a_withdrawal() {
        let (_server, redis) = redis_server().await;
        let keys = Keys::new("t:");
        let streams = Streams {
            redis: redis.clone(),
            keys: keys.clone(),
            origin: Arc::from("origin"),
            replicas: ReplicaWait::new(false),
            pin_ttl: 60_000,
            withdraw: Script::new(WITHDRAW),
            progress: Script::new(PROGRESS),
        };
        let mut reader = Reader {
            redis: redis.clone(),
            reader: redis.clone(),
            marker: keys.inbox_read("n"),
            inbox: keys.inbox("n"),
            pins: keys.inbox_pins("n"),
            withdrawals: keys.inbox_withdrawals("n"),
            mark: Script::new(MARK),
            generation: String::new(),
            last: "0-0".into(),
            withdrawn: String::new(),
            seen: HashMap::new(),
            trims: TrimSchedule::new(),
        };
        reader.open().await.unwrap();
        assert_eq!(reader.commit(&[], true, false).await.unwrap(), Some(vec![]));
        let deadline = (crate::clock::unix_now() + 60) * 1000;
        let message = |seq| Outgoing {
            seq,
            deadline,
            fields: vec![("k", "d".into()), ("to", "p".into()), ("f", "x".into())],
        };

        // Nothing withdrawn since the last commit: the batch is not looked up.
        streams.append("n", None, &[message(1)]).await.unwrap();
        let (ids, entries) = read(&reader).await;
        assert!(all_counted(&entries), "{entries:?}");
        redis
            .query::<()>(cmd("CONFIG").arg("RESETSTAT"))
            .await
            .unwrap();
        let present = reader.commit(&ids, true, false).await.unwrap();
        assert_eq!(present, Some(vec![true]));
        assert_eq!(calls(&redis, "xrange").await, 0);

        // Withdrawn after the read, before the commit: found gone.
        streams.append("n", None, &[message(2)]).await.unwrap();
        let (ids, entries) = read(&reader).await;
        assert_eq!(ids.len(), 1);
        let (fates, _) = streams.withdraw("n", &[2]).await.unwrap();
        assert_eq!(fates, vec![Fate::Withdrawn]);
        redis
            .query::<()>(cmd("CONFIG").arg("RESETSTAT"))
            .await
            .unwrap();
        let present = reader.commit(&ids, all_counted(&entries), false).await;
        assert_eq!(
            present.unwrap(),
            Some(vec![false]),
            "a withdrawn entry is never delivered"
        );
        assert_eq!(
            calls(&redis, "xrange").await,
            1,
            "looked up after the withdrawal"
        );

        // An older sender's entry, deleted as that sender withdraws (without a new value).
        let id: String = redis
            .query(
                cmd("XADD")
                    .arg(&reader.inbox)
                    .arg("*")
                    .arg("o")
                    .arg("old")
                    .arg("q")
                    .arg(1),
            )
            .await
            .unwrap();
        let (ids, entries) = read(&reader).await;
        assert_eq!(ids, vec![id.clone()]);
        assert!(!all_counted(&entries));
        redis
            .query::<i64>(cmd("XDEL").arg(&reader.inbox).arg(&id))
            .await
            .unwrap();
        let present = reader.commit(&ids, all_counted(&entries), false).await;
        assert_eq!(present.unwrap(), Some(vec![false]));
    }
}
