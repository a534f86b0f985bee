//! What the `/ws/signal` upgrade and the connections it starts share: the node's parts
//! and the limits every connection is held to.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::Hub;
use crate::auth::{IceServers, TokenIssuer, TokenVerifier};
use crate::resilience::{ConnectionSlots, IpLimiter, LoadGuard, MessageLimit, TrustedNet};

/// Refused messages within [`STRIKE_WINDOW`] after which the sender is closed with 1008.
pub(super) const STRIKES_TO_CLOSE: u32 = 50;
/// Window in which refused messages count towards closing the connection.
pub(super) const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Per-connection limits and timers (the node-wide ones are `config::LimitsConfig`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Silence after which the connection is closed.
    pub idle_timeout: Duration,
    /// Lead time for pushing a fresh token; zero disables refresh.
    pub refresh_before: Duration,
    /// Sustained messages per second.
    pub message_rate: f64,
    /// Message burst.
    pub message_burst: f64,
    /// How long a dropped connection's session waits for a resume (zero: no resume).
    pub resume_grace: Duration,
    /// How long a new connection may stay out of any room (JOIN_TIMEOUT).
    pub join_timeout: Duration,
    /// Largest participant metadata, in bytes (MAX_METADATA_BYTES).
    pub max_metadata_bytes: usize,
}

impl ConnectionLimits {
    /// The message limit every connection of the node is held to.
    pub fn message_limit(&self) -> MessageLimit {
        MessageLimit {
            rate: self.message_rate,
            burst: self.message_burst,
            strikes_to_close: STRIKES_TO_CLOSE,
            window: STRIKE_WINDOW,
        }
    }
}

/// What the upgrade and the connections it starts need, and nothing else.
pub struct SignalingState {
    /// This node's rooms and peers.
    pub hub: Arc<Hub>,
    /// Mints refreshed tokens; `None` on a node that holds only public keys.
    pub issuer: Option<Arc<TokenIssuer>>,
    /// Verifies the upgrade's token.
    pub verifier: TokenVerifier,
    /// STUN/TURN servers told to clients.
    pub ice_servers: Arc<IceServers>,
    /// Timers and rates of every connection.
    pub connection_limits: Arc<ConnectionLimits>,
    /// Set once shutdown starts: upgrades are refused.
    pub draining: Arc<AtomicBool>,
    /// The node's connection cap.
    pub slots: ConnectionSlots,
    /// The process's CPU and memory use, for load shedding.
    pub load: Arc<LoadGuard>,
    /// CPU share above which upgrades are refused (0 = off).
    pub shed_cpu: f64,
    /// Memory share above which upgrades are refused (0 = off).
    pub shed_memory: f64,
    /// Per-IP upgrade rate and connection cap.
    pub ip_limiter: Arc<IpLimiter>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[TrustedNet]>,
    /// Allowed browser origins; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest accepted WebSocket message.
    pub max_message_bytes: usize,
}
