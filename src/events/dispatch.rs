//! The dispatcher: every node runs one. It looks at the rooms due (any node's changes mark
//! them), takes a room's lease so one node at a time delivers it, and hands each endpoint
//! the room's events in `seq` order, the next only once the previous was acknowledged.
//! Rooms go in parallel. A node that dies holding a lease loses it after the lease's time
//! (the webhook timeout and [`LEASE_MARGIN`]), and another node's dispatcher goes on where
//! the delivery state says.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;

use super::webhook::{self, WebhookSecret};
use crate::clock::unix_millis;
use crate::store::events::{
    Delivery, EventLog, SETTLE_MARGIN, StoredEvent, is_settle_mark, mark, settle_mark,
};
use crate::telemetry::Metrics;

/// A room's lease lasts one delivery's timeout plus this, renewed before every event.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often the dispatcher looks for due rooms.
const PASS_INTERVAL: Duration = Duration::from_millis(100);
/// Rooms handled at once by one node.
const ROOMS_AT_ONCE: usize = 32;
/// Events of one room handed to an endpoint in one turn before the room goes back in line.
const BATCH: usize = 64;
/// The first retry waits about this long; each later one twice as long, up to
/// `WEBHOOK_MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long a room whose store calls failed waits for its next look.
const STORE_RETRY: Duration = Duration::from_secs(2);
/// Longest pause between two looks while the store fails.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How often the dispatcher looks for the rooms due of nodes that are gone (and updates
/// `switchboard_event_rooms_pending`).
const ADOPT_EVERY: Duration = Duration::from_secs(2);
/// How often delivered events older than the retention leave the log.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Where events go.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The log the pull API reads (`GET /api/v1/events`).
    Log,
    /// A webhook URL.
    Webhook {
        /// `WEBHOOK_URLS` position, from 1, for metrics.
        label: String,
        /// The URL (may hold a token of the receiver's: never logged).
        url: String,
    },
}

impl Endpoint {
    /// Its name in the delivery state: stable while the URL stays the same.
    fn key(&self) -> String {
        match self {
            Endpoint::Log => "log".to_string(),
            Endpoint::Webhook { url, .. } => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(url.as_bytes());
                format!("webhook:{}", hex::encode(&digest[..8]))
            }
        }
    }

    /// Its label in metrics and logs.
    fn label(&self) -> &str {
        match self {
            Endpoint::Log => "log",
            Endpoint::Webhook { label, .. } => label,
        }
    }
}

/// What the dispatcher needs to know.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The webhook URLs (`WEBHOOK_URLS`).
    pub webhooks: Vec<String>,
    /// Their signing secret (`WEBHOOK_SECRET`).
    pub secret: Option<WebhookSecret>,
    /// How long an event is retried before it is dropped (`WEBHOOK_RETRY_FOR`).
    pub retry_for: Duration,
    /// Longest wait between two attempts (`WEBHOOK_MAX_BACKOFF`).
    pub max_backoff: Duration,
    /// How long one delivery may take (`WEBHOOK_TIMEOUT`).
    pub timeout: Duration,
    /// How long the log keeps events (`EVENT_RETENTION`).
    pub retention: Duration,
    /// Most events the log keeps (`EVENT_LOG_MAX`).
    pub log_max: usize,
}

/// Delivers room events to the log and the webhooks.
pub struct Dispatcher {
    events: Arc<dyn EventLog>,
    /// Lease holder name: the node id.
    holder: String,
    endpoints: Vec<Endpoint>,
    config: DispatchConfig,
    metrics: Arc<Metrics>,
}

/// How far one endpoint got in one turn.
enum Turn {
    /// Everything delivered.
    CaughtUp,
    /// A full batch went out; there may be more.
    More,
    /// The next event failed; try again at this time (unix ms).
    RetryAt(u64),
}

#[derive(Deserialize)]
struct EventId<'a> {
    #[serde(borrow)]
    id: &'a str,
}

impl Dispatcher {
    /// A dispatcher for node `holder`.
    pub fn new(
        events: Arc<dyn EventLog>,
        holder: &str,
        config: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut endpoints = vec![Endpoint::Log];
        endpoints.extend(
            config
                .webhooks
                .iter()
                .enumerate()
                .map(|(i, url)| Endpoint::Webhook {
                    label: format!("webhook-{}", i + 1),
                    url: url.clone(),
                }),
        );
        Self {
            events,
            holder: holder.to_string(),
            endpoints,
            config,
            metrics,
        }
    }

    /// How long a room's lease lasts.
    fn lease(&self) -> Duration {
        self.config.timeout + LEASE_MARGIN
    }

    /// Runs until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut trimmed = tokio::time::Instant::now();
        let mut adopted = tokio::time::Instant::now();
        let mut pause = PASS_INTERVAL;
        loop {
            // A store that fails is asked less often, up to once every few seconds.
            pause = match self.pass().await {
                Ok(()) => PASS_INTERVAL,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for room events to deliver");
                    (pause * 2).min(MAX_PAUSE)
                }
            };
            // Now and then, not on every pass: a gauge and a look at gone nodes' rooms.
            if adopted.elapsed() >= ADOPT_EVERY {
                adopted = tokio::time::Instant::now();
                if let Ok(pending) = self.events.pending_rooms().await {
                    self.metrics.event_rooms_pending.set(pending as i64);
                }
                match self.events.adopt_orphans().await {
                    Ok(0) => {}
                    Ok(rooms) => {
                        tracing::info!(rooms, "took over the rooms due of a node that is gone")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not look for a gone node's rooms due")
                    }
                }
            }
            if trimmed.elapsed() >= TRIM_EVERY {
                trimmed = tokio::time::Instant::now();
                let before = unix_millis().saturating_sub(self.config.retention.as_millis() as u64);
                if let Err(e) = self.events.log_trim(before).await {
                    tracing::warn!(error = %e, "could not trim the event log");
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One look at the due rooms, each delivered as far as it goes.
    pub async fn pass(&self) -> Result<(), crate::store::StoreError> {
        let due = self.events.due_rooms(unix_millis(), ROOMS_AT_ONCE).await?;
        let mut turns: FuturesUnordered<_> = due
            .into_iter()
            .map(|(room, seen)| async move {
                if let Err(e) = self.deliver_room(&room, seen).await {
                    // The room's shard may be down: look again later, not on every pass.
                    tracing::warn!(error = %e, room, "could not deliver room events");
                    let later = mark(unix_millis() + STORE_RETRY.as_millis() as u64);
                    let _ = self.events.reschedule(&room, seen, Some(later)).await;
                }
            })
            .collect();
        while turns.next().await.is_some() {}
        Ok(())
    }

    /// Delivers one room's events to every endpoint, as far as they go, then says when to
    /// look again.
    async fn deliver_room(&self, room: &str, seen: f64) -> Result<(), crate::store::StoreError> {
        if !self.events.lease(room, &self.holder, self.lease()).await? {
            return Ok(()); // another node delivers it now
        }
        let outcome = self.deliver_leased(room, seen).await;
        let _ = self.events.unlease(room, &self.holder).await;
        outcome
    }

    async fn deliver_leased(&self, room: &str, seen: f64) -> Result<(), crate::store::StoreError> {
        let deliveries = self.events.deliveries(room).await?;
        let mut caught_up = true;
        let mut next: Option<u64> = None;
        let mut cursors = Vec::with_capacity(self.endpoints.len());
        for endpoint in &self.endpoints {
            let mut delivery = deliveries.get(&endpoint.key()).cloned().unwrap_or_default();
            let turn = self.deliver_to(room, endpoint, &mut delivery).await?;
            cursors.push(delivery.cursor);
            match turn {
                Turn::CaughtUp => {}
                Turn::More => {
                    caught_up = false;
                    next = Some(unix_millis());
                }
                Turn::RetryAt(at) => {
                    caught_up = false;
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        // What every endpoint has is no longer needed.
        if let Some(oldest) = cursors.iter().min_by(older)
            && !oldest.is_empty()
        {
            self.events.trim_events(room, oldest).await?;
        }
        let now = unix_millis();
        let next_mark = match (caught_up, next) {
            (false, Some(at)) => Some(mark(at)),
            (false, None) => Some(mark(now)),
            // Nothing left: look once more after the margin (a change on its way lands by
            // then), and forget the room if nothing came.
            (true, _) if is_settle_mark(seen) => None,
            (true, _) => Some(settle_mark(now + SETTLE_MARGIN.as_millis() as u64)),
        };
        self.events.reschedule(room, seen, next_mark).await?;
        Ok(())
    }

    /// Hands `endpoint` the room's events after its cursor, in order, until one fails or
    /// a batch went out; records how far it got in `delivery`.
    async fn deliver_to(
        &self,
        room: &str,
        endpoint: &Endpoint,
        delivery: &mut Delivery,
    ) -> Result<Turn, crate::store::StoreError> {
        let batch = self
            .events
            .events_after(room, &delivery.cursor, BATCH)
            .await?;
        let full = batch.len() == BATCH;
        for event in batch {
            // Keep the room while this delivery takes its time.
            self.events.lease(room, &self.holder, self.lease()).await?;
            match self.send(endpoint, &event).await {
                Ok(()) => {
                    self.metrics.event_delivered(endpoint.label());
                    *delivery = Delivery {
                        cursor: event.position.clone(),
                        ..Delivery::default()
                    };
                }
                Err(why) => {
                    let now = unix_millis();
                    if delivery.failing_since == 0 {
                        delivery.failing_since = now;
                    }
                    delivery.attempts += 1;
                    let given_up = now.saturating_sub(delivery.failing_since)
                        >= self.config.retry_for.as_millis() as u64;
                    if given_up {
                        self.metrics.event_dropped(endpoint.label());
                        tracing::error!(
                            endpoint = endpoint.label(),
                            room,
                            attempts = delivery.attempts,
                            error = %why,
                            "a room event was dropped: its endpoint failed for WEBHOOK_RETRY_FOR"
                        );
                        *delivery = Delivery {
                            cursor: event.position.clone(),
                            ..Delivery::default()
                        };
                    } else {
                        self.metrics.event_retried(endpoint.label());
                        tracing::debug!(endpoint = endpoint.label(), error = %why, "webhook delivery failed; retrying");
                        self.events
                            .set_delivery(room, &endpoint.key(), delivery)
                            .await?;
                        let wait = backoff(delivery.attempts, self.config.max_backoff);
                        return Ok(Turn::RetryAt(now + wait));
                    }
                }
            }
            self.events
                .set_delivery(room, &endpoint.key(), delivery)
                .await?;
        }
        Ok(if full { Turn::More } else { Turn::CaughtUp })
    }

    /// One delivery attempt.
    async fn send(&self, endpoint: &Endpoint, event: &StoredEvent) -> Result<(), String> {
        match endpoint {
            Endpoint::Log => {
                self.events
                    .log_append(&event.json)
                    .await
                    .map_err(|e| e.to_string())?;
                self.metrics.events_emitted.inc();
                Ok(())
            }
            Endpoint::Webhook { url, .. } => {
                let id = serde_json::from_str::<EventId<'_>>(&event.json)
                    .map_err(|e| format!("a stored event is not valid: {e}"))?
                    .id;
                let secret = self
                    .config
                    .secret
                    .as_ref()
                    .ok_or("WEBHOOK_SECRET is not set")?;
                webhook::deliver(url, secret, id, &event.json, self.config.timeout)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Orders stream positions (`ms-seq` on Redis, a number on the embedded store); the empty
/// cursor (nothing delivered) is the oldest.
fn older(a: &&String, b: &&String) -> std::cmp::Ordering {
    let key = |p: &str| -> (u64, u64) {
        let (ms, seq) = p.split_once('-').unwrap_or((p, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    key(a).cmp(&key(b))
}

/// The wait (ms) before attempt `attempts + 1`: doubling from [`FIRST_BACKOFF`] up to
/// `max`, with jitter (between half and all of it) so that many rooms failing at once do
/// not retry in step.
fn backoff(attempts: u32, max: Duration) -> u64 {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(max)
        .as_millis() as u64;
    full / 2 + crate::clock::random_u64() % (full / 2 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for (attempts, full) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (9, 256_000),
            (30, 300_000),
        ] {
            for _ in 0..50 {
                let wait = backoff(attempts, Duration::from_secs(300));
                assert!((full / 2..=full).contains(&wait), "{attempts}: {wait}");
            }
        }
    }

    #[test]
    fn positions_order_by_time_then_sequence_and_empty_first() {
        let mut positions: Vec<String> = ["5-2", "", "5-10", "12-0", "7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        positions.sort_by(|a, b| older(&a, &b));
        assert_eq!(positions, ["", "5-2", "5-10", "7", "12-0"]);
    }
}
