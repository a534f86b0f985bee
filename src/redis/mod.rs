//! Redis access shared by the store and the bus: topology (standalone, Sentinel, Cluster),
//! per-call timeouts, a circuit breaker per Redis master, and key names.
//!
//! The client is `redis` (redis-rs): the most used Rust client, maintained, with an async
//! connection manager that reconnects by itself, Cluster routing with MOVED/ASK handling,
//! Sentinel master discovery, streams and Lua scripts — everything this needs in one crate.

mod connection;
mod keys;
mod nodes;
mod slots;

pub use connection::Redis;
pub use keys::Keys;
pub use nodes::{NodeHealth, RedisNodes};

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a proxy): `redis://` or `rediss://` URL with optional credentials.
    Standalone {
        /// Connection URL.
        url: String,
    },
    /// A master found through Sentinel; reconnects follow a failover.
    Sentinel {
        /// Sentinel addresses as URLs.
        sentinels: Vec<String>,
        /// Monitored master name.
        master: String,
        /// Password for the master (and replicas), if any.
        password: Option<String>,
    },
    /// Redis Cluster, discovered from seed nodes.
    Cluster {
        /// Seed node URLs.
        seeds: Vec<String>,
    },
}

impl Topology {
    /// True where writes have replicas that can take over (Sentinel, Cluster).
    pub fn replicated(&self) -> bool {
        !matches!(self, Topology::Standalone { .. })
    }
}
