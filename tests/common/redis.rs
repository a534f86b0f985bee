//! Real Redis processes for tests: a standalone server, a Sentinel group (one Sentinel, or a
//! set of three with a quorum) and a Cluster (three masters, optionally each with a replica),
//! each on free ports in its own directory, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::eventually;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A free TCP port whose +10000 cluster-bus port is free too.
pub fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn scratch_dir(port: u16) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-redis-{}-{port}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `redis-cli -p port args…` and returns its output.
pub async fn cli(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .expect("redis-cli runs (scripts/test.sh installs redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One redis-server process.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server without persistence.
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// A server with extra `--option value` arguments.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir: scratch_dir(port),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        let log = self.dir.join("redis.log");
        eventually(
            format!("redis-server on {port} to start"),
            Duration::from_secs(10),
            async || {
                if cli(port, &["PING"]).await.trim() == "PONG" {
                    return Ok(());
                }
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                Err(format!("no PONG; its log:\n{log}"))
            },
        )
        .await;
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server hangs without closing connections.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts again on the same port (empty: nothing is persisted).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs redis-cli against this server.
    pub async fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, a replica and the Sentinels watching them.
pub struct SentinelGroup {
    /// The initial master.
    pub master: RedisServer,
    /// Its replica.
    pub replica: RedisServer,
    /// The first Sentinel process.
    pub sentinel: RedisServer,
    /// The other Sentinels of a set (empty for a group of one).
    pub more_sentinels: Vec<RedisServer>,
    /// Name of the monitored master.
    pub master_name: String,
}

impl SentinelGroup {
    /// One Sentinel (quorum 1): starts the group and waits until replication and Sentinel
    /// are up.
    pub async fn start() -> SentinelGroup {
        Self::start_set(1, 1).await
    }

    /// `count` Sentinels agreeing by `quorum`, as production runs them (three, quorum two):
    /// a failover needs them to agree, which is what makes its timing realistic.
    pub async fn start_set(count: usize, quorum: usize) -> SentinelGroup {
        // Disk-based full sync: with diskless sync and no delay, Redis 7.0 was seen to
        // report the replica online while never streaming writes to it.
        let master = RedisServer::start_with(&["--repl-diskless-sync", "no"]).await;
        let replica_of = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &replica_of]).await;
        wait_replica_link(replica.port).await;

        let mut sentinels = Vec::new();
        for _ in 0..count {
            sentinels.push(start_sentinel(master.port, quorum).await);
        }
        let replica_port = format!("\n{}\n", replica.port);
        let others = format!("num-other-sentinels\n{}\n", count - 1);
        for sentinel in &sentinels {
            let port = sentinel.port;
            // A failover right away needs each Sentinel to know the replica already, and
            // (in a set) the other Sentinels, whose votes it needs.
            eventually(
                format!("Sentinel {port} to discover the replica and its peers"),
                Duration::from_secs(20),
                async || {
                    let replicas = cli(port, &["SENTINEL", "replicas", "mymaster"]).await;
                    let master = cli(port, &["SENTINEL", "master", "mymaster"]).await;
                    replicas.contains(&replica_port) && master.contains(&others)
                },
            )
            .await;
        }
        let sentinel = sentinels.remove(0);
        SentinelGroup {
            master,
            replica,
            sentinel,
            more_sentinels: sentinels,
            master_name: "mymaster".into(),
        }
    }

    /// `127.0.0.1:port` of the first Sentinel.
    pub fn sentinel_addr(&self) -> String {
        self.sentinel.addr()
    }

    /// Every Sentinel's `127.0.0.1:port`, comma-separated (REDIS_SENTINELS).
    pub fn sentinel_addrs(&self) -> String {
        std::iter::once(&self.sentinel)
            .chain(&self.more_sentinels)
            .map(RedisServer::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills the master and waits until Sentinel promoted the replica; returns its port.
    pub async fn kill_master_and_wait_failover(&mut self) -> u16 {
        self.master.kill();
        let sentinel = self.sentinel.port;
        let replica = self.replica.port.to_string();
        eventually(
            "Sentinel to fail over to the replica",
            Duration::from_secs(30),
            async || {
                cli(
                    sentinel,
                    &["SENTINEL", "get-master-addr-by-name", "mymaster"],
                )
                .await
                .contains(&replica)
            },
        )
        .await;
        let port = self.replica.port;
        eventually(
            "the replica to take the master role",
            Duration::from_secs(15),
            async || cli(port, &["ROLE"]).await.starts_with("master"),
        )
        .await;
        port
    }
}

/// Waits until the replica on `port` has a live link to its master.
async fn wait_replica_link(port: u16) {
    eventually(
        format!("the replica on {port} to link to its master"),
        Duration::from_secs(15),
        async || {
            cli(port, &["INFO", "replication"])
                .await
                .contains("master_link_status:up")
        },
    )
    .await;
}

/// One Sentinel process monitoring the master on `master_port` as `mymaster`.
async fn start_sentinel(master_port: u16, quorum: usize) -> RedisServer {
    let port = free_port();
    let dir = scratch_dir(port);
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} {quorum}\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n\
             sentinel parallel-syncs mymaster 1\n",
            dir.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("sentinel.log")).unwrap();
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("redis-server --sentinel runs");
    let sentinel = RedisServer {
        port,
        dir,
        extra: Vec::new(),
        child: Some(child),
    };
    let expected = master_port.to_string();
    eventually(
        format!("Sentinel {port} to watch the master"),
        Duration::from_secs(15),
        async || {
            cli(port, &["SENTINEL", "get-master-addr-by-name", "mymaster"])
                .await
                .contains(&expected)
        },
    )
    .await;
    sentinel
}

/// A Redis Cluster: three masters, each with one replica or none.
pub struct RedisCluster {
    /// Every node, masters and replicas as `redis-cli --cluster create` assigned them.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters without replicas; waits for `cluster_state:ok` everywhere.
    pub async fn start() -> RedisCluster {
        Self::start_with_replicas(0).await
    }

    /// Three masters with `replicas` replicas each (`cluster-node-timeout` 2 s, so a dead
    /// master's replica takes over within a few seconds); waits for `cluster_state:ok`
    /// everywhere and every replica's link to its master.
    pub async fn start_with_replicas(replicas: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        // Without replicas a dead master's slots stay unserved: the other masters keep
        // serving theirs (as SCALING.md advises) instead of refusing every key with
        // CLUSTERDOWN once they mark it failed.
        let coverage = if replicas == 0 { "no" } else { "yes" };
        for _ in 0..3 * (1 + replicas) {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    coverage,
                    // As for Sentinel: disk-based full sync streams reliably on Redis 7.0.
                    "--repl-diskless-sync",
                    "no",
                ])
                .await,
            );
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas".into(), replicas.to_string()]);
        args.push("--cluster-yes".into());
        let out = tokio::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for node in &nodes {
            let port = node.port;
            eventually(
                format!("cluster_state:ok on node {port}"),
                Duration::from_secs(20),
                async || {
                    cli(port, &["CLUSTER", "INFO"])
                        .await
                        .contains("cluster_state:ok")
                },
            )
            .await;
            // A replica that never synced is not allowed to take over.
            if cli(port, &["ROLE"]).await.starts_with("slave") {
                wait_replica_link(port).await;
            }
        }
        RedisCluster { nodes }
    }

    /// Seed URLs.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs the same redis-cli command on every node.
    pub async fn cli_all(&self, args: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(node.cli(args).await);
        }
        out
    }

    /// A node still running, to ask about the cluster.
    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a node still runs")
            .port
    }

    /// The port of the live master serving `key`'s slot, as `port` sees the cluster.
    async fn owner_seen_by(port: u16, slot: u16) -> Option<u16> {
        let nodes = cli(port, &["CLUSTER", "NODES"]).await;
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(lo)), Some(Ok(hi))) => (lo..=hi).contains(&slot),
                    (Some(Ok(only)), None) => only == slot,
                    _ => false,
                }
            });
            let address = fields.get(1)?.split('@').next()?;
            serves.then(|| address.rsplit(':').next()?.parse().ok())?
        })
    }

    /// The slot of `key`.
    pub async fn slot_of(&self, key: &str) -> u16 {
        let slot = cli(self.live_port(), &["CLUSTER", "KEYSLOT", key]).await;
        slot.trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The port of the master currently serving `key`.
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key).await;
        Self::owner_seen_by(self.live_port(), slot)
            .await
            .expect("a live master serves every slot")
    }

    /// SIGKILLs the master serving `key`, waits until a replica took its slots over and
    /// every surviving node reports `cluster_state:ok`; returns the new master's port and
    /// how long the failover took from the kill.
    pub async fn kill_master_of_and_wait_failover(&mut self, key: &str) -> (u16, Duration) {
        let slot = self.slot_of(key).await;
        let old = self.master_of(key).await;
        let killed = Instant::now();
        self.nodes
            .iter_mut()
            .find(|n| n.port == old)
            .expect("the master is one of the nodes")
            .kill();
        let survivors: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        let mut promoted = 0;
        for port in survivors {
            promoted = eventually(
                format!("node {port} to see slot {slot} served by a promoted replica of {old}"),
                Duration::from_secs(30),
                async || {
                    let ok = cli(port, &["CLUSTER", "INFO"])
                        .await
                        .contains("cluster_state:ok");
                    let owner = Self::owner_seen_by(port, slot).await;
                    match owner {
                        Some(owner) if ok && owner != old => Ok(owner),
                        _ => Err(format!("owner {owner:?}, state ok: {ok}")),
                    }
                },
            )
            .await;
        }
        (promoted, killed.elapsed())
    }
}
