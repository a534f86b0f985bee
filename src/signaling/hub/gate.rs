//! Gates: one waiting line per key (a room, a peer), held across store and bus round
//! trips by the hub's membership changes.
//!
//! Hand-written rather than a map of `tokio::sync::Mutex`es for one reason: the bus
//! consumer must never wait behind a round trip. When it finds a room's gate taken it
//! leaves its message with the gate ([`Gates::enter_or_defer`]), and whoever holds the
//! gate applies those messages, in order, before letting the next one in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// One key's gate.
#[derive(Default)]
struct Gate {
    /// Someone is inside.
    busy: bool,
    /// Tasks waiting to enter.
    waiters: usize,
    /// Wakes them; made by the first one, as most gates are never waited for.
    notify: Option<Arc<Notify>>,
    /// Messages left by the bus consumer for the holder to apply, oldest first.
    deferred: Vec<crate::bus::BusMessage>,
    /// The holder is applying deferred messages: later ones must queue behind them.
    draining: bool,
}

/// Gates by key.
#[derive(Default)]
pub(super) struct Gates {
    gates: Mutex<HashMap<Arc<str>, Gate>>,
    /// Gates holding messages (left with them, or being applied): while none does, a
    /// relay need not look at the gates at all (see [`Gates::holding`]).
    holding: AtomicUsize,
}

/// Decrements a gate's waiter count when a waiting task stops waiting, even if it was
/// cancelled.
struct Waiting<'a> {
    gates: &'a Gates,
    key: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.gates.map().get_mut(self.key) {
            gate.waiters -= 1;
        }
    }
}

// === impl Gates ===

impl Gates {
    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Gate>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate of `key`, created free when missing. One lookup: a gate is usually
    /// missing (made at entry, dropped at exit), so the key's copy is seldom wasted.
    fn gate<'m>(map: &'m mut HashMap<Arc<str>, Gate>, key: &str) -> &'m mut Gate {
        map.entry(Arc::from(key)).or_default()
    }

    /// Waits until the gate of `key` is free and takes it; [`Gates::leave`] gives it back.
    pub async fn enter(&self, key: &str) {
        loop {
            let notify = {
                let mut map = self.map();
                let gate = Self::gate(&mut map, key);
                if !gate.busy {
                    gate.busy = true;
                    return;
                }
                gate.waiters += 1;
                gate.notify.get_or_insert_default().clone()
            };
            let _waiting = Waiting { gates: self, key };
            // A wake-up sent before this waits is kept by `Notify`, so none is missed.
            notify.notified().await;
        }
    }

    /// Takes the free gate of `key` and returns `message` to be applied now, or leaves
    /// `message` for the holder of the taken gate to apply and returns `None`.
    pub fn enter_or_defer(
        &self,
        key: &str,
        message: crate::bus::BusMessage,
    ) -> Option<crate::bus::BusMessage> {
        let mut map = self.map();
        let gate = Self::gate(&mut map, key);
        if gate.busy {
            if gate.deferred.is_empty() && !gate.draining {
                self.holding.fetch_add(1, Ordering::Relaxed);
            }
            gate.deferred.push(message);
            return None;
        }
        gate.busy = true;
        Some(message)
    }

    /// Whether any gate holds messages; a relay checks this before looking up its room.
    pub fn holding(&self) -> bool {
        // Only the bus consumer leaves messages, so it never misses its own; a gate that
        // stops holding has applied its messages before this drops to zero.
        self.holding.load(Ordering::Acquire) > 0
    }

    /// Leaves `message` with the gate of `key` when messages left there earlier are still
    /// to be applied (so it cannot overtake them); otherwise returns it.
    pub fn defer_behind(
        &self,
        key: &str,
        message: crate::bus::BusMessage,
    ) -> Option<crate::bus::BusMessage> {
        let mut map = self.map();
        match map.get_mut(key) {
            Some(gate) if gate.busy && (gate.draining || !gate.deferred.is_empty()) => {
                gate.deferred.push(message);
                None
            }
            _ => Some(message),
        }
    }

    /// Gives the gate of `key` back, unless messages were left with it: then they are
    /// returned, the gate stays taken, and the caller applies them and leaves again.
    pub fn leave(&self, key: &str) -> Option<Vec<crate::bus::BusMessage>> {
        let mut map = self.map();
        // Taken out and put back when it stays: one lookup in the usual case (nobody
        // waiting, nothing deferred), where the gate goes.
        let (key, mut gate) = map.remove_entry(key).expect("left a gate that was entered");
        if !gate.deferred.is_empty() {
            gate.draining = true;
            let deferred = std::mem::take(&mut gate.deferred);
            map.insert(key, gate);
            return Some(deferred);
        }
        gate.busy = false;
        if std::mem::take(&mut gate.draining) {
            self.holding.fetch_sub(1, Ordering::Release);
        }
        if gate.waiters > 0 {
            if let Some(notify) = &gate.notify {
                notify.notify_one();
            }
            map.insert(key, gate);
        }
        None
    }

    /// Number of keys with a gate in use (taken or waited for).
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusMessage;

    fn flushed(peer: &str) -> BusMessage {
        BusMessage::Flushed { peer: peer.into() }
    }

    #[tokio::test]
    async fn a_taken_gate_keeps_messages_for_its_holder_in_order() {
        let gates = Gates::default();
        gates.enter("r").await;
        assert!(!gates.holding());
        assert_eq!(gates.enter_or_defer("r", flushed("a")), None);
        assert!(gates.holding());
        assert_eq!(
            gates.defer_behind("r", flushed("b")),
            None,
            "queued behind a"
        );
        assert_eq!(gates.defer_behind("s", flushed("c")), Some(flushed("c")));
        assert_eq!(gates.leave("r"), Some(vec![flushed("a"), flushed("b")]));
        // While the holder applies them, later messages still queue behind.
        assert_eq!(gates.defer_behind("r", flushed("d")), None);
        assert_eq!(gates.leave("r"), Some(vec![flushed("d")]));
        assert!(gates.holding(), "still applying");
        assert_eq!(gates.leave("r"), None);
        assert!(!gates.holding());
        assert_eq!(gates.in_use(), 0, "a free gate nobody waits for is dropped");
        assert_eq!(gates.enter_or_defer("r", flushed("e")), Some(flushed("e")));
        assert_eq!(gates.defer_behind("r", flushed("f")), Some(flushed("f")));
        assert_eq!(gates.leave("r"), None);
    }

    #[tokio::test]
    async fn a_waiter_enters_when_the_holder_leaves() {
        let gates = Arc::new(Gates::default());
        gates.enter("r").await;
        let waiter = {
            let gates = gates.clone();
            tokio::spawn(async move {
                gates.enter("r").await;
                gates.leave("r");
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(gates.leave("r"), None);
        waiter.await.unwrap();
        assert_eq!(gates.in_use(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_trace() {
        let gates = Gates::default();
        gates.enter("r").await;
        let wait = gates.enter("r");
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(1), wait).await;
        assert!(timed_out.is_err());
        assert_eq!(gates.leave("r"), None);
        assert_eq!(gates.in_use(), 0);
    }
}
