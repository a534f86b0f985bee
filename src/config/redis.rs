//! Redis: where it is (standalone, Sentinel or Cluster), the key prefix, the per-call
//! timeout and the circuit breaker in front of it.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, items, refuse};
use crate::bus::HoldLimits;
use crate::redis::Topology;
use crate::resilience::BreakerConfig;

/// Flags of the Redis deployment shared by several nodes.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Redis")]
pub struct RedisSettings {
    /// Redis URL (`redis://` or `rediss://`, credentials allowed); enables multi-node mode.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis address as host:port (the original deployment's setting); like REDIS_URL.
    #[arg(long, env = "REDIS_ADDR")]
    pub redis_addr: Option<String>,

    /// Comma-separated Sentinel addresses (host:port or URLs); the master is found through them.
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,

    /// Name of the master the Sentinels monitor.
    #[arg(long, env = "REDIS_SENTINEL_MASTER", default_value = "mymaster")]
    pub redis_sentinel_master: String,

    /// Password of the Redis master behind Sentinel.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// Comma-separated Redis Cluster seed nodes (host:port or URLs).
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,

    /// Longest wait for any Redis call before it counts as failed.
    #[arg(long, env = "REDIS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "500ms")]
    pub redis_timeout: Duration,

    /// Prefix of every Redis key this deployment writes.
    #[arg(long, env = "KEY_PREFIX", default_value = "sb:")]
    pub key_prefix: String,

    /// Consecutive failed Redis calls that open the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long the breaker stays open before a probe call.
    #[arg(long, env = "BREAKER_OPEN_FOR", value_parser = humantime::parse_duration, default_value = "2s")]
    pub breaker_open_for: Duration,

    /// How long a message for another node is held and retried while Redis fails over
    /// before its sender gets `unavailable`.
    #[arg(long, env = "FAILOVER_HOLD", value_parser = humantime::parse_duration, default_value = "10s")]
    pub failover_hold: Duration,

    /// Messages held per destination node (waiting for Redis or not yet read).
    #[arg(long, env = "HOLD_MAX_MESSAGES", default_value_t = 20_000)]
    pub hold_max_messages: usize,

    /// Bytes held per destination node.
    #[arg(long, env = "HOLD_MAX_BYTES", default_value_t = 64 << 20)]
    pub hold_max_bytes: usize,

    /// How long this node may be without Redis before `/health/ready` turns 503.
    #[arg(long, env = "REDIS_OUTAGE_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub redis_outage_grace: Duration,
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
    /// Holding of messages for other nodes.
    pub hold: HoldLimits,
    /// How long an outage may last before this node reports unready.
    pub outage_grace: Duration,
}

impl RedisSettings {
    /// Resolves and checks the Redis settings; `None` when no Redis is configured.
    pub fn resolve(&self) -> Result<Option<RedisConfig>, ConfigError> {
        let standalone = self
            .redis_url
            .clone()
            .or_else(|| self.redis_addr.as_deref().map(redis_url));
        let chosen = [
            standalone.is_some(),
            self.redis_sentinels.is_some(),
            self.redis_cluster_nodes.is_some(),
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
        } else if let Some(sentinels) = &self.redis_sentinels {
            let sentinels = url_list(sentinels);
            if sentinels.is_empty() {
                return Err(refuse("REDIS_SENTINELS lists no address."));
            }
            Topology::Sentinel {
                sentinels,
                master: self.redis_sentinel_master.clone(),
                password: self.redis_password.clone(),
            }
        } else if let Some(nodes) = &self.redis_cluster_nodes {
            let seeds = url_list(nodes);
            if seeds.is_empty() {
                return Err(refuse("REDIS_CLUSTER_NODES lists no address."));
            }
            Topology::Cluster { seeds }
        } else {
            return Ok(None);
        };
        if self.failover_hold < Duration::from_millis(100) {
            return Err(refuse("FAILOVER_HOLD must be at least 100ms."));
        }
        if self.redis_timeout < Duration::from_millis(10) {
            return Err(refuse("REDIS_TIMEOUT must be at least 10ms."));
        }
        Ok(Some(RedisConfig {
            topology,
            prefix: self.key_prefix.clone(),
            timeout: self.redis_timeout,
            breaker: BreakerConfig {
                failure_threshold: self.breaker_failures.max(1),
                open_for: self.breaker_open_for,
            },
            hold: HoldLimits {
                hold: self.failover_hold,
                max_messages: self.hold_max_messages.max(1),
                max_bytes: self.hold_max_bytes.max(64 << 10),
            },
            outage_grace: self.redis_outage_grace,
        }))
    }
}

/// A URL from `host:port` or a URL.
fn redis_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("redis://{addr}")
    }
}

fn url_list(value: &str) -> Vec<String> {
    items(value).map(redis_url).collect()
}
