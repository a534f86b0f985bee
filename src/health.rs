//! `/health/live` (the process runs), `/health/ready` (it should receive traffic) and
//! `/health` (each dependency, for people and dashboards).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::redis::RedisNodes;
use crate::resilience::BreakerState;
use crate::signaling::Hub;

/// What the health routes read, and nothing else.
pub struct HealthState {
    /// This node's rooms and peers, and whether its store answers.
    pub hub: Arc<Hub>,
    /// Set once shutdown starts: readiness fails.
    pub draining: Arc<AtomicBool>,
    /// The Redis masters and their circuit breakers, when Redis is configured.
    pub redis_nodes: Option<Arc<RedisNodes>>,
    /// Whether Redis is configured at all.
    pub redis_configured: bool,
    /// How long this node may be without Redis before it reports unready.
    pub outage_grace: std::time::Duration,
}

impl HealthState {
    /// True once shutdown started.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The worst state among the breakers of the Redis masters, when Redis is configured.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.redis_nodes.as_ref().map(|n| n.worst())
    }
}

/// Health routes, present on every role, on any router state that can lend a
/// [`HealthState`].
pub fn router<S>() -> Router<S>
where
    Arc<HealthState>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(detail))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<Arc<HealthState>>) -> (StatusCode, Json<Value>) {
    if state.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    // A shared dependency's blip must not take every node out of the load balancer at
    // once: through a failover or a short outage this node keeps serving (relays on the
    // node, held writes and messages); only a long outage of its own makes it unready.
    if state
        .hub
        .store_outage()
        .is_some_and(|down| down >= state.outage_grace)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "redis unavailable" })),
        );
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

async fn detail(State(state): State<Arc<HealthState>>) -> (StatusCode, Json<Value>) {
    let (status, _) = ready(State(state.clone())).await;
    let redis = if state.redis_configured {
        json!({
            "configured": true,
            "healthy": state.hub.store_healthy(),
            "outage_seconds": state.hub.store_outage().map(|d| d.as_secs_f64()),
            "breaker": state.breaker_state().map(|b| b.as_str()),
            "nodes": state.redis_nodes.as_ref().map(|nodes| {
                nodes
                    .health()
                    .into_iter()
                    .map(|n| json!({ "address": n.address, "breaker": n.breaker.as_str(), "slots": n.slots }))
                    .collect::<Vec<_>>()
            }),
        })
    } else {
        json!({ "configured": false })
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "node": state.hub.node(),
        "draining": state.draining(),
        "redis": redis,
        "peers": state.hub.peer_count(),
        "rooms": state.hub.room_count(),
    });
    (status, Json(body))
}
