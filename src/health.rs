//! `/health/live` (the process runs), `/health/ready` (it should receive traffic) and
//! `/health` (each dependency, for people and dashboards).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::server::AppState;

/// Health routes, present on every role.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(detail))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    if state.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    let breaker_open = state
        .breaker_state()
        .is_some_and(|b| b != crate::resilience::BreakerState::Closed);
    if !state.hub.store_healthy() || breaker_open {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "redis unavailable" })),
        );
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

async fn detail(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let (status, _) = ready(State(state.clone())).await;
    let redis = match &state.config.redis {
        None => json!({ "configured": false }),
        Some(_) => json!({
            "configured": true,
            "healthy": state.hub.store_healthy(),
            "breaker": state.breaker_state().map(|b| b.as_str()),
        }),
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
