//! A peer's bounded outbound queue and its close signal.
//!
//! Delivery never blocks the sender: a full queue closes the slow peer with 4003 instead of
//! dropping the message silently, so its client knows to resync.

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::protocol::close;

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

/// Sending half: what the hub and other connections hold to reach a peer.
#[derive(Debug, Clone)]
pub struct Outbox {
    frames: mpsc::Sender<Outbound>,
    closer: watch::Sender<Option<CloseReason>>,
}

/// Receiving half, owned by the peer's connection task.
pub struct Inbox {
    /// Frames to write, in order.
    pub frames: mpsc::Receiver<Outbound>,
    /// Becomes `Some` once the connection must close.
    pub closing: watch::Receiver<Option<CloseReason>>,
}

/// A connected queue pair holding at most `capacity` frames.
pub fn channel(capacity: usize) -> (Outbox, Inbox) {
    let (frames_tx, frames_rx) = mpsc::channel(capacity);
    let (closer, closing) = watch::channel(None);
    (
        Outbox {
            frames: frames_tx,
            closer,
        },
        Inbox {
            frames: frames_rx,
            closing,
        },
    )
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
        match self.frames.try_send(Outbound { frame, since }) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(Some(close::SLOW_CONSUMER), "slow consumer");
                Ok(false)
            }
            Err(mpsc::error::TrySendError::Closed(outbound)) => Err(outbound.frame),
        }
    }

    /// Asks the connection to close; the first reason wins.
    pub fn close(&self, code: Option<u16>, text: &'static str) {
        self.closer.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(CloseReason { code, text });
            true
        });
    }

    /// Clears the close reason: a parked session's queue takes messages again (and a
    /// full queue will close it again).
    pub fn reopen(&self) {
        self.closer.send_replace(None);
    }

    /// Follows the close reason.
    pub fn watch_closing(&self) -> watch::Receiver<Option<CloseReason>> {
        self.closer.subscribe()
    }

    /// True when no frame can be queued.
    pub fn is_full(&self) -> bool {
        self.frames.capacity() == 0
    }

    /// The close reason, once one was set.
    pub fn closing(&self) -> Option<CloseReason> {
        *self.closer.borrow()
    }
}

/// Waits until a close reason is set (or every sender is gone) and returns it.
pub async fn closed(closing: &mut watch::Receiver<Option<CloseReason>>) -> Option<CloseReason> {
    // The guard from `wait_for` is dropped here, never held across another await.
    closing
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|r| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_with_4003_and_first_reason_wins() {
        let (outbox, _inbox) = channel(1);
        assert!(outbox.deliver("a".into()));
        assert!(!outbox.deliver("b".into()));
        assert_eq!(outbox.closing().unwrap().code, Some(close::SLOW_CONSUMER));
        outbox.close(Some(close::REPLACED), "replaced");
        assert_eq!(outbox.closing().unwrap().code, Some(close::SLOW_CONSUMER));
    }

    #[test]
    fn a_frame_for_a_queue_nobody_reads_comes_back_to_be_routed_again() {
        let (outbox, inbox) = channel(4);
        drop(inbox);
        assert_eq!(outbox.relay("x".into(), None), Err(Utf8Bytes::from("x")));
        assert!(outbox.closing().is_none(), "not taken for a slow consumer");
        assert!(!outbox.deliver_relayed("y".into(), None));
    }
}
