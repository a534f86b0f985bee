//! Room events on Redis: each room's stream, deliveries and lease in the room's slot; the
//! rooms due a look and the delivered log in one key each.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::{Script, cmd};
use async_trait::async_trait;

use super::events::{Delivery, EventLog, StoredEvent};
use super::{RedisStore, StoreError};

/// Makes room ARGV[2] due at mark ARGV[3] (or forgets it when ARGV[3] is empty) only if
/// its mark is still ARGV[1].
static RESCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not seen or tonumber(seen) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[2])
else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) end
return 1
",
    )
});

/// Takes (or extends) a lease for ARGV[1] unless another holder has it.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Drops a lease if ARGV[1] holds it.
static UNLEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// Trims a room's events up to ARGV[1] (inclusive MINID, the position after the last
/// delivered); a room with none left loses its stream and delivery state too.
static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1
",
    )
});

/// The stream position right after `id` (`ms-seq`), for XTRIM's inclusive MINID.
fn after(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => format!("{ms}-{}", seq.parse::<u64>().unwrap_or(0) + 1),
        None => id.to_string(),
    }
}

/// Stream entries (`[id, [field, value, …]]`) as events: the `e` field is the JSON.
fn entries(raw: Vec<(String, Vec<String>)>) -> Vec<StoredEvent> {
    raw.into_iter()
        .filter_map(|(id, fields)| {
            let json = fields
                .chunks_exact(2)
                .find(|pair| pair[0] == "e")
                .map(|pair| pair[1].clone())?;
            Some(StoredEvent { position: id, json })
        })
        .collect()
}

impl RedisStore {
    /// Up to `limit` events of stream `key` after position `after` (from the start when
    /// `None`).
    async fn read_after(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let start = after.map_or_else(|| "-".to_string(), |a| format!("({a}"));
        let raw: Vec<(String, Vec<String>)> = self
            .redis
            .query(
                cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        Ok(entries(raw))
    }

    /// This node's set of rooms due.
    fn due_key(&self) -> String {
        let node = self.events.get().map_or("", |e| e.2.as_str());
        self.keys.node_due(node)
    }
}

#[async_trait]
impl EventLog for RedisStore {
    fn record_events(&self, retention: Duration, log_max: usize, node: &str) {
        let _ = self.events.set((retention, log_max, node.to_string()));
    }

    async fn adopt_orphans(&self) -> Result<usize, StoreError> {
        let Some((_, _, me)) = self.events.get() else {
            return Ok(0);
        };
        // Listed again now and then: the owners' set expires, and a failed listing retries.
        self.listed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.list_as_owner(me).await;
        let owners: Vec<String> = self
            .redis
            .query(cmd("SMEMBERS").arg(self.keys.due_owners()))
            .await?;
        let mut moved = 0;
        for owner in owners.into_iter().filter(|o| o != me) {
            let alive: bool = self
                .redis
                .query(cmd("EXISTS").arg(self.keys.node(&owner)))
                .await?;
            if alive {
                continue;
            }
            // Copied before it is deleted: a crash in between leaves rooms due twice,
            // which leases make harmless, never rooms due nowhere.
            let theirs = self.keys.node_due(&owner);
            let due: Vec<(String, f64)> = self
                .redis
                .query(cmd("ZRANGE").arg(&theirs).arg(0).arg(-1).arg("WITHSCORES"))
                .await?;
            let mine = self.keys.node_due(me);
            for (room, score) in &due {
                let score = format!("{score:.0}");
                self.with_ttl::<()>(&mine, super::MAX_TTL, &["ZADD", "NX", &score, room])
                    .await?;
            }
            self.redis.query::<()>(cmd("DEL").arg(&theirs)).await?;
            self.redis
                .query::<()>(cmd("SREM").arg(self.keys.due_owners()).arg(&owner))
                .await?;
            moved += due.len();
        }
        Ok(moved)
    }

    async fn due_rooms(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, f64)>, StoreError> {
        self.redis
            .query(
                cmd("ZRANGE")
                    .arg(self.due_key())
                    .arg("-inf")
                    .arg(now_ms * 1000 + 999)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .arg("WITHSCORES"),
            )
            .await
    }

    async fn pending_rooms(&self) -> Result<usize, StoreError> {
        self.redis.query(cmd("ZCARD").arg(self.due_key())).await
    }

    async fn reschedule(
        &self,
        room: &str,
        seen: f64,
        next: Option<f64>,
    ) -> Result<bool, StoreError> {
        let due = next.map(|m| format!("{m:.0}")).unwrap_or_default();
        let done: i64 = self
            .redis
            .script(
                RESCHEDULE
                    .key(self.due_key())
                    .arg(format!("{seen:.0}"))
                    .arg(room)
                    .arg(due),
            )
            .await?;
        Ok(done == 1)
    }

    async fn lease(&self, room: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let taken: i64 = self
            .redis
            .script(
                LEASE
                    .key(self.keys.room_lease(room))
                    .arg(holder)
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        Ok(taken == 1)
    }

    async fn unlease(&self, room: &str, holder: &str) -> Result<(), StoreError> {
        self.redis
            .script::<i64>(UNLEASE.key(self.keys.room_lease(room)).arg(holder))
            .await
            .map(|_| ())
    }

    async fn events_after(
        &self,
        room: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = (!after.is_empty()).then_some(after);
        self.read_after(&self.keys.room_events(room), after, limit)
            .await
    }

    async fn deliveries(&self, room: &str) -> Result<HashMap<String, Delivery>, StoreError> {
        let raw: HashMap<String, String> = self
            .redis
            .query(cmd("HGETALL").arg(self.keys.room_delivery(room)))
            .await?;
        Ok(raw
            .into_iter()
            .map(|(endpoint, text)| (endpoint, Delivery::decode(&text)))
            .collect())
    }

    async fn set_delivery(
        &self,
        room: &str,
        endpoint: &str,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let key = self.keys.room_delivery(room);
        self.with_ttl(
            &key,
            super::MAX_TTL,
            &["HSET", endpoint, &delivery.encode()],
        )
        .await
    }

    async fn trim_events(&self, room: &str, through: &str) -> Result<(), StoreError> {
        self.redis
            .script::<i64>(
                TRIM.key(self.keys.room_events(room))
                    .key(self.keys.room_delivery(room))
                    .arg(after(through)),
            )
            .await
            .map(|_| ())
    }

    async fn log_append(&self, json: &str) -> Result<String, StoreError> {
        let (retention, log_max) = self
            .events
            .get()
            .map(|e| (e.0, e.1))
            .unwrap_or((super::MAX_TTL, usize::MAX));
        let key = self.keys.events_log();
        let log_max = log_max.to_string();
        // Every key expires (at most a day): the log lives while events keep coming.
        let position: String = self
            .with_ttl(
                &key,
                retention,
                &["XADD", "MAXLEN", "~", &log_max, "*", "e", json],
            )
            .await?;
        Ok(position)
    }

    async fn log_read(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_after(&self.keys.events_log(), after, limit).await
    }

    async fn log_trim(&self, before_ms: u64) -> Result<(), StoreError> {
        self.redis
            .query(
                cmd("XTRIM")
                    .arg(self.keys.events_log())
                    .arg("MINID")
                    .arg(before_ms),
            )
            .await
            .map(|_: i64| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_position_after_an_entry_is_its_next_sequence() {
        assert_eq!(super::after("1767225600123-0"), "1767225600123-1");
        assert_eq!(super::after("5-41"), "5-42");
    }
}
