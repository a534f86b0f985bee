//! Health per Redis node: one circuit breaker per master (per shard master in Cluster,
//! the current master in Sentinel), so a failing shard fails fast on its own while calls
//! whose keys live on healthy shards go on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::time::Instant;

use super::slots::{SlotMap, first_key, slot_of};
use crate::resilience::{Breaker, BreakerConfig, BreakerState};
use crate::telemetry::Metrics;

/// How often the slot map may be re-read while a shard is failing.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// One Redis node as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// `host:port`.
    pub address: String,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Slot ranges it serves (Cluster only).
    pub slots: Vec<String>,
}

/// Breakers per Redis master, and (in Cluster) which master serves which slot.
pub struct RedisNodes {
    config: BreakerConfig,
    metrics: Option<Arc<Metrics>>,
    breakers: Mutex<BTreeMap<String, Arc<Breaker>>>,
    /// The one master (standalone, Sentinel): the address calls go to.
    master: Mutex<Option<String>>,
    /// Cluster only: the slot map, re-read while a shard fails.
    slots: Option<RwLock<SlotMap>>,
    refreshed: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl RedisNodes {
    /// Nodes of a deployment with one master at a time (standalone or Sentinel).
    pub fn single(config: BreakerConfig, metrics: Option<Arc<Metrics>>) -> Self {
        Self::new(config, metrics, None)
    }

    /// Nodes of a Cluster, routed by slot.
    pub fn cluster(config: BreakerConfig, metrics: Option<Arc<Metrics>>) -> Self {
        Self::new(config, metrics, Some(RwLock::new(SlotMap::default())))
    }

    fn new(
        config: BreakerConfig,
        metrics: Option<Arc<Metrics>>,
        slots: Option<RwLock<SlotMap>>,
    ) -> Self {
        Self {
            config,
            metrics,
            breakers: Mutex::new(BTreeMap::new()),
            master: Mutex::new(None),
            slots,
            refreshed: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        }
    }

    /// True for a Cluster (calls are routed by slot).
    pub fn is_cluster(&self) -> bool {
        self.slots.is_some()
    }

    /// Records the address of the one master calls now go to.
    pub fn set_master(&self, address: String) {
        *self.master.lock().unwrap_or_else(|p| p.into_inner()) = Some(address);
    }

    /// The node `cmd` goes to, when known: in Cluster the master of its key's slot
    /// (`None` for keyless commands or before the slot map is read).
    pub fn node_for(&self, cmd: &redis::Cmd) -> Option<String> {
        match &self.slots {
            None => self
                .master
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            Some(map) => {
                let slot = slot_of(first_key(cmd)?);
                let map = map.read().unwrap_or_else(|p| p.into_inner());
                map.master_of(slot).map(str::to_owned)
            }
        }
    }

    /// The breaker of `address`, created closed on first use.
    pub fn breaker(&self, address: &str) -> Arc<Breaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = breakers.get(address) {
            return b.clone();
        }
        let breaker = Arc::new(Breaker::new(self.config));
        breakers.insert(address.to_owned(), breaker.clone());
        watch(address.to_owned(), &breaker, self.metrics.clone());
        breaker
    }

    /// Replaces the slot map (Cluster).
    pub fn set_slots(&self, map: SlotMap) {
        if let Some(slots) = &self.slots {
            *slots.write().unwrap_or_else(|p| p.into_inner()) = map;
        }
        *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Claims the right to re-read the slot map: true at most every [`REFRESH_EVERY`]
    /// and never twice at once; call [`RedisNodes::refreshed`] when done.
    pub fn claim_refresh(&self) -> bool {
        if self.slots.is_none() {
            return false;
        }
        let recent = self
            .refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < REFRESH_EVERY);
        !recent && !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Ends a refresh claimed with [`RedisNodes::claim_refresh`], whatever its outcome.
    pub fn refreshed(&self) {
        *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.refreshing.store(false, Ordering::Release);
    }

    /// Every master calls go to now, with its breaker's state.
    pub fn health(&self) -> Vec<NodeHealth> {
        let state = |address: &str| {
            self.breakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(address)
                .map_or(BreakerState::Closed, |b| b.state())
        };
        match &self.slots {
            None => self
                .master
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|address| NodeHealth {
                    breaker: state(address),
                    address: address.clone(),
                    slots: Vec::new(),
                })
                .collect(),
            Some(map) => map
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .masters()
                .into_iter()
                .map(|(address, slots)| NodeHealth {
                    breaker: state(&address),
                    address,
                    slots,
                })
                .collect(),
        }
    }

    /// The worst state among the masters calls go to: open if any is open.
    pub fn worst(&self) -> BreakerState {
        let rank = |s: BreakerState| match s {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.health()
            .into_iter()
            .map(|n| n.breaker)
            .max_by_key(|s| rank(*s))
            .unwrap_or(BreakerState::Closed)
    }
}

/// True when `error` says the node itself is failing (unreachable, timing out, loading,
/// failing over), not that the command was wrong.
pub fn node_failed(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// Keeps a breaker's state in the metrics and logs its changes.
fn watch(address: String, breaker: &Breaker, metrics: Option<Arc<Metrics>>) {
    let mut changes = breaker.subscribe();
    if let Some(m) = &metrics {
        m.breaker(&address, BreakerState::Closed.as_gauge());
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        while changes.changed().await.is_ok() {
            let state = *changes.borrow_and_update();
            if let Some(m) = &metrics {
                m.breaker(&address, state.as_gauge());
            }
            tracing::warn!(
                node = %address,
                state = state.as_str(),
                "Redis circuit breaker changed state"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_master_gets_every_call_and_its_own_breaker() {
        let nodes = RedisNodes::single(BreakerConfig::default(), None);
        assert_eq!(nodes.node_for(redis::cmd("GET").arg("k")), None);
        nodes.set_master("10.0.0.1:6379".into());
        assert_eq!(
            nodes.node_for(&redis::cmd("TIME")).as_deref(),
            Some("10.0.0.1:6379")
        );
        let breaker = nodes.breaker("10.0.0.1:6379");
        for _ in 0..BreakerConfig::default().failure_threshold {
            breaker.record_failure();
        }
        assert_eq!(nodes.worst(), BreakerState::Open);
        // After a Sentinel failover calls go to the new master, whose breaker is closed.
        nodes.set_master("10.0.0.2:6379".into());
        assert_eq!(nodes.worst(), BreakerState::Closed);
        assert!(nodes.breaker("10.0.0.2:6379").allow());
    }

    #[test]
    fn a_cluster_routes_each_key_to_its_shard_master() {
        let nodes = RedisNodes::cluster(BreakerConfig::default(), None);
        assert_eq!(nodes.node_for(redis::cmd("GET").arg("k")), None);
        let node = |host: &str| {
            redis::Value::Array(vec![
                redis::Value::BulkString(host.into()),
                redis::Value::Int(7000),
            ])
        };
        let range = |a: i64, b: i64, host: &str| {
            redis::Value::Array(vec![redis::Value::Int(a), redis::Value::Int(b), node(host)])
        };
        nodes.set_slots(SlotMap::from_reply(redis::Value::Array(vec![
            range(0, 8191, "a"),
            range(8192, 16383, "b"),
        ])));
        // "foo" hashes to 12182, "{user1000}" to a slot below 8192.
        assert_eq!(
            nodes.node_for(redis::cmd("GET").arg("foo")).as_deref(),
            Some("b:7000")
        );
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(
            nodes.node_for(redis::cmd("GET").arg("bar")).as_deref(),
            Some("a:7000")
        );
        assert_eq!(nodes.node_for(&redis::cmd("TIME")), None);
        let b = nodes.breaker("b:7000");
        for _ in 0..BreakerConfig::default().failure_threshold {
            b.record_failure();
        }
        let health = nodes.health();
        assert_eq!(health.len(), 2);
        assert_eq!(health[0].breaker, BreakerState::Closed);
        assert_eq!(health[1].breaker, BreakerState::Open);
        assert!(
            nodes.breaker("a:7000").allow(),
            "a healthy shard keeps serving"
        );
    }

    #[test]
    fn node_failures_are_told_from_command_errors() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(node_failed(&io));
        let wrong: RedisError = (
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        )
            .into();
        assert!(!node_failed(&wrong));
        let loading: RedisError =
            (ErrorKind::Server(ServerErrorKind::BusyLoading), "LOADING").into();
        assert!(node_failed(&loading));
    }
}
