//! Overload protections and sizes: connection caps, per-IP and per-connection rates, load
//! shedding, message size, room capacity and the outbound queue.

use clap::Args;

use super::{ConfigError, items, refuse};
use crate::resilience::TrustedNet;

/// Flags of the overload protections and sizes.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsSettings {
    /// Most WebSocket connections this node accepts; further upgrades get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most concurrent WebSocket connections per client IP (0 = no cap).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Most connections not yet upgraded to a WebSocket per node; beyond it the oldest
    /// pending connection is closed to make room.
    #[arg(long, env = "MAX_PENDING_CONNECTIONS", default_value_t = 1_000)]
    pub max_pending_connections: usize,

    /// Most connections not yet upgraded per client IP (0 = no cap; TRUSTED_PROXIES are
    /// exempt); beyond it that IP's oldest pending connection is closed.
    #[arg(long, env = "MAX_PENDING_PER_IP", default_value_t = 64)]
    pub max_pending_per_ip: usize,

    /// Upgrades and token requests allowed per client IP per minute (0 = no limit).
    #[arg(long, env = "RATE_PER_IP_PER_MINUTE", default_value_t = 300)]
    pub rate_per_ip_per_minute: u32,

    /// Server API requests per caller IP per minute (0 = no limit).
    #[arg(long, env = "API_RATE_PER_MINUTE", default_value_t = 1200)]
    pub api_rate_per_minute: u32,

    /// Comma-separated proxies (IPs or CIDRs) whose X-Forwarded-For is believed.
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,

    /// Refuse upgrades while the process uses more than this share of its CPUs (0 = off).
    #[arg(long, env = "SHED_CPU_PERCENT", default_value_t = 90.0)]
    pub shed_cpu_percent: f64,

    /// Refuse upgrades while resident memory is above this share of the limit (0 = off).
    #[arg(long, env = "SHED_MEMORY_PERCENT", default_value_t = 90.0)]
    pub shed_memory_percent: f64,

    /// Messages per second one connection may send, sustained.
    #[arg(long, env = "MESSAGE_RATE", default_value_t = 50.0)]
    pub message_rate: f64,

    /// Messages one connection may send at once (an ICE trickle burst).
    #[arg(long, env = "MESSAGE_BURST", default_value_t = 200.0)]
    pub message_burst: f64,

    /// Largest accepted WebSocket message, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Most peers one room may hold.
    #[arg(long, env = "MAX_ROOM_PEERS", default_value_t = 50)]
    pub max_room_peers: usize,

    /// Largest participant metadata (a JSON object, set by `update` or the server API), in bytes.
    #[arg(long, env = "MAX_METADATA_BYTES", default_value_t = 4096)]
    pub max_metadata_bytes: usize,

    /// Messages that may wait for one slow client before it is closed with 4003.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,
}

/// Overload protections at the upgrade and per connection, and the sizes that bound a
/// connection's and a room's memory.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Most connections per node.
    pub max_connections: usize,
    /// Most connections per client IP (0 = no cap).
    pub max_connections_per_ip: usize,
    /// Most connections not yet upgraded, per node.
    pub max_pending: usize,
    /// Most connections not yet upgraded, per client IP (0 = no cap).
    pub max_pending_per_ip: usize,
    /// Upgrades and token requests per IP per minute (0 = no limit).
    pub rate_per_ip_per_minute: u32,
    /// Server API requests per caller IP per minute (0 = no limit).
    pub api_rate_per_minute: u32,
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
    /// Largest accepted WebSocket message.
    pub max_message_bytes: usize,
    /// Room capacity.
    pub max_room_peers: usize,
    /// Largest participant metadata, in bytes.
    pub max_metadata_bytes: usize,
    /// Per-connection outbound queue length.
    pub outbound_queue: usize,
}

impl LimitsSettings {
    /// Resolves and checks the limits.
    pub fn resolve(&self) -> Result<LimitsConfig, ConfigError> {
        if self.max_room_peers == 0 {
            return Err(refuse("MAX_ROOM_PEERS must be at least 1."));
        }
        if self.max_message_bytes < 1024 {
            return Err(refuse("MAX_MESSAGE_BYTES must be at least 1024."));
        }
        if self.max_metadata_bytes < 2 {
            return Err(refuse(
                "MAX_METADATA_BYTES must be at least 2 (the empty object {}).",
            ));
        }
        if self.outbound_queue == 0 {
            return Err(refuse("OUTBOUND_QUEUE must be at least 1."));
        }
        let trusted_proxies = items(self.trusted_proxies.as_deref().unwrap_or_default())
            .map(|p| {
                p.parse::<TrustedNet>()
                    .map_err(|e| refuse(format!("TRUSTED_PROXIES: {e}.")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.max_connections == 0 {
            return Err(refuse("MAX_CONNECTIONS must be at least 1."));
        }
        if self.max_pending_connections == 0 {
            return Err(refuse(
                "MAX_PENDING_CONNECTIONS must be at least 1 (every client is pending until its upgrade).",
            ));
        }
        for (name, v) in [
            ("SHED_CPU_PERCENT", self.shed_cpu_percent),
            ("SHED_MEMORY_PERCENT", self.shed_memory_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(refuse(format!("{name} must be between 0 (off) and 100.")));
            }
        }
        if self.message_rate <= 0.0 || self.message_burst < 1.0 {
            return Err(refuse(
                "MESSAGE_RATE must be above 0 and MESSAGE_BURST at least 1.",
            ));
        }
        Ok(LimitsConfig {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_pending: self.max_pending_connections,
            max_pending_per_ip: self.max_pending_per_ip,
            rate_per_ip_per_minute: self.rate_per_ip_per_minute,
            api_rate_per_minute: self.api_rate_per_minute,
            trusted_proxies,
            shed_cpu: self.shed_cpu_percent / 100.0,
            shed_memory: self.shed_memory_percent / 100.0,
            message_rate: self.message_rate,
            message_burst: self.message_burst,
            max_message_bytes: self.max_message_bytes,
            max_room_peers: self.max_room_peers,
            // A peer_updated (and a joined with everyone's metadata) must fit in a message.
            max_metadata_bytes: self.max_metadata_bytes.min(self.max_message_bytes / 2),
            outbound_queue: self.outbound_queue,
        })
    }
}
