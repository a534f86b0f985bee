//! `soak`: hostile clients of every kind next to honest pairs, for a while, against a
//! node it starts with production settings (or one it is pointed at). It reports the
//! server's memory per hostile connection, the honest pairs' latency from each message's
//! intended send time, and what the server did to each kind of hostile client.
//!
//! The run: honest pairs connect and start their open loop; after one stagger period of
//! honest traffic alone (the memory baseline) each hostile kind starts in turn, one
//! stagger period apart, and every client stays until the end of the run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use super::client::Target;
use super::hostile::{self, Attack, Kind, Outcome};
use super::node::{self, Node};
use super::relay;
use super::report::{HostileFigures, Report, SoakFigures, SoakMemory, Spread};
use super::{BenchArgs, BenchError, MessageKind, RelayArgs, SoakArgs, Stamp, process};

/// How often the server's memory is sampled for its peak.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long hostile clients get to report once told to stop (a handshake in progress
/// ends within its own 10 s timeout).
const WIND_DOWN: Duration = Duration::from_secs(15);
/// Honest connections per loopback source address: the server's default per-IP rate
/// is 300 upgrades a minute.
const HONEST_PER_SOURCE: usize = 200;

/// Runs the scenario.
pub async fn run(args: &BenchArgs, soak: &SoakArgs) -> Result<Report, BenchError> {
    check(soak)?;
    let kinds: Vec<Kind> = if soak.kinds.is_empty() {
        Kind::ALL.to_vec()
    } else {
        Kind::ALL
            .into_iter()
            .filter(|k| soak.kinds.contains(k))
            .collect()
    };
    let fd_limit = switchboard::fd_limit::raise();
    let hostile_fds: usize = kinds.iter().map(|k| k.connections() * soak.hostile).sum();
    if (hostile_fds + 2 * soak.pairs + 64) as u64 > fd_limit {
        return Err(BenchError::new(format!(
            "{hostile_fds} hostile and {} honest connections need more open files than this \
             process may have ({fd_limit}); lower --hostile or --pairs",
            2 * soak.pairs
        )));
    }
    let mut args = args.clone();
    let (mut node, server) = if soak.attach {
        (None, "attached".to_string())
    } else {
        let (node, described) = start_node(&mut args, soak)?;
        (Some(node), described)
    };
    let mut target = Target::new(&args)?;
    let addr = target.addr(0);
    if args.sources.is_empty() && addr.ip().is_loopback() && addr.is_ipv4() {
        // Honest clients come from many addresses in life; here from enough to stay
        // under the per-IP upgrade rate.
        let count = (2 * soak.pairs).div_ceil(HONEST_PER_SOURCE).clamp(1, 250);
        args.sources = (1..=count)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
            .collect();
        target = Target::new(&args)?;
    }
    let target = Arc::new(target);
    let pids = target.server_pids.clone();
    let start_rss = rss(&pids);

    let relay_args = RelayArgs {
        pairs: soak.pairs,
        message: MessageKind::Offer,
        sdp_bytes: soak.sdp_bytes,
        candidate_bytes: 200,
        rate: Some(soak.rate),
        sweep: false,
        max_rate: None,
        sweep_factor: 1.25,
        p99_bound: Duration::from_millis(10),
        duration: soak.duration,
        max_messages: u64::MAX,
        drain: Duration::from_secs(2),
        latency_from: Stamp::Intended,
    };
    let pairs = relay::set_up(&target, &relay_args, false).await?;
    let stagger = (soak.duration / (3 * (kinds.len() as u32 + 1))).max(Duration::from_millis(200));
    let run = format!("{:x}", std::process::id());
    let hostile = Hostile {
        kinds: &kinds,
        soak,
        addr,
        target: &target,
        pids: &pids,
        stagger,
        run,
        secret: args.secret.clone(),
        api_key: args.api_key.clone(),
    };
    let honest = relay::open_loop(pairs, soak.rate, Stamp::Intended, &relay_args, &pids);
    let (honest, hostile) = tokio::join!(honest, hostile.run());
    let (honest_run, pairs) = honest?;
    drop(pairs);
    sleep(soak.settle).await;
    let after_rss = rss(&pids);

    let connections: usize = hostile
        .figures
        .iter()
        .map(|h| h.connected * h.connections_per_client)
        .sum();
    let memory = match (start_rss, hostile.baseline, hostile.end, after_rss) {
        (Some(start), Some(baseline), Some(end), Some(after)) => {
            let peak = hostile.peak.max(end);
            Some(SoakMemory {
                start,
                baseline,
                peak,
                end,
                after,
                settle_s: soak.settle.as_secs_f64(),
                hostile_connections: connections,
                peak_per_hostile_connection: (connections > 0)
                    .then(|| (peak as f64 - baseline as f64) / connections as f64),
            })
        }
        _ => None,
    };
    let server = match node.as_mut().and_then(Node::exited) {
        Some(status) => format!("{server}; the node exited during the run: {status}"),
        None => server,
    };
    let first_error = honest_run.first_error.clone();
    Ok(Report {
        scenario: "soak",
        mode: "open-loop",
        label: format!(
            "{} hostile clients of each of {} kinds next to {} honest pairs at {:.0} messages/s",
            soak.hostile,
            kinds.len(),
            soak.pairs,
            soak.rate
        ),
        runs: vec![honest_run],
        max_sustained_rate: None,
        latency_from: Some(Stamp::Intended),
        idle: None,
        storm: None,
        soak: Some(SoakFigures {
            duration_s: soak.duration.as_secs_f64(),
            pairs: soak.pairs,
            rate: soak.rate,
            stagger_s: stagger.as_secs_f64(),
            hostile: hostile.figures,
            memory,
            server,
        }),
        first_error,
    })
}

/// Refuses arguments that cannot make a run.
fn check(soak: &SoakArgs) -> Result<(), BenchError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if soak.pairs == 0 || soak.duration.is_zero() {
        return Err(BenchError::new(
            "--pairs must be at least 1 and --duration above 0",
        ));
    }
    if !positive(soak.rate) || !positive(soak.flood_rate) || !positive(soak.feed_rate) {
        return Err(BenchError::new(
            "--rate, --flood-rate and --feed-rate must be above 0",
        ));
    }
    Ok(())
}

/// The server's memory now, if it can be read.
fn rss(pids: &[u32]) -> Option<u64> {
    process::servers_rss(pids).ok().flatten()
}

/// Hex of `bytes` random bytes, for a secret or key of the started node.
fn random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    let random = switchboard::auth::SigningSecret::generate();
    random.as_bytes()[..bytes.min(48)]
        .iter()
        .fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Starts a node with production settings (and `--server-env` over them) and points
/// `args` at it; returns it and a description of its settings without the secrets.
fn start_node(args: &mut BenchArgs, soak: &SoakArgs) -> Result<(Node, String), BenchError> {
    let secret = args.secret.clone().unwrap_or_else(|| random_hex(32));
    let api_key = random_hex(24);
    let mut vars: BTreeMap<String, String> = [
        ("SWITCHBOARD_ENV", "production".to_string()),
        ("AUTH_SECRET", secret.clone()),
        ("TOKEN_ISSUANCE", "api-key".into()),
        ("AUTH_API_KEYS", api_key.clone()),
        ("ALLOWED_ORIGINS", "https://app.example".into()),
        // Production would put /metrics on 9464; another node may hold that port.
        ("METRICS_ADDR", "127.0.0.1:0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    vars.extend(soak.server_env.iter().cloned());
    let binary = match &soak.server_bin {
        Some(path) => path.clone(),
        None => node::default_binary()?,
    };
    let list: Vec<(String, String)> = vars.into_iter().collect();
    let node = Node::start(&binary, &list, soak.server_log.as_deref())?;
    args.urls = vec![format!("ws://{}", node.addr)];
    args.auth_url = None;
    args.secret = list
        .iter()
        .find(|(k, _)| k == "AUTH_SECRET")
        .map(|(_, v)| v.clone())
        .or(Some(secret));
    // Tokens are minted with the secret; the key is for the kinds that call the API.
    args.api_key = list
        .iter()
        .find(|(k, _)| k == "AUTH_API_KEYS")
        .and_then(|(_, v)| v.split(',').next().map(str::to_string))
        .or(Some(api_key));
    args.server_pids = vec![node.pid()];
    let shown: Vec<String> = list
        .iter()
        .map(|(k, v)| match k.as_str() {
            "AUTH_SECRET" | "AUTH_API_KEYS" => format!("{k}=<random>"),
            _ => format!("{k}={v}"),
        })
        .collect();
    let described = format!(
        "started {} serve with {} (other settings at their defaults)",
        binary.display(),
        shown.join(" ")
    );
    Ok((node, described))
}

/// The hostile side of a soak.
struct Hostile<'a> {
    kinds: &'a [Kind],
    soak: &'a SoakArgs,
    addr: SocketAddr,
    target: &'a Arc<Target>,
    pids: &'a [u32],
    stagger: Duration,
    run: String,
    /// The node's signing secret and an API key of its, for the kinds that need them.
    secret: Option<String>,
    api_key: Option<String>,
}

/// What the hostile side measured.
struct HostileRun {
    figures: Vec<HostileFigures>,
    baseline: Option<u64>,
    peak: u64,
    end: Option<u64>,
}

impl Hostile<'_> {
    /// Where kind `k`'s connections come from: a loopback address of its own against a
    /// loopback node, so per-IP limits apply per kind.
    fn source(&self, k: usize) -> Option<IpAddr> {
        (self.addr.ip().is_loopback() && self.addr.is_ipv4())
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 1, k as u8 + 1)))
    }

    /// Starts the kinds one stagger apart, stops them all at the end of the run, and
    /// gathers what became of them.
    async fn run(self) -> HostileRun {
        let end = Instant::now() + self.soak.duration;
        sleep_until((Instant::now() + self.stagger).min(end)).await;
        let baseline = rss(self.pids);
        let (stop, stopped) = watch::channel(false);
        let peak = Arc::new(AtomicU64::new(baseline.unwrap_or(0)));
        let sampler = tokio::spawn(sample(self.pids.to_vec(), peak.clone()));
        let mut tasks = JoinSet::new();
        let mut growth = vec![None; self.kinds.len()];
        for (k, &kind) in self.kinds.iter().enumerate() {
            if Instant::now() >= end {
                break;
            }
            let open = Arc::new(AtomicUsize::new(0));
            let attack = Arc::new(Attack {
                addr: self.addr,
                source: self.source(k),
                target: self.target.clone(),
                flood_rate: self.soak.flood_rate,
                feed_rate: self.soak.feed_rate,
                sdp_bytes: self.soak.sdp_bytes,
                stop: stopped.clone(),
                open: open.clone(),
                run: self.run.clone(),
                secret: self.secret.clone(),
                api_key: self.api_key.clone(),
            });
            let before = rss(self.pids);
            for i in 0..self.soak.hostile {
                let attack = attack.clone();
                tasks.spawn(async move { (k, hostile::run(kind, i, attack).await) });
            }
            sleep_until((Instant::now() + self.stagger).min(end)).await;
            let held = open.load(Ordering::Relaxed);
            growth[k] = match (before, rss(self.pids)) {
                (Some(b), Some(a)) if held > 0 => Some((a as f64 - b as f64) / held as f64),
                _ => None,
            };
        }
        sleep_until(end).await;
        let end_rss = rss(self.pids);
        let _ = stop.send(true);
        let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); self.kinds.len()];
        let deadline = Instant::now() + WIND_DOWN;
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
            if let Ok((k, outcome)) = done {
                outcomes[k].push(outcome);
            }
        }
        tasks.abort_all();
        sampler.abort();
        let figures = self
            .kinds
            .iter()
            .zip(outcomes)
            .zip(growth)
            .map(|((&kind, outcomes), growth)| tally(kind, self.soak.hostile, outcomes, growth))
            .collect();
        HostileRun {
            figures,
            baseline,
            peak: peak.load(Ordering::Relaxed),
            end: end_rss,
        }
    }
}

/// Keeps the highest memory reading in `peak` until aborted.
async fn sample(pids: Vec<u32>, peak: Arc<AtomicU64>) {
    loop {
        if let Some(now) = rss(&pids) {
            peak.fetch_max(now, Ordering::Relaxed);
        }
        sleep(SAMPLE_EVERY).await;
    }
}

/// Sums up `clients` clients of `kind`; those without an outcome (still handshaking
/// when the wind-down ran out) count as refused.
fn tally(
    kind: Kind,
    clients: usize,
    outcomes: Vec<Outcome>,
    rss_per_connection: Option<f64>,
) -> HostileFigures {
    let mut figures = HostileFigures {
        kind: kind.name(),
        clients,
        connections_per_client: kind.connections(),
        connected: 0,
        refused: clients.saturating_sub(outcomes.len()),
        first_refusal: (outcomes.len() < clients).then(|| "no outcome by the end".into()),
        answers: BTreeMap::new(),
        closed: BTreeMap::new(),
        closed_after_s: None,
        open_at_end: 0,
        blocked_at_end: 0,
        rss_per_connection,
    };
    let mut after = Vec::new();
    for outcome in outcomes {
        if let Some(why) = outcome.refused {
            figures.refused += 1;
            figures.first_refusal.get_or_insert(why);
        }
        if let Some(answer) = outcome.answer {
            *figures.answers.entry(answer).or_default() += 1;
        }
        if !outcome.connected {
            continue;
        }
        figures.connected += 1;
        match outcome.ended {
            Some((how, at)) => {
                *figures.closed.entry(how).or_default() += 1;
                after.push(at.as_secs_f64());
            }
            None => {
                figures.open_at_end += 1;
                figures.blocked_at_end += usize::from(outcome.blocked);
            }
        }
    }
    figures.closed_after_s = Spread::of(after);
    figures
}
