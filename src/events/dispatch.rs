//! The dispatcher: every node runs one. It looks at the rooms due (any node's changes mark
//! them), takes a room's lease so one node at a time delivers it, and hands each endpoint
//! the room's events in `seq` order, the next only once the previous was acknowledged (or
//! given up on, once `WEBHOOK_RETRY_FOR` has passed since it happened). Rooms go in
//! parallel, and a room's endpoints side by side, each waiting out its own backoff. A node
//! that dies holding a lease loses it after the lease's time (the webhook timeout and
//! [`LEASE_MARGIN`]), and another node's dispatcher goes on where the delivery state says;
//! a node that finds its lease taken (it stalled past it) stops delivering that room.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

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
/// Most missing events counted one by one when a room's sequence jumps.
const MAX_COUNTED_MISSING: u64 = 1_000_000;

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
    /// How long after it happened an event is still retried (`WEBHOOK_RETRY_FOR`).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Everything delivered.
    CaughtUp,
    /// A full batch went out; there may be more.
    More,
    /// The next event failed (or waits for its backoff); try again at this time (unix ms).
    RetryAt(u64),
    /// Another node holds the room now: stop.
    Lost,
}

/// One room's turn, shared by its endpoints, which deliver side by side.
struct RoomTurn<'a> {
    room: &'a str,
    /// Endpoints still delivering. One that caught up keeps looking for new events while
    /// another is busy (a slow webhook), since the room is held anyway.
    busy: AtomicUsize,
    /// Set once a lease renewal found another holder: every endpoint stops.
    lost: AtomicBool,
}

impl RoomTurn<'_> {
    fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Whether an endpoint other than the caller is still delivering.
    fn others_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 1
    }
}

/// What the dispatcher reads of a stored event.
#[derive(Deserialize, Default)]
struct EventMeta<'a> {
    #[serde(borrow)]
    id: &'a str,
    seq: u64,
    #[serde(rename = "createdAt")]
    created_at: u64,
}

/// What became of one event at one endpoint.
enum Attempt {
    /// Acknowledged.
    Acked,
    /// Refused, timed out or unreachable.
    Failed(String),
    /// Not tried: the endpoint failed an attempt this turn and the event is past its
    /// retry time as well.
    Skipped,
}

/// Events given up on in one turn, logged as one line.
#[derive(Default)]
struct Dropped {
    count: u64,
    first_seq: u64,
    last_seq: u64,
    /// Failed attempts at the last one attempted.
    attempts: u32,
    /// Why that attempt failed.
    error: String,
}

impl Dropped {
    fn add(&mut self, seq: u64) {
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.count += 1;
        self.last_seq = seq;
    }
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

    /// Runs until the task is aborted. Each room's turn is a task of its own, so a room
    /// waiting on a slow endpoint never holds back the next look at the others.
    pub async fn run(self: Arc<Self>) {
        let mut turns: JoinSet<()> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut trimmed = Instant::now();
        let mut adopted = Instant::now();
        let mut pause = PASS_INTERVAL;
        let mut next_look = Instant::now();
        loop {
            tokio::select! {
                Some(done) = turns.join_next_with_id(), if !turns.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    in_flight.remove(&id);
                    continue;
                }
                _ = tokio::time::sleep_until(next_look) => {}
            }
            // A store that fails is asked less often, up to once every few seconds.
            pause = match self.start_due(&mut turns, &mut in_flight).await {
                Ok(()) => PASS_INTERVAL,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for room events to deliver");
                    (pause * 2).min(MAX_PAUSE)
                }
            };
            // Now and then, not on every look: a gauge and a look at gone nodes' rooms.
            if adopted.elapsed() >= ADOPT_EVERY {
                adopted = Instant::now();
                self.adopt().await;
            }
            if trimmed.elapsed() >= TRIM_EVERY {
                trimmed = Instant::now();
                let before = unix_millis().saturating_sub(self.config.retention.as_millis() as u64);
                if let Err(e) = self.events.log_trim(before).await {
                    tracing::warn!(error = %e, "could not trim the event log");
                }
            }
            next_look = Instant::now() + pause;
        }
    }

    /// Updates `switchboard_event_rooms_pending` and takes over the rooms of gone nodes.
    async fn adopt(&self) {
        if let Ok(pending) = self.events.pending_rooms().await {
            self.metrics.event_rooms_pending.set(pending as i64);
        }
        match self.events.adopt_orphans().await {
            Ok(0) => {}
            Ok(rooms) => tracing::info!(rooms, "took over the rooms due of a node that is gone"),
            Err(e) => tracing::warn!(error = %e, "could not look for a gone node's rooms due"),
        }
    }

    /// Starts a turn for each due room not already in one, up to [`ROOMS_AT_ONCE`] turns.
    async fn start_due(
        self: &Arc<Self>,
        turns: &mut JoinSet<()>,
        in_flight: &mut HashMap<tokio::task::Id, String>,
    ) -> Result<(), crate::store::StoreError> {
        let free = ROOMS_AT_ONCE.saturating_sub(in_flight.len());
        if free == 0 {
            return Ok(());
        }
        // Rooms in a turn may be due again (a change marked them): ask for enough others.
        let due = self
            .events
            .due_rooms(unix_millis(), ROOMS_AT_ONCE + in_flight.len())
            .await?;
        let fresh: Vec<(String, f64)> = due
            .into_iter()
            .filter(|(room, _)| !in_flight.values().any(|r| r == room))
            .take(free)
            .collect();
        for (room, seen) in fresh {
            let this = self.clone();
            let name = room.clone();
            let task = turns.spawn(async move {
                if let Err(e) = this.deliver_room(&room, seen).await {
                    // The room's shard may be down: look again later, not on every look.
                    tracing::warn!(error = %e, room, "could not deliver room events");
                    let later = mark(unix_millis() + STORE_RETRY.as_millis() as u64);
                    let _ = this.events.reschedule(&room, seen, Some(later)).await;
                }
            });
            in_flight.insert(task.id(), name);
        }
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
        let turn = RoomTurn {
            room,
            busy: AtomicUsize::new(self.endpoints.len()),
            lost: AtomicBool::new(false),
        };
        // Endpoints side by side, each in seq order: a slow one does not hold back another.
        let outcomes = join_all(self.endpoints.iter().map(|endpoint| {
            let delivery = deliveries.get(&endpoint.key()).cloned().unwrap_or_default();
            self.endpoint_turn(&turn, endpoint, delivery)
        }))
        .await;
        if turn.lost() {
            // Paused past the lease (a stalled process or VM): the new holder goes on.
            tracing::warn!(
                room,
                "stopped delivering a room's events: its lease passed to another node while this one was stalled"
            );
            return Ok(());
        }
        let mut turns = Vec::with_capacity(outcomes.len());
        let mut cursors = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (turn, cursor) = outcome?;
            turns.push(turn);
            cursors.push(cursor);
        }
        // What every endpoint has is no longer needed.
        if let Some(oldest) = cursors.iter().min_by(older)
            && !oldest.is_empty()
        {
            self.events.trim_events(room, oldest).await?;
        }
        let next_mark = next_mark(&turns, seen, unix_millis());
        self.events.reschedule(room, seen, next_mark).await?;
        Ok(())
    }

    /// One endpoint's part of a room's turn: nothing before its backoff ends, then its
    /// events in order; returns how far it got and its cursor.
    async fn endpoint_turn(
        &self,
        turn: &RoomTurn<'_>,
        endpoint: &Endpoint,
        mut delivery: Delivery,
    ) -> Result<(Turn, String), crate::store::StoreError> {
        let outcome = async {
            loop {
                // A change marks the room due now; a failing endpoint still waits its turn.
                if delivery.retry_at > unix_millis() {
                    return Ok(Turn::RetryAt(delivery.retry_at));
                }
                match self.deliver_to(turn, endpoint, &mut delivery).await? {
                    Turn::CaughtUp if turn.others_busy() && !turn.lost() => {
                        tokio::time::sleep(PASS_INTERVAL).await;
                    }
                    Turn::More if turn.others_busy() && !turn.lost() => {}
                    done => return Ok(done),
                }
            }
        }
        .await;
        turn.busy.fetch_sub(1, Ordering::Relaxed);
        outcome.map(|t| (t, delivery.cursor))
    }

    /// Hands `endpoint` the room's events after its cursor, in order, until one fails or
    /// a batch went out; records how far it got in `delivery`.
    async fn deliver_to(
        &self,
        turn: &RoomTurn<'_>,
        endpoint: &Endpoint,
        delivery: &mut Delivery,
    ) -> Result<Turn, crate::store::StoreError> {
        let room = turn.room;
        let batch = self
            .events
            .events_after(room, &delivery.cursor, BATCH)
            .await?;
        let full = batch.len() == BATCH;
        let mut dropped = Dropped::default();
        let mut failing = false;
        let mut outcome = if full { Turn::More } else { Turn::CaughtUp };
        for event in batch {
            // Ours, so it reads; if the store mangled it, its age reads as infinite and it
            // is dropped after one failed attempt.
            let meta = serde_json::from_str::<EventMeta<'_>>(&event.json).unwrap_or_default();
            self.count_missing(endpoint, room, delivery, meta.seq);
            // Counted once: from here on the sequence goes on from this event.
            if meta.seq != 0 {
                delivery.next_seq = meta.seq;
            }
            let expired = || past_retry(meta.created_at, unix_millis(), self.config.retry_for);
            let attempt = if failing && expired() {
                Attempt::Skipped
            } else {
                // Keep the room while this delivery takes its time; stop if it went.
                if !self.events.lease(room, &self.holder, self.lease()).await? {
                    turn.lost.store(true, Ordering::Relaxed);
                    outcome = Turn::Lost;
                    break;
                }
                match self.send(endpoint, &event, &meta).await {
                    Ok(()) => Attempt::Acked,
                    Err(why) => Attempt::Failed(why),
                }
            };
            // Judged after the attempt, which may have taken WEBHOOK_TIMEOUT.
            let given_up = match attempt {
                Attempt::Acked => false,
                Attempt::Failed(_) => expired(),
                Attempt::Skipped => true,
            };
            match attempt {
                Attempt::Acked => {
                    self.metrics.event_delivered(endpoint.label());
                    *delivery = resolved(&event, meta.seq);
                }
                Attempt::Failed(why) if !given_up => {
                    delivery.attempts += 1;
                    self.metrics.event_retried(endpoint.label());
                    tracing::debug!(endpoint = endpoint.label(), error = %why, "webhook delivery failed; retrying");
                    // From the failure, not the attempt's start: a timeout is no rest.
                    let wait = backoff(delivery.attempts, self.config.max_backoff);
                    delivery.retry_at = unix_millis() + wait;
                    outcome = Turn::RetryAt(delivery.retry_at);
                }
                given_up => {
                    // WEBHOOK_RETRY_FOR has passed since the event happened, and the
                    // endpoint has just failed: given up, never silently.
                    if let Attempt::Failed(why) = given_up {
                        dropped.attempts = delivery.attempts + 1;
                        dropped.error = why;
                    }
                    failing = true;
                    self.metrics.event_dropped(endpoint.label());
                    dropped.add(meta.seq);
                    *delivery = resolved(&event, meta.seq);
                }
            }
            self.events
                .set_delivery(room, &endpoint.key(), delivery)
                .await?;
            if let Turn::RetryAt(_) = outcome {
                break;
            }
        }
        self.log_dropped(endpoint, room, &dropped);
        Ok(outcome)
    }

    /// Counts as dropped the events missing before `seq`, the next `endpoint` is handed:
    /// gone from the store before delivery (Redis restarted without its data, or evicted
    /// keys under memory pressure).
    fn count_missing(&self, endpoint: &Endpoint, room: &str, delivery: &Delivery, seq: u64) {
        let Some(missing) = missing_events(delivery.next_seq, seq) else {
            return;
        };
        if missing == 0 {
            // How many is unknown: the sequence started again.
            tracing::error!(
                endpoint = endpoint.label(),
                room,
                expected_seq = delivery.next_seq,
                seq,
                "room events were lost before delivery: the room's sequence started again \
                 while events from expected_seq on were undelivered (did Redis lose its data?)"
            );
            return;
        }
        for _ in 0..missing.min(MAX_COUNTED_MISSING) {
            self.metrics.event_dropped(endpoint.label());
        }
        tracing::error!(
            endpoint = endpoint.label(),
            room,
            missing,
            expected_seq = delivery.next_seq,
            "room events were lost before delivery: the store no longer had them \
             (did Redis lose its data or evict keys?)"
        );
    }

    /// One `error` line for the events given up on in a turn.
    fn log_dropped(&self, endpoint: &Endpoint, room: &str, dropped: &Dropped) {
        if dropped.count == 0 {
            return;
        }
        tracing::error!(
            endpoint = endpoint.label(),
            room,
            events = dropped.count,
            first_seq = dropped.first_seq,
            last_seq = dropped.last_seq,
            attempts = dropped.attempts,
            error = %dropped.error,
            "room events were dropped: their endpoint kept failing for WEBHOOK_RETRY_FOR after they happened"
        );
    }

    /// One delivery attempt.
    async fn send(
        &self,
        endpoint: &Endpoint,
        event: &StoredEvent,
        meta: &EventMeta<'_>,
    ) -> Result<(), String> {
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
                if meta.id.is_empty() {
                    return Err("a stored event is not the JSON of a room event".into());
                }
                let secret = self
                    .config
                    .secret
                    .as_ref()
                    .ok_or("WEBHOOK_SECRET is not set")?;
                webhook::deliver(url, secret, meta.id, &event.json, self.config.timeout)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// An endpoint's state once `event` (of `seq`) is acknowledged or given up on.
fn resolved(event: &StoredEvent, seq: u64) -> Delivery {
    Delivery {
        cursor: event.position.clone(),
        // Unknown after an event that did not read (seq 0).
        next_seq: if seq == 0 { 0 } else { seq + 1 },
        ..Delivery::default()
    }
}

/// Whether an event created at `created_at` is past its retry time at `now` (unix ms).
fn past_retry(created_at: u64, now: u64, retry_for: Duration) -> bool {
    now.saturating_sub(created_at) >= retry_for.as_millis() as u64
}

/// How many events are missing before the one of `seq`, when `expected` (0 when unknown)
/// should come: `None` when none is, `Some(0)` when the sequence started again (how many
/// is unknown).
fn missing_events(expected: u64, seq: u64) -> Option<u64> {
    if expected == 0 || seq == 0 || seq == expected {
        None
    } else if seq > expected {
        Some(seq - expected)
    } else {
        Some(0)
    }
}

/// The room's next mark after a turn: the earliest time an endpoint needs it (now when one
/// has more to send); when all caught up, a settling check once, then nothing.
fn next_mark(turns: &[Turn], seen: f64, now: u64) -> Option<f64> {
    let due = turns
        .iter()
        .filter_map(|turn| match turn {
            Turn::More => Some(now),
            Turn::RetryAt(at) => Some(*at),
            Turn::CaughtUp | Turn::Lost => None,
        })
        .min();
    match due {
        Some(at) => Some(mark(at)),
        // Nothing left: look once more after the margin (a change on its way lands by
        // then), and forget the room if nothing came.
        None if is_settle_mark(seen) => None,
        None => Some(settle_mark(now + SETTLE_MARGIN.as_millis() as u64)),
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
    use crate::store::StoreError;
    use std::sync::Mutex;

    /// One room's events, with a lease that stays ours for the first `grants` asks only:
    /// what a node sees that stalled past its lease while another took the room.
    struct Stalled {
        events: Vec<StoredEvent>,
        grants: AtomicUsize,
        log: Mutex<Vec<String>>,
        rescheduled: AtomicBool,
    }

    #[async_trait::async_trait]
    impl EventLog for Stalled {
        fn record_events(&self, _: Duration, _: usize, _: &str) {}
        async fn adopt_orphans(&self) -> Result<usize, StoreError> {
            Ok(0)
        }
        async fn due_rooms(&self, _: u64, _: usize) -> Result<Vec<(String, f64)>, StoreError> {
            Ok(Vec::new())
        }
        async fn pending_rooms(&self) -> Result<usize, StoreError> {
            Ok(1)
        }
        async fn reschedule(&self, _: &str, _: f64, _: Option<f64>) -> Result<bool, StoreError> {
            self.rescheduled.store(true, Ordering::Relaxed);
            Ok(true)
        }
        async fn lease(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
            let left = self.grants.load(Ordering::Relaxed);
            self.grants.store(left.saturating_sub(1), Ordering::Relaxed);
            Ok(left > 0)
        }
        async fn unlease(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn events_after(
            &self,
            _: &str,
            after: &str,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            let after: u64 = after.parse().unwrap_or(0);
            Ok(self
                .events
                .iter()
                .filter(|e| e.position.parse::<u64>().unwrap() > after)
                .take(limit)
                .cloned()
                .collect())
        }
        async fn deliveries(&self, _: &str) -> Result<HashMap<String, Delivery>, StoreError> {
            Ok(HashMap::new())
        }
        async fn set_delivery(&self, _: &str, _: &str, _: &Delivery) -> Result<(), StoreError> {
            Ok(())
        }
        async fn trim_events(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn log_append(&self, json: &str) -> Result<String, StoreError> {
            let mut log = self.log.lock().unwrap();
            log.push(json.to_string());
            Ok(log.len().to_string())
        }
        async fn log_read(
            &self,
            _: Option<&str>,
            _: usize,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            Ok(Vec::new())
        }
        async fn log_trim(&self, _: u64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_node_whose_lease_was_taken_stops_delivering_the_room() {
        let now = unix_millis();
        let events = (1..=3)
            .map(|seq| StoredEvent {
                position: seq.to_string(),
                json: format!(r#"{{"id":"e-{seq}","seq":{seq},"createdAt":{now}}}"#),
            })
            .collect();
        // Ours when taken and at the first renewal; another node's from the second on.
        let log = Arc::new(Stalled {
            events,
            grants: AtomicUsize::new(2),
            log: Mutex::default(),
            rescheduled: AtomicBool::new(false),
        });
        let config = DispatchConfig {
            webhooks: Vec::new(),
            secret: None,
            retry_for: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            retention: Duration::from_secs(86_400),
            log_max: 100,
        };
        let dispatcher = Dispatcher::new(log.clone(), "node-a", config, Metrics::new());
        dispatcher.deliver_room("r", mark(now)).await.unwrap();
        assert_eq!(log.log.lock().unwrap().len(), 1, "delivered past the lease");
        // The room's schedule is the new holder's to keep.
        assert!(!log.rescheduled.load(Ordering::Relaxed));
    }

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
    fn a_room_is_due_when_its_earliest_endpoint_is() {
        let at = |mark: Option<f64>| mark.map(|m| m as u64 / 1000);
        let seen = mark(500);
        // A failing endpoint's retry time is kept, not replaced by "now".
        let turns = [Turn::RetryAt(5_000), Turn::CaughtUp, Turn::RetryAt(3_000)];
        assert_eq!(at(next_mark(&turns, seen, 1_000)), Some(3_000));
        assert_eq!(
            at(next_mark(&[Turn::RetryAt(5_000), Turn::More], seen, 1_000)),
            Some(1_000)
        );
        // All caught up: one settling check, then the room is forgotten.
        let settle = next_mark(&[Turn::CaughtUp, Turn::CaughtUp], seen, 1_000).unwrap();
        assert!(is_settle_mark(settle));
        assert_eq!(
            settle as u64 / 1000,
            1_000 + SETTLE_MARGIN.as_millis() as u64
        );
        assert_eq!(next_mark(&[Turn::CaughtUp], settle, 40_000), None);
    }

    #[test]
    fn an_event_is_given_up_by_its_own_age() {
        let hour = Duration::from_secs(3600);
        assert!(!past_retry(1_000, 1_000 + 3_599_999, hour));
        assert!(past_retry(1_000, 1_000 + 3_600_000, hour));
        // A clock behind the event's (another node's) reads as a fresh event.
        assert!(!past_retry(5_000, 4_000, hour));
        // An event that does not read has no age to wait out.
        assert!(past_retry(0, 1_000_000_000_000, hour));
    }

    #[test]
    fn a_gap_or_a_restart_in_a_room_sequence_is_missing_events() {
        assert_eq!(missing_events(0, 7), None); // nothing known before
        assert_eq!(missing_events(7, 0), None); // an event that did not read
        assert_eq!(missing_events(7, 7), None);
        assert_eq!(missing_events(7, 10), Some(3));
        assert_eq!(missing_events(7, 1), Some(0)); // started again: how many is unknown
        assert_eq!(missing_events(7, 6), Some(0));
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
