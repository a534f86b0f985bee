//! The Redis bus: one stream per node. Publishers append (XADD, trimmed by length, with a
//! TTL); the node reads with a blocking XREAD from the last id it saw, so a reader that
//! reconnects continues where it stopped instead of missing what was sent meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::streams::StreamReadReply;
use ::redis::{FromRedisValue, cmd, pipe};
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusMessage, Received, Subscription};
use crate::error::StoreError;
use crate::redis::{Keys, Redis};

/// Entries kept per inbox (about 20 MB of 2 KB offers): far more than a node reads between
/// two polls, and seconds of traffic for a reader that reconnects. Entries trimmed before
/// they were read are detected and reported as a [`Received::Gap`].
const MAX_LEN: usize = 10_000;
/// An inbox nobody reads (its node died) disappears after this long.
const INBOX_TTL: Duration = Duration::from_secs(600);
/// How long one XREAD waits for new entries.
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries fetched per XREAD.
const BATCH: usize = 512;

/// [`Bus`] over Redis streams.
pub struct RedisBus {
    redis: Redis,
    /// A separate connection: a blocking XREAD must not delay other commands.
    reader: Redis,
    keys: Keys,
}

impl RedisBus {
    /// A bus publishing through `redis` and reading through `reader` (its own connection).
    pub fn new(redis: Redis, reader: Redis, keys: Keys) -> Self {
        Self {
            redis,
            reader: reader.with_timeout(BLOCK * 3),
            keys,
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, node: &str, message: &BusMessage) -> Result<(), StoreError> {
        let key = self.keys.inbox(node);
        let mut xadd = cmd("XADD");
        xadd.arg(&key).arg("MAXLEN").arg("~").arg(MAX_LEN).arg("*");
        for (field, value) in message.to_fields() {
            xadd.arg(field).arg(value);
        }
        let mut p = pipe();
        p.add_command(xadd)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(INBOX_TTL.as_millis() as u64)
            .ignore();
        self.redis.pipe::<()>(&p).await
    }

    async fn subscribe(&self, node: &str) -> Result<Subscription, StoreError> {
        // Create the inbox (empty) so that, from now on, its absence means lost data.
        let key = self.keys.inbox(node);
        self.redis
            .pipe::<()>(
                pipe()
                    .cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg(0)
                    .arg("*")
                    .arg("k")
                    .arg("created")
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(INBOX_TTL.as_millis() as u64)
                    .ignore(),
            )
            .await?;
        // Start at the server's "now": everything published from here on is read, in order.
        let (secs, micros): (u64, u64) = self.redis.query(&cmd("TIME")).await?;
        let start = format!("{}-0", secs * 1000 + micros / 1000);
        let (tx, rx) = mpsc::channel(4096);
        let reader = self.reader.clone();
        tokio::spawn(read_inbox(reader, key, start, tx));
        Ok(rx)
    }
}

/// Reads the inbox until the receiver is dropped; on errors retries from the last id seen.
async fn read_inbox(reader: Redis, key: String, mut last: String, tx: mpsc::Sender<Received>) {
    let mut failures = 0u32;
    loop {
        let mut xread = cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last);
        let reply: Option<StreamReadReply> = match reader.query(&xread).await {
            Ok(r) => {
                if failures > 0 {
                    tracing::info!("bus reader reconnected to Redis");
                    if lost_since(&reader, &key, &last).await
                        && tx.send(Received::Gap).await.is_err()
                    {
                        return;
                    }
                }
                failures = 0;
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
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10)))).await;
                continue;
            }
        };
        let entries: Vec<_> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        // A full batch means this reader is behind: check nothing was trimmed under it.
        if entries.len() == BATCH
            && lost_since(&reader, &key, &last).await
            && tx.send(Received::Gap).await.is_err()
        {
            return;
        }
        for entry in entries {
            last = entry.id;
            let fields: HashMap<String, String> = entry
                .map
                .into_iter()
                .filter_map(|(k, v)| String::from_redis_value(v).ok().map(|v| (k, v)))
                .collect();
            match BusMessage::from_fields(fields) {
                Some(message) => {
                    if tx.send(Received::Message(message)).await.is_err() {
                        return;
                    }
                }
                None => tracing::warn!(id = %last, "skipped a malformed bus entry"),
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Parses a stream id `ms-seq`.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// True when entries after `last` may have been lost: trimmed past it (the stream's
/// `max-deleted-entry-id` is newer) or the whole stream gone (Redis lost its data).
async fn lost_since(reader: &Redis, key: &str, last: &str) -> bool {
    let info: Result<HashMap<String, ::redis::Value>, _> =
        reader.query(cmd("XINFO").arg("STREAM").arg(key)).await;
    let info = match info {
        Ok(info) => info,
        // The inbox is created at start and kept alive by heartbeats: if it is gone,
        // everything sent to this node meanwhile went with it.
        Err(e) if e.to_string().contains("no such key") => {
            tracing::warn!(
                "this node's inbox disappeared from Redis; peers talking across nodes must resync"
            );
            return true;
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not check the inbox for lost entries");
            return false;
        }
    };
    let deleted = info
        .get("max-deleted-entry-id")
        .cloned()
        .and_then(|v| String::from_redis_value(v).ok())
        .and_then(|id| parse_id(&id));
    let lost = matches!((deleted, parse_id(last)), (Some(d), Some(l)) if d > l);
    if lost {
        tracing::warn!(
            "messages for this node were trimmed before it read them; peers talking across nodes must resync"
        );
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn stream_ids_order_numerically() {
        assert!(parse_id("1700000000000-10") > parse_id("1700000000000-9"));
        assert!(parse_id("1700000000001-0") > parse_id("1700000000000-99"));
        assert_eq!(parse_id("nope"), None);
    }
}
