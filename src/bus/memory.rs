//! The embedded bus: per-node channels inside one process.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusMessage, Received, Subscription};
use crate::error::StoreError;

/// Inbox capacity; the memory bus never makes a publisher wait, see `publish`.
const CAPACITY: usize = 65_536;

/// In-process [`Bus`]; hubs sharing one instance behave like nodes sharing Redis.
#[derive(Default)]
pub struct MemoryBus {
    inboxes: Mutex<HashMap<String, mpsc::Sender<Received>>>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, node: &str, message: &BusMessage) -> Result<(), StoreError> {
        let inbox = self
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned();
        let Some(inbox) = inbox else {
            // Like a stream nobody reads any more: the node is gone.
            return Ok(());
        };
        // Never wait on another node's consumer (two hubs publishing to each other while
        // each holds its own lock would deadlock); a full inbox is an error, not a loss.
        match inbox.try_send(Received::Message(message.clone())) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(StoreError(format!("the inbox of node {node} is full")))
            }
        }
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
