//! The Redis bus: one stream per node, its inbox, and beside it a read marker
//! (`generation|last read id`).
//!
//! Senders append through their [`Courier`] lanes, which hold and retry across failovers.
//! The node reads with a blocking XREAD and commits each batch before delivering it: one
//! script moves the marker past the batch, trims it and says which of its entries were
//! still there (a sender may have withdrawn one it gave up on). Only those are delivered,
//! repeats dropped by (origin, sequence number). So each message is either delivered or
//! reported to its sender, never both: a node cut off after reading cannot deliver what
//! the others already reported. When the marker is missing (Redis lost its data) or
//! closed (the node was declared lost while alive) the node opens a new generation and
//! reads its inbox from the start; senders see the new generation and append again what
//! was not read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::streams::StreamReadReply;
use ::redis::{FromRedisValue, Script, Value, cmd, pipe};
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::courier::{AppendError, Courier, EntryId, HoldLimits, Outgoing, Progress, Transport};
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
/// How long an append waits for a replica to confirm it, where there are replicas: an
/// entry a master acknowledged and lost in a failover would otherwise look delivered.
const REPLICA_WAIT_MS: u64 = 50;

/// Appends entries if the inbox is open and of the expected generation. KEYS: marker,
/// inbox. ARGV: TTL, expected generation ('' for any), then per entry its field count and
/// fields. Returns nil (no inbox), {'closed'}, {'generation'}, or {generation, ids}.
const APPEND: &str = r"
local m = redis.call('GET', KEYS[1])
if not m then return false end
if string.find(m, '|closed', 1, true) then return {'closed'} end
local gen = string.match(m, '^([^|]*)')
if ARGV[2] ~= '' and ARGV[2] ~= gen then return {'generation'} end
local ids = {}
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local args = {}
  for j = 1, n do args[j] = ARGV[i + j] end
  ids[#ids + 1] = redis.call('XADD', KEYS[2], '*', unpack(args))
  i = i + n + 1
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {gen, ids}
";

/// Commits a batch read under generation ARGV[1]: moves the marker to ARGV[2], trims
/// entries below ARGV[3] (none when empty) and returns {1, present} with 1/0 per entry id
/// ARGV[5..] still in the inbox; {0} when the marker is gone, closed or of another
/// generation. Atomic with WITHDRAW, so an entry is delivered or withdrawn, not both.
const MARK: &str = r"
local m = redis.call('GET', KEYS[1])
if not m then return {0} end
if string.match(m, '^([^|]*)') ~= ARGV[1] or string.find(m, '|closed', 1, true) then return {0} end
local present = {}
for i = 5, #ARGV do
  present[#present + 1] = #redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i], 'COUNT', 1)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[4])
if ARGV[3] ~= '' then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3]) end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {1, present}
";

/// Deletes entries ARGV[..]; returns the marker ('' when none) and 1/0 per entry.
const WITHDRAW: &str = r"
local out = {}
for i = 1, #ARGV do out[i] = redis.call('XDEL', KEYS[2], ARGV[i]) end
return {redis.call('GET', KEYS[1]) or '', out}
";

/// Closes the marker of a node declared lost.
const CLOSE: &str = r"
local m = redis.call('GET', KEYS[1])
if m and not string.find(m, '|closed', 1, true) then
  redis.call('SET', KEYS[1], m .. '|closed', 'KEEPTTL')
end
return 1
";

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
    /// Wait for a replica to confirm appends (Sentinel and Cluster deployments).
    replicated: bool,
    withdraw: Script,
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
            replicated,
            withdraw: Script::new(WITHDRAW),
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
            mark: self.mark.clone(),
            generation: String::new(),
            last: format!("{}-0", secs * 1000 + micros / 1000),
            seen: HashMap::new(),
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
    mark: Script,
    generation: String,
    /// Last entry read and committed.
    last: String,
    /// Highest sequence number seen per origin: repeats are dropped.
    seen: HashMap<String, u64>,
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
    /// the marker past it and trims it. Returns which entries were still there, or `None`
    /// when the marker was gone or closed and a new generation was opened, read from the
    /// start: the batch is then dropped and read again if it is still there.
    async fn commit(&mut self, ids: &[String]) -> Result<Option<Vec<bool>>, StoreError> {
        let (last, trim) = match ids.last() {
            Some(last) => (
                last.clone(),
                parse_id(last).map_or(String::new(), |(ms, seq)| format!("{ms}-{}", seq + 1)),
            ),
            None => (self.last.clone(), String::new()),
        };
        let mut invocation = self.mark.key(&self.marker);
        invocation
            .key(&self.inbox)
            .arg(&self.generation)
            .arg(&last)
            .arg(trim)
            .arg(INBOX_TTL.as_millis() as u64);
        for id in ids {
            invocation.arg(id);
        }
        let reply: (i64, Vec<i64>) = match self.redis.script::<Value>(&invocation).await? {
            Value::Array(parts) if parts.len() == 1 => (0, Vec::new()),
            other => FromRedisValue::from_redis_value(other)
                .map_err(|e| StoreError(format!("Redis returned a malformed inbox commit: {e}")))?,
        };
        if reply.0 == 1 {
            self.last = last;
            return Ok(Some(reply.1.into_iter().map(|p| p == 1).collect()));
        }
        // Redis lost the marker, or other nodes declared this one lost: read the inbox
        // from its start (repeats are dropped) under a new generation, so senders append
        // again whatever this node did not read.
        tracing::warn!("this node's inbox marker was lost or closed; opening a new generation");
        self.last = "0-0".into();
        self.open().await?;
        Ok(None)
    }

    /// Commits `ids` until Redis answers; `None` when the batch must be dropped (a new
    /// generation was opened, or the receiver is gone).
    async fn commit_patiently(
        &mut self,
        ids: &[String],
        tx: &mpsc::Sender<BusMessage>,
    ) -> Option<Vec<bool>> {
        let mut failures = 0u32;
        loop {
            match self.commit(ids).await {
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
            let reply: Option<StreamReadReply> = match self.reader.query(&xread).await {
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
            let entries: Vec<_> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            // With nothing new, the commit checks the marker is still there and ours.
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            let Some(present) = self.commit_patiently(&ids, &tx).await else {
                if tx.is_closed() {
                    return;
                }
                continue;
            };
            for (entry, present) in entries.into_iter().zip(present) {
                if !present {
                    continue;
                }
                let mut fields: HashMap<String, String> = entry
                    .map
                    .into_iter()
                    .filter_map(|(k, v)| String::from_redis_value(v).ok().map(|v| (k, v)))
                    .collect();
                if self.repeated(&mut fields) {
                    continue;
                }
                match BusMessage::from_fields(fields) {
                    Some(message) => {
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    None => tracing::warn!(id = %entry.id, "skipped a malformed bus entry"),
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
    ) -> Result<(Arc<str>, Vec<EntryId>), AppendError> {
        let mut eval = cmd("EVAL");
        eval.arg(APPEND)
            .arg(2)
            .arg(self.keys.inbox_read(node))
            .arg(self.keys.inbox(node))
            .arg(INBOX_TTL.as_millis() as u64)
            .arg(expected.unwrap_or_default());
        for entry in entries {
            eval.arg((entry.fields.len() + 2) * 2);
            eval.arg("o").arg(&*self.origin);
            eval.arg("q").arg(entry.seq);
            for (field, value) in &entry.fields {
                eval.arg(*field).arg(value);
            }
        }
        let mut p = pipe();
        p.add_command(eval);
        if self.replicated {
            p.cmd("WAIT").arg(1).arg(REPLICA_WAIT_MS).ignore();
        }
        let (reply,): (Value,) = self.redis.pipe(&p).await.map_err(AppendError::Store)?;
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
        let ids: Option<Vec<EntryId>> = ids.iter().map(|id| parse_id(id)).collect();
        let ids = ids
            .filter(|ids| ids.len() == entries.len())
            .ok_or_else(malformed)?;
        Ok((Arc::from(generation.as_str()), ids))
    }

    async fn progress(&self, node: &str) -> Result<Option<Progress>, StoreError> {
        let marker: Option<String> = self
            .redis
            .query(cmd("GET").arg(self.keys.inbox_read(node)))
            .await?;
        Ok(marker.as_deref().and_then(parse_marker))
    }

    async fn withdraw(
        &self,
        node: &str,
        ids: &[EntryId],
    ) -> Result<(Vec<bool>, Option<Progress>), StoreError> {
        let mut invocation = self.withdraw.key(self.keys.inbox_read(node));
        invocation.key(self.keys.inbox(node));
        for (ms, seq) in ids {
            invocation.arg(format!("{ms}-{seq}"));
        }
        let (marker, removed): (String, Vec<i64>) = self.redis.script(&invocation).await?;
        Ok((
            removed.into_iter().map(|r| r == 1).collect(),
            parse_marker(&marker),
        ))
    }
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
}
