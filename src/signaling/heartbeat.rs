//! Background work of a node: heartbeating, healing after Redis lost this node's state,
//! and cleaning up after nodes that died.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Hub;
use super::hub::Rewrite;

/// Refreshes this node's heartbeat (TTL two intervals) and reaps dead nodes, twice per
/// interval, so a dead node is cleaned up within about two and a half intervals.
///
/// After starting, and after this node itself could not reach Redis, it waits `grace`
/// before judging others: their heartbeats may have lapsed for the same reason (a Redis
/// restart or failover), and they need the time to reconnect and renew them.
///
/// When Redis comes back without this node's registration (Redis restarted empty, or the
/// others declared this node lost while it was cut off), the node writes everything it
/// owns back and carries on: no client is closed. Only if that fails does every client
/// rejoin.
pub async fn run(hub: Arc<Hub>, every: Duration, grace: Duration) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    let mut judge_after = Instant::now() + grace;
    let mut reconcile_at = None;
    loop {
        tick.tick().await;
        let mut result = hub
            .store()
            .heartbeat(hub.node(), every * 2)
            .await
            .map(|registered| (registered, !healthy));
        if let Ok((registered, returning)) = result {
            if !registered {
                tracing::warn!("this node's registration was lost; writing its state back");
            } else if returning {
                tracing::info!("heartbeat restored; writing this node's state back");
            }
            if !registered || returning || hub.has_unwritten() {
                // Peers that joined meanwhile become visible to the other nodes; after an
                // eviction, both sides are introduced to each other again.
                let why = if registered {
                    Rewrite::Outage
                } else if hub
                    .store()
                    .take_eviction_notice(hub.node())
                    .await
                    .unwrap_or(false)
                {
                    Rewrite::Evicted
                } else {
                    // Every node writes its own members back; this node's view of theirs
                    // is checked against the store once they had two heartbeats to.
                    reconcile_at = Some(Instant::now() + every * 2);
                    Rewrite::DataLost
                };
                if let Err(e) = hub.reregister(why).await {
                    tracing::warn!(error = %e, "writing this node's state back failed; will retry");
                    if !registered {
                        hub.resync_all("this node's registration was lost");
                    }
                    result = Err(e);
                }
            }
        }
        let mut result = result.map(|_| ());
        if result.is_ok()
            && reconcile_at.is_some_and(|at| Instant::now() >= at)
            && hub.reconcile_rooms().await.is_ok()
        {
            reconcile_at = None;
        }
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
