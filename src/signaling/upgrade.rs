//! `GET /ws/signal`: origin and token checks before the WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::SignalingState;
use super::connection::{self, Connection};
use crate::auth::{Grant, query_token};
use crate::error::{ApiError, sentence};
use crate::net::accept::Shortcut;
use crate::net::answer;
use crate::net::head::RequestHead;
use crate::net::websocket::{ClientStream, Handshake, NotWebSocket, Upgrade, WebSocket};
use crate::resilience::{request_ip, via_trusted_proxy};
use crate::telemetry::logged;

/// Where clients connect.
const PATH: &str = "/ws/signal";

/// The subprotocol the server speaks.
pub const SUBPROTOCOL: &str = "switchboard.v1";
/// Length of a decoded `Sec-WebSocket-Key` (RFC 6455 §4.1).
const KEY_BYTES: usize = 16;

/// Prefix of the subprotocol entry that carries the token.
const BEARER_PREFIX: &str = "bearer.";

/// The signaling route, on any router state that can lend a [`SignalingState`].
pub fn router<S>() -> Router<S>
where
    Arc<SignalingState>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(PATH, get(upgrade))
}

/// `GET /ws/signal` as a connection's first request, taken before hyper and the router
/// ([`Shortcut`]): the same answers as the route, logged the same way.
pub struct UpgradeShortcut(Arc<SignalingState>);

impl UpgradeShortcut {
    /// The shortcut to the upgrade of `state`'s node.
    pub fn new(state: Arc<SignalingState>) -> Self {
        Self(state)
    }
}

impl Shortcut for UpgradeShortcut {
    fn path(&self) -> &'static str {
        PATH
    }

    fn serve(
        &self,
        request: RequestHead,
        mut stream: ClientStream,
        remote: SocketAddr,
    ) -> BoxFuture<'static, ()> {
        let state = self.0.clone();
        Box::pin(async move {
            let (headers, query) = (&request.headers, request.query());
            let respond = accept(&state, remote, headers, query, Handshake::asked(headers));
            let status = |answer: &Answer<Handshake>| match answer {
                Ok(_) => StatusCode::SWITCHING_PROTOCOLS,
                Err((_, e)) => e.status,
            };
            let path = request.path();
            let answer = logged(&Method::GET, path, query, remote, respond, status).await;
            match answer {
                Ok(Admitted {
                    ws,
                    connection,
                    grant,
                }) => {
                    let head = ws.protocol(headers, SUBPROTOCOL).answer();
                    // A client gone before its answer leaves nothing to start.
                    if stream.write_all(&head).await.is_ok() && stream.flush().await.is_ok() {
                        let max = state.max_message_bytes;
                        let socket = WebSocket::answered(stream, request.early, max);
                        connection::spawn(socket, connection, grant);
                    }
                }
                Err(refusal) => {
                    let _ = answer::write(&mut stream, refused(&state, refusal)).await;
                }
            }
        })
    }
}

async fn upgrade(
    State(state): State<Arc<SignalingState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<Upgrade, NotWebSocket>,
) -> Response {
    match accept(&state, remote, &headers, query.as_deref(), ws).await {
        Ok(Admitted {
            ws,
            connection,
            grant,
        }) => ws
            .protocol(&headers, SUBPROTOCOL)
            .respond(state.max_message_bytes, move |socket| {
                connection::spawn(socket, connection, grant);
            }),
        Err(refusal) => refused(&state, refusal),
    }
}

/// An upgrade let through: the handshake `W` to answer, and what the connection starts
/// with once it is answered.
struct Admitted<W> {
    ws: W,
    // Boxed: the connection's task keeps what it is given for the connection's life.
    connection: Box<Connection>,
    grant: Box<Grant>,
}

/// An upgrade let through, or refused for a counted reason.
type Answer<W> = Result<Admitted<W>, (&'static str, ApiError)>;

/// The answer to a refused upgrade, counted by its reason.
fn refused(state: &SignalingState, (reason, e): (&'static str, ApiError)) -> Response {
    state.hub.metrics().refused(reason);
    e.into_response()
}

async fn accept<W>(
    state: &Arc<SignalingState>,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    ws: Result<W, NotWebSocket>,
) -> Answer<W> {
    // Malformed requests first: they cost nothing to spot and never become connections.
    check_handshake(headers).map_err(|e| ("bad_handshake", e))?;
    if state.draining.load(Ordering::Relaxed) {
        return Err((
            "draining",
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "This node is shutting down; connect to another one.",
            ),
        ));
    }
    // Shedding first: under overload, refuse before spending anything on the request.
    let slot = state.slots.take().ok_or_else(|| {
        (
            "max_connections",
            overloaded(
                "This node is at its connection limit; retry later or elsewhere.",
                5,
            ),
        )
    })?;
    if let Some(resource) = state.load.overloaded(state.shed_cpu, state.shed_memory) {
        return Err((
            resource.as_str(),
            overloaded(
                &format!("This node is overloaded ({resource}); retry later or elsewhere."),
                5,
            ),
        ));
    }
    let ip = request_ip(remote, headers, &state.trusted_proxies);
    let now = tokio::time::Instant::now();
    let via_proxy = via_trusted_proxy(remote, headers, &state.trusted_proxies);
    state
        .ip_limiter
        .allow_from(ip, via_proxy, now)
        .map_err(|wait| {
            (
                "ip_rate",
                overloaded(
                    "Too many connection attempts from your address; retry later.",
                    wait.as_secs().max(1),
                ),
            )
        })?;
    let ip_permit = state.ip_limiter.connect(ip, now).ok_or_else(|| {
        (
            "ip_connections",
            overloaded("Too many open connections from your address.", 10),
        )
    })?;
    check_origin(state, headers).map_err(|e| ("origin", e))?;
    let token = query
        .and_then(query_token)
        .or_else(|| subprotocol_token(headers))
        .unwrap_or_default();
    let claims = state
        .verifier
        .verify_fetching(&token)
        .await
        .map_err(|e| ("token", ApiError::unauthorized(sentence(&e))))?;
    // A revoked session is refused. When the store cannot answer (a Redis failover or a
    // short outage) the session is admitted rather than every new client refused while
    // the node reports ready, and checked again as soon as the store answers.
    match state.hub.store().is_revoked(&claims.session_id).await {
        Ok(false) => {}
        Ok(true) => {
            return Err((
                "revoked",
                ApiError::unauthorized("This session was revoked; request a new token."),
            ));
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not check revocation; admitting the session and checking again when the store answers"
            );
            state
                .hub
                .recheck_revocation(&claims.session_id, &claims.peer_id(), claims.exp);
        }
    }
    let ws = ws.map_err(|e| ("not_websocket", e.error()))?;
    Ok(Admitted {
        ws,
        connection: Box::new(Connection {
            node: state.clone(),
            remote,
            held: (slot, ip_permit),
            opened: tokio::time::Instant::now(),
        }),
        grant: Box::new(Grant::from(claims)),
    })
}

/// A 503 with a `Retry-After` of `secs`.
fn overloaded(message: &str, secs: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
    e.retry_after = Some(secs);
    e
}

/// Refuses what a conforming client never sends (RFC 6455 §4.1): a missing `Host`, an
/// `Origin` given twice (a proxy or filter may read the other one), and a
/// `Sec-WebSocket-Key` that is not 16 bytes in base64.
fn check_handshake(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get(header::HOST).is_none() {
        return Err(ApiError::bad_request(
            "invalid_handshake",
            "The Host header is missing; send Host with the server's name.",
        ));
    }
    if headers.get_all(header::ORIGIN).iter().nth(1).is_some() {
        return Err(ApiError::bad_request(
            "invalid_handshake",
            "The Origin header is given more than once; send it once.",
        ));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    // An absent key is a plain HTTP request, answered 426 further on.
    if let Some(key) = keys.next() {
        let decoded_len = STANDARD.decode(key.as_bytes()).map(|k| k.len());
        if keys.next().is_some() || decoded_len != Ok(KEY_BYTES) {
            return Err(ApiError::bad_request(
                "invalid_handshake",
                "The Sec-WebSocket-Key header must be one value of 16 random bytes in base64.",
            ));
        }
    }
    Ok(())
}

fn check_origin(state: &SignalingState, headers: &HeaderMap) -> Result<(), ApiError> {
    let (Some(allowed), Some(origin)) = (&state.allowed_origins, headers.get(header::ORIGIN))
    else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        "This origin is not allowed to connect; add it to ALLOWED_ORIGINS.",
    ))
}

/// The token from a `bearer.<token>` entry of `Sec-WebSocket-Protocol`.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_PREFIX))
        .map(str::to_string)
}
