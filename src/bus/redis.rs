//! The Redis bus: one stream per node. Publishers append (XADD, trimmed by length, with a
//! TTL); the node reads with a blocking XREAD from the last id it saw, so a reader that
//! reconnects continues where it stopped instead of missing what was sent meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::streams::StreamReadReply;
use ::redis::{FromRedisValue, cmd, pipe};
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusMessage, Inbox};
use crate::redis::{Keys, Redis};
use crate::store::StoreError;

/// Entries kept per inbox; far more than a node reads between two polls.
const MAX_LEN: usize = 100_000;
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

    async fn subscribe(&self, node: &str) -> Result<Inbox, StoreError> {
        // Start at the server's "now": everything published from here on is read, in order.
        let (secs, micros): (u64, u64) = self.redis.query(&cmd("TIME")).await?;
        let start = format!("{}-0", secs * 1000 + micros / 1000);
        let (tx, rx) = mpsc::channel(4096);
        let reader = self.reader.clone();
        let key = self.keys.inbox(node);
        tokio::spawn(read_inbox(reader, key, start, tx));
        Ok(rx)
    }
}

/// Reads the inbox until the receiver is dropped; on errors retries from the last id seen.
async fn read_inbox(reader: Redis, key: String, mut last: String, tx: mpsc::Sender<BusMessage>) {
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
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            last = entry.id;
            let fields: HashMap<String, String> = entry
                .map
                .into_iter()
                .filter_map(|(k, v)| String::from_redis_value(v).ok().map(|v| (k, v)))
                .collect();
            match BusMessage::from_fields(fields) {
                Some(message) => {
                    if tx.send(message).await.is_err() {
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
