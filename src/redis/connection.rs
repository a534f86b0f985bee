//! One handle over the three topologies, with a timeout on every call.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};
use tokio::sync::Mutex;

use super::Topology;
use crate::error::StoreError;
use crate::resilience::Breaker;
use crate::telemetry::Metrics;

/// A cheap-to-clone Redis handle; every call is bounded by the configured timeout.
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
    breaker: Option<Arc<Breaker>>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// The current master's connection, re-resolved through Sentinel after a failure.
struct SentinelConn {
    client: Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
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
            breaker: None,
        })
    }

    /// The same connection with another per-call timeout (for blocking reads).
    pub fn with_timeout(&self, timeout: Duration) -> Redis {
        Redis {
            conn: self.conn.clone(),
            timeout,
            metrics: self.metrics.clone(),
            breaker: self.breaker.clone(),
        }
    }

    /// Guards every call with `breaker`: while it is open, calls fail at once.
    pub fn with_breaker(mut self, breaker: Arc<Breaker>) -> Redis {
        self.breaker = Some(breaker);
        self
    }

    /// Records the latency and failures of every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Redis {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Runs a pipeline in one round trip.
    pub async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(pipe.query_async(&mut conn)).await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use).
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if let Some(b) = &self.breaker
            && !b.allow()
        {
            return Err(StoreError(
                "Redis is failing; the circuit breaker is open".into(),
            ));
        }
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, call).await;
        let ok = matches!(result, Ok(Ok(_)));
        if let Some(m) = &self.metrics {
            m.redis_call(started.elapsed(), ok);
        }
        if let Some(b) = &self.breaker {
            if ok {
                b.record_success();
            } else {
                b.record_failure();
            }
        }
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(format!("Redis error: {e}"))),
            Err(_) => Err(StoreError(format!(
                "Redis did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
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
            let client = redis::Client::open(info)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
                .set_response_timeout(None)
                .set_max_delay(Duration::from_secs(2));
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
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
        let conn = client.get_multiplexed_async_connection().await?;
        *current = Some(conn.clone());
        Ok(conn)
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
            Conn::Single(c) => c.req_packed_command(cmd),
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
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
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
