//! One handle over the three topologies, with a timeout on every call and, for the
//! store, a circuit breaker per Redis master in front of each call.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value,
};
use tokio::sync::Mutex;

use super::Topology;
use super::nodes::{RedisNodes, node_failed};
use super::slots::SlotMap;
use crate::error::StoreError;
use crate::resilience::{Breaker, BreakerConfig};
use crate::telemetry::Metrics;

/// A cheap-to-clone Redis handle; every call is bounded by the configured timeout.
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
    nodes: Option<Arc<RedisNodes>>,
}

#[derive(Clone)]
enum Conn {
    /// A standalone server and its `host:port`.
    Single(ConnectionManager, Arc<str>),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// The current master's connection, re-resolved through Sentinel after a failure.
struct SentinelConn {
    client: Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    /// The `host:port` of the master last resolved.
    address: std::sync::Mutex<Option<String>>,
}

impl Redis {
    /// Connects to `topology`; `timeout` bounds every later call.
    pub async fn connect(topology: &Topology, timeout: Duration) -> Result<Redis, StoreError> {
        let conn =
            tokio::time::timeout(timeout.max(Duration::from_secs(5)), open(topology, timeout))
                .await
                .map_err(|_| StoreError("connecting to Redis timed out".into()))?
                .map_err(|e| StoreError(format!("cannot connect to Redis: {e}")))?;
        Ok(Redis {
            conn,
            timeout,
            metrics: None,
            nodes: None,
        })
    }

    /// The same connection with another per-call timeout (for blocking reads).
    pub fn with_timeout(&self, timeout: Duration) -> Redis {
        Redis {
            conn: self.conn.clone(),
            timeout,
            metrics: self.metrics.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// Guards every call with a circuit breaker per Redis master (`config` for each):
    /// while the breaker of the master a call goes to is open, the call fails at once,
    /// and calls to other masters go on.
    pub fn with_breakers(mut self, config: BreakerConfig) -> Redis {
        let nodes = match &self.conn {
            Conn::Cluster(_) => RedisNodes::cluster(config, self.metrics.clone()),
            _ => RedisNodes::single(config, self.metrics.clone()),
        };
        let nodes = Arc::new(nodes);
        match &self.conn {
            Conn::Single(_, address) => nodes.set_master(address.to_string()),
            Conn::Sentinel(s) => {
                if let Some(address) = s.address() {
                    nodes.set_master(address);
                }
            }
            Conn::Cluster(_) => refresh_slots(&nodes, &self.conn),
        }
        self.nodes = Some(nodes);
        self
    }

    /// The Redis masters calls go to and their breakers, when breakers guard this handle.
    pub fn nodes(&self) -> Option<Arc<RedisNodes>> {
        self.nodes.clone()
    }

    fn routed(&self) -> Routed {
        Routed {
            conn: self.conn.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// Records the latency and failures of every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Redis {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.routed();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Runs a pipeline in one round trip.
    pub async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.routed();
        self.bounded(pipe.query_async(&mut conn)).await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use).
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.routed();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// Runs a pipeline; a failure also says whether Redis may still have run it (no
    /// answer in time, a connection lost mid-call) or surely did not (the connection was
    /// refused, so the request never left).
    pub async fn pipe_or_unsent<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, (StoreError, bool)> {
        let mut conn = self.routed();
        match self.timed(pipe.query_async(&mut conn)).await {
            Ok(v) => Ok(v),
            Err(failure) => {
                let may_have_run = match &failure {
                    Failure::TimedOut => true,
                    Failure::Redis(e) => !e.is_connection_refusal(),
                };
                Err((self.sentence(failure), may_have_run))
            }
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.timed(call).await.map_err(|f| self.sentence(f))
    }

    async fn timed<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T, Failure> {
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, call).await;
        let ok = matches!(result, Ok(Ok(_)));
        if let Some(m) = &self.metrics {
            m.redis_call(started.elapsed(), ok);
        }
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Redis(e)),
            Err(_) => Err(Failure::TimedOut),
        }
    }

    fn sentence(&self, failure: Failure) -> StoreError {
        match failure {
            Failure::Redis(e) => StoreError(format!("Redis error: {e}")),
            Failure::TimedOut => StoreError(format!(
                "Redis did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}

/// How a call failed.
enum Failure {
    TimedOut,
    Redis(redis::RedisError),
}

/// No Nagle delay: a bus message written while the previous one is unacknowledged
/// would otherwise wait for the delayed ACK (up to 40 ms on Linux) before leaving.
fn tcp() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

async fn open(topology: &Topology, timeout: Duration) -> RedisResult<Conn> {
    match topology {
        Topology::Standalone { url } => {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?
                .set_tcp_settings(tcp());
            let address: Arc<str> = Arc::from(info.addr().to_string());
            let client = redis::Client::open(info)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
                .set_response_timeout(None)
                .set_max_delay(Duration::from_secs(2));
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
                address,
            ))
        }
        Topology::Cluster { seeds } => {
            let client = ClusterClientBuilder::new(seeds.clone())
                .connection_timeout(timeout.max(Duration::from_secs(1)))
                .response_timeout(Duration::from_secs(60))
                .tcp_settings(tcp())
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
        Topology::Sentinel {
            sentinels,
            master,
            password,
        } => {
            let mut info = redis::RedisConnectionInfo::default();
            if let Some(p) = password {
                info = info.set_password(p.clone());
            }
            let node = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(info)
                .set_tcp_settings(tcp());
            let client = SentinelClient::build(
                sentinels.clone(),
                master.clone(),
                Some(node),
                SentinelServerType::Master,
            )?;
            let sentinel = Arc::new(SentinelConn {
                client: Mutex::new(client),
                current: Mutex::new(None),
                address: std::sync::Mutex::new(None),
            });
            sentinel.connection().await?;
            Ok(Conn::Sentinel(sentinel))
        }
    }
}

impl SentinelConn {
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let client = self.client.lock().await.async_get_client().await?;
        *self.address.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(client.get_connection_info().addr().to_string());
        let conn = client.get_multiplexed_async_connection().await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// The `host:port` of the master last resolved.
    fn address(&self) -> Option<String> {
        self.address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the connection after an error that suggests the master moved.
    async fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
                || e.to_string().contains("READONLY"))
        {
            *self.current.lock().await = None;
        }
        result
    }
}

// Delegation so commands, pipelines and scripts run on any topology alike.
impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c, _) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.connection().await?;
                let result = c.req_packed_command(cmd).await;
                s.check(result).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c, _) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.connection().await?;
                let result = c.req_packed_commands(pipeline, offset, count).await;
                s.check(result).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A call's connection with the breakers in front: the call goes to one master, whose
/// breaker decides whether it may and records how it went.
struct Routed {
    conn: Conn,
    nodes: Option<Arc<RedisNodes>>,
}

impl Routed {
    /// Asks the breaker of the master `cmd` goes to; `Err` when it is open.
    fn enter(&self, cmd: Option<&Cmd>) -> RedisResult<Attempt> {
        let Some(nodes) = &self.nodes else {
            return Ok(Attempt::unguarded());
        };
        let node = match cmd {
            Some(cmd) => nodes.node_for(cmd),
            None => None,
        };
        if node.is_none() && cmd.is_some() && nodes.is_cluster() {
            refresh_slots(nodes, &self.conn);
        }
        let Some(node) = node else {
            return Ok(Attempt::unguarded());
        };
        let breaker = nodes.breaker(&node);
        if !breaker.allow() {
            refresh_slots(nodes, &self.conn);
            return Err((
                ErrorKind::Io,
                "this Redis node is failing; its circuit breaker is open",
                node,
            )
                .into());
        }
        Ok(Attempt {
            breaker: Some(breaker),
            nodes: Some(nodes.clone()),
            conn: Some(self.conn.clone()),
        })
    }
}

/// One call through a breaker: a call dropped before it finished (its timeout ran out)
/// counts as a failure of the node.
struct Attempt {
    breaker: Option<Arc<Breaker>>,
    nodes: Option<Arc<RedisNodes>>,
    conn: Option<Conn>,
}

impl Attempt {
    fn unguarded() -> Self {
        Self {
            breaker: None,
            nodes: None,
            conn: None,
        }
    }

    /// Records the outcome; a failing node also gets its place in the slot map re-read
    /// and, under Sentinel, its address updated.
    fn finish<T>(mut self, result: &RedisResult<T>) {
        let (Some(breaker), Some(nodes), Some(conn)) =
            (self.breaker.take(), self.nodes.take(), self.conn.take())
        else {
            return;
        };
        match result {
            Err(e) if node_failed(e) => {
                breaker.record_failure();
                refresh_slots(&nodes, &conn);
            }
            _ => breaker.record_success(),
        }
        if let Conn::Sentinel(s) = &conn
            && let Some(address) = s.address()
        {
            nodes.set_master(address);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(b) = &self.breaker {
            b.record_failure();
        }
    }
}

/// Re-reads the Cluster slot map in the background (at most every half second).
fn refresh_slots(nodes: &Arc<RedisNodes>, conn: &Conn) {
    let Conn::Cluster(cluster) = conn else {
        return;
    };
    if !nodes.claim_refresh() {
        return;
    }
    let (nodes, mut cluster) = (nodes.clone(), cluster.clone());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        nodes.refreshed();
        return;
    };
    runtime.spawn(async move {
        let slots = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            slots.query_async::<Value>(&mut cluster),
        )
        .await;
        match reply {
            Ok(Ok(reply)) => {
                let map = SlotMap::from_reply(reply);
                if !map.masters().is_empty() {
                    nodes.set_slots(map);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "could not read the Cluster slot map"),
            Err(_) => tracing::debug!("reading the Cluster slot map timed out"),
        }
        nodes.refreshed();
    });
}

impl ConnectionLike for Routed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let attempt = self.enter(Some(cmd))?;
            let result = self.conn.req_packed_command(cmd).await;
            attempt.finish(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            // A pipeline goes where its first keyed command goes.
            let first = match &self.nodes {
                Some(nodes) if nodes.is_cluster() => pipeline
                    .cmd_iter()
                    .find(|c| super::slots::first_key(c).is_some()),
                _ => pipeline.cmd_iter().next(),
            };
            let attempt = self.enter(first)?;
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            attempt.finish(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
