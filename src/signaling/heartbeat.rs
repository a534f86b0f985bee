//! Background work of a node: heartbeating, and cleaning up after nodes that died.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Hub;

/// Refreshes this node's heartbeat (TTL two intervals) and reaps dead nodes, twice per
/// interval, so a dead node is cleaned up within about two and a half intervals.
///
/// After starting, and after this node itself could not reach Redis, it waits `grace`
/// before judging others: their heartbeats may have lapsed for the same reason (a Redis
/// restart or failover), and they need the time to reconnect and renew them.
pub async fn run(hub: Arc<Hub>, every: Duration, grace: Duration) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    let mut judge_after = Instant::now() + grace;
    loop {
        tick.tick().await;
        let mut result = match hub.store().heartbeat(hub.node(), every * 2).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Declared dead while alive, or Redis lost its data. Its inbox went too, so
                // peers talking across nodes may have missed messages and must resync
                // (judged before re-registering changes the rooms' views); then this node
                // writes its sessions and rooms back (if even that fails, every client
                // rejoins).
                tracing::warn!("this node's registration was lost; re-registering");
                hub.resync_cross_node();
                if let Err(e) = hub.reregister().await {
                    tracing::warn!(error = %e, "re-registration failed");
                    hub.resync_all("this node's registration was lost");
                }
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
                tracing::info!("heartbeat restored; re-registering this node's state");
                healthy = true;
                // Peers that joined during the outage become visible to the other nodes.
                if let Err(e) = hub.reregister().await {
                    tracing::warn!(error = %e, "re-registration failed; will retry");
                    healthy = false;
                }
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
