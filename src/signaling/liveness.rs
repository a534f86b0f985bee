//! Background work of a node: reading its bus inbox, heartbeating, and cleaning up after
//! nodes that died.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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
///
/// After starting, and after this node itself could not reach Redis, it waits `grace`
/// before judging others: their heartbeats may have lapsed for the same reason (a Redis
/// restart or failover), and they need the time to reconnect and renew them.
pub async fn heartbeat(hub: Arc<Hub>, every: Duration, grace: Duration) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    let mut judge_after = Instant::now() + grace;
    loop {
        tick.tick().await;
        let mut result = match hub.store().heartbeat(hub.node(), every * 2).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Declared dead while alive, or Redis lost its data: this node's peers are
                // gone from the shared state, so their clients must reconnect and rejoin.
                hub.resync_all("this node's registration was lost");
                Ok(())
            }
            Err(e) => Err(e),
        };
        if result.is_ok()
            && let Ok(n) = hub.store().live_node_count().await
        {
            hub.metrics().nodes.set(n as i64);
        }
        if result.is_ok() && healthy && Instant::now() >= judge_after {
            result = hub.reap_dead_nodes(every * 10).await.map(|_| ());
        }
        hub.set_store_healthy(result.is_ok());
        match result {
            Ok(()) if !healthy => {
                tracing::info!("heartbeat restored");
                healthy = true;
                judge_after = Instant::now() + grace;
            }
            Err(e) if healthy => {
                tracing::warn!(error = %e, "heartbeat failed");
                healthy = false;
            }
            _ => {}
        }
    }
}
