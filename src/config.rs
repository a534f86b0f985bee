//! Settings: every flag has an environment fallback; `Config` is the validated result.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::auth::{ApiKeys, IceServers, SigningSecret};
use crate::redis::Topology;
use crate::resilience::{BreakerConfig, TrustedNet};

/// The original project's published default secret; accepting it would let anyone mint tokens.
const PUBLISHED_DEFAULT_SECRET: &str = "carrier-grade-webrtc-secret-change-in-production";
/// Secrets too well known to be secret, refused in production and warned about elsewhere.
const WEAK_SECRETS: &[&str] = &[
    PUBLISHED_DEFAULT_SECRET,
    "secret",
    "changeme",
    "change-me",
    "your-256-bit-secret",
];
/// Minimum secret length required by the security policy.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token lifetime the policy allows.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Deployment mode; production turns unsafe defaults into start-up errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local development: generated secret, open token issuance allowed.
    Development,
    /// Production: strict checks on secrets, issuance, TTL and origins.
    Production,
}

/// Who may call `POST /auth/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Issuance {
    /// Anyone may obtain a token for any user id (demo mode).
    Open,
    /// Callers must present one of the configured API keys as a bearer token.
    ApiKey,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Which services a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Auth and signaling (and the web client) on one port.
    Serve,
    /// Auth service alone.
    Auth,
    /// Signaling service (and the web client) alone.
    Signal,
    /// Offline token minting.
    Token,
}

impl Role {
    fn issues_tokens(self) -> bool {
        matches!(self, Role::Serve | Role::Auth)
    }
    fn signals(self) -> bool {
        matches!(self, Role::Serve | Role::Signal)
    }
}

/// Every setting, as flags with environment fallbacks (see `switchboard --help`).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Deployment mode; `production` refuses unsafe settings at start-up.
    #[arg(
        long = "env",
        env = "SWITCHBOARD_ENV",
        value_enum,
        default_value = "development",
        global = true
    )]
    pub environment: Environment,

    /// Address to bind the HTTP/WebSocket listener to.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0", global = true)]
    pub bind: IpAddr,

    /// Port of the `serve` and `signal` roles.
    #[arg(long, env = "SIGNALING_PORT", default_value_t = 8080, global = true)]
    pub port: u16,

    /// Port of the `auth` role.
    #[arg(long, env = "AUTH_PORT", default_value_t = 8081, global = true)]
    pub auth_port: u16,

    /// JWT signing secret (at least 32 bytes). Prefer AUTH_SECRET_FILE in production.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true, global = true)]
    pub auth_secret: Option<String>,

    /// File holding the JWT signing secret (trailing newline ignored).
    #[arg(
        long,
        env = "AUTH_SECRET_FILE",
        global = true,
        conflicts_with = "auth_secret"
    )]
    pub auth_secret_file: Option<PathBuf>,

    /// Who may call POST /auth/token [default: open in development, api-key in production].
    #[arg(long, env = "TOKEN_ISSUANCE", value_enum, global = true)]
    pub token_issuance: Option<Issuance>,

    /// Explicit opt-in to open token issuance in production.
    #[arg(long, env = "ALLOW_OPEN_ISSUANCE", global = true)]
    pub allow_open_issuance: bool,

    /// Comma-separated API keys accepted by POST /auth/token in api-key mode.
    #[arg(long, env = "AUTH_API_KEYS", hide_env_values = true, global = true)]
    pub api_keys: Option<String>,

    /// File with one API key per line (blank lines and `#` comments ignored).
    #[arg(long, env = "AUTH_API_KEYS_FILE", global = true)]
    pub api_keys_file: Option<PathBuf>,

    /// Lifetime of issued tokens (at most 24h), e.g. `1h`, `15m`.
    #[arg(long, env = "TOKEN_TTL", value_parser = humantime::parse_duration, default_value = "1h", global = true)]
    pub token_ttl: Duration,

    /// `iss` claim written and required in tokens.
    #[arg(
        long,
        env = "TOKEN_ISSUER",
        default_value = "switchboard",
        global = true
    )]
    pub token_issuer: String,

    /// `aud` claim written and required in tokens.
    #[arg(
        long,
        env = "TOKEN_AUDIENCE",
        default_value = "switchboard",
        global = true
    )]
    pub token_audience: String,

    /// How long before a token expires the server pushes a fresh one; `0s` disables refresh.
    #[arg(long, env = "TOKEN_REFRESH_BEFORE", value_parser = humantime::parse_duration, default_value = "5m", global = true)]
    pub token_refresh_before: Duration,

    /// Comma-separated browser origins allowed to open /ws/signal (required in production).
    #[arg(long, env = "ALLOWED_ORIGINS", global = true)]
    pub allowed_origins: Option<String>,

    /// Most peers one room may hold.
    #[arg(long, env = "MAX_ROOM_PEERS", default_value_t = 50, global = true)]
    pub max_room_peers: usize,

    /// Largest accepted WebSocket message, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_message_bytes: usize,

    /// Messages that may wait for one slow client before it is closed with 4003.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 256, global = true)]
    pub outbound_queue: usize,

    /// Interval of server WebSocket pings.
    #[arg(long, env = "PING_INTERVAL", value_parser = humantime::parse_duration, default_value = "20s", global = true)]
    pub ping_interval: Duration,

    /// A connection silent for this long is closed (peers see `peer_left` reason `timeout`).
    #[arg(long, env = "IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s", global = true)]
    pub idle_timeout: Duration,

    /// Redis URL (`redis://` or `rediss://`, credentials allowed); enables multi-node mode.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    pub redis_url: Option<String>,

    /// Redis address as host:port (the original deployment's setting); like REDIS_URL.
    #[arg(long, env = "REDIS_ADDR", global = true)]
    pub redis_addr: Option<String>,

    /// Comma-separated Sentinel addresses (host:port or URLs); the master is found through them.
    #[arg(long, env = "REDIS_SENTINELS", global = true)]
    pub redis_sentinels: Option<String>,

    /// Name of the master the Sentinels monitor.
    #[arg(
        long,
        env = "REDIS_SENTINEL_MASTER",
        default_value = "mymaster",
        global = true
    )]
    pub redis_sentinel_master: String,

    /// Password of the Redis master behind Sentinel.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true, global = true)]
    pub redis_password: Option<String>,

    /// Comma-separated Redis Cluster seed nodes (host:port or URLs).
    #[arg(long, env = "REDIS_CLUSTER_NODES", global = true)]
    pub redis_cluster_nodes: Option<String>,

    /// Longest wait for any Redis call before it counts as failed.
    #[arg(long, env = "REDIS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "500ms", global = true)]
    pub redis_timeout: Duration,

    /// Prefix of every Redis key this deployment writes.
    #[arg(long, env = "KEY_PREFIX", default_value = "sb:", global = true)]
    pub key_prefix: String,

    /// This node's id (letters, digits, `.`, `_`, `-`) [default: generated at start].
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,

    /// Interval of node heartbeats; a node silent for two intervals is declared dead.
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s", global = true)]
    pub heartbeat_interval: Duration,

    /// Consecutive failed Redis calls that open the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 5, global = true)]
    pub breaker_failures: u32,

    /// How long the breaker stays open before a probe call.
    #[arg(long, env = "BREAKER_OPEN_FOR", value_parser = humantime::parse_duration, default_value = "2s", global = true)]
    pub breaker_open_for: Duration,

    /// Most WebSocket connections this node accepts; further upgrades get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, global = true)]
    pub max_connections: usize,

    /// Most concurrent WebSocket connections per client IP (0 = no cap).
    #[arg(
        long,
        env = "MAX_CONNECTIONS_PER_IP",
        default_value_t = 0,
        global = true
    )]
    pub max_connections_per_ip: usize,

    /// Upgrades and token requests allowed per client IP per minute (0 = no limit).
    #[arg(
        long,
        env = "RATE_PER_IP_PER_MINUTE",
        default_value_t = 300,
        global = true
    )]
    pub rate_per_ip_per_minute: u32,

    /// Comma-separated proxies (IPs or CIDRs) whose X-Forwarded-For is believed.
    #[arg(long, env = "TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,

    /// Refuse upgrades while the process uses more than this share of its CPUs (0 = off).
    #[arg(long, env = "SHED_CPU_PERCENT", default_value_t = 90.0, global = true)]
    pub shed_cpu_percent: f64,

    /// Refuse upgrades while resident memory is above this share of the limit (0 = off).
    #[arg(
        long,
        env = "SHED_MEMORY_PERCENT",
        default_value_t = 90.0,
        global = true
    )]
    pub shed_memory_percent: f64,

    /// Messages per second one connection may send, sustained.
    #[arg(long, env = "MESSAGE_RATE", default_value_t = 50.0, global = true)]
    pub message_rate: f64,

    /// Messages one connection may send at once (an ICE trickle burst).
    #[arg(long, env = "MESSAGE_BURST", default_value_t = 200.0, global = true)]
    pub message_burst: f64,

    /// How long a dropped connection's session waits for a reconnect (0s: no resume).
    #[arg(long, env = "RESUME_GRACE", value_parser = humantime::parse_duration, default_value = "30s", global = true)]
    pub resume_grace: Duration,

    /// Longest a drain (SIGTERM/SIGINT) may take before the process exits.
    #[arg(long, env = "DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s", global = true)]
    pub drain_timeout: Duration,

    /// Comma-separated STUN URLs handed to clients, e.g. `stun:stun.example.net:3478`.
    #[arg(long, env = "STUN_URLS", global = true)]
    pub stun_urls: Option<String>,

    /// Comma-separated TURN URLs handed to clients with credentials (needs TURN_SECRET).
    #[arg(long, env = "TURN_URLS", global = true)]
    pub turn_urls: Option<String>,

    /// Shared secret of the TURN server (coturn `static-auth-secret`).
    #[arg(long, env = "TURN_SECRET", hide_env_values = true, global = true)]
    pub turn_secret: Option<String>,

    /// Lifetime of TURN credentials (never beyond the token's expiry).
    #[arg(long, env = "TURN_TTL", value_parser = humantime::parse_duration, default_value = "1h", global = true)]
    pub turn_ttl: Duration,

    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `switchboard=debug,info`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::Development,
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            auth_port: 8081,
            auth_secret: None,
            auth_secret_file: None,
            token_issuance: None,
            allow_open_issuance: false,
            api_keys: None,
            api_keys_file: None,
            token_ttl: Duration::from_secs(3600),
            token_issuer: "switchboard".into(),
            token_audience: "switchboard".into(),
            token_refresh_before: Duration::from_secs(300),
            allowed_origins: None,
            max_room_peers: 50,
            max_message_bytes: 64 * 1024,
            outbound_queue: 256,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            redis_url: None,
            redis_addr: None,
            redis_sentinels: None,
            redis_sentinel_master: "mymaster".into(),
            redis_password: None,
            redis_cluster_nodes: None,
            redis_timeout: Duration::from_millis(500),
            key_prefix: "sb:".into(),
            node_id: None,
            heartbeat_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_secs(30),
            stun_urls: None,
            turn_urls: None,
            turn_secret: None,
            turn_ttl: Duration::from_secs(3600),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(2),
            max_connections: 10_000,
            max_connections_per_ip: 0,
            rate_per_ip_per_minute: 300,
            trusted_proxies: None,
            shed_cpu_percent: 90.0,
            shed_memory_percent: 90.0,
            message_rate: 50.0,
            message_burst: 200.0,
        }
    }
}

/// A setting that cannot be used, with a sentence naming it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn refuse(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Validated, resolved configuration shared by every service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deployment mode.
    pub environment: Environment,
    /// Signing secret (possibly generated for development).
    pub secret: SigningSecret,
    /// True when the secret was generated at start and dies with the process.
    pub secret_generated: bool,
    /// Who may call `POST /auth/token`.
    pub issuance: Issuance,
    /// Accepted API keys (api-key issuance).
    pub api_keys: ApiKeys,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Lead time for pushing a fresh token; zero disables refresh.
    pub token_refresh_before: Duration,
    /// Allowed browser origins; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Room capacity.
    pub max_room_peers: usize,
    /// Largest accepted WebSocket message.
    pub max_message_bytes: usize,
    /// Per-connection outbound queue length.
    pub outbound_queue: usize,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Redis, when several nodes share state; `None` runs on the embedded store.
    pub redis: Option<RedisConfig>,
    /// This node's id.
    pub node_id: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Longest a drain may take.
    pub drain_timeout: Duration,
    /// How long a dropped session waits for a resume.
    pub resume_grace: Duration,
    /// STUN and TURN servers handed to clients.
    pub ice_servers: std::sync::Arc<IceServers>,
    /// Overload protections.
    pub limits: Limits,
}

/// Overload protections at the upgrade and per connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections per node.
    pub max_connections: usize,
    /// Most connections per client IP (0 = no cap).
    pub max_connections_per_ip: usize,
    /// Upgrades and token requests per IP per minute (0 = no limit).
    pub rate_per_ip_per_minute: u32,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<TrustedNet>,
    /// CPU share above which upgrades are refused (0 = off).
    pub shed_cpu: f64,
    /// Memory share above which upgrades are refused (0 = off).
    pub shed_memory: f64,
    /// Sustained messages per second per connection.
    pub message_rate: f64,
    /// Message burst per connection.
    pub message_burst: f64,
}

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Standalone, Sentinel or Cluster.
    pub topology: Topology,
    /// Key prefix.
    pub prefix: String,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Circuit breaker settings.
    pub breaker: BreakerConfig,
}

impl Config {
    /// Resolves and checks settings for `role`; in production unsafe values are errors.
    pub fn from_settings(s: &Settings, role: Role) -> Result<Config, ConfigError> {
        let production = s.environment == Environment::Production;
        let (secret, secret_generated) = resolve_secret(s, role, production)?;

        if s.token_ttl > MAX_TOKEN_TTL {
            return Err(refuse(format!(
                "TOKEN_TTL is {}, above the 24h maximum; set TOKEN_TTL to 24h or less.",
                humantime::format_duration(s.token_ttl)
            )));
        }
        if s.token_ttl < Duration::from_secs(1) {
            return Err(refuse("TOKEN_TTL must be at least 1s."));
        }

        let issuance = s.token_issuance.unwrap_or(if production {
            Issuance::ApiKey
        } else {
            Issuance::Open
        });
        if production
            && role.issues_tokens()
            && issuance == Issuance::Open
            && !s.allow_open_issuance
        {
            return Err(refuse(
                "TOKEN_ISSUANCE=open lets anyone mint tokens; in production use TOKEN_ISSUANCE=api-key \
                 or opt in explicitly with ALLOW_OPEN_ISSUANCE=true.",
            ));
        }
        let api_keys = resolve_api_keys(s)?;
        if role.issues_tokens() && issuance == Issuance::ApiKey && api_keys.is_empty() {
            return Err(refuse(
                "TOKEN_ISSUANCE=api-key needs at least one key in AUTH_API_KEYS or AUTH_API_KEYS_FILE.",
            ));
        }

        let allowed_origins = s.allowed_origins.as_deref().map(|list| {
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        });
        if production
            && role.signals()
            && allowed_origins
                .as_ref()
                .is_some_and(|o| o.iter().any(|a| a == "*"))
        {
            return Err(refuse(
                "ALLOWED_ORIGINS=* allows every origin; in production list the exact origins.",
            ));
        }
        if production && role.signals() && allowed_origins.as_ref().is_none_or(|o| o.is_empty()) {
            return Err(refuse(
                "ALLOWED_ORIGINS is required in production: list the browser origins allowed to connect, \
                 e.g. ALLOWED_ORIGINS=https://app.example.com.",
            ));
        }

        if s.max_room_peers == 0 {
            return Err(refuse("MAX_ROOM_PEERS must be at least 1."));
        }
        if s.max_message_bytes < 1024 {
            return Err(refuse("MAX_MESSAGE_BYTES must be at least 1024."));
        }
        if s.outbound_queue == 0 {
            return Err(refuse("OUTBOUND_QUEUE must be at least 1."));
        }
        if s.heartbeat_interval < Duration::from_millis(100) {
            return Err(refuse("HEARTBEAT_INTERVAL must be at least 100ms."));
        }
        if s.ping_interval.is_zero() || s.idle_timeout <= s.ping_interval {
            return Err(refuse(
                "IDLE_TIMEOUT must be longer than PING_INTERVAL, and PING_INTERVAL above zero.",
            ));
        }

        Ok(Config {
            environment: s.environment,
            secret,
            secret_generated,
            issuance,
            api_keys,
            token_ttl: s.token_ttl,
            issuer: s.token_issuer.clone(),
            audience: s.token_audience.clone(),
            token_refresh_before: s.token_refresh_before,
            allowed_origins,
            max_room_peers: s.max_room_peers,
            max_message_bytes: s.max_message_bytes,
            outbound_queue: s.outbound_queue,
            ping_interval: s.ping_interval,
            idle_timeout: s.idle_timeout,
            redis: resolve_redis(s)?,
            node_id: resolve_node_id(s)?,
            heartbeat: s.heartbeat_interval,
            drain_timeout: s.drain_timeout,
            resume_grace: s.resume_grace.min(Duration::from_secs(3600)),
            ice_servers: std::sync::Arc::new(resolve_ice_servers(s)?),
            limits: resolve_limits(s)?,
        })
    }
}

fn resolve_secret(
    s: &Settings,
    role: Role,
    production: bool,
) -> Result<(SigningSecret, bool), ConfigError> {
    let given = match (&s.auth_secret, &s.auth_secret_file) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                refuse(format!(
                    "AUTH_SECRET_FILE {} cannot be read: {e}.",
                    path.display()
                ))
            })?;
            Some(raw.trim_end_matches(['\r', '\n']).to_string())
        }
        (None, None) => None,
    };
    let Some(secret) = given else {
        if production {
            return Err(refuse(
                "AUTH_SECRET (or AUTH_SECRET_FILE) is required in production: \
                 set at least 32 random bytes, e.g. `openssl rand -base64 48`.",
            ));
        }
        if matches!(role, Role::Signal | Role::Token) {
            return Err(refuse(
                "AUTH_SECRET (or AUTH_SECRET_FILE) is required for this role: \
                 without the auth service's secret no token can be verified or minted.",
            ));
        }
        return Ok((SigningSecret::generate(), true));
    };
    if secret.is_empty() {
        return Err(refuse(
            "AUTH_SECRET is empty; set at least 32 random bytes.",
        ));
    }
    if production {
        if WEAK_SECRETS.contains(&secret.as_str()) {
            return Err(refuse(
                "AUTH_SECRET is a published, well-known value; generate a new random secret.",
            ));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(refuse(format!(
                "AUTH_SECRET is {} bytes; production requires at least {MIN_SECRET_BYTES}.",
                secret.len()
            )));
        }
    }
    Ok((SigningSecret::new(secret.into_bytes()), false))
}

impl Config {
    /// Warnings worth printing at start-up (weak but tolerated outside production).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.secret_generated {
            out.push(
                "no AUTH_SECRET set: using a random secret generated at start; tokens will not \
                 survive a restart and other processes cannot verify them"
                    .to_string(),
            );
        } else if self.secret.is_weak() {
            out.push(
                "AUTH_SECRET is shorter than 32 bytes or a well-known value; production would refuse it"
                    .to_string(),
            );
        }
        if self.issuance == Issuance::Open && self.environment == Environment::Production {
            out.push("open token issuance is enabled in production (ALLOW_OPEN_ISSUANCE)".into());
        }
        out
    }
}

/// True when `secret` is short or on the list of well-known values.
pub(crate) fn secret_is_weak(secret: &[u8]) -> bool {
    secret.len() < MIN_SECRET_BYTES || WEAK_SECRETS.iter().any(|w| w.as_bytes() == secret)
}

/// A URL from `host:port` or a URL.
fn redis_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("redis://{addr}")
    }
}

/// The non-empty, trimmed entries of a comma-separated setting.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

fn url_list(value: &str) -> Vec<String> {
    items(value).map(redis_url).collect()
}

fn resolve_redis(s: &Settings) -> Result<Option<RedisConfig>, ConfigError> {
    let standalone = s
        .redis_url
        .clone()
        .or_else(|| s.redis_addr.as_deref().map(redis_url));
    let chosen = [
        standalone.is_some(),
        s.redis_sentinels.is_some(),
        s.redis_cluster_nodes.is_some(),
    ];
    if chosen.iter().filter(|c| **c).count() > 1 {
        return Err(refuse(
            "set only one of REDIS_URL/REDIS_ADDR, REDIS_SENTINELS and REDIS_CLUSTER_NODES.",
        ));
    }
    let topology = if let Some(url) = standalone {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(refuse("REDIS_URL must start with redis:// or rediss://."));
        }
        Topology::Standalone { url }
    } else if let Some(sentinels) = &s.redis_sentinels {
        let sentinels = url_list(sentinels);
        if sentinels.is_empty() {
            return Err(refuse("REDIS_SENTINELS lists no address."));
        }
        Topology::Sentinel {
            sentinels,
            master: s.redis_sentinel_master.clone(),
            password: s.redis_password.clone(),
        }
    } else if let Some(nodes) = &s.redis_cluster_nodes {
        let seeds = url_list(nodes);
        if seeds.is_empty() {
            return Err(refuse("REDIS_CLUSTER_NODES lists no address."));
        }
        Topology::Cluster { seeds }
    } else {
        return Ok(None);
    };
    if s.redis_timeout < Duration::from_millis(10) {
        return Err(refuse("REDIS_TIMEOUT must be at least 10ms."));
    }
    Ok(Some(RedisConfig {
        topology,
        prefix: s.key_prefix.clone(),
        timeout: s.redis_timeout,
        breaker: BreakerConfig {
            failure_threshold: s.breaker_failures.max(1),
            open_for: s.breaker_open_for,
        },
    }))
}

fn resolve_ice_servers(s: &Settings) -> Result<IceServers, ConfigError> {
    let list = |value: &Option<String>, name: &str, schemes: &[&str]| {
        let urls: Vec<String> = items(value.as_deref().unwrap_or_default())
            .map(str::to_string)
            .collect();
        match urls
            .iter()
            .find(|u| !schemes.iter().any(|s| u.starts_with(s)))
        {
            Some(bad) => Err(refuse(format!(
                "{name} has {bad:?}; each URL must start with {}.",
                schemes.join(" or ")
            ))),
            None => Ok(urls),
        }
    };
    let stun = list(&s.stun_urls, "STUN_URLS", &["stun:", "stuns:"])?;
    let turn = list(&s.turn_urls, "TURN_URLS", &["turn:", "turns:"])?;
    let secret = s.turn_secret.clone().unwrap_or_default();
    if !turn.is_empty() && secret.is_empty() {
        return Err(refuse(
            "TURN_URLS is set without TURN_SECRET: set the TURN server's static-auth-secret, \
             so clients get credentials it accepts.",
        ));
    }
    if turn.is_empty() && !secret.is_empty() {
        return Err(refuse(
            "TURN_SECRET is set without TURN_URLS: list the TURN server's URLs, e.g. \
             TURN_URLS=turn:turn.example.net:3478.",
        ));
    }
    if s.turn_ttl < Duration::from_secs(60) {
        return Err(refuse("TURN_TTL must be at least 60s."));
    }
    Ok(IceServers::new(stun, turn, secret.into_bytes(), s.turn_ttl))
}

fn resolve_limits(s: &Settings) -> Result<Limits, ConfigError> {
    let trusted_proxies = items(s.trusted_proxies.as_deref().unwrap_or_default())
        .map(|p| {
            p.parse::<TrustedNet>()
                .map_err(|e| refuse(format!("TRUSTED_PROXIES: {e}.")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if s.max_connections == 0 {
        return Err(refuse("MAX_CONNECTIONS must be at least 1."));
    }
    for (name, v) in [
        ("SHED_CPU_PERCENT", s.shed_cpu_percent),
        ("SHED_MEMORY_PERCENT", s.shed_memory_percent),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return Err(refuse(format!("{name} must be between 0 (off) and 100.")));
        }
    }
    if s.message_rate <= 0.0 || s.message_burst < 1.0 {
        return Err(refuse(
            "MESSAGE_RATE must be above 0 and MESSAGE_BURST at least 1.",
        ));
    }
    Ok(Limits {
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        rate_per_ip_per_minute: s.rate_per_ip_per_minute,
        trusted_proxies,
        shed_cpu: s.shed_cpu_percent / 100.0,
        shed_memory: s.shed_memory_percent / 100.0,
        message_rate: s.message_rate,
        message_burst: s.message_burst,
    })
}

fn resolve_node_id(s: &Settings) -> Result<String, ConfigError> {
    let Some(id) = &s.node_id else {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("the operating system random source is unavailable");
        return Ok(format!("node-{}", hex::encode(bytes)));
    };
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(refuse(
            "NODE_ID must be 1–64 letters, digits, '.', '_' or '-'.",
        ));
    }
    Ok(id.clone())
}

fn resolve_api_keys(s: &Settings) -> Result<ApiKeys, ConfigError> {
    let mut keys: Vec<String> = Vec::new();
    if let Some(list) = &s.api_keys {
        keys.extend(list.split(',').map(str::trim).map(String::from));
    }
    if let Some(path) = &s.api_keys_file {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            refuse(format!(
                "AUTH_API_KEYS_FILE {} cannot be read: {e}.",
                path.display()
            ))
        })?;
        keys.extend(
            raw.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .map(String::from),
        );
    }
    keys.retain(|k| !k.is_empty());
    if let Some(short) = keys.iter().find(|k| k.len() < 16) {
        return Err(refuse(format!(
            "an API key of {} characters is too short to resist guessing; use at least 16.",
            short.len()
        )));
    }
    Ok(ApiKeys::new(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prod() -> Settings {
        Settings {
            environment: Environment::Production,
            auth_secret: Some("x".repeat(48)),
            token_issuance: Some(Issuance::ApiKey),
            api_keys: Some("k".repeat(32)),
            allowed_origins: Some("https://app.example.com".into()),
            ..Settings::default()
        }
    }

    fn err(s: &Settings, role: Role) -> String {
        Config::from_settings(s, role).unwrap_err().0
    }

    #[test]
    fn turn_needs_urls_and_secret_together_and_urls_need_their_scheme() {
        let mut s = prod();
        s.turn_urls = Some("turn:127.0.0.1:3478".into());
        assert!(err(&s, Role::Serve).contains("TURN_SECRET"));
        s.turn_urls = None;
        s.turn_secret = Some("s3cret".into());
        assert!(err(&s, Role::Serve).contains("TURN_URLS"));
        s.turn_urls = Some("turn:a:3478, http://b".into());
        let e = err(&s, Role::Serve);
        assert!(e.contains("TURN_URLS") && e.contains("http://b"), "{e}");
        assert!(!e.contains("s3cret"));
        s.turn_urls = Some("turn:a:3478,turns:b:5349".into());
        s.stun_urls = Some("stun:a:3478".into());
        let config = Config::from_settings(&s, Role::Serve).unwrap();
        let servers = config.ice_servers.for_session("x", u64::MAX);
        assert_eq!(servers[0].urls, ["stun:a:3478"]);
        assert_eq!(servers[1].urls, ["turn:a:3478", "turns:b:5349"]);
        s.stun_urls = Some("turn:a".into());
        assert!(err(&s, Role::Serve).contains("STUN_URLS"));
    }

    #[test]
    fn production_baseline_starts() {
        Config::from_settings(&prod(), Role::Serve).unwrap();
    }

    #[test]
    fn production_refuses_missing_short_and_published_secret() {
        let mut s = prod();
        s.auth_secret = None;
        assert!(err(&s, Role::Serve).contains("AUTH_SECRET"));
        s.auth_secret = Some("short-secret".into());
        assert!(err(&s, Role::Serve).contains("at least 32"));
        s.auth_secret = Some(PUBLISHED_DEFAULT_SECRET.into());
        assert!(err(&s, Role::Serve).contains("well-known"));
    }

    #[test]
    fn production_refuses_open_issuance_without_opt_in() {
        let mut s = prod();
        s.token_issuance = Some(Issuance::Open);
        assert!(err(&s, Role::Serve).contains("ALLOW_OPEN_ISSUANCE"));
        s.allow_open_issuance = true;
        Config::from_settings(&s, Role::Serve).unwrap();
        // The default issuance mode in production is api-key, which needs keys.
        let mut s = prod();
        s.token_issuance = None;
        s.api_keys = None;
        assert!(err(&s, Role::Auth).contains("AUTH_API_KEYS"));
    }

    #[test]
    fn ttl_above_a_day_is_refused() {
        let mut s = prod();
        s.token_ttl = Duration::from_secs(25 * 3600);
        assert!(err(&s, Role::Serve).contains("TOKEN_TTL"));
        let dev = Settings {
            token_ttl: Duration::from_secs(25 * 3600),
            ..Settings::default()
        };
        assert!(err(&dev, Role::Serve).contains("TOKEN_TTL"));
    }

    #[test]
    fn production_requires_origin_allowlist_for_signaling() {
        let mut s = prod();
        s.allowed_origins = None;
        assert!(err(&s, Role::Signal).contains("ALLOWED_ORIGINS"));
        // The auth role opens no WebSocket, so it needs no allowlist.
        Config::from_settings(&s, Role::Auth).unwrap();
        s.allowed_origins = Some("https://a.example.com,*".into());
        assert!(err(&s, Role::Serve).contains("ALLOWED_ORIGINS=*"));
    }

    #[test]
    fn development_generates_a_secret_but_signal_role_refuses() {
        let c = Config::from_settings(&Settings::default(), Role::Serve).unwrap();
        assert!(c.secret_generated);
        assert!(c.warnings()[0].contains("will not survive a restart"));
        assert!(err(&Settings::default(), Role::Signal).contains("AUTH_SECRET"));
        assert!(err(&Settings::default(), Role::Token).contains("AUTH_SECRET"));
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("sb-secret-{}", std::process::id()));
        std::fs::write(&dir, format!("{}\n", "s".repeat(40))).unwrap();
        let s = Settings {
            auth_secret_file: Some(dir.clone()),
            ..prod()
        };
        let s = Settings {
            auth_secret: None,
            ..s
        };
        let c = Config::from_settings(&s, Role::Serve).unwrap();
        assert!(!c.secret.is_weak());
        std::fs::remove_file(dir).unwrap();
    }
}
