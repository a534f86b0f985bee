//! Assembles the services of a role into one HTTP server and runs it until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use tokio::net::TcpListener;

use crate::api::ApiState;
use crate::auth::Issuance;
use crate::auth::jwks::RemoteJwks;
use crate::auth::oidc::IdentityProvider;
use crate::auth::reload::KeyReloader;
use crate::auth::{ActiveKeys, AuthState, Revocation, TokenIssuer, TokenVerifier};
use crate::bus::{Bus, MemoryBus, RedisBus};
use crate::config::{Config, Environment, Role};
use crate::cors::CrossOrigin;
use crate::error::StoreError;
use crate::events::Dispatcher;
use crate::health::HealthState;
use crate::net::{Deadlines, Pending, Reloader, TlsAcceptor, TlsError};
use crate::redis::{Keys, Redis, RedisNodes};
use crate::resilience::{BreakerState, ConnectionSlots, IpLimiter, LoadGuard, TrustedNet};
use crate::signaling::connection::ConnectionLimits;
use crate::signaling::protocol::close;
use crate::signaling::{Hub, SignalingState, heartbeat};
use crate::store::{MemoryStore, RedisStore, Store};
use crate::telemetry::Metrics;

/// How long shutdown waits for connections to close after telling them to.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A draining node stays this long after the last session moved away or the last message
/// it forwarded to a moved session, until every node routes to the new place.
const FORWARD_LINGER: Duration = Duration::from_secs(1);
/// Reconnect hints of a drain are spread over at most this long, so the clients of a
/// drained node do not all land on the others in the same instant.
const MAX_RECONNECT_SPREAD: Duration = Duration::from_secs(10);

/// The node: its configuration, hub and background tasks, and the state each HTTP
/// service is lent (each service sees only its own).
pub struct AppState {
    /// Validated configuration.
    pub config: Config,
    /// Which services this process runs.
    pub role: Role,
    /// Signs tokens; `None` on a node that holds only public keys.
    pub issuer: Option<Arc<TokenIssuer>>,
    /// The keys in service, swapped by reloads.
    pub keys: Arc<ActiveKeys>,
    /// Verifies tokens (shared by auth and signaling).
    pub verifier: TokenVerifier,
    /// This node's rooms and peers.
    pub hub: Arc<Hub>,
    /// This node's metrics.
    pub metrics: Arc<Metrics>,
    /// The Auth service's state.
    pub auth: Arc<AuthState>,
    /// The Signaling service's state.
    pub signaling: Arc<SignalingState>,
    /// The health routes' state.
    pub health: Arc<HealthState>,
    /// The server API's state.
    pub api: Arc<ApiState>,
    /// Set once shutdown starts: readiness fails and upgrades are refused.
    draining: Arc<AtomicBool>,
    /// Heartbeat and bus reader, stopped with the state.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AppState {
    /// State for `role` on the backend the configuration names: Redis when configured
    /// (connecting to it), the embedded store otherwise.
    pub async fn build(config: Config, role: Role) -> Result<Arc<Self>, StoreError> {
        let metrics = Metrics::new();
        let mut nodes = None;
        let (store, bus): (Arc<dyn Store>, Arc<dyn Bus>) = match &config.redis {
            None => (Arc::new(MemoryStore::new()), Arc::new(MemoryBus::new())),
            Some(r) => {
                let redis = Redis::connect(&r.topology, r.timeout)
                    .await?
                    .with_metrics(metrics.clone());
                let reader = Redis::connect(&r.topology, r.timeout).await?;
                let keys = Keys::new(&r.prefix);
                // The bus's lanes hold and retry by themselves, one call in flight per
                // destination: no breaker in front of them.
                let bus = RedisBus::new(
                    redis.clone(),
                    reader,
                    keys.clone(),
                    r.topology.replicated(),
                    r.hold,
                    Some(metrics.clone()),
                );
                let guarded = redis.with_breakers(r.breaker);
                nodes = guarded.nodes();
                (Arc::new(RedisStore::new(guarded, keys)), Arc::new(bus))
            }
        };
        Self::assemble(config, role, store, bus, metrics, nodes).await
    }

    /// State for `role` on the given store and bus (tests share one between several nodes).
    pub async fn with_backend(
        config: Config,
        role: Role,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::assemble(config, role, store, bus, Metrics::new(), None).await
    }

    async fn assemble(
        config: Config,
        role: Role,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        redis_nodes: Option<Arc<RedisNodes>>,
    ) -> Result<Arc<Self>, StoreError> {
        let mut tasks = Vec::new();
        let remote = match &config.auth.jwks_url {
            Some(url) => {
                let remote = RemoteJwks::new(url, metrics.clone());
                // Fetched before the node listens; an Auth service still starting is no
                // reason to refuse: the periodic and on-demand refetches catch up.
                remote.refresh().await;
                tasks.push(tokio::spawn(remote.clone().run(config.auth.jwks_refresh)));
                Some(remote)
            }
            None => None,
        };
        let keys = ActiveKeys::new(
            config.auth.keyring.clone(),
            config.auth.api_keys.clone(),
            remote,
        );
        tasks.push(tokio::spawn(
            KeyReloader::new(
                config.auth.sources.clone(),
                keys.clone(),
                config.auth.keys_reload_interval,
                metrics.clone(),
            )
            .run(),
        ));
        let issuer = TokenIssuer::with_keys(
            keys.clone(),
            &config.auth.issuer,
            &config.auth.audience,
            config.auth.token_ttl,
        )
        .map(Arc::new);
        // Lifetimes are checked against TOKEN_MAX_LIFETIME rather than TOKEN_TTL, so tokens
        // minted before a TOKEN_TTL change (or by `switchboard token --ttl`) still verify.
        let mut verifier = TokenVerifier::with_keys(
            keys.clone(),
            &config.auth.issuer,
            &config.auth.audience,
            config.auth.max_lifetime,
        );
        if let Some(oidc) = &config.auth.oidc {
            let remote = RemoteJwks::discovered(&oidc.issuer, metrics.clone());
            // As with AUTH_JWKS_URL: a provider unreachable now is retried, its tokens
            // refused with a 401 meanwhile, and the node starts all the same.
            remote.refresh().await;
            tasks.push(tokio::spawn(remote.clone().run(config.auth.jwks_refresh)));
            verifier = verifier.with_identity_provider(Arc::new(IdentityProvider::new(
                &oidc.issuer,
                &oidc.audience,
                &oidc.user_claim,
                remote,
                config.auth.max_lifetime,
            )));
        }
        if let Some(events) = &config.events {
            store.record_events(
                events.dispatch.retention,
                events.dispatch.log_max,
                &config.node.id,
            );
        }
        let event_log: Arc<dyn crate::store::EventLog> = store.clone();
        let hub = Arc::new(Hub::new(
            &config.node.id,
            store,
            bus.clone(),
            config.limits.max_room_peers,
            config.limits.outbound_queue,
            metrics.clone(),
        ));
        if role != Role::Auth {
            hub.evict_previous_incarnation().await?;
            let inbox = bus.subscribe(&config.node.id).await?;
            hub.store()
                .heartbeat(&config.node.id, config.timing.heartbeat * 2)
                .await?;
            tasks.push(tokio::spawn(crate::signaling::hub::consume(
                hub.clone(),
                inbox,
            )));
            // Others may need two heartbeats plus a timed-out call or two to recover; after
            // Redis lost its data, a node whose breaker opened during the outage writes its
            // state back only once a probe finds Redis again.
            let (redis_timeout, breaker_open) = config
                .redis
                .as_ref()
                .map_or((Duration::ZERO, Duration::ZERO), |r| {
                    (r.timeout, r.breaker.open_for)
                });
            let grace = config.timing.heartbeat * 2 + redis_timeout * 2;
            let write_back = grace + breaker_open;
            tasks.push(tokio::spawn(heartbeat::run(
                hub.clone(),
                config.timing.heartbeat,
                grace,
                write_back,
            )));
            if let Some(events) = &config.events {
                let dispatcher = Dispatcher::new(
                    event_log.clone(),
                    &config.node.id,
                    events.dispatch.clone(),
                    metrics.clone(),
                );
                tasks.push(tokio::spawn(Arc::new(dispatcher).run()));
            }
        }
        let (rate, cap) = (
            config.limits.rate_per_ip_per_minute,
            config.limits.max_connections_per_ip,
        );
        // In development `cargo run` and the benchmark from the README share a machine: the
        // per-IP rate would refuse the bench's tokens and upgrades (all from 127.0.0.1).
        let ip_limiter = if config.environment == Environment::Production {
            IpLimiter::new(rate, cap)
        } else {
            IpLimiter::sparing_loopback(rate, cap)
        };
        let connection_limits = Arc::new(ConnectionLimits {
            ping_interval: config.timing.ping_interval,
            idle_timeout: config.timing.idle_timeout,
            refresh_before: config.auth.token_refresh_before,
            message_rate: config.limits.message_rate,
            message_burst: config.limits.message_burst,
            resume_grace: config.timing.resume_grace,
            join_timeout: config.timing.join_timeout,
            max_metadata_bytes: config.limits.max_metadata_bytes,
        });
        let draining = Arc::new(AtomicBool::new(false));
        let trusted_proxies: Arc<[_]> = config.limits.trusted_proxies.clone().into();
        let api = Arc::new(ApiState {
            hub: hub.clone(),
            keys: keys.clone(),
            limiter: IpLimiter::new(config.limits.api_rate_per_minute, 0),
            trusted_proxies: trusted_proxies.clone(),
            max_metadata_bytes: config.limits.max_metadata_bytes,
            events: config.events.as_ref().map(|_| event_log.clone()),
            metrics: metrics.clone(),
        });
        let auth = Arc::new(AuthState {
            issuer: issuer.clone(),
            verifier: verifier.clone(),
            api_key_required: config.auth.issuance == Issuance::ApiKey,
            keys: keys.clone(),
            longest_token: config.auth.max_lifetime,
            ice_servers: config.ice_servers.clone(),
            ip_limiter: ip_limiter.clone(),
            trusted_proxies: trusted_proxies.clone(),
            sessions: hub.store().clone(),
            revocation: hub.clone() as Arc<dyn Revocation>,
        });
        let signaling = Arc::new(SignalingState {
            hub: hub.clone(),
            issuer: issuer.clone(),
            verifier: verifier.clone(),
            ice_servers: config.ice_servers.clone(),
            connection_limits,
            draining: draining.clone(),
            slots: ConnectionSlots::new(config.limits.max_connections),
            load: LoadGuard::spawn(Duration::from_secs(1)),
            shed_cpu: config.limits.shed_cpu,
            shed_memory: config.limits.shed_memory,
            ip_limiter,
            trusted_proxies,
            allowed_origins: config.auth.allowed_origins.clone(),
            max_message_bytes: config.limits.max_message_bytes,
        });
        let health = Arc::new(HealthState {
            hub: hub.clone(),
            draining: draining.clone(),
            redis_nodes,
            redis_configured: config.redis.is_some(),
            outage_grace: config
                .redis
                .as_ref()
                .map_or(Duration::MAX, |r| r.outage_grace),
        });
        Ok(Arc::new(Self {
            config,
            role,
            issuer,
            keys,
            verifier,
            hub,
            metrics,
            auth,
            signaling,
            health,
            api,
            draining,
            tasks,
        }))
    }

    /// Starts a drain: readiness fails, upgrades are refused, every client gets `goaway`
    /// with a jittered reconnect hint and is closed with 1012 when that hint comes due.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let spread = (self.config.timing.drain_timeout / 2).min(MAX_RECONNECT_SPREAD);
        self.hub.drain(spread);
    }

    /// The worst state among the breakers of the Redis masters, when Redis is configured.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.health.breaker_state()
    }

    /// True once shutdown started.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops heartbeats and the bus reader, as a crashed node would (tests use this to
    /// simulate node loss).
    pub fn halt(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for AppState {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The router's state: the node, and what it lends each service through [`FromRef`].
/// One `Arc`: the router clones and drops its state with every request.
#[derive(Clone)]
struct Services(Arc<ServiceParts>);

/// What [`Services`] shares.
struct ServiceParts {
    node: Arc<AppState>,
    auth: Arc<AuthState>,
    signaling: Arc<SignalingState>,
    health: Arc<HealthState>,
    api: Arc<ApiState>,
}

impl FromRef<Services> for Arc<ApiState> {
    fn from_ref(services: &Services) -> Self {
        services.0.api.clone()
    }
}

impl FromRef<Services> for Arc<AuthState> {
    fn from_ref(services: &Services) -> Self {
        services.0.auth.clone()
    }
}

impl FromRef<Services> for Arc<SignalingState> {
    fn from_ref(services: &Services) -> Self {
        services.0.signaling.clone()
    }
}

impl FromRef<Services> for Arc<HealthState> {
    fn from_ref(services: &Services) -> Self {
        services.0.health.clone()
    }
}

impl FromRef<Services> for Arc<AppState> {
    fn from_ref(services: &Services) -> Self {
        services.0.node.clone()
    }
}

/// The router of a role: its services, health, and `/metrics` unless it has a listener of
/// its own (METRICS_ADDR). The accept loop writes the access log around it.
pub fn app(state: Arc<AppState>) -> Router {
    let metrics_here = state.config.node.metrics.is_none();
    let cors = cross_origin(&state);
    let mut router = Router::new().merge(crate::health::router());
    if state.role.issues_tokens() {
        router = router
            .merge(crate::auth::routes::router(
                state.config.timing.body_timeout,
                state.metrics.clone(),
                cors.clone(),
            ))
            .merge(crate::api::router(
                state.config.timing.body_timeout,
                state.metrics.clone(),
            ));
    }
    if state.role.signals() {
        router = router
            .merge(crate::signaling::router())
            .merge(crate::web::router(cors));
    }
    let services = Services(Arc::new(ServiceParts {
        auth: state.auth.clone(),
        signaling: state.signaling.clone(),
        health: state.health.clone(),
        api: state.api.clone(),
        node: state,
    }));
    if metrics_here {
        router = router.route("/metrics", axum::routing::get(metrics));
    }
    router
        .fallback(crate::error::not_found)
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .with_state(services)
}

/// The CORS layer of the routes a browser calls, from ALLOWED_ORIGINS.
fn cross_origin(state: &AppState) -> tower_http::cors::CorsLayer {
    CrossOrigin::from_allowed(
        state.config.auth.allowed_origins.as_deref(),
        state.config.environment == Environment::Production,
    )
    .layer()
}

/// The operators' router: `/metrics` alone, for the METRICS_ADDR listener.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(crate::error::not_found)
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .with_state(state)
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> impl axum::response::IntoResponse {
    let m = &state.metrics;
    m.peers.set(state.hub.peer_count() as i64);
    m.rooms.set(state.hub.room_count() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// Serves `state` on `listener` (over TLS when its configuration names certificate files)
/// until `shutdown` resolves, then closes every WebSocket with 1012 and waits (bounded) for
/// them to go.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = load_tls(&state.config).map_err(std::io::Error::other)?;
    serve_with(listener, state, tls, shutdown).await
}

/// The listener's certificate, when TLS is configured, and what keeps it current.
pub fn load_tls(config: &Config) -> Result<Option<(TlsAcceptor, Reloader)>, TlsError> {
    config.tls.as_ref().map(TlsAcceptor::load).transpose()
}

/// [`serve`] with the certificate already loaded (`None`: plain HTTP).
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<(TlsAcceptor, Reloader)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The reloader ends by itself once the last acceptor (this server's) is gone.
    let tls = tls.map(|(acceptor, reloader)| {
        tokio::spawn(reloader.run(state.metrics.clone()));
        acceptor
    });
    let router = app(state.clone());
    let draining = state.clone();
    // The listener stays open while draining, so readiness can answer 503 and late
    // upgrades get a clear refusal; it closes once every client is gone (or the drain
    // timeout passed).
    let drained = async move {
        shutdown.await;
        let timeout = draining.config.timing.drain_timeout;
        tracing::info!(timeout_ms = timeout.as_millis() as u64, "draining");
        draining.start_draining();
        let deadline = tokio::time::Instant::now() + timeout;
        while (draining.hub.peer_count() > 0 || draining.hub.forwarding(FORWARD_LINGER))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Whoever is left is told to go now.
        draining.hub.close_all(close::RESTART, "server restarting");
    };
    let config = &state.config;
    let mut pending_exempt = config.limits.trusted_proxies.clone();
    // In development the README's benchmark opens hundreds of connections at once from
    // this machine; the per-address cap on pending ones would cut its token requests.
    if config.environment != Environment::Production {
        pending_exempt.extend(
            ["127.0.0.0/8", "::1"]
                .map(|net| net.parse::<TrustedNet>().expect("a loopback network")),
        );
    }
    let pending = Pending::new(
        config.limits.max_pending,
        config.limits.max_pending_per_ip,
        pending_exempt.into(),
        state.metrics.clone(),
    );
    let deadlines = Deadlines {
        head: config.timing.head_timeout,
        upgrade: config.timing.upgrade_timeout,
    };
    // The upgrade skips hyper and the router where this node serves signaling, and token
    // requests skip the router where it issues tokens.
    let shortcuts = crate::net::Shortcuts {
        first: state.role.signals().then(|| {
            Arc::new(crate::signaling::UpgradeShortcut::new(
                state.signaling.clone(),
            )) as Arc<dyn crate::net::Shortcut>
        }),
        route: state.role.issues_tokens().then(|| {
            let token = crate::auth::routes::TokenShortcut::new(
                state.auth.clone(),
                config.timing.body_timeout,
                state.metrics.clone(),
                &cross_origin(&state),
            );
            Arc::new(token) as Arc<dyn crate::net::RouteShortcut>
        }),
    };
    crate::net::serve(
        listener,
        router,
        shortcuts,
        tls,
        pending,
        deadlines,
        state.metrics.clone(),
        drained,
    )
    .await?;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while state.hub.peer_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    state.halt();
    if state.role != Role::Auth {
        if let Err(e) = state.hub.close_inbox().await {
            tracing::warn!(error = %e, "could not close this node's inbox");
        }
        if let Err(e) = state.hub.store().forget_node(state.hub.node()).await {
            tracing::warn!(error = %e, "could not remove this node's registration");
        }
    }
    Ok(())
}

/// Serves `/metrics` on its own `listener` (METRICS_ADDR) until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on the first SIGTERM or SIGINT; a second one ends the process at once.
pub async fn shutdown_signal() {
    one_signal().await;
    tokio::spawn(async {
        one_signal().await;
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(130);
    });
}

async fn one_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: closing connections");
}

/// Binds the role's port and serves until SIGTERM/SIGINT.
pub async fn run(config: Config, role: Role, bind: SocketAddr) -> Result<(), String> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let open_files = crate::fd_limit::raise();
    let limits = &config.limits;
    if let Some(warning) =
        crate::fd_limit::shortfall(open_files, limits.max_connections, limits.max_pending)
    {
        tracing::warn!("{warning}");
    }
    // Before anything listens: a certificate that cannot be served is a start-up error.
    let tls = load_tls(&config).map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = crate::net::listen(bind).map_err(|e| {
        format!("cannot listen on {bind}: {e} (is the port in use? set the port flag)")
    })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match config.node.metrics {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            format!("cannot listen on {addr} for /metrics: {e} (set METRICS_ADDR)")
        })?),
        None => None,
    };
    let state = AppState::build(config, role).await.map_err(|e| {
        format!("{e}; check the Redis settings (REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES)")
    })?;
    // The metrics listener outlives the drain (operators watch it) and stops with the node.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = match metrics_listener {
        Some(listener) => {
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(address = %address, "serving /metrics");
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            Some(tokio::spawn(serve_metrics(
                listener,
                state.clone(),
                stopped,
            )))
        }
        None => None,
    };
    tracing::info!(address = %local, scheme, role = ?role, node = state.hub.node(), open_files, "listening");
    let served = serve_with(listener, state, tls, shutdown_signal()).await;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    served.map_err(|e| format!("server failed: {e}"))
}
