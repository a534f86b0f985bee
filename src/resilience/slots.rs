//! The node's cap on open WebSocket connections (`MAX_CONNECTIONS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the node's open (or opening) connections against a cap.
#[derive(Debug)]
pub struct ConnectionSlots {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ConnectionSlots {
    /// A cap of `max` connections, none open yet.
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Takes a connection slot, or `None` when the node is at its cap.
    pub fn take(&self) -> Option<ConnectionSlot> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot(self.open.clone()))
    }
}

/// One of the node's `MAX_CONNECTIONS` slots, released when the connection ends.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_returned_when_dropped() {
        let slots = ConnectionSlots::new(1);
        let first = slots.take().expect("one slot free");
        assert!(slots.take().is_none());
        drop(first);
        assert!(slots.take().is_some());
    }
}
