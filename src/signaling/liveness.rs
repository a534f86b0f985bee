//! Background work of a node: reading its bus inbox, heartbeating, and cleaning up after
//! nodes that died.

use std::sync::Arc;
use std::time::Duration;

use super::Hub;
use crate::bus::Inbox;

/// Applies messages from other nodes, in the order they were published.
pub async fn consume(hub: Arc<Hub>, mut inbox: Inbox) {
    while let Some(message) = inbox.recv().await {
        hub.on_bus(message).await;
    }
}

/// Refreshes this node's heartbeat (TTL two intervals) and reaps dead nodes, twice per
/// interval, so a dead node is cleaned up within about two and a half intervals.
pub async fn heartbeat(hub: Arc<Hub>, every: Duration) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tick.tick().await;
        let result = match hub.store().heartbeat(hub.node(), every * 2).await {
            Ok(()) => hub.reap_dead_nodes(every * 10).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) if !healthy => {
                tracing::info!("heartbeat restored");
                healthy = true;
            }
            Err(e) if healthy => {
                tracing::warn!(error = %e, "heartbeat failed");
                healthy = false;
            }
            _ => {}
        }
    }
}
