//! HTTP routes of the Auth service: `POST /auth/token`, `GET /auth/validate`,
//! `POST /auth/revoke`, and the public keys at `GET /auth/jwks.json` (also
//! `/.well-known/jwks.json`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRef, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tower_http::cors::{Cors, CorsLayer};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    ActiveKeys, IceServer, IceServers, Revocation, TokenIssuer, TokenVerifier, bearer, query_token,
};
use crate::error::{ApiError, method_not_allowed, sentence};
use crate::identifier;
use crate::net::RouteShortcut;
use crate::resilience::{IpLimiter, TrustedNet, request_ip, via_trusted_proxy};
use crate::store::Store;
use crate::telemetry::Metrics;

/// Largest accepted body for `POST /auth/token` and `POST /auth/revoke`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the Auth service's handlers need, and nothing else.
pub struct AuthState {
    /// Signs tokens; `None` only on a node that holds no signing key (not an Auth role).
    pub issuer: Option<Arc<TokenIssuer>>,
    /// Verifies tokens for `GET /auth/validate`.
    pub verifier: TokenVerifier,
    /// Whether `POST /auth/token` needs an API key (else anyone may call it).
    pub api_key_required: bool,
    /// The keys in service: API keys, and the public keys published at the JWKS routes.
    pub keys: Arc<ActiveKeys>,
    /// Longest lifetime of a token this node accepts (`TOKEN_MAX_LIFETIME`); a revocation
    /// lasts this long, so no token of the session outlives it.
    pub longest_token: Duration,
    /// STUN/TURN servers handed out with each token.
    pub ice_servers: Arc<IceServers>,
    /// Per-IP request rate.
    pub ip_limiter: Arc<IpLimiter>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[TrustedNet]>,
    /// Where revocations are recorded, for `GET /auth/validate`.
    pub sessions: Arc<dyn Store>,
    /// Revokes a session and closes its live connection.
    pub revocation: Arc<dyn Revocation>,
}

/// The Auth service's routes, on any router state that can lend an [`AuthState`]; a
/// request body must arrive within `body_timeout` (BODY_TIMEOUT), else 408 counted in
/// `metrics`. `cors` admits pages of other origins to the routes a browser calls
/// (`/auth/token`, `/auth/validate`); revocation is for backends and gets no CORS.
pub fn router<S>(body_timeout: Duration, metrics: Arc<Metrics>, cors: CorsLayer) -> Router<S>
where
    Arc<AuthState>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    // The routes' own 405 sits inside the CORS layer: the server-wide one that
    // `method_not_allowed_fallback` installs would replace it outside every layer, and a
    // preflight (`OPTIONS`) would get 405 instead of reaching the CORS layer.
    let limits = BodyLimits::new(body_timeout, metrics);
    // The token route, the one every client calls, reads its body itself: a middleware
    // clones the route services below it and boxes a future on every request. (The
    // accept loop takes its requests before the router: [`TokenShortcut`].)
    let token = {
        let limits = limits.clone();
        move |State(state): State<Arc<AuthState>>, ConnectInfo(remote), request| async move {
            issue(&state, &limits, remote, request).await
        }
    };
    let browser = Router::new()
        .route(TOKEN_PATH, post(token).fallback(method_not_allowed))
        .route("/auth/validate", get(validate).fallback(method_not_allowed))
        // Public keys only, for anyone to verify with: signaling nodes, other services.
        .route("/auth/jwks.json", get(jwks).fallback(method_not_allowed))
        .route(
            "/.well-known/jwks.json",
            get(jwks).fallback(method_not_allowed),
        )
        // Outermost, so every refusal (413, 408, 429) carries the headers a page needs to
        // read it.
        .layer(cors);
    let backend = with_body_limits(Router::new().route("/auth/revoke", post(revoke)), limits);
    browser.merge(backend)
}

/// The size and time limits of a request body (`MAX_BODY_BYTES`, BODY_TIMEOUT), refusals
/// counted in `metrics`.
#[derive(Clone)]
pub(crate) struct BodyLimits {
    /// How long the whole body may take to arrive.
    pub timeout: Duration,
    /// Where a body that took too long is counted.
    pub metrics: Arc<Metrics>,
}

/// The body limits on every route of `router` that reads a body (the server API's too).
pub(crate) fn with_body_limits<S>(router: Router<S>, limits: BodyLimits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // One middleware for both limits: each layer boxes every route service below it once
    // more. The extractors need no limit of their own: the body they get is whole and
    // within it.
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let limits = limits.clone();
        async move {
            match limits.read(request).await {
                Ok((parts, body)) => next.run(Request::from_parts(parts, Body::from(body))).await,
                Err(refused) => refused,
            }
        }
    }))
}

/// Whether `Content-Length` declares more than [`MAX_BODY_BYTES`].
fn declared_oversize(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
}

impl BodyLimits {
    /// Bodies due within `timeout`, refusals counted in `metrics`.
    pub(crate) fn new(timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self { timeout, metrics }
    }

    /// The request's head and its whole body, read within the time limit: a body that
    /// trickles in or never comes gets 408 and the connection is closed, instead of
    /// holding it for as long as the client likes. A declared length above the limit gets
    /// 413 before any byte of the body is read (a limit that counts arrived bytes only
    /// would wait for a huge declared body).
    pub(crate) async fn read(&self, request: Request) -> Result<(Parts, Bytes), Response> {
        let (parts, body) = request.into_parts();
        if declared_oversize(&parts) {
            return Err(too_large().into_response());
        }
        match tokio::time::timeout(self.timeout, collect(body, MAX_BODY_BYTES)).await {
            Ok(Ok(bytes)) => Ok((parts, bytes.into())),
            Ok(Err(BodyError::TooLarge)) => Err(too_large().into_response()),
            Ok(Err(BodyError::Unreadable)) => Err(ApiError::bad_request(
                "invalid_request",
                "The request body could not be read.",
            )
            .into_response()),
            Err(_) => {
                self.metrics.cut("body_timeout");
                let mut response = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "The request body did not arrive within {}; send it together with the headers.",
                        humantime::format_duration(self.timeout)
                    ),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Err(response)
            }
        }
    }
}

/// Why a body was not collected.
enum BodyError {
    /// Declared or grown above the limit.
    TooLarge,
    /// The connection failed mid-body.
    Unreadable,
}

/// Collects a body of at most `limit` bytes, refusing a larger declared length before
/// reading anything. Each piece is copied as it arrives: hyper hands a body over as
/// slices of its read buffers, and keeping the slices (as `axum::body::to_bytes` does)
/// keeps a whole buffer of about 8 KiB alive for every piece, so a body sent one byte
/// per packet cost 8 KiB per byte until it was complete.
async fn collect(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    use axum::body::HttpBody as _;
    use futures_util::StreamExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut collected = Vec::new();
    let mut pieces = body.into_data_stream();
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|_| BodyError::Unreadable)?;
        if collected.len() + piece.len() > limit {
            return Err(BodyError::TooLarge);
        }
        collected.extend_from_slice(&piece);
    }
    Ok(collected)
}

/// The 413 for a body above [`MAX_BODY_BYTES`], declared or streamed.
fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("The request body is larger than {MAX_BODY_BYTES} bytes; send a smaller one."),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    user_id: Option<serde_json::Value>,
    room_id: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
}

/// Largest `metadata` a token carries, as compact JSON: a token must stay under
/// [`super::MAX_TOKEN_BYTES`] with its other claims and signature.
pub const MAX_TOKEN_METADATA_BYTES: usize = 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenResponse {
    token: String,
    expires_at: u64,
    peer_id: String,
    session_id: String,
    /// STUN/TURN servers for `RTCPeerConnection`, TURN credentials included.
    ice_servers: Vec<IceServer>,
}

/// Checks `Authorization: Bearer <api key>` against the configured keys.
fn require_api_key(state: &AuthState, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("An API key is required: send Authorization: Bearer <api key>.")
    })?;
    if !state.keys.api_keys().accepts(key) {
        return Err(ApiError::unauthorized("The API key is not valid."));
    }
    Ok(())
}

/// Reads a JSON body, with the content type and size checks every endpoint shares.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the request as Content-Type: application/json.",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request("invalid_request", "The request body could not be read.")
        }
    })?;
    serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_json",
            format!("The body must be a JSON object like {example}."),
        )
    })
}

/// `POST /auth/token` from `remote`.
async fn issue(
    state: &AuthState,
    limits: &BodyLimits,
    remote: SocketAddr,
    request: Request,
) -> Response {
    // The body first, as the other routes' middleware reads it.
    match limits.read(request).await {
        Ok((parts, body)) => token(state, remote, &parts.headers, Ok(body)).into_response(),
        Err(refused) => refused,
    }
}

/// Where tokens are issued.
const TOKEN_PATH: &str = "/auth/token";

/// `POST /auth/token` taken before the router ([`RouteShortcut`]): the route's own CORS
/// layer, body limits and handler, without the router's routing and the route services
/// it clones for every request.
pub struct TokenShortcut(Cors<TokenService>);

impl TokenShortcut {
    /// The token route of `state`, with the body limits and the `cors` that [`router`]
    /// gives it.
    pub fn new(
        state: Arc<AuthState>,
        body_timeout: Duration,
        metrics: Arc<Metrics>,
        cors: &CorsLayer,
    ) -> Self {
        let limits = BodyLimits::new(body_timeout, metrics);
        Self(cors.layer(TokenService { state, limits }))
    }
}

impl RouteShortcut for TokenShortcut {
    fn takes(&self, request: &hyper::Request<Incoming>) -> bool {
        // Every other method (the `OPTIONS` of a preflight among them) goes to the router.
        request.method() == Method::POST && request.uri().path() == TOKEN_PATH
    }

    fn serve(&self, request: hyper::Request<Incoming>) -> BoxFuture<'static, Response> {
        let answer = self.0.clone().call(request);
        Box::pin(async move {
            match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
    }
}

/// The token route's handler as a service, for the CORS layer to wrap.
#[derive(Clone)]
struct TokenService {
    state: Arc<AuthState>,
    limits: BodyLimits,
}

impl Service<hyper::Request<Incoming>> for TokenService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        let (state, limits) = (self.state.clone(), self.limits.clone());
        Box::pin(async move {
            // The accept loop gives every request its client's address.
            let Some(&ConnectInfo(remote)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
            else {
                return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            };
            Ok(issue(&state, &limits, remote, request.map(Body::new)).await)
        })
    }
}

/// A token for the request of `headers` and `body` from `remote`.
fn token(
    state: &AuthState,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    let ip = request_ip(remote, headers, &state.trusted_proxies);
    let via_proxy = via_trusted_proxy(remote, headers, &state.trusted_proxies);
    if let Err(wait) = state
        .ip_limiter
        .allow_from(ip, via_proxy, tokio::time::Instant::now())
    {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many token requests from your address; retry later.",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    if state.api_key_required {
        require_api_key(state, headers)?;
    }
    let request: TokenRequest = json_body(headers, body, r#"{"userId": "alice", "roomId": "r1"}"#)?;
    let user = field("userId", request.user_id)?
        .ok_or_else(|| ApiError::bad_request("invalid_request", "userId is required."))?;
    let room = field("roomId", request.room_id)?;
    let metadata = token_metadata(request.metadata)?;
    let issuer = state.issuer.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "This node holds no signing key; request tokens from the Auth service.",
        )
    })?;
    let issued = issuer.issue_with(&user, room.as_deref(), None, metadata.as_deref());
    Ok(Json(TokenResponse {
        peer_id: issued.claims.peer_id(),
        ice_servers: state
            .ice_servers
            .for_session(&issued.claims.session_id, issued.claims.exp),
        expires_at: issued.claims.exp,
        session_id: issued.claims.session_id,
        token: issued.token,
    }))
}

/// Reads the optional `metadata` of a token request: a JSON object of at most
/// [`MAX_TOKEN_METADATA_BYTES`], returned as compact JSON text.
fn token_metadata(value: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(object @ serde_json::Value::Object(_)) => {
            let text = object.to_string();
            if text.len() > MAX_TOKEN_METADATA_BYTES {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "metadata is {} bytes as JSON; a token carries at most {MAX_TOKEN_METADATA_BYTES} (set more later with the update message or the server API).",
                        text.len()
                    ),
                ));
            }
            Ok(Some(text))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid_request",
            "metadata must be a JSON object, like {\"name\": \"Ann\"}.",
        )),
    }
}

/// Reads an optional identifier field; a present but non-string or invalid value is an error.
fn field(name: &str, value: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => match identifier::check(&s) {
            Ok(()) => Ok(Some(s)),
            Err(why) => Err(ApiError::bad_request(
                "invalid_request",
                format!("{name} {why}."),
            )),
        },
        Some(_) => Err(ApiError::bad_request(
            "invalid_request",
            format!("{name} must be a string."),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokeRequest {
    session_id: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RevokeResponse {
    session_id: String,
    revoked: bool,
    /// Whether a live connection was found (and is being closed with 1008).
    connected: bool,
}

/// `POST /auth/revoke`: refuse a session's new upgrades and close its live connection.
async fn revoke(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RevokeResponse>, ApiError> {
    if state.keys.api_keys().is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "revocation_disabled",
            "Revocation needs API keys: set AUTH_API_KEYS or AUTH_API_KEYS_FILE.",
        ));
    }
    require_api_key(&state, &headers)?;
    let request: RevokeRequest = json_body(&headers, body, r#"{"sessionId": "…"}"#)?;
    let session_id = match request.session_id {
        Some(serde_json::Value::String(s))
            if (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            s
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "sessionId is required: the session id from POST /auth/token (letters, digits, '-', '_').",
            ));
        }
    };
    // Long enough for any token of the session to expire, however it was minted.
    let connected = state
        .revocation
        .revoke(&session_id, state.longest_token)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "revocation failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Session state is unavailable right now; retry shortly.",
            )
        })?;
    tracing::info!(session = %session_id, connected, "session revoked");
    Ok(Json(RevokeResponse {
        session_id,
        revoked: true,
        connected,
    }))
}

#[derive(Serialize)]
struct Validation {
    sub: String,
    session_id: String,
    peer_id: String,
    expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
}

async fn validate(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Validation>, ApiError> {
    let token = bearer(&headers)
        .map(str::to_string)
        .or_else(|| query.as_deref().and_then(query_token))
        .unwrap_or_default();
    let claims = state
        .verifier
        .verify_fetching(&token)
        .await
        .map_err(|e| ApiError::unauthorized(sentence(&e)))?;
    let revoked = state
        .sessions
        .is_revoked(&claims.session_id)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Session state is unavailable right now; retry shortly.",
            )
        })?;
    if revoked {
        return Err(ApiError::unauthorized("This session was revoked."));
    }
    Ok(Json(Validation {
        peer_id: claims.peer_id(),
        sub: claims.sub,
        session_id: claims.session_id,
        expires_at: claims.exp,
        room: claims.room,
    }))
}

/// `GET /auth/jwks.json`: the public keys that verify this service's tokens (RFC 7517);
/// never an HMAC secret. Cached briefly: a key is published before it signs.
async fn jwks(State(state): State<Arc<AuthState>>) -> Response {
    let keyring = state.keys.keyring();
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        Json(keyring.published()),
    )
        .into_response()
}
