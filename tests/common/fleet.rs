//! Three `switchboard serve` processes sharing one Redis deployment, as an operator runs
//! them, and a watch on their readiness: a load balancer removes a node the moment its
//! `/health/ready` fails, so every failed sample is an outage of that node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SECRET;
use super::process::Running;

/// Heartbeat of the fleet's nodes: short, so node loss and recovery show within seconds.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a dropped session may be resumed: far longer than any partition of a test.
pub const RESUME_GRACE: Duration = Duration::from_secs(30);
/// How often readiness is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A readiness answer slower than this counts as a failed sample (a balancer's probe
/// timeout).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How one node reaches Redis.
#[derive(Debug, Clone)]
pub enum RedisAccess {
    /// A standalone server (or a proxy in front of it): REDIS_URL.
    Url(String),
    /// Sentinels (comma-separated `host:port`) and the master name.
    Sentinel {
        /// REDIS_SENTINELS.
        sentinels: String,
        /// REDIS_SENTINEL_MASTER.
        master: String,
    },
    /// Cluster seed URLs, comma-separated: REDIS_CLUSTER_NODES.
    Cluster(String),
}

impl RedisAccess {
    fn vars(&self) -> Vec<(&str, &str)> {
        match self {
            RedisAccess::Url(url) => vec![("REDIS_URL", url)],
            RedisAccess::Sentinel { sentinels, master } => vec![
                ("REDIS_SENTINELS", sentinels),
                ("REDIS_SENTINEL_MASTER", master),
            ],
            RedisAccess::Cluster(seeds) => vec![("REDIS_CLUSTER_NODES", seeds)],
        }
    }
}

/// One running node.
pub struct FleetNode {
    /// Its NODE_ID.
    pub id: String,
    /// `127.0.0.1:port` of its signaling and health listener.
    pub addr: String,
    /// The child process.
    pub process: Running,
}

/// Three (or more) nodes on one Redis deployment under one key prefix.
pub struct Fleet {
    /// The nodes, in the order of their `RedisAccess`.
    pub nodes: Vec<FleetNode>,
    /// KEY_PREFIX shared by the nodes.
    pub prefix: String,
}

impl Fleet {
    /// Starts one node per entry of `access` (each node may reach Redis its own way, e.g.
    /// through a proxy), with a shared secret, the short [`HEARTBEAT`] and `extra` settings.
    /// The nodes start in parallel, off the runtime, so a proxy in this process keeps
    /// serving them meanwhile.
    pub async fn start(access: &[RedisAccess], extra: &[(&str, &str)]) -> Fleet {
        let prefix = super::unique_prefix();
        let heartbeat = humantime::format_duration(HEARTBEAT).to_string();
        let grace = humantime::format_duration(RESUME_GRACE).to_string();
        let mut starting = Vec::new();
        for (i, access) in access.iter().enumerate() {
            let id = format!("node-{i}");
            let vars: Vec<(String, String)> = [
                ("AUTH_SECRET", SECRET),
                ("NODE_ID", &id),
                ("KEY_PREFIX", &prefix),
                ("HEARTBEAT_INTERVAL", &heartbeat),
                ("RESUME_GRACE", &grace),
                // Every test client comes from 127.0.0.1 and the machine is shared:
                // neither per-IP limits nor load shedding may refuse the fleet's clients.
                ("RATE_PER_IP_PER_MINUTE", "0"),
                ("SHED_CPU_PERCENT", "0"),
                ("SHED_MEMORY_PERCENT", "0"),
                ("MESSAGE_RATE", "1000"),
                ("MESSAGE_BURST", "1000"),
            ]
            .iter()
            .chain(&access.vars())
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            // A later entry wins (`extra` over the defaults), as `Command::env` does.
            .collect();
            starting.push(tokio::task::spawn_blocking(move || {
                let borrowed: Vec<(&str, &str)> =
                    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (process, addr) = Running::start(&borrowed);
                FleetNode { id, addr, process }
            }));
        }
        let mut nodes = Vec::new();
        for node in starting {
            nodes.push(node.await.expect("the node starts"));
        }
        Fleet { nodes, prefix }
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Starts sampling every node's `/health/ready` until [`ReadinessWatch::stop`].
    pub fn watch_readiness(&self) -> ReadinessWatch {
        let started = Instant::now();
        let outages = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap();
        let probes = self
            .nodes
            .iter()
            .map(|node| {
                tokio::spawn(probe(
                    http.clone(),
                    node.id.clone(),
                    node.addr.clone(),
                    started,
                    outages.clone(),
                ))
            })
            .collect();
        ReadinessWatch {
            started,
            probes,
            outages,
        }
    }
}

/// A span of time during which one node did not answer `/health/ready` with 200.
#[derive(Debug, Clone)]
pub struct Unready {
    /// The node's id.
    pub node: String,
    /// What it answered first (status and body, or the transport error).
    pub answer: String,
    /// When it started, from the start of the watch.
    pub from: Duration,
    /// How long it lasted (until a 200 or the end of the watch).
    pub lasted: Duration,
    /// Whether it was still unready when the watch stopped.
    pub open: bool,
}

impl std::fmt::Display for Unready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} unready for {:.1} s{} from {:.1} s into the run ({})",
            self.node,
            self.lasted.as_secs_f64(),
            if self.open { " (still at the end)" } else { "" },
            self.from.as_secs_f64(),
            self.answer
        )
    }
}

/// Readiness samples of a fleet, running in the background.
pub struct ReadinessWatch {
    started: Instant,
    probes: Vec<JoinHandle<()>>,
    outages: Arc<Mutex<Vec<Unready>>>,
}

impl ReadinessWatch {
    /// Stops sampling and returns every unready span, in the order they started.
    pub fn stop(self) -> Vec<Unready> {
        for probe in &self.probes {
            probe.abort();
        }
        let end = self.started.elapsed();
        let mut outages = std::mem::take(&mut *self.outages.lock().unwrap());
        for outage in outages.iter_mut().filter(|o| o.open) {
            outage.lasted = end.saturating_sub(outage.from);
        }
        outages.sort_by_key(|o| o.from);
        outages
    }
}

async fn probe(
    http: reqwest::Client,
    node: String,
    addr: String,
    started: Instant,
    outages: Arc<Mutex<Vec<Unready>>>,
) {
    let url = format!("http://{addr}/health/ready");
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Index of this node's open span in `outages`.
    let mut open: Option<usize> = None;
    loop {
        tick.tick().await;
        let asked = started.elapsed();
        let answer = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!(
                "{} {}",
                r.status().as_u16(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Some(format!("no answer: {e}")),
        };
        let mut outages = outages.lock().unwrap();
        match (answer, open) {
            (Some(answer), None) => {
                open = Some(outages.len());
                outages.push(Unready {
                    node: node.clone(),
                    answer,
                    from: asked,
                    lasted: Duration::ZERO,
                    open: true,
                });
            }
            (None, Some(i)) => {
                let outage = &mut outages[i];
                outage.lasted = asked.saturating_sub(outage.from);
                outage.open = false;
                open = None;
            }
            _ => {}
        }
    }
}
