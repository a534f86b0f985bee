//! Hold-and-retry delivery to other nodes: one ordered lane per destination node.
//!
//! A message is queued at once and its sender goes on. The lane appends what is queued to
//! the destination's inbox, in order, in batches; while Redis fails (a failover, a restart)
//! it keeps the messages and retries until they go through or `hold` has passed. Appended
//! messages are kept too, until the destination's read marker shows it read them: if the
//! inbox was lost meanwhile (Redis restarted empty) they are appended again, and the
//! receiver drops the copies it already had by their sequence numbers. What is still
//! unread when its time is up is withdrawn from the inbox (XDEL) and only then reported
//! lost, so a message ends either read by its node or reported to its sender, never both
//! and never neither.
//!
//! An append whose answer never came (a timeout, a cut link) may still run later, when its
//! bytes reach Redis. So every append carries a deadline, a little before the sender would
//! be told, and Redis refuses it after that; a message whose append was uncertain is
//! reported only once the deadline has passed and Redis has said whether it landed.
//!
//! Hand-written: no crate offers an ordered, bounded, retrying outbox over Redis streams.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{BusMessage, OnLost, Undelivered};
use crate::error::StoreError;
use crate::telemetry::Metrics;

/// Entries per append.
const BATCH: usize = 256;
/// How often a lane with unread messages checks the destination's read marker.
const POLL: Duration = Duration::from_millis(50);
/// First and longest pause between retries of a failed append.
const RETRY_MIN: Duration = Duration::from_millis(25);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// A stream entry id, `ms-seq`, ordered numerically.
pub type EntryId = (u64, u64);

/// What a sender asks the destination's inbox to keep for it: every entry from an id on
/// (read or not) until it knows what became of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Keep entries from this id on.
    Keep(EntryId),
    /// Nothing is outstanding: let the reader trim.
    Release,
    /// Do not move the pin (an append of unknown place may have landed).
    Leave,
}

/// What became of a message its sender gives up on, as Redis tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its node read it: nothing to report.
    Delivered,
    /// It was still unread and is now deleted: report it.
    Withdrawn,
    /// It never reached the inbox: report it.
    Absent,
}

/// Bounds and timing of held messages.
#[derive(Debug, Clone, Copy)]
pub struct HoldLimits {
    /// How long a message may wait for its node before its sender is told.
    pub hold: Duration,
    /// Messages held per destination node (queued and unread).
    pub max_messages: usize,
    /// Bytes held per destination node.
    pub max_bytes: usize,
}

impl Default for HoldLimits {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(10),
            max_messages: 20_000,
            max_bytes: 64 << 20,
        }
    }
}

/// One message on its way: its sequence number on the lane and its wire fields.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Sequence number, unique per (origin, destination); the receiver drops repeats.
    pub seq: u64,
    /// Redis refuses to append it after this (unix milliseconds): the hold less a margin
    /// for clock skew, so no delayed append lands after its sender was told.
    pub deadline: u64,
    /// Field/value pairs of the message.
    pub fields: Vec<(&'static str, String)>,
}

/// Where an inbox stands: its generation (new each time it is created) and how far its
/// node has read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Generation of the inbox.
    pub generation: Arc<str>,
    /// Last entry its node read.
    pub read: EntryId,
    /// The node was declared lost: nothing more may be appended.
    pub closed: bool,
}

/// Why an append did not happen.
#[derive(Debug)]
pub enum AppendError {
    /// The node has no inbox now (Redis lost it; the node re-creates it shortly).
    NoInbox,
    /// The node was declared lost.
    Closed,
    /// The inbox is of another generation than the unconfirmed messages appended before:
    /// those go first, again, so the node reads each sender's messages in order.
    Generation,
    /// Redis failed; the append may or may not have happened.
    Store(StoreError),
    /// Redis could not be reached: the append surely did not happen.
    Unsent(StoreError),
}

/// What the lanes need from the medium: Redis streams in production.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Appends `entries` to `node`'s inbox in order, if its generation is `expected`
    /// (any when `None`); returns the inbox's generation and each entry's id, `None` for an
    /// entry Redis skipped because its deadline had passed.
    async fn append(
        &self,
        node: &str,
        expected: Option<&str>,
        entries: &[Outgoing],
    ) -> Result<(Arc<str>, Vec<Option<EntryId>>), AppendError>;

    /// The inbox's read marker, `None` when the node has no inbox; moves this sender's
    /// pin as `pin` says.
    async fn progress(&self, node: &str, pin: Pin) -> Result<Option<Progress>, StoreError>;

    /// Gives up on this process's messages `seqs`: deletes every unread copy of each and
    /// says what became of it; also returns the marker after.
    async fn withdraw(
        &self,
        node: &str,
        seqs: &[u64],
    ) -> Result<(Vec<Fate>, Option<Progress>), StoreError>;
}

/// A message waiting for its node.
struct Held {
    out: Outgoing,
    bytes: usize,
    since: Instant,
    /// An append of it may have happened without an answer.
    uncertain: bool,
    /// When uncertain: the newest inbox entry known before that append, so any copy of
    /// it lies after this.
    floor: Option<EntryId>,
    lost: Option<OnLost>,
}

/// A message appended to its node's inbox, not yet read.
struct Sent {
    held: Held,
    generation: Arc<str>,
    id: EntryId,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Held>,
    sent: VecDeque<Sent>,
    /// Given up on, but an earlier append may have landed: reported once Redis says.
    unresolved: Vec<(Held, Undelivered)>,
    /// The newest inbox entry id this lane knows of.
    known: Option<EntryId>,
    bytes: usize,
    next_seq: u64,
    running: bool,
    abandoned: bool,
    wake: Arc<Notify>,
    /// Highest sequence number settled (appended or given up): what `flushed` waits for.
    settled: Option<watch::Sender<u64>>,
}

impl Lane {
    fn count(&self) -> usize {
        self.queue.len() + self.sent.len() + self.unresolved.len()
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.sent.is_empty() && self.unresolved.is_empty()
    }

    fn learn(&mut self, id: EntryId) {
        if self.known.is_none_or(|k| k < id) {
            self.known = Some(id);
        }
    }

    /// What this lane still needs kept in the inbox: from its oldest unread message, or
    /// from before its oldest uncertain append.
    fn pin(&self) -> Pin {
        let uncertain = self
            .queue
            .iter()
            .chain(self.unresolved.iter().map(|(h, _)| h))
            .filter(|h| h.uncertain);
        let mut oldest = self.sent.iter().map(|s| s.id).min();
        let mut any = oldest.is_some();
        for held in uncertain {
            any = true;
            match held.floor {
                Some(floor) => oldest = Some(oldest.map_or(floor, |o| o.min(floor))),
                None => return Pin::Leave,
            }
        }
        match oldest {
            Some(id) => Pin::Keep(id),
            None if !any => Pin::Release,
            None => Pin::Leave,
        }
    }

    fn settled(&mut self) -> &watch::Sender<u64> {
        self.settled.get_or_insert_with(|| watch::channel(0).0)
    }

    /// Everything before the first queued message is appended or given up.
    fn mark_settled(&mut self) {
        let upto = self
            .queue
            .front()
            .map_or(self.next_seq, |h| h.out.seq.saturating_sub(1));
        self.settled().send_if_modified(|s| {
            let changed = *s != upto;
            *s = upto;
            changed
        });
    }
}

/// The lanes of one node.
pub struct Courier {
    origin: Arc<str>,
    transport: Arc<dyn Transport>,
    limits: HoldLimits,
    metrics: Option<Arc<Metrics>>,
    lanes: Mutex<HashMap<Arc<str>, Lane>>,
}

/// Losses to report once the lock is released (callbacks may take other locks).
type Losses = Vec<(OnLost, Undelivered)>;

fn report(losses: Losses, metrics: Option<&Metrics>) {
    for (lost, why) in losses {
        if let Some(m) = metrics {
            m.undelivered(why.as_str());
        }
        lost(why);
    }
}

impl Courier {
    /// Lanes from the node named `origin` (unique per process) over `transport`.
    pub fn new(
        origin: &str,
        transport: Arc<dyn Transport>,
        limits: HoldLimits,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            origin: Arc::from(origin),
            transport,
            limits,
            metrics,
            lanes: Mutex::default(),
        })
    }

    /// This process's origin name, carried by every message it sends.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How long after queuing a message Redis may still append it (milliseconds): the
    /// hold less a margin for clock skew between this node and Redis, so no late append
    /// lands after the sender was told.
    fn append_window(&self) -> u64 {
        let hold = self.limits.hold;
        (hold - (hold / 5).min(Duration::from_secs(1))).as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `message` for `node` behind what was queued before; returns at once.
    pub fn send(self: &Arc<Self>, node: &str, message: &BusMessage, lost: Option<OnLost>) {
        let fields = message.to_fields();
        let bytes = fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + 64;
        let mut lanes = self.lock();
        let lane = match lanes.get_mut(node) {
            Some(lane) => lane,
            None => lanes.entry(Arc::from(node)).or_default(),
        };
        if lane.count() >= self.limits.max_messages || lane.bytes + bytes > self.limits.max_bytes {
            drop(lanes);
            tracing::warn!(
                to = node,
                "too many messages are waiting for another node; refusing one"
            );
            if let Some(lost) = lost {
                report(vec![(lost, Undelivered::Full)], self.metrics.as_deref());
            }
            return;
        }
        lane.next_seq += 1;
        lane.bytes += bytes;
        lane.queue.push_back(Held {
            out: Outgoing {
                seq: lane.next_seq,
                deadline: crate::clock::unix_micros() / 1000 + self.append_window(),
                fields,
            },
            bytes,
            since: Instant::now(),
            uncertain: false,
            floor: None,
            lost,
        });
        self.held_changed(bytes as i64, 1);
        if lane.running {
            lane.wake.notify_one();
        } else {
            lane.running = true;
            let node: Arc<str> = Arc::from(node);
            tokio::spawn(self.clone().run(node));
        }
    }

    /// Resolves once everything queued before the call was appended or given up.
    pub async fn flushed(&self) {
        let waits: Vec<(watch::Receiver<u64>, u64)> = self
            .lock()
            .values_mut()
            .filter(|lane| !lane.queue.is_empty())
            .map(|lane| (lane.settled().subscribe(), lane.next_seq))
            .collect();
        for (mut settled, target) in waits {
            let _ = settled.wait_for(|s| *s >= target).await;
        }
    }

    /// Gives up on `node` (declared lost): its queued messages and what it has not read
    /// are withdrawn and reported to their senders.
    pub fn abandon(&self, node: &str) {
        if let Some(lane) = self.lock().get_mut(node) {
            lane.abandoned = true;
            lane.wake.notify_one();
        }
    }

    /// Messages and bytes held for all nodes.
    pub fn held(&self) -> (usize, usize) {
        self.lock()
            .values()
            .fold((0, 0), |(n, b), lane| (n + lane.count(), b + lane.bytes))
    }

    fn held_changed(&self, bytes: i64, messages: i64) {
        if let Some(m) = &self.metrics {
            m.bus_held_bytes.inc_by(bytes);
            m.bus_held_messages.inc_by(messages);
        }
    }

    fn forget(&self, lane: &mut Lane, held: &Held) {
        lane.bytes -= held.bytes;
        self.held_changed(-(held.bytes as i64), -1);
    }

    /// The lane's task: append, confirm, retry, expire; ends when the lane is empty.
    async fn run(self: Arc<Self>, node: Arc<str>) {
        let mut failures = 0u32;
        let mut next_poll = Instant::now() + POLL;
        loop {
            let (batch, wake, abandoned, poll_due, expected, known) = {
                let mut lanes = self.lock();
                let Some(lane) = lanes.get_mut(&node) else {
                    return;
                };
                let mut losses = Losses::new();
                self.expire_queued(lane, &mut losses);
                self.expire_unresolved(lane, &mut losses);
                lane.mark_settled();
                if lane.idle() {
                    lane.running = false;
                    lane.abandoned = false;
                    drop(lanes);
                    report(losses, self.metrics.as_deref());
                    return;
                }
                let abandoned = std::mem::take(&mut lane.abandoned);
                let poll_due = (!lane.sent.is_empty() || !lane.unresolved.is_empty())
                    && Instant::now() >= next_poll;
                let batch: Vec<Held> = if abandoned {
                    Vec::new()
                } else {
                    let n = lane.queue.len().min(BATCH);
                    lane.queue.drain(..n).collect()
                };
                let wake = lane.wake.clone();
                let expected = lane.sent.back().map(|s| s.generation.clone());
                let known = lane.known;
                drop(lanes);
                report(losses, self.metrics.as_deref());
                (batch, wake, abandoned, poll_due, expected, known)
            };
            if abandoned {
                self.give_up(&node).await;
                continue;
            }
            if poll_due {
                next_poll = Instant::now() + POLL;
                self.confirm(&node).await;
            }
            if batch.is_empty() {
                // Only unread messages left: wait for the next poll or new work.
                let _ = tokio::time::timeout_at(next_poll, wake.notified()).await;
                continue;
            }
            let outgoing: Vec<Outgoing> = batch.iter().map(|h| h.out.clone()).collect();
            match self
                .transport
                .append(&node, expected.as_deref(), &outgoing)
                .await
            {
                Ok((generation, ids)) => {
                    failures = 0;
                    let mut losses = Losses::new();
                    let mut lanes = self.lock();
                    if let Some(lane) = lanes.get_mut(&node) {
                        for (held, id) in batch.into_iter().zip(ids) {
                            if let Some(id) = id {
                                lane.learn(id);
                            }
                            match id {
                                Some(id) => lane.sent.push_back(Sent {
                                    held,
                                    generation: generation.clone(),
                                    id,
                                }),
                                // Past its deadline by Redis's clock: its time is up.
                                None => {
                                    self.give_up_on(lane, held, Undelivered::Expired, &mut losses)
                                }
                            }
                        }
                        lane.mark_settled();
                    }
                    drop(lanes);
                    report(losses, self.metrics.as_deref());
                }
                Err(AppendError::Closed) => {
                    self.requeue_front(&node, batch);
                    self.give_up(&node).await;
                }
                Err(AppendError::Generation) => {
                    self.requeue_front(&node, batch);
                    if let Some(lane) = self.lock().get_mut(&node) {
                        // No marker can confirm them now: all go again, first.
                        self.settle_sent(lane, None);
                    }
                }
                Err(e) => {
                    let mut batch = batch;
                    if matches!(e, AppendError::Store(_)) {
                        for held in &mut batch {
                            if !held.uncertain {
                                held.uncertain = true;
                                held.floor = known;
                            }
                        }
                    }
                    failures += 1;
                    if failures == 1 {
                        match &e {
                            AppendError::Store(e) | AppendError::Unsent(e) => {
                                tracing::warn!(error = %e, to = %node, "holding messages for another node until Redis answers")
                            }
                            _ => {
                                tracing::info!(to = %node, "holding messages until another node re-creates its inbox")
                            }
                        }
                    }
                    if let Some(m) = &self.metrics {
                        m.bus_retries.inc();
                    }
                    self.requeue_front(&node, batch);
                    let pause = (RETRY_MIN * 2u32.saturating_pow(failures.min(6))).min(RETRY_MAX);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Puts messages back at the head of the queue, in order.
    fn requeue_front(&self, node: &str, batch: Vec<Held>) {
        if let Some(lane) = self.lock().get_mut(node) {
            for held in batch.into_iter().rev() {
                lane.queue.push_front(held);
            }
        }
    }

    /// Reports queued messages older than the hold as lost (or, when an append of one
    /// may have landed, keeps it until Redis says).
    fn expire_queued(&self, lane: &mut Lane, losses: &mut Losses) {
        let now = Instant::now();
        while let Some(front) = lane.queue.front()
            && now.duration_since(front.since) >= self.limits.hold
        {
            let held = lane.queue.pop_front().expect("front exists");
            self.give_up_on(lane, held, Undelivered::Expired, losses);
        }
    }

    /// Reports what could not be resolved within twice the hold (Redis stayed out of
    /// reach): a last resort, as its append may have landed before its deadline.
    fn expire_unresolved(&self, lane: &mut Lane, losses: &mut Losses) {
        let now = Instant::now();
        let limit = self.limits.hold * 2;
        for (held, why) in std::mem::take(&mut lane.unresolved) {
            if now.duration_since(held.since) < limit {
                lane.unresolved.push((held, why));
                continue;
            }
            self.forget(lane, &held);
            if let Some(lost) = held.lost {
                losses.push((lost, why));
            }
        }
    }

    /// Reports `held` as lost for `why`, unless an append of it may have landed.
    fn give_up_on(&self, lane: &mut Lane, held: Held, why: Undelivered, losses: &mut Losses) {
        if held.uncertain {
            lane.unresolved.push((held, why));
            return;
        }
        self.forget(lane, &held);
        if let Some(lost) = held.lost {
            losses.push((lost, why));
        }
    }

    /// Reads the destination's marker: drops what it read, re-queues what a lost inbox
    /// took with it, and withdraws what waited too long.
    async fn confirm(&self, node: &str) {
        let pin = match self.lock().get(node) {
            Some(lane) => lane.pin(),
            None => return,
        };
        let progress = match self.transport.progress(node, pin).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, to = node, "could not read another node's progress");
                return;
            }
        };
        let overdue = {
            let mut lanes = self.lock();
            let Some(lane) = lanes.get_mut(node) else {
                return;
            };
            self.settle_sent(lane, progress.as_ref());
            if let Some(p) = &progress {
                lane.learn(p.read);
            }
            let now = Instant::now();
            let closed = progress.as_ref().is_some_and(|p| p.closed);
            let mut overdue: Vec<u64> = lane
                .sent
                .iter()
                .filter(|s| closed || now.duration_since(s.held.since) >= self.limits.hold)
                .map(|s| s.held.out.seq)
                .collect();
            // Past the hold, an uncertain append can no longer land: ask what happened.
            overdue.extend(
                lane.unresolved
                    .iter()
                    .filter(|(h, _)| now.duration_since(h.since) >= self.limits.hold)
                    .map(|(h, _)| h.out.seq),
            );
            overdue
        };
        if !overdue.is_empty() {
            self.withdraw(node, &overdue, Undelivered::Expired).await;
        }
        // Everything is settled: let the reader trim what this lane kept pinned.
        let release = pin != Pin::Release
            && self
                .lock()
                .get(node)
                .is_some_and(|lane| lane.pin() == Pin::Release);
        if release && let Err(e) = self.transport.progress(node, Pin::Release).await {
            tracing::debug!(error = %e, to = node, "could not release a pin; it expires by itself");
        }
    }

    /// Applies a read marker to the appended messages: read ones are done; those of an
    /// inbox generation that is gone go back to the queue, in order, to be appended again.
    fn settle_sent(&self, lane: &mut Lane, progress: Option<&Progress>) {
        let mut again = Vec::new();
        let mut kept = VecDeque::with_capacity(lane.sent.len());
        for sent in std::mem::take(&mut lane.sent) {
            match progress {
                Some(p) if *p.generation == *sent.generation => {
                    if sent.id <= p.read {
                        self.forget(lane, &sent.held);
                    } else {
                        kept.push_back(sent);
                    }
                }
                _ => again.push(sent.held),
            }
        }
        lane.sent = kept;
        if !again.is_empty() {
            tracing::info!(
                count = again.len(),
                "another node's inbox was lost before it read everything; sending again"
            );
            if let Some(m) = &self.metrics {
                m.bus_resent.inc_by(again.len() as u64);
            }
            for held in again.into_iter().rev() {
                lane.queue.push_front(held);
            }
        }
    }

    /// Gives up on messages `seqs` (appended, or uncertain): Redis deletes their unread
    /// copies and says which were read; the others are reported lost (with `why`, or the
    /// reason they were given up for).
    async fn withdraw(&self, node: &str, seqs: &[u64], why: Undelivered) {
        let (fates, progress) = match self.transport.withdraw(node, seqs).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, to = node, "could not withdraw messages; will retry");
                return;
            }
        };
        let fate: HashMap<u64, Fate> = seqs.iter().copied().zip(fates).collect();
        let mut losses = Losses::new();
        {
            let mut lanes = self.lock();
            let Some(lane) = lanes.get_mut(node) else {
                return;
            };
            let mut settle = |lane: &mut Lane, held: Held, fate: Fate, why: Undelivered| {
                self.forget(lane, &held);
                if fate != Fate::Delivered
                    && let Some(lost) = held.lost
                {
                    losses.push((lost, why));
                }
            };
            let mut kept = VecDeque::with_capacity(lane.sent.len());
            for sent in std::mem::take(&mut lane.sent) {
                match fate.get(&sent.held.out.seq) {
                    Some(&f) => settle(lane, sent.held, f, why),
                    None => kept.push_back(sent),
                }
            }
            lane.sent = kept;
            for (held, reason) in std::mem::take(&mut lane.unresolved) {
                match fate.get(&held.out.seq) {
                    Some(&f) => settle(lane, held, f, reason),
                    None => lane.unresolved.push((held, reason)),
                }
            }
            self.settle_sent(lane, progress.as_ref());
        }
        report(losses, self.metrics.as_deref());
    }

    /// The node is lost: everything queued for it is reported, and what it did not read
    /// is withdrawn and reported.
    async fn give_up(&self, node: &str) {
        let mut losses = Losses::new();
        let unread: Vec<u64> = {
            let mut lanes = self.lock();
            let Some(lane) = lanes.get_mut(node) else {
                return;
            };
            for held in std::mem::take(&mut lane.queue) {
                self.give_up_on(lane, held, Undelivered::NodeLost, &mut losses);
            }
            lane.mark_settled();
            lane.sent.iter().map(|s| s.held.out.seq).collect()
        };
        report(losses, self.metrics.as_deref());
        if !unread.is_empty() {
            self.withdraw(node, &unread, Undelivered::NodeLost).await;
        }
    }
}

#[cfg(test)]
#[path = "courier_tests.rs"]
mod tests;
