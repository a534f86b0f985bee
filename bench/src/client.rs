//! The bench's side of the protocol: tokens, WebSocket connections from chosen source
//! addresses, and joining a room.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{BenchArgs, BenchError};
use switchboard::auth::{SigningSecret, TokenIssuer};

/// A bench connection.
pub type Socket = WebSocketStream<TcpStream>;

/// How long one handshake step may take before it counts as an error.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where tokens come from.
pub enum TokenSource {
    /// Minted in process with the deployment's secret (no auth service load).
    Mint(TokenIssuer),
    /// `POST` to the auth service's token endpoint.
    Http {
        /// HTTP/1.1 client with a connection pool.
        client: HttpClient<HttpConnector, Full<Bytes>>,
        /// The token endpoint.
        url: hyper::Uri,
        /// Sent as `Authorization: Bearer` when the server issues only with a key.
        api_key: Option<String>,
    },
}

impl TokenSource {
    /// A token for `user`.
    pub async fn token(&self, user: &str) -> Result<String, BenchError> {
        match self {
            TokenSource::Mint(issuer) => Ok(issuer.issue(user, None, None).token),
            TokenSource::Http {
                client,
                url,
                api_key,
            } => {
                let body = serde_json::json!({ "userId": user }).to_string();
                let mut request =
                    hyper::Request::post(url.clone()).header("content-type", "application/json");
                if let Some(key) = api_key {
                    request = request.header("authorization", format!("Bearer {key}"));
                }
                let request = request
                    .body(Full::new(Bytes::from(body)))
                    .expect("a valid request");
                let response = tokio::time::timeout(STEP_TIMEOUT, client.request(request))
                    .await
                    .map_err(|_| BenchError::new("the token endpoint did not answer in time"))?
                    .map_err(|e| BenchError::new(format!("token request failed: {e}")))?;
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| BenchError::new(format!("token response unreadable: {e}")))?
                    .to_bytes();
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                match value["token"].as_str() {
                    Some(token) if status.is_success() => Ok(token.to_string()),
                    _ => Err(BenchError::new(format!(
                        "the token endpoint answered {status}: {}; {}",
                        value["message"].as_str().unwrap_or("no message"),
                        token_hint(status)
                    ))),
                }
            }
        }
    }
}

/// What to change when the token endpoint refuses, by its status.
fn token_hint(status: hyper::StatusCode) -> &'static str {
    match status.as_u16() {
        429 => {
            "the server limits token requests per client address: run it with \
             RATE_PER_IP_PER_MINUTE=0 (a development node spares 127.0.0.1 and ::1 already, \
             so run the bench on the node's machine), or pass --secret with the server's \
             AUTH_SECRET to mint tokens here"
        }
        401 | 403 => {
            "the server issues tokens only with an API key (TOKEN_ISSUANCE=api-key): pass \
             --api-key with one of its AUTH_API_KEYS, or --secret with its AUTH_SECRET to \
             mint tokens here"
        }
        _ => "pass --secret with the server's AUTH_SECRET to mint tokens here instead",
    }
}

/// The deployment under test.
pub struct Target {
    /// Signaling endpoints, one per node.
    addrs: Vec<SocketAddr>,
    /// Token source.
    pub tokens: TokenSource,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    /// Server processes to measure.
    pub server_pids: Vec<u32>,
}

impl Target {
    /// Checks the arguments and resolves the endpoints.
    pub fn new(args: &BenchArgs) -> Result<Self, BenchError> {
        let mut addrs = Vec::new();
        for url in &args.urls {
            let rest = url
                .strip_prefix("ws://")
                .ok_or_else(|| BenchError::new(format!("--url {url}: use ws://host:port")))?;
            let authority = rest.split('/').next().unwrap_or_default();
            let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    BenchError::new(format!("--url {url}: cannot resolve {authority}"))
                })?;
            addrs.push(addr);
        }
        let tokens = match &args.secret {
            Some(secret) => {
                let secret = SigningSecret::new(secret.as_bytes().to_vec());
                TokenSource::Mint(TokenIssuer::new(
                    &secret,
                    &args.claims.token_issuer,
                    &args.claims.token_audience,
                    Duration::from_secs(3600),
                ))
            }
            None => {
                let url = args
                    .auth_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}/auth/token", addrs[0]));
                let url = url.parse().map_err(|_| {
                    BenchError::new(format!("--auth-url {url}: not an http:// URL"))
                })?;
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let client = HttpClient::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(1024)
                    .build(connector);
                TokenSource::Http {
                    client,
                    url,
                    api_key: args.api_key.clone(),
                }
            }
        };
        Ok(Target {
            addrs,
            tokens,
            sources: args.sources.clone(),
            next_source: AtomicUsize::new(0),
            server_pids: args.server_pids.clone(),
        })
    }

    /// The address of node `node`.
    pub fn addr(&self, node: usize) -> SocketAddr {
        self.addrs[node % self.addrs.len()]
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.addrs.len()
    }

    /// Opens a signaling connection for `user` to node `node`, from the next source address.
    pub async fn connect(&self, node: usize, user: &str) -> Result<Socket, BenchError> {
        let token = self.tokens.token(user).await?;
        let addr = self.addrs[node % self.addrs.len()];
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| BenchError::new(format!("cannot open a socket: {e}")))?;
        if !self.sources.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            let source = SocketAddr::new(self.sources[i], 0);
            socket.bind(source).map_err(|e| {
                BenchError::new(format!("cannot bind source address {source}: {e}"))
            })?;
        }
        let stream = tokio::time::timeout(STEP_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| BenchError::new(format!("connecting to {addr} timed out")))?
            .map_err(|e| BenchError::new(format!("cannot connect to {addr}: {e}")))?;
        stream.set_nodelay(true).ok();
        let url = format!("ws://{addr}/ws/signal?token={token}");
        let (socket, _) = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config())),
        )
        .await
        .map_err(|_| BenchError::new("the WebSocket handshake timed out"))?
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => {
                let body = response.body().as_deref().unwrap_or_default();
                BenchError::new(format!(
                    "WebSocket upgrade refused with {}: {}",
                    response.status(),
                    String::from_utf8_lossy(body)
                ))
            }
            e => BenchError::new(format!("WebSocket handshake failed: {e}")),
        })?;
        Ok(socket)
    }
}

/// Small read buffers: tungstenite zero-fills the whole buffer before each read, and the
/// 128 KiB default would make the generator, not the server, the bottleneck.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Waits until `peer_joined` announces `peer`: a client learns of peers who join after it
/// this way, and may address them only once it has (before that, `peer_not_found`).
pub async fn await_peer(socket: &mut Socket, peer: &str) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| BenchError::new("the other peer was never announced"))?;
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if value["type"] == "peer_joined" && value["peerId"] == peer {
                    return Ok(());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(BenchError::new(format!("connection failed: {e}"))),
            None => return Err(BenchError::new("connection closed before the peer joined")),
        }
    }
}

/// Joins `room`; returns this connection's peer id once `joined` arrives.
pub async fn join(socket: &mut Socket, room: &str) -> Result<String, BenchError> {
    let frame = serde_json::json!({ "type": "join", "roomId": room }).to_string();
    socket
        .send(Message::text(frame))
        .await
        .map_err(|e| BenchError::new(format!("join not sent: {e}")))?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| BenchError::new("no joined reply in time"))?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(BenchError::new(format!("closed while joining: {frame:?}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(BenchError::new(format!("connection failed: {e}"))),
            None => return Err(BenchError::new("connection closed while joining")),
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match value["type"].as_str() {
            Some("joined") => {
                return value["peerId"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| BenchError::new("joined without a peerId"));
            }
            Some("error") => {
                return Err(BenchError::new(format!(
                    "join refused: {}",
                    value["message"].as_str().unwrap_or("no message")
                )));
            }
            _ => {}
        }
    }
}
