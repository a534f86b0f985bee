//! The embedded bus: per-node channels inside one process.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusMessage, OnLost, Subscription, Undelivered};
use crate::error::StoreError;

/// Inbox capacity; the memory bus never makes a sender wait, see `send`.
const CAPACITY: usize = 65_536;

/// In-process [`Bus`]; hubs sharing one instance behave like nodes sharing Redis.
#[derive(Default)]
pub struct MemoryBus {
    inboxes: Mutex<HashMap<String, mpsc::Sender<BusMessage>>>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn send(&self, node: &str, message: BusMessage, lost: Option<OnLost>) {
        let inbox = self
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned();
        // Never wait on another node's consumer (two hubs sending to each other while
        // each holds its own lock would deadlock): a full inbox reports the message.
        let why = match inbox.map(|inbox| inbox.try_send(message)) {
            Some(Ok(())) => return,
            Some(Err(mpsc::error::TrySendError::Full(_))) => Undelivered::Full,
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => Undelivered::NodeLost,
        };
        if let Some(lost) = lost {
            lost(why);
        }
    }

    async fn flushed(&self) {}

    fn abandon(&self, _node: &str) {}

    async fn close(&self, node: &str) -> Result<(), StoreError> {
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
        Ok(())
    }

    async fn subscribe(&self, node: &str) -> Result<Subscription, StoreError> {
        let (tx, rx) = mpsc::channel(CAPACITY);
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), tx);
        Ok(rx)
    }
}
