//! The lanes against an in-memory inbox that can fail, lose its data or be closed, on a
//! paused clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;

/// One node's inbox and marker, as the Redis scripts keep them.
#[derive(Default)]
struct Inbox {
    /// Redis is failing.
    failing: bool,
    closed: bool,
    /// Empty: no inbox (Redis lost it).
    generation: String,
    entries: BTreeMap<EntryId, u64>,
    read: EntryId,
    next_id: u64,
    appends: usize,
    /// Appends happen but their answers are lost (a link cut after the request left).
    lose_answers: bool,
    /// Every pin the sender asked for, in order.
    pins: Vec<Pin>,
}

#[derive(Default)]
struct Fake(Mutex<Inbox>);

impl Fake {
    /// The node reads the oldest unread entry. Read entries stay: senders' pins keep them
    /// until each sender knows their fate.
    fn read_first(&self) {
        let mut inbox = self.lock();
        let read = inbox.read;
        let first = *inbox.entries.keys().find(|id| **id > read).unwrap();
        inbox.read = first;
    }

    fn open() -> Arc<Fake> {
        let fake = Arc::new(Fake::default());
        fake.lock().generation = "g1".into();
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.0.lock().unwrap()
    }

    /// The node reads everything; returns the sequence numbers read.
    fn read_all(&self) -> Vec<u64> {
        let mut inbox = self.lock();
        let read = inbox.read;
        let new: Vec<(EntryId, u64)> = inbox
            .entries
            .iter()
            .filter(|(id, _)| **id > read)
            .map(|(k, v)| (*k, *v))
            .collect();
        if let Some((last, _)) = new.last() {
            inbox.read = *last;
        }
        new.into_iter().map(|(_, seq)| seq).collect()
    }

    fn unread(&self) -> Vec<u64> {
        let inbox = self.lock();
        inbox
            .entries
            .iter()
            .filter(|(id, _)| **id > inbox.read)
            .map(|(_, seq)| *seq)
            .collect()
    }
}

#[async_trait]
impl Transport for Fake {
    async fn append(
        &self,
        _node: &str,
        expected: Option<&str>,
        entries: &[Outgoing],
    ) -> Result<(Arc<str>, Vec<Option<EntryId>>), AppendError> {
        let mut inbox = self.lock();
        if expected.is_some_and(|g| g != inbox.generation) && !inbox.generation.is_empty() {
            return Err(AppendError::Generation);
        }
        if inbox.failing {
            return Err(AppendError::Unsent(StoreError("Redis is failing".into())));
        }
        if inbox.closed {
            return Err(AppendError::Closed);
        }
        if inbox.generation.is_empty() {
            return Err(AppendError::NoInbox);
        }
        inbox.appends += 1;
        let mut ids = Vec::new();
        for entry in entries {
            inbox.next_id += 1;
            let id = (inbox.next_id, 0);
            inbox.entries.insert(id, entry.seq);
            ids.push(Some(id));
        }
        if inbox.lose_answers {
            return Err(AppendError::Store(StoreError("no answer".into())));
        }
        Ok((Arc::from(inbox.generation.as_str()), ids))
    }

    async fn progress(&self, _node: &str, pin: Pin) -> Result<Option<Progress>, StoreError> {
        let mut inbox = self.lock();
        if !inbox.failing {
            inbox.pins.push(pin);
        }
        if inbox.failing {
            return Err(StoreError("Redis is failing".into()));
        }
        Ok(marker(&inbox))
    }

    async fn withdraw(
        &self,
        _node: &str,
        seqs: &[u64],
    ) -> Result<(Vec<Fate>, Option<Progress>), StoreError> {
        let mut inbox = self.lock();
        if inbox.failing {
            return Err(StoreError("Redis is failing".into()));
        }
        let mut fates = Vec::new();
        for seq in seqs {
            let copies: Vec<EntryId> = inbox
                .entries
                .iter()
                .filter(|(_, s)| *s == seq)
                .map(|(id, _)| *id)
                .collect();
            fates.push(if copies.iter().any(|id| *id <= inbox.read) {
                Fate::Delivered
            } else if !copies.is_empty() {
                for id in copies {
                    inbox.entries.remove(&id);
                }
                Fate::Withdrawn
            } else {
                Fate::Absent
            });
        }
        Ok((fates, marker(&inbox)))
    }
}

fn marker(inbox: &Inbox) -> Option<Progress> {
    (!inbox.generation.is_empty()).then(|| Progress {
        generation: Arc::from(inbox.generation.as_str()),
        read: inbox.read,
        closed: inbox.closed,
    })
}

type Reports = Arc<Mutex<Vec<(u64, Undelivered)>>>;

fn courier(fake: &Arc<Fake>, limits: HoldLimits) -> Arc<Courier> {
    Courier::new("origin", fake.clone(), limits, None)
}

fn send(courier: &Arc<Courier>, n: u64, reports: &Reports) {
    let reports = reports.clone();
    let message = BusMessage::Flushed {
        peer: n.to_string(),
    };
    courier.send(
        "n2",
        &message,
        Some(Box::new(move |why| reports.lock().unwrap().push((n, why)))),
    );
}

async fn pass(time: Duration) {
    tokio::time::sleep(time).await;
}

const HOLD: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn messages_wait_out_a_failover_and_arrive_in_order() {
    let fake = Fake::open();
    fake.lock().failing = true;
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    for n in 1..=3 {
        send(&c, n, &reports);
    }
    pass(Duration::from_secs(4)).await;
    assert!(fake.unread().is_empty(), "nothing appended while failing");
    fake.lock().failing = false;
    pass(Duration::from_secs(1)).await;
    assert_eq!(fake.read_all(), vec![1, 2, 3]);
    pass(Duration::from_millis(200)).await;
    assert!(reports.lock().unwrap().is_empty());
    assert_eq!(c.held(), (0, 0), "read messages are let go");
}

#[tokio::test(start_paused = true)]
async fn a_message_held_past_the_hold_is_reported_once() {
    let fake = Fake::open();
    fake.lock().failing = true;
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    pass(HOLD - Duration::from_secs(1)).await;
    assert!(reports.lock().unwrap().is_empty(), "not before the hold");
    pass(Duration::from_secs(2)).await;
    assert_eq!(*reports.lock().unwrap(), vec![(1, Undelivered::Expired)]);
    fake.lock().failing = false;
    pass(Duration::from_secs(1)).await;
    assert!(
        fake.unread().is_empty(),
        "a reported message is never appended"
    );
}

#[tokio::test(start_paused = true)]
async fn an_inbox_lost_before_it_was_read_gets_its_messages_again() {
    let fake = Fake::open();
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    send(&c, 2, &reports);
    pass(Duration::from_millis(10)).await;
    assert_eq!(fake.unread(), vec![1, 2]);
    {
        // Redis restarted empty; the node opens a new generation.
        let mut inbox = fake.lock();
        inbox.entries.clear();
        inbox.generation = "g2".into();
        inbox.read = (0, 0);
    }
    send(&c, 3, &reports);
    pass(Duration::from_millis(200)).await;
    assert_eq!(fake.read_all(), vec![1, 2, 3], "appended again, in order");
    pass(Duration::from_millis(200)).await;
    assert!(reports.lock().unwrap().is_empty());
    assert_eq!(c.held(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn what_stays_unread_past_the_hold_is_withdrawn_then_reported() {
    let fake = Fake::open();
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    send(&c, 2, &reports);
    pass(Duration::from_millis(10)).await;
    // The node reads the first, then hangs.
    fake.read_first();
    pass(HOLD + Duration::from_secs(1)).await;
    assert_eq!(*reports.lock().unwrap(), vec![(2, Undelivered::Expired)]);
    assert!(
        fake.unread().is_empty(),
        "withdrawn: the node can no longer read it"
    );
    assert_eq!(c.held(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_lost_node_has_its_queued_and_unread_messages_reported() {
    let fake = Fake::open();
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    pass(Duration::from_millis(10)).await;
    fake.lock().closed = true;
    send(&c, 2, &reports);
    pass(Duration::from_millis(100)).await;
    let mut got = reports.lock().unwrap().clone();
    got.sort_by_key(|(n, _)| *n);
    assert_eq!(
        got,
        vec![(1, Undelivered::NodeLost), (2, Undelivered::NodeLost)]
    );
    assert!(fake.unread().is_empty());
}

#[tokio::test(start_paused = true)]
async fn abandoning_a_node_withdraws_what_it_did_not_read() {
    let fake = Fake::open();
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    send(&c, 2, &reports);
    pass(Duration::from_millis(10)).await;
    // It read the first before it was cut off.
    fake.read_first();
    c.abandon("n2");
    pass(Duration::from_millis(100)).await;
    assert_eq!(*reports.lock().unwrap(), vec![(2, Undelivered::NodeLost)]);
    assert_eq!(c.held(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn held_messages_are_bounded_and_the_excess_is_reported_at_once() {
    let fake = Fake::open();
    fake.lock().failing = true;
    let limits = HoldLimits {
        max_messages: 2,
        ..HoldLimits::default()
    };
    let c = courier(&fake, limits);
    let reports = Reports::default();
    for n in 1..=3 {
        send(&c, n, &reports);
    }
    assert_eq!(*reports.lock().unwrap(), vec![(3, Undelivered::Full)]);
    assert_eq!(c.held().0, 2);
}

#[tokio::test(start_paused = true)]
async fn flushed_waits_until_everything_queued_is_appended() {
    let fake = Fake::open();
    fake.lock().failing = true;
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    let flushed = tokio::spawn({
        let c = c.clone();
        async move { c.flushed().await }
    });
    pass(Duration::from_secs(2)).await;
    assert!(!flushed.is_finished(), "still held");
    fake.lock().failing = false;
    pass(Duration::from_secs(1)).await;
    assert!(flushed.is_finished());
    assert_eq!(fake.unread(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn an_append_whose_answer_was_lost_is_withdrawn_before_it_is_reported() {
    let fake = Fake::open();
    fake.lock().lose_answers = true;
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    send(&c, 2, &reports);
    pass(Duration::from_millis(100)).await;
    // The appends landed (and were retried, landing again) though no answer came back.
    assert!(fake.unread().len() >= 2);
    fake.lock().failing = true;
    pass(HOLD + Duration::from_secs(1)).await;
    assert!(
        reports.lock().unwrap().is_empty(),
        "not reported while Redis cannot say whether it landed"
    );
    fake.lock().failing = false;
    pass(Duration::from_secs(1)).await;
    let mut got = reports.lock().unwrap().clone();
    got.sort_by_key(|(n, _)| *n);
    assert_eq!(
        got,
        vec![(1, Undelivered::Expired), (2, Undelivered::Expired)]
    );
    assert!(fake.unread().is_empty(), "every copy was withdrawn first");
    assert_eq!(c.held(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_append_whose_answer_was_lost_but_was_read_is_not_reported() {
    let fake = Fake::open();
    fake.lock().lose_answers = true;
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    pass(Duration::from_millis(100)).await;
    fake.lock().failing = true;
    // The node reads it (every copy) while its sender still waits for an answer.
    assert!(fake.read_all().contains(&1));
    pass(HOLD + Duration::from_secs(1)).await;
    fake.lock().failing = false;
    pass(Duration::from_secs(1)).await;
    assert!(
        reports.lock().unwrap().is_empty(),
        "delivered, so its sender hears nothing"
    );
    assert_eq!(c.held(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_lane_keeps_its_unread_messages_pinned_and_lets_go_once_read() {
    let fake = Fake::open();
    let c = courier(&fake, HoldLimits::default());
    let reports = Reports::default();
    send(&c, 1, &reports);
    pass(Duration::from_millis(100)).await;
    let first = *fake.lock().entries.keys().next().unwrap();
    assert_eq!(fake.lock().pins.last(), Some(&Pin::Keep(first)));
    fake.read_all();
    pass(Duration::from_millis(100)).await;
    assert_eq!(
        fake.lock().pins.last(),
        Some(&Pin::Release),
        "read: the reader may trim it"
    );
    assert_eq!(c.held(), (0, 0));
}
