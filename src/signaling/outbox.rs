//! A peer's bounded outbound queue and its close signal.
//!
//! Delivery never blocks the sender: a full queue closes the slow peer with 4003 instead of
//! dropping the message silently, so its client knows to resync.
//!
//! Hand-rolled on a mutex and two `Notify`s rather than `tokio::sync::mpsc` plus `watch`:
//! those allocate about 2.5 KB per connection up front (a block of 32 slots, cache-padded
//! channel state, the watch's eight notifiers), more than everything else an idle
//! connection needs. This queue allocates nothing until a frame is queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::protocol::close;
use crate::net::websocket::Utf8Bytes;

/// How and why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code; `None` when the client already went away.
    pub code: Option<u16>,
    /// Short reason text sent in the close frame.
    pub text: &'static str,
}

/// A queued frame; relayed frames carry when they reached this node, for the latency metric.
#[derive(Debug)]
pub struct Outbound {
    /// The serialised message.
    pub frame: Utf8Bytes,
    /// When the relayed message was received (None for the server's own messages).
    pub since: Option<Instant>,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Outbound>,
    capacity: usize,
    reason: Option<CloseReason>,
    /// The [`Inbox`] exists and takes frames.
    receiving: bool,
    /// The connection task polling this queue ([`Inbox::poll_recv`], [`Inbox::poll_closed`]),
    /// woken by a frame, a close reason or the last sender's going.
    task: Option<Waker>,
}

impl State {
    /// Keeps `cx`'s waker to be woken later (without a clone when it is the same task).
    fn register(&mut self, cx: &Context<'_>) {
        match &mut self.task {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Live [`Outbox`] handles; with none left, the queue can only drain. Counted outside
    /// the lock: the relay path clones and drops a handle per message.
    senders: AtomicUsize,
    /// Wakes everyone waiting for the close reason.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds a usable queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a close reason is set (or every sender is gone) and returns it.
    async fn closed(&self) -> Option<CloseReason> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a close between the look and the wait wakes it.
            changed.as_mut().enable();
            {
                let state = self.lock();
                if state.reason.is_some() || self.senders.load(Ordering::Acquire) == 0 {
                    return state.reason;
                }
            }
            changed.await;
        }
    }
}

/// Sending half: what the hub and other connections hold to reach a peer.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// Receiving half, owned by the peer's connection (or its parked session).
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
}

/// A connected queue pair holding at most `capacity` frames.
pub fn channel(capacity: usize) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            capacity,
            reason: None,
            receiving: true,
            task: None,
        }),
        senders: AtomicUsize::new(1),
        changed: Notify::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        Inbox { shared },
    )
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Whoever waits checks the count after registering for these wake-ups, so the
        // last handle's going is never missed.
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let task = self.shared.lock().task.take();
            if let Some(task) = task {
                task.wake();
            }
            self.shared.changed.notify_waiters();
        }
    }
}

impl Outbox {
    /// Queues a frame; a full queue closes the peer with 4003 rather than losing the frame
    /// unnoticed. Returns false when the frame was not queued.
    pub fn deliver(&self, frame: Utf8Bytes) -> bool {
        self.deliver_relayed(frame, None)
    }

    /// Like [`Outbox::deliver`], for a relayed message received at `since`.
    pub fn deliver_relayed(&self, frame: Utf8Bytes, since: Option<Instant>) -> bool {
        // A closed queue: the connection is ending and the hub announces its departure.
        self.relay(frame, since).unwrap_or(false)
    }

    /// Like [`Outbox::deliver_relayed`], but hands the frame back when nobody reads this
    /// queue any more (the connection ended, or its session moved to another node), so
    /// the caller can route it again.
    pub fn relay(&self, frame: Utf8Bytes, since: Option<Instant>) -> Result<bool, Utf8Bytes> {
        {
            let mut state = self.shared.lock();
            if !state.receiving {
                return Err(frame);
            }
            if state.frames.len() < state.capacity {
                state.frames.push_back(Outbound { frame, since });
                let task = state.task.take();
                drop(state);
                if let Some(task) = task {
                    task.wake();
                }
                return Ok(true);
            }
        }
        self.close(Some(close::RESYNC), "slow consumer");
        Ok(false)
    }

    /// Asks the connection to close; the first reason wins.
    pub fn close(&self, code: Option<u16>, text: &'static str) {
        {
            let mut state = self.shared.lock();
            if state.reason.is_some() {
                return;
            }
            state.reason = Some(CloseReason { code, text });
            let task = state.task.take();
            drop(state);
            if let Some(task) = task {
                task.wake();
            }
        }
        self.shared.changed.notify_waiters();
    }

    /// Clears the close reason: a parked session's queue takes messages again (and a
    /// full queue will close it again).
    pub fn reopen(&self) {
        self.shared.lock().reason = None;
    }

    /// Follows the close reason without counting as a sender.
    pub fn watch_closing(&self) -> Closing {
        Closing {
            shared: self.shared.clone(),
        }
    }

    /// True when no frame can be queued.
    pub fn is_full(&self) -> bool {
        let state = self.shared.lock();
        state.frames.len() >= state.capacity
    }

    /// The close reason, once one was set.
    pub fn closing(&self) -> Option<CloseReason> {
        self.shared.lock().reason
    }
}

/// Follows a queue's close reason (see [`Outbox::watch_closing`]).
#[derive(Debug)]
pub struct Closing {
    shared: Arc<Shared>,
}

impl Closing {
    /// Waits until a close reason is set (or every sender is gone) and returns it.
    pub async fn closed(&self) -> Option<CloseReason> {
        self.shared.closed().await
    }
}

impl Inbox {
    /// The next frame, in order; `None` once the queue is empty and no sender is left.
    pub async fn recv(&self) -> Option<Outbound> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&self) -> Option<Outbound> {
        take(&mut self.shared.lock())
    }

    /// The next frame, or `Pending` with the task woken when one is queued (or the close
    /// reason is set, or the last sender goes); `None` once nothing more can come.
    pub fn poll_recv(&self, cx: &Context<'_>) -> Poll<Option<Outbound>> {
        let mut state = self.shared.lock();
        if let Some(out) = take(&mut state) {
            return Poll::Ready(Some(out));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        // Registered under the lock a sender takes to queue: no wake-up falls in between.
        state.register(cx);
        Poll::Pending
    }

    /// The close reason once one is set (or every sender is gone: `None`), else `Pending`
    /// with the task woken when that happens (or a frame is queued).
    pub fn poll_closed(&self, cx: &Context<'_>) -> Poll<Option<CloseReason>> {
        let mut state = self.shared.lock();
        if state.reason.is_some() || self.shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(state.reason);
        }
        state.register(cx);
        Poll::Pending
    }

    /// How many more frames the queue takes before it is full.
    pub fn room(&self) -> usize {
        let state = self.shared.lock();
        state.capacity.saturating_sub(state.frames.len())
    }

    /// Stops taking frames: from now on senders get theirs back (queued ones stay to be
    /// read).
    pub fn close(&self) {
        self.shared.lock().receiving = false;
    }

    /// Waits until a close reason is set (or every sender is gone) and returns it.
    pub async fn closed(&self) -> Option<CloseReason> {
        self.shared.closed().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiving = false;
        state.frames = VecDeque::new();
    }
}

/// Pops the oldest frame; a drained queue gives its space back, so an idle connection
/// holds none (one small allocation per burst is the price under load).
fn take(state: &mut State) -> Option<Outbound> {
    let out = state.frames.pop_front();
    if state.frames.is_empty() {
        state.frames = VecDeque::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_with_4003_and_first_reason_wins() {
        let (outbox, _inbox) = channel(1);
        assert!(outbox.deliver("a".into()));
        assert!(!outbox.deliver("b".into()));
        assert_eq!(outbox.closing().unwrap().code, Some(close::RESYNC));
        outbox.close(Some(close::REPLACED), "replaced");
        assert_eq!(outbox.closing().unwrap().code, Some(close::RESYNC));
    }

    #[test]
    fn a_frame_for_a_queue_nobody_reads_comes_back_to_be_routed_again() {
        let (outbox, inbox) = channel(4);
        drop(inbox);
        assert_eq!(outbox.relay("x".into(), None), Err(Utf8Bytes::from("x")));
        assert!(outbox.closing().is_none(), "not taken for a slow consumer");
        assert!(!outbox.deliver_relayed("y".into(), None));
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_the_queue_ends_with_its_last_sender() {
        let (outbox, inbox) = channel(8);
        let other = outbox.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(out) = inbox.recv().await {
                got.push(out.frame.to_string());
            }
            got
        });
        for i in 0..5 {
            assert!(outbox.deliver(i.to_string().into()));
        }
        drop(outbox);
        assert!(other.deliver("5".into()));
        drop(other);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader ends once every sender is gone")
            .unwrap();
        assert_eq!(got, ["0", "1", "2", "3", "4", "5"]);
    }

    #[tokio::test]
    async fn every_waiter_sees_the_close_reason_and_reopen_clears_it() {
        let (outbox, inbox) = channel(2);
        let waiter = outbox.watch_closing();
        let waiting = tokio::spawn(async move { waiter.closed().await });
        tokio::task::yield_now().await;
        let expected = Some(CloseReason {
            code: Some(close::RESTART),
            text: "restart",
        });
        let (_, reading) = tokio::join!(
            async { outbox.close(Some(close::RESTART), "restart") },
            inbox.closed()
        );
        assert_eq!(waiting.await.unwrap(), expected);
        assert_eq!(reading, expected);
        outbox.reopen();
        assert_eq!(outbox.closing(), None);
        assert!(
            outbox.deliver("after".into()),
            "a reopened queue takes frames"
        );
    }

    #[tokio::test]
    async fn waiting_for_close_ends_when_every_sender_is_gone() {
        let (outbox, inbox) = channel(2);
        let reading = tokio::spawn(async move { inbox.closed().await });
        tokio::task::yield_now().await;
        drop(outbox);
        assert_eq!(reading.await.unwrap(), None);
    }

    #[test]
    fn a_closed_inbox_hands_frames_back_and_keeps_what_was_queued() {
        let (outbox, inbox) = channel(4);
        assert!(outbox.deliver("queued".into()));
        inbox.close();
        assert_eq!(
            outbox.relay("late".into(), None),
            Err(Utf8Bytes::from("late"))
        );
        assert_eq!(inbox.try_recv().unwrap().frame, "queued");
        assert!(inbox.try_recv().is_none());
    }

    #[test]
    fn an_idle_queue_holds_no_frame_space() {
        let (outbox, inbox) = channel(1000);
        assert_eq!(
            outbox.shared.lock().frames.capacity(),
            0,
            "nothing before a frame"
        );
        for burst in [1, 200] {
            for i in 0..burst {
                assert!(outbox.deliver(i.to_string().into()));
            }
            assert!(outbox.shared.lock().frames.capacity() >= burst);
            while inbox.try_recv().is_some() {}
            assert_eq!(
                outbox.shared.lock().frames.capacity(),
                0,
                "a drained queue gives its space back ({burst} frames)"
            );
        }
    }

    /// Senders on other threads racing the reader: every frame arrives, each sender's in
    /// order, and the reader is never left asleep with frames queued (it would time out:
    /// a sender handle stays alive, so only the frames' own wake-ups can end it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_senders_lose_no_frame_and_no_wake_up() {
        const SENDERS: usize = 4;
        const EACH: usize = 20_000;
        let (outbox, inbox) = channel(SENDERS * EACH);
        let reader = tokio::spawn(async move {
            let mut next = [0usize; SENDERS];
            for _ in 0..SENDERS * EACH {
                let out = inbox.recv().await.expect("a sender is still alive");
                let (sender, seq) = out.frame.as_str().split_once(':').unwrap();
                let (sender, seq): (usize, usize) = (sender.parse().unwrap(), seq.parse().unwrap());
                assert_eq!(seq, next[sender], "sender {sender} out of order");
                next[sender] += 1;
            }
            inbox.try_recv().is_none()
        });
        let mut senders = Vec::new();
        for sender in 0..SENDERS {
            let outbox = outbox.clone();
            senders.push(tokio::spawn(async move {
                for seq in 0..EACH {
                    assert!(outbox.deliver(format!("{sender}:{seq}").into()));
                    if seq % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for sender in senders {
            sender.await.unwrap();
        }
        let nothing_more = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("the reader was woken for every frame")
            .unwrap();
        assert!(nothing_more);
        drop(outbox);
    }

    /// Counts how often the task it stands for was woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_polling_task_is_woken_by_a_frame_a_close_and_the_last_sender() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::SeqCst);

        let (outbox, inbox) = channel(4);
        assert!(inbox.poll_recv(&cx).is_pending());
        assert!(inbox.poll_closed(&cx).is_pending());
        assert!(outbox.deliver("a".into()));
        assert_eq!(woken(), 1, "a queued frame wakes the task");
        assert!(matches!(inbox.poll_recv(&cx), Poll::Ready(Some(o)) if o.frame == "a"));
        // Not waiting: nothing to wake.
        assert!(outbox.deliver("b".into()));
        assert_eq!(woken(), 1);

        assert!(inbox.poll_closed(&cx).is_pending());
        outbox.close(Some(close::POLICY), "flood");
        assert_eq!(woken(), 2, "a close reason wakes the task");
        assert_eq!(
            inbox.poll_closed(&cx),
            Poll::Ready(Some(CloseReason {
                code: Some(close::POLICY),
                text: "flood"
            }))
        );

        let (outbox, inbox) = channel(4);
        assert!(inbox.poll_recv(&cx).is_pending());
        drop(outbox);
        assert_eq!(woken(), 3, "the last sender's going wakes the task");
        assert!(matches!(inbox.poll_recv(&cx), Poll::Ready(None)));
        assert_eq!(inbox.poll_closed(&cx), Poll::Ready(None));
    }
}
