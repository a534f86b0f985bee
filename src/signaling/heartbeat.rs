//! Background work of a node: heartbeating, healing after Redis lost this node's state,
//! and cleaning up after nodes that died.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Hub;
use super::hub::Rewrite;
use crate::store::StoreError;

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
///
/// The heartbeat itself runs beside that work, never behind it: writing a node's state
/// back after a failover can take longer than the heartbeat's TTL, and a node whose
/// heartbeat lapsed meanwhile would be declared dead by the others while it is healing.
///
/// `grace` is how long the others may take to renew their heartbeats (none is judged dead
/// sooner); `write_back`, how long they may take to write their state back after Redis lost
/// its data, before this node checks its view of their members against the store.
pub async fn run(hub: Arc<Hub>, every: Duration, grace: Duration, write_back: Duration) {
    let pulse = Pulse::default();
    tokio::join!(
        beat(&hub, every, &pulse),
        maintain(&hub, every, grace, write_back, &pulse)
    );
}

/// What the heartbeat saw, for the maintenance work that follows it.
#[derive(Default)]
struct Pulse {
    /// The last heartbeat's failure, or `None` when it succeeded.
    failing: std::sync::Mutex<Option<StoreError>>,
    /// A heartbeat failed since the maintenance work last looked.
    interrupted: AtomicBool,
    /// A heartbeat found this node's registration missing (and wrote it again) since the
    /// maintenance work last looked.
    lost: AtomicBool,
    /// Rung after every heartbeat.
    beaten: Notify,
}

/// Renews this node's heartbeat twice per interval, whatever else the node is doing.
async fn beat(hub: &Hub, every: Duration, pulse: &Pulse) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = hub.store().heartbeat(hub.node(), every * 2).await;
        match &result {
            Ok(false) => pulse.lost.store(true, Ordering::Relaxed),
            Err(_) => pulse.interrupted.store(true, Ordering::Relaxed),
            Ok(true) => {}
        }
        *pulse.failing.lock().unwrap_or_else(|p| p.into_inner()) = result.err();
        pulse.beaten.notify_one();
    }
}

/// After each heartbeat: writes this node's state back when Redis lost it or missed
/// writes, reconciles rooms after a data loss, and reaps dead nodes.
async fn maintain(
    hub: &Hub,
    every: Duration,
    grace: Duration,
    write_back: Duration,
    pulse: &Pulse,
) {
    let mut healthy = true;
    let mut judge_after = Instant::now() + grace;
    let mut reconcile_at = None;
    loop {
        pulse.beaten.notified().await;
        let failing = pulse
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // The flags are taken only once Redis answers, so a lost registration seen just
        // before another failure still gets its rewrite.
        let mut result = match failing {
            Some(e) => Err(e),
            None => {
                let lost = pulse.lost.swap(false, Ordering::Relaxed);
                let interrupted = pulse.interrupted.swap(false, Ordering::Relaxed);
                Ok((!lost, !healthy || interrupted))
            }
        };
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
                    // is checked against the store once they had time to.
                    reconcile_at = Some(Instant::now() + (every * 2).max(write_back));
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
