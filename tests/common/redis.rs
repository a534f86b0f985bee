//! Real Redis processes for tests: a standalone server, a Sentinel group and a three-master
//! Cluster, each on free ports in its own directory, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

/// A master, a replica and one Sentinel watching them.
pub struct SentinelGroup {
    /// The initial master.
    pub master: RedisServer,
    /// Its replica.
    pub replica: RedisServer,
    /// The Sentinel process.
    pub sentinel: RedisServer,
    /// Name of the monitored master.
    pub master_name: String,
}

impl SentinelGroup {
    /// Starts the group and waits until replication and Sentinel are up.
    pub async fn start() -> SentinelGroup {
        // Disk-based full sync: with diskless sync and no delay, Redis 7.0 was seen to
        // report the replica online while never streaming writes to it.
        let master = RedisServer::start_with(&["--repl-diskless-sync", "no"]).await;
        let replica_of = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &replica_of]).await;
        let port = replica.port;
        eventually(
            "the replica's link to its master",
            Duration::from_secs(15),
            async || {
                cli(port, &["INFO", "replication"])
                    .await
                    .contains("master_link_status:up")
            },
        )
        .await;

        let sentinel_port = free_port();
        let dir = scratch_dir(sentinel_port);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.display(),
                master.port
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
            port: sentinel_port,
            dir,
            extra: Vec::new(),
            child: Some(child),
        };
        let expected = master.port.to_string();
        eventually(
            "Sentinel to watch the master",
            Duration::from_secs(15),
            async || {
                cli(
                    sentinel_port,
                    &["SENTINEL", "get-master-addr-by-name", "mymaster"],
                )
                .await
                .contains(&expected)
            },
        )
        .await;
        // A failover right away needs Sentinel to know the replica already.
        let replica_port = format!("\n{}\n", replica.port);
        eventually(
            "sentinel to discover the replica",
            Duration::from_secs(15),
            async || {
                cli(sentinel_port, &["SENTINEL", "replicas", "mymaster"])
                    .await
                    .contains(&replica_port)
            },
        )
        .await;
        SentinelGroup {
            master,
            replica,
            sentinel,
            master_name: "mymaster".into(),
        }
    }

    /// `127.0.0.1:port` of the Sentinel.
    pub fn sentinel_addr(&self) -> String {
        self.sentinel.addr()
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

/// Three Redis Cluster masters without replicas.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits for `cluster_state:ok` everywhere.
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
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
}
