//! The server API: what an app's backend asks of the cluster, as JSON over HTTP under
//! `/api/v1`, authorised by an API key (`AUTH_API_KEYS`). Rooms are read from the store,
//! so every node answers for the whole cluster; changes to a member go to its node.
//! docs/SERVER_API.md describes every endpoint.

mod events;
mod rooms;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::future::BoxFuture;

use crate::auth::{ActiveKeys, bearer};
use crate::error::{ApiError, method_not_allowed};
use crate::resilience::{IpLimiter, TrustedNet, request_ip, via_trusted_proxy};
use crate::signaling::hub::Hub;
use crate::store::EventLog;
use crate::telemetry::Metrics;

/// What the server API's handlers need.
pub struct ApiState {
    /// The node's hub: the store's view of rooms, and the way to their members.
    pub hub: Arc<Hub>,
    /// The API keys in service.
    pub keys: Arc<ActiveKeys>,
    /// Requests per caller IP (API_RATE_PER_MINUTE).
    pub limiter: Arc<IpLimiter>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[TrustedNet]>,
    /// Largest participant metadata, in bytes.
    pub max_metadata_bytes: usize,
    /// The event log, when room events are on.
    pub events: Option<Arc<dyn EventLog>>,
    /// Counts requests by endpoint and status.
    pub metrics: Arc<Metrics>,
}

/// The server API's routes, on any router state that can lend an [`ApiState`]; bodies
/// must arrive within `body_timeout`.
pub fn router<S>(body_timeout: Duration, metrics: Arc<Metrics>) -> Router<S>
where
    Arc<ApiState>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    // A method a path does not take is counted under the path's first endpoint.
    let routes = Router::new()
        .route(
            "/api/v1/rooms",
            get(rooms::list).fallback(wrong_method(&metrics, "list_rooms")),
        )
        .route(
            "/api/v1/rooms/{room}",
            get(rooms::show)
                .delete(rooms::close)
                .fallback(wrong_method(&metrics, "get_room")),
        )
        .route(
            "/api/v1/rooms/{room}/peers/{peer}",
            delete(rooms::remove)
                .patch(rooms::update)
                .fallback(wrong_method(&metrics, "remove_peer")),
        )
        .route(
            "/api/v1/rooms/{room}/messages",
            post(rooms::send).fallback(wrong_method(&metrics, "send_message")),
        )
        .route(
            "/api/v1/events",
            get(events::list).fallback(wrong_method(&metrics, "list_events")),
        );
    let limits = crate::auth::routes::BodyLimits::new(body_timeout, metrics);
    crate::auth::routes::with_body_limits(routes, limits)
}

/// The 405 for a method `endpoint`'s path does not take, counted in `/metrics` like the
/// endpoint's other answers.
fn wrong_method(
    metrics: &Arc<Metrics>,
    endpoint: &'static str,
) -> impl FnOnce() -> BoxFuture<'static, Response> + Clone + Send + Sync + 'static {
    let metrics = metrics.clone();
    move || Box::pin(async move { counted(&metrics, endpoint, Err(method_not_allowed().await)) })
}

/// Admits a request: within its IP's rate, with a valid API key.
pub(crate) fn admit(
    state: &ApiState,
    remote: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let ip = request_ip(remote, headers, &state.trusted_proxies);
    let via_proxy = via_trusted_proxy(remote, headers, &state.trusted_proxies);
    if let Err(wait) = state
        .limiter
        .allow_from(ip, via_proxy, tokio::time::Instant::now())
    {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many server API requests from your address (API_RATE_PER_MINUTE); retry later.",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    let api_keys = state.keys.api_keys();
    if api_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "api_disabled",
            "The server API needs API keys: set AUTH_API_KEYS or AUTH_API_KEYS_FILE.",
        ));
    }
    let key = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("An API key is required: send Authorization: Bearer <api key>.")
    })?;
    if !api_keys.accepts(key) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The API key is not valid.",
        ));
    }
    Ok(())
}

/// Counts the answer of `endpoint` in `/metrics`.
pub(crate) fn counted(
    metrics: &Metrics,
    endpoint: &'static str,
    answer: Result<Response, ApiError>,
) -> Response {
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    metrics.api_request(endpoint, response.status().as_u16());
    response
}

/// The 503 a store failure becomes.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "server API request failed on the store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Room state is unavailable right now; retry shortly.",
    )
}
