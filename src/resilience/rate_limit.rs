//! Token buckets: per connection (messages) and per client IP (upgrades, token requests,
//! concurrent connections).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A continuously refilling token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    level: Level,
}

/// A bucket's tokens; its rate and burst are kept apart, so the limiter of every one of
/// a node's connections need not keep a copy of the node's settings.
#[derive(Debug, Clone)]
struct Level {
    tokens: f64,
    updated: Instant,
}

impl Level {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    /// Refills at `rate` up to `burst`, then takes one token if there is one.
    fn try_take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens if there is one, going into debt for the rest (down to minus the
    /// burst), so a costly item is never refused outright yet is paid for in full.
    fn try_take_owing(&mut self, rate: f64, burst: f64, now: Instant, n: u32) -> bool {
        if !self.try_take(rate, burst, now) {
            return false;
        }
        self.tokens = (self.tokens - f64::from(n.saturating_sub(1))).max(-burst);
        true
    }
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens per second up to `burst`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            level: Level::full(burst, now),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.level.try_take(self.rate, self.burst, now)
    }

    /// How long until the next token.
    pub fn wait(&self) -> Duration {
        if self.level.tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.level.tokens) / self.rate)
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allowed,
    /// Over the limit: refuse this message.
    Limited,
    /// Over the limit again and again: close the connection (1008).
    Abuse,
}

/// A connection's message limit: `rate`/s with bursts of `burst`; `strikes_to_close`
/// refusals within `window` is abuse. One per node, lent to each check.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimit {
    /// Sustained messages per second.
    pub rate: f64,
    /// Messages allowed at once.
    pub burst: f64,
    /// Refusals within `window` that close the connection.
    pub strikes_to_close: u32,
    /// How long refusals count towards `strikes_to_close`.
    pub window: Duration,
}

/// Where one connection stands against its [`MessageLimit`]; owned by its task, so no
/// locking. The limit itself is passed to each check: every idle connection keeps this
/// struct for its life.
#[derive(Debug)]
pub struct MessageLimiter {
    level: Level,
    strikes: u32,
    window_start: Instant,
}

impl MessageLimiter {
    /// A limiter with a full burst at `now`.
    pub fn new(limit: &MessageLimit, now: Instant) -> Self {
        Self {
            level: Level::full(limit.burst, now),
            strikes: 0,
            window_start: now,
        }
    }

    /// Judges one incoming message.
    pub fn check(&mut self, limit: &MessageLimit, now: Instant) -> Verdict {
        self.check_frames(limit, now, 1)
    }

    /// Judges one incoming message that arrived in `frames` frames, each of which counts.
    pub fn check_frames(&mut self, limit: &MessageLimit, now: Instant, frames: u32) -> Verdict {
        if self
            .level
            .try_take_owing(limit.rate, limit.burst, now, frames)
        {
            return Verdict::Allowed;
        }
        if now.saturating_duration_since(self.window_start) > limit.window {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes >= limit.strikes_to_close {
            Verdict::Abuse
        } else {
            Verdict::Limited
        }
    }
}

/// Shards of the per-IP table, so one hot lock does not serialise every upgrade.
const SHARDS: usize = 16;
/// Idle entries are pruned once a shard holds this many.
const PRUNE_AT: usize = 10_000;

#[derive(Debug)]
struct IpEntry {
    bucket: TokenBucket,
    connections: usize,
}

/// Per-IP limits at the edge of the service: a rate of new requests and a cap on
/// concurrent connections.
#[derive(Debug)]
pub struct IpLimiter {
    per_minute: f64,
    max_connections: usize,
    /// Loopback clients are not held to the rate (development only; see [`Self::sparing_loopback`]).
    spare_loopback: bool,
    shards: Vec<Mutex<HashMap<IpAddr, IpEntry>>>,
}

/// A connection counted against its IP; released on drop.
#[derive(Debug)]
pub struct IpPermit {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    /// `per_minute` requests per IP (0 = unlimited) and at most `max_connections` open
    /// connections per IP (0 = unlimited).
    pub fn new(per_minute: u32, max_connections: usize) -> Arc<Self> {
        Self::build(per_minute, max_connections, false)
    }

    /// Like [`Self::new`], but a client on this machine (a loopback address) is not held
    /// to the rate: in development the load generator and scripts run beside the node,
    /// and hundreds of token requests and upgrades from 127.0.0.1 are the developer, not
    /// an attack. A client behind a proxy in `TRUSTED_PROXIES` has its own address and
    /// stays limited. The connection cap still applies: it is set explicitly.
    pub fn sparing_loopback(per_minute: u32, max_connections: usize) -> Arc<Self> {
        Self::build(per_minute, max_connections, true)
    }

    fn build(per_minute: u32, max_connections: usize, spare_loopback: bool) -> Arc<Self> {
        Arc::new(Self {
            per_minute: f64::from(per_minute),
            max_connections,
            spare_loopback,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, IpEntry>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ip.hash(&mut h);
        self.shards[h.finish() as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn entry<'a>(
        &self,
        shard: &'a mut HashMap<IpAddr, IpEntry>,
        ip: IpAddr,
        now: Instant,
    ) -> &'a mut IpEntry {
        if shard.len() >= PRUNE_AT {
            let burst = self.per_minute.max(1.0);
            shard.retain(|_, e| {
                let mut b = e.bucket.clone();
                // Keep entries with open connections or a bucket that is not yet full again.
                e.connections > 0 || {
                    let _ = b.try_take(now);
                    b.level.tokens + 1.0 < burst
                }
            });
        }
        let rate = self.per_minute / 60.0;
        let burst = self.per_minute.max(1.0);
        shard.entry(ip).or_insert_with(|| IpEntry {
            bucket: TokenBucket::new(rate, burst, now),
            connections: 0,
        })
    }

    /// Counts one request from `ip`; `Err(retry_after)` when over the rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.allow_from(ip, false, now)
    }

    /// Like [`Self::allow`], for a request that came through a trusted proxy when
    /// `via_proxy`: its client is someone the proxy serves, not a tool beside the node,
    /// so a loopback address it forwards is never spared.
    pub fn allow_from(&self, ip: IpAddr, via_proxy: bool, now: Instant) -> Result<(), Duration> {
        let spared = self.spare_loopback && !via_proxy && ip.to_canonical().is_loopback();
        if self.per_minute <= 0.0 || spared {
            return Ok(());
        }
        let mut shard = self.shard(&ip);
        let entry = self.entry(&mut shard, ip, now);
        if entry.bucket.try_take(now) {
            Ok(())
        } else {
            Err(entry.bucket.wait().max(Duration::from_secs(1)))
        }
    }

    /// Counts an open connection from `ip`; `None` when the IP is at its cap.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<IpPermit> {
        let mut shard = self.shard(&ip);
        let entry = self.entry(&mut shard, ip, now);
        if self.max_connections > 0 && entry.connections >= self.max_connections {
            return None;
        }
        entry.connections += 1;
        Some(IpPermit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let Some(entry) = self.limiter.shard(&self.ip).get_mut(&self.ip) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_trickle_burst_passes_and_a_flood_becomes_abuse() {
        let now = Instant::now();
        let limit = MessageLimit {
            rate: 50.0,
            burst: 200.0,
            strikes_to_close: 20,
            window: Duration::from_secs(10),
        };
        let mut limiter = MessageLimiter::new(&limit, now);
        // A burst of ICE candidates at once.
        assert!((0..200).all(|_| limiter.check(&limit, now) == Verdict::Allowed));
        assert_eq!(limiter.check(&limit, now), Verdict::Limited);
        // Refilled at 50/s.
        tokio::time::advance(Duration::from_secs(1)).await;
        let later = Instant::now();
        assert!((0..50).all(|_| limiter.check(&limit, later) == Verdict::Allowed));
        // One strike already; the 20th within the window is abuse.
        let verdicts: Vec<Verdict> = (0..19).map(|_| limiter.check(&limit, later)).collect();
        assert_eq!(verdicts[17], Verdict::Limited);
        assert_eq!(verdicts[18], Verdict::Abuse);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_of_many_frames_costs_every_frame_and_is_never_refused_outright() {
        let now = Instant::now();
        let limit = MessageLimit {
            rate: 10.0,
            burst: 100.0,
            strikes_to_close: 20,
            window: Duration::from_secs(10),
        };
        let mut limiter = MessageLimiter::new(&limit, now);
        // 64 frames each: the second goes into debt, the third finds none left.
        assert_eq!(limiter.check_frames(&limit, now, 64), Verdict::Allowed);
        assert_eq!(limiter.check_frames(&limit, now, 64), Verdict::Allowed);
        assert_eq!(limiter.check_frames(&limit, now, 1), Verdict::Limited);
        // The debt (28 frames) is paid back at 10/s before the next frame passes.
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(limiter.check(&limit, Instant::now()), Verdict::Limited);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.check(&limit, Instant::now()), Verdict::Allowed);
        // However many frames one message had, it is not refused while a token is left,
        // and the debt never exceeds one burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            limiter.check_frames(&limit, Instant::now(), 10_000),
            Verdict::Allowed
        );
        tokio::time::advance(Duration::from_millis(10_200)).await;
        assert_eq!(limiter.check(&limit, Instant::now()), Verdict::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn sparing_loopback_spares_only_loopback_and_only_the_rate() {
        let limiter = IpLimiter::sparing_loopback(1, 1);
        let now = Instant::now();
        for local in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = local.parse().unwrap();
            assert!((0..100).all(|_| limiter.allow(ip, now).is_ok()), "{local}");
        }
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.allow(remote, now).is_ok());
        assert!(limiter.allow(remote, now).is_err());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let _held = limiter.connect(local, now).unwrap();
        assert!(
            limiter.connect(local, now).is_none(),
            "the cap still applies"
        );
        let mut forwarded = 0;
        while limiter.allow_from(local, true, now).is_ok() {
            forwarded += 1;
            assert!(forwarded < 100, "a forwarded loopback client is not spared");
        }
        let strict = IpLimiter::new(1, 0);
        assert!(strict.allow(local, now).is_ok());
        assert!(strict.allow(local, now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn per_ip_rate_and_connection_cap() {
        let limiter = IpLimiter::new(3, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let now = Instant::now();
        assert!((0..3).all(|_| limiter.allow(ip, now).is_ok()));
        let retry = limiter.allow(ip, now).unwrap_err();
        assert!(retry >= Duration::from_secs(1));
        assert!(
            limiter.allow(other, now).is_ok(),
            "other IPs are unaffected"
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(
            limiter.allow(ip, Instant::now()).is_ok(),
            "3/min refills one every 20 s"
        );

        let a = limiter.connect(ip, now).unwrap();
        let _b = limiter.connect(ip, now).unwrap();
        assert!(limiter.connect(ip, now).is_none());
        drop(a);
        assert!(limiter.connect(ip, now).is_some());
    }
}
