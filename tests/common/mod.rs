//! Test support: an in-process server on 127.0.0.1:0 and a WebSocket client that speaks
//! the protocol with deadlines instead of sleeps.
//!
//! Every deadline is multiplied by `SWITCHBOARD_TEST_PATIENCE` (default 1; e.g. 3 on a slow
//! CI machine); background conditions are awaited with [`eventually`], never a fixed sleep.
#![allow(dead_code)]

pub mod api;
pub mod edge;
pub mod eventually;
pub mod fleet;
pub mod hostile;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod sockets;
pub mod tls;
pub mod tools;
pub mod traffic;
pub mod webhooks;

pub use eventually::{eventually, eventually_blocking, patient};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::auth::{SigningSecret, TokenIssuer};
use switchboard::bus::{Bus, MemoryBus};
use switchboard::config::{Config, Role, Settings};
use switchboard::server::{AppState, serve, serve_metrics};
use switchboard::store::{MemoryStore, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Secret shared by test servers and test-minted tokens.
pub const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Development settings with a fixed secret.
pub fn settings() -> Settings {
    let mut s = Settings::default();
    s.auth.signing.auth_secret = Some(SECRET.into());
    // Reconnect hints of a drain spread over one second, not ten.
    s.timing.drain_timeout = Duration::from_secs(2);
    // Every test client comes from 127.0.0.1 and the machine is busy running tests:
    // the per-IP rate and CPU shedding are tested on their own (tests/overload.rs).
    s.limits.rate_per_ip_per_minute = 0;
    s.limits.shed_cpu_percent = 0.0;
    // Floods are tested on their own; ordering and slow-consumer tests send fast.
    s.limits.message_rate = 1_000_000.0;
    s.limits.message_burst = 1_000_000.0;
    s
}

/// [`settings`] in production mode, with what production requires: open issuance opted in
/// (tests fetch tokens without a key), an origin list, and `/metrics` on a port of its own.
pub fn production_settings() -> Settings {
    let mut s = settings();
    s.environment = switchboard::config::Environment::Production;
    s.auth.token_issuance = Some(switchboard::auth::Issuance::Open);
    s.auth.allow_open_issuance = true;
    s.auth.allowed_origins = Some("https://app.example".into());
    s.node.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    s
}

/// Runs each named `async fn(Backend)` of the calling test file as a test on every kind of
/// deployment: one node and three on the embedded store, one and three nodes on a Redis
/// server, and three on a Redis Cluster.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::Memory).await } )*
        }
        mod memory_three_nodes {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::MemoryNodes(3)).await } )*
        }
        mod redis_one_node {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::Redis(1)).await } )*
        }
        mod redis_three_nodes {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::Redis(3)).await } )*
        }
        mod redis_cluster_three_nodes {
            use super::*;
            $( #[tokio::test] async fn $name() { super::$name(Backend::Cluster(3)).await } )*
        }
    };
}

/// One node of a deployment.
struct Node {
    addr: SocketAddr,
    /// Where `/metrics` has its own listener (METRICS_ADDR), if it has one.
    metrics_addr: Option<SocketAddr>,
    /// Dropped with the node, which stops the metrics listener.
    _metrics_stop: Option<oneshot::Sender<()>>,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Where the nodes of a test deployment keep shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One node on the embedded store.
    Memory,
    /// Several nodes in this process sharing one embedded store and bus.
    MemoryNodes(usize),
    /// Nodes sharing one real standalone redis-server.
    Redis(usize),
    /// Nodes sharing a real three-master Redis Cluster.
    Cluster(usize),
    /// Nodes sharing a master found through a real Sentinel.
    Sentinel(usize),
}

/// A deployment of one or more nodes in this process; clients are spread over the nodes
/// round-robin, so peers of one room usually sit on different nodes.
pub struct TestServer {
    /// The first node's address.
    pub addr: SocketAddr,
    /// The first node's own `/metrics` listener, when METRICS_ADDR is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The first node's state (issuer and verifier are the same on every node).
    pub state: Arc<AppState>,
    nodes: Vec<Node>,
    next: AtomicUsize,
    /// Redis processes the deployment runs on, stopped when it is dropped.
    _redis: Option<Box<dyn std::any::Any + Send + Sync>>,
}

static PREFIX: AtomicUsize = AtomicUsize::new(0);

/// A key prefix no other deployment in this process uses.
pub fn unique_prefix() -> String {
    format!(
        "t{}-{}:",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::Relaxed)
    )
}

async fn start_node(
    settings: &Settings,
    role: Role,
    shared: Option<(Arc<dyn Store>, Arc<dyn Bus>)>,
) -> Node {
    let config = Config::from_settings(settings, role).expect("test settings are valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = match shared {
        Some((store, bus)) => AppState::with_backend(config, role, store, bus).await,
        None => AppState::build(config, role).await,
    }
    .expect("backend reachable");
    let (stop, stopped) = oneshot::channel::<()>();
    let mut metrics_addr = None;
    let mut metrics_stop = None;
    if let Some(at) = state.config.node.metrics {
        let listener = TcpListener::bind(at).await.unwrap();
        metrics_addr = Some(listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        metrics_stop = Some(stop);
        tokio::spawn(serve_metrics(listener, state.clone(), async {
            let _ = stopped.await;
        }));
    }
    let task = tokio::spawn(serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Node {
        addr,
        metrics_addr,
        _metrics_stop: metrics_stop,
        state,
        stop: Some(stop),
        task,
    }
}

/// Starts `role` with `settings` as one node on the embedded store.
pub async fn start_role(settings: Settings, role: Role) -> TestServer {
    let node = start_node(&settings, role, None).await;
    TestServer::from_nodes(vec![node], None)
}

/// Starts the `serve` role as one node on the embedded store.
pub async fn start(settings: Settings) -> TestServer {
    start_role(settings, Role::Serve).await
}

/// Starts a deployment of `serve` nodes on `backend`.
pub async fn start_on(backend: Backend, mut settings: Settings) -> TestServer {
    settings.timing.heartbeat_interval = Duration::from_millis(500);
    // Generous unless a test chose its own: many Redis processes share two cores while the
    // suite runs in parallel.
    if settings.redis.redis_timeout == Settings::default().redis.redis_timeout {
        settings.redis.redis_timeout = Duration::from_secs(3);
    }
    let mut nodes = Vec::new();
    match backend {
        Backend::Memory => start(settings).await,
        Backend::MemoryNodes(n) => {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
            for _ in 0..n {
                nodes.push(
                    start_node(&settings, Role::Serve, Some((store.clone(), bus.clone()))).await,
                );
            }
            TestServer::from_nodes(nodes, None)
        }
        Backend::Redis(n) => {
            let server = redis::RedisServer::start().await;
            settings.redis.redis_url = Some(server.url());
            settings.redis.key_prefix = unique_prefix();
            for _ in 0..n {
                nodes.push(start_node(&settings, Role::Serve, None).await);
            }
            TestServer::from_nodes(nodes, Some(Box::new(server)))
        }
        Backend::Sentinel(n) => {
            let group = redis::SentinelGroup::start().await;
            settings.redis.redis_sentinels = Some(group.sentinel_addr());
            settings.redis.redis_sentinel_master = group.master_name.clone();
            settings.redis.key_prefix = unique_prefix();
            for _ in 0..n {
                nodes.push(start_node(&settings, Role::Serve, None).await);
            }
            TestServer::from_nodes(nodes, Some(Box::new(group)))
        }
        Backend::Cluster(n) => {
            let cluster = redis::RedisCluster::start().await;
            settings.redis.redis_cluster_nodes = Some(cluster.seeds().join(","));
            settings.redis.key_prefix = unique_prefix();
            for _ in 0..n {
                nodes.push(start_node(&settings, Role::Serve, None).await);
            }
            TestServer::from_nodes(nodes, Some(Box::new(cluster)))
        }
    }
}

impl TestServer {
    fn from_nodes(nodes: Vec<Node>, redis: Option<Box<dyn std::any::Any + Send + Sync>>) -> Self {
        TestServer {
            addr: nodes[0].addr,
            metrics_addr: nodes[0].metrics_addr,
            state: nodes[0].state.clone(),
            nodes,
            next: AtomicUsize::new(0),
            _redis: redis,
        }
    }

    /// `http://addr` + `path` on the first node.
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The first node's signaling URL carrying `token` in the query.
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws/signal?token={}", self.addr, token)
    }

    /// Mints a token with the deployment's issuer.
    pub fn token(&self, user: &str, room: Option<&str>) -> String {
        self.state
            .issuer
            .as_ref()
            .unwrap()
            .issue(user, room, None)
            .token
    }

    /// The Redis fixture the deployment runs on.
    pub fn redis_mut<T: 'static>(&mut self) -> &mut T {
        self._redis
            .as_mut()
            .and_then(|r| r.downcast_mut::<T>())
            .expect("the deployment runs on this kind of Redis")
    }

    /// The key prefix of the deployment's first node.
    pub fn key_prefix(&self) -> String {
        self.state
            .config
            .redis
            .as_ref()
            .map(|r| r.prefix.clone())
            .unwrap_or_default()
    }

    /// The address of node `i`.
    pub fn node_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The state of node `i`.
    pub fn node(&self, i: usize) -> &Arc<AppState> {
        &self.nodes[i].state
    }

    /// Connected peers summed over all nodes.
    pub fn peer_count(&self) -> usize {
        self.nodes.iter().map(|n| n.state.hub.peer_count()).sum()
    }

    /// Rooms with local members, summed over all nodes.
    pub fn room_count(&self) -> usize {
        self.nodes.iter().map(|n| n.state.hub.room_count()).sum()
    }

    /// Drops `ws` without a close frame, as a lost network does, and waits until its node
    /// noticed (the session is parked for a resume). A reconnect sooner would find the old
    /// connection still live and replace it instead of resuming.
    pub async fn lose<S>(&self, ws: S) {
        let open = || {
            self.nodes
                .iter()
                .map(|n| n.state.metrics.connections.get())
                .sum::<i64>()
        };
        let before = open();
        drop(ws);
        eventually(
            "the node to notice the lost connection",
            Duration::from_secs(5),
            async || open() < before,
        )
        .await;
    }

    /// Connects a client for `user` to the next node and waits until it is registered.
    pub async fn connect(&self, user: &str) -> Client {
        let token = self.token(user, None);
        self.connect_with(&token).await
    }

    /// Connects with an explicit token to the next node.
    pub async fn connect_with(&self, token: &str) -> Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.connect_to(i, token).await
    }

    /// Connects with an explicit token to node `i`.
    pub async fn connect_to(&self, i: usize, token: &str) -> Client {
        let claims = self
            .state
            .verifier
            .verify(token)
            .expect("test token is valid");
        let url = format!("ws://{}/ws/signal?token={}", self.nodes[i].addr, token);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket upgrade");
        let mut client = Client {
            ws,
            peer_id: claims.peer_id(),
        };
        // A pong proves the connection task is running and registered.
        client.send(json!({"type": "ping"})).await;
        client.expect("pong").await;
        client
    }

    /// Two clients in `room`, each aware of the other.
    pub async fn pair(&self, first: &str, second: &str, room: &str) -> (Client, Client) {
        let (mut a, _) = self.join(first, room).await;
        let (b, _) = self.join(second, room).await;
        assert_eq!(a.expect("peer_joined").await["peerId"], b.peer_id.as_str());
        (a, b)
    }

    /// The first node's `/metrics` text (from its own listener when it has one).
    pub async fn metrics(&self) -> String {
        let at = self.metrics_addr.unwrap_or(self.addr);
        reqwest::get(format!("http://{at}/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Connects and joins `room`; returns the client and its `joined` message.
    pub async fn join(&self, user: &str, room: &str) -> (Client, Value) {
        let mut client = self.connect(user).await;
        let joined = client.join(room).await;
        (client, joined)
    }

    /// Stops every node and waits for them to finish.
    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            if let Some(stop) = node.stop.take() {
                let _ = stop.send(());
            }
        }
        for node in &mut self.nodes {
            let _ = tokio::time::timeout(DEADLINE, &mut node.task).await;
        }
    }

    /// Starts draining every node.
    pub fn start_draining(&self) {
        for node in &self.nodes {
            node.state.start_draining();
        }
    }
}

/// A client of `user` on the node at `addr` (its peer id set), and its token.
pub async fn client_at(addr: &str, user: &str) -> (Client, String) {
    let issued = issuer(Duration::from_secs(600)).issue(user, None, None);
    let mut client = connect_at(addr, &issued.token).await;
    client.peer_id = issued.claims.peer_id();
    (client, issued.token)
}

/// Connects to the node at `addr` with `token` and waits until it is registered.
pub async fn connect_at(addr: &str, token: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/signal?token={token}"))
        .await
        .expect("websocket upgrade");
    Client::registered(ws).await
}

/// Tries an upgrade and returns the refusal's status and JSON body.
pub async fn refused(request: impl IntoClientRequest + Unpin) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted but should have been refused"),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body).unwrap_or(Value::Null);
            (status, json)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// What a client observed next.
#[derive(Debug)]
pub enum Event {
    /// A JSON text frame.
    Message(Value),
    /// A binary frame.
    Binary,
    /// A close frame with its code, or the stream ended without one.
    Closed(Option<u16>),
}

/// A protocol client.
pub struct Client {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// This client's peer id.
    pub peer_id: String,
}

impl Client {
    /// Sends a JSON message.
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next event, skipping control frames; fails the test after [`DEADLINE`].
    pub async fn next_event(&mut self) -> Event {
        let fut = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Event::Message(serde_json::from_str(&t).expect("server sent JSON"));
                    }
                    Some(Ok(Message::Binary(_))) => return Event::Binary,
                    Some(Ok(Message::Close(frame))) => {
                        return Event::Closed(frame.map(|f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Event::Closed(None),
                }
            }
        };
        tokio::time::timeout(patient(DEADLINE), fut)
            .await
            .expect("no event before the deadline")
    }

    /// The next JSON message if one comes within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).ok(),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        };
        tokio::time::timeout(wait, next).await.ok().flatten()
    }

    /// The next JSON message; fails on close.
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Message(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message, which must have `type` == `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], kind, "unexpected message: {message}");
        message
    }

    /// The next message must be an `error` with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let message = self.expect("error").await;
        assert_eq!(message["code"], code, "unexpected error: {message}");
        message
    }

    /// Skips messages until the connection closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            if let Event::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }

    /// Proves nothing else is queued for this client: a ping's pong must come next.
    pub async fn expect_nothing_pending(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// A client on a fresh upgrade, once the node answered a ping (so it is registered).
    pub async fn registered(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        let mut client = Client {
            ws,
            peer_id: String::new(),
        };
        client.send(json!({"type": "ping"})).await;
        client.expect("pong").await;
        client
    }

    /// Joins a room and returns `joined`.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "roomId": room})).await;
        let joined = self.expect("joined").await;
        assert_eq!(joined["roomId"], room);
        assert_eq!(joined["peerId"], self.peer_id.as_str());
        joined
    }

    /// Sends an offer to `to`.
    pub async fn offer(&mut self, to: &str, sdp: &str) {
        self.send(json!({"type": "offer", "peerId": to, "sdp": sdp}))
            .await;
    }

    /// Closes the socket cleanly.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// A token for `user` from `POST {base}/auth/token` (open issuance), `base` being
/// `http://host:port` or `https://…`.
pub async fn issued_token(http: &reqwest::Client, base: &str, user: &str) -> String {
    let body: Value = http
        .post(format!("{base}/auth/token"))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_string()
}

/// The sum of every sample of `{base}/metrics` whose line starts with `series` (a name
/// with `{` for all its label sets, or one exact label set); 0 when there is none.
pub async fn metric_sum(http: &reqwest::Client, base: &str, series: &str) -> u64 {
    metric_total(http, base, series).await as u64
}

/// The sum of every `/metrics` line at `base` that starts with `series`.
pub async fn metric_total(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A token signed with `secret` from arbitrary claims and header, for rejection tests.
pub fn forge(header: &jsonwebtoken::Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Valid claims for `user`, adjustable by the caller.
pub fn claims(user: &str) -> Value {
    let now = switchboard::auth::unix_now();
    json!({
        "iss": "switchboard", "aud": "switchboard", "sub": user,
        "session_id": format!("s{now}{user}"), "jti": "j1",
        "iat": now, "nbf": now, "exp": now + 600,
    })
}

/// An issuer over the test secret with a custom TTL.
pub fn issuer(ttl: Duration) -> TokenIssuer {
    TokenIssuer::new(
        &SigningSecret::new(SECRET.as_bytes().to_vec()),
        "switchboard",
        "switchboard",
        ttl,
    )
}
