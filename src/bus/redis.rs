//! The Redis bus: one stream per node, its inbox, and beside it a read marker
//! (`generation|last read id`).
//!
//! Senders append through their [`Courier`] lanes, which hold and retry across failovers.
//! The node reads with a blocking XREAD, drops repeats by (origin, sequence number), and
//! after each batch moves its marker and trims what it read: an inbox holds only what is
//! still undelivered. When the marker is missing (Redis lost its data) or closed (the node
//! was declared lost while alive) the node opens a new generation and reads its inbox
//! from the start; senders see the new generation and append again what was not read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::streams::StreamReadReply;
use ::redis::{FromRedisValue, Script, Value, cmd, pipe};
use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::courier::{AppendError, Courier, EntryId, HoldLimits, Outgoing, Progress, Transport};
use super::{Bus, BusMessage, OnLost, Subscription};
use crate::error::StoreError;
use crate::redis::{Keys, Redis};
use crate::telemetry::Metrics;

/// An inbox (and its marker) nobody keeps alive (its node died) disappears after this long.
const INBOX_TTL: Duration = Duration::from_secs(600);
/// How long one XREAD waits for new entries when everything read is marked.
const BLOCK: Duration = Duration::from_millis(1000);
/// How long the marker may lag behind what was read: senders learn delivery this late.
const MARK_EVERY: Duration = Duration::from_millis(20);
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

/// Moves the marker of generation ARGV[1] to ARGV[2] and trims entries below ARGV[3]
/// (none when empty); 0 when the marker is gone, closed or of another generation.
const MARK: &str = r"
local m = redis.call('GET', KEYS[1])
if not m then return 0 end
if string.match(m, '^([^|]*)') ~= ARGV[1] or string.find(m, '|closed', 1, true) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[4])
if ARGV[3] ~= '' then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3]) end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
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
            marked: String::new(),
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
    /// Last entry read.
    last: String,
    /// Last entry the marker shows.
    marked: String,
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
        self.marked = self.last.clone();
        Ok(())
    }

    /// Moves the marker to what was read (trimming it) or, with nothing new, keeps the
    /// marker and inbox alive; re-opens the inbox if the marker is gone or closed.
    async fn mark(&mut self) -> Result<(), StoreError> {
        let trim = if self.last == self.marked {
            String::new()
        } else {
            parse_id(&self.last).map_or(String::new(), |(ms, seq)| format!("{ms}-{}", seq + 1))
        };
        let kept: i64 = self
            .redis
            .script(
                self.mark
                    .key(&self.marker)
                    .key(&self.inbox)
                    .arg(&self.generation)
                    .arg(&self.last)
                    .arg(trim)
                    .arg(INBOX_TTL.as_millis() as u64),
            )
            .await?;
        if kept == 1 {
            self.marked = self.last.clone();
            return Ok(());
        }
        // Redis lost the marker, or other nodes declared this one lost: read the inbox
        // from its start (repeats are dropped) under a new generation, so senders append
        // again whatever this node did not read.
        tracing::warn!("this node's inbox marker was lost or closed; opening a new generation");
        self.last = "0-0".into();
        self.open().await
    }

    /// Reads until the receiver is dropped; on errors retries from the last id read.
    async fn run(mut self, tx: mpsc::Sender<BusMessage>) {
        let mut failures = 0u32;
        let mut last_mark = Instant::now();
        loop {
            let behind = self.last != self.marked;
            let block = if behind { MARK_EVERY } else { BLOCK };
            let mut xread = cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
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
            let idle = entries.is_empty();
            for entry in entries {
                self.last = entry.id;
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
                    None => tracing::warn!(id = %self.last, "skipped a malformed bus entry"),
                }
            }
            if tx.is_closed() {
                return;
            }
            // With nothing new, this also checks the marker is still there and ours.
            if idle || last_mark.elapsed() >= MARK_EVERY {
                if let Err(e) = self.mark().await {
                    tracing::debug!(error = %e, "could not move the inbox marker");
                }
                last_mark = Instant::now();
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
        let malformed = || AppendError::Store(StoreError("Redis returned a malformed append".into()));
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
        let ids = ids.filter(|ids| ids.len() == entries.len()).ok_or_else(malformed)?;
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
        assert_eq!((&*open.generation, open.read, open.closed), ("ab12", (1700, 3), false));
        assert!(parse_marker("ab12|1700-3|closed").unwrap().closed);
        assert_eq!(parse_marker(""), None);
        assert_eq!(parse_marker("ab12|junk"), None);
    }
}
