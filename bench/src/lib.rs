//! `switchboard-bench`: a load generator that drives any Switchboard deployment over the
//! real protocol (tokens, WebSockets, rooms) and reports what an operator needs.
//!
//! It stands apart from the server so that the server's binary and dependency tree hold
//! only what a node runs; it shares with the server only token minting
//! ([`switchboard::auth::TokenIssuer`]) and the open-file limit ([`switchboard::fd_limit`]).
#![forbid(unsafe_code)]

mod client;
mod hostile;
mod idle;
mod node;
mod pacer;
mod process;
mod progress;
mod relay;
mod report;
mod soak;
mod storm;
mod wire;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use client::TokenSource;
pub use hostile::Kind as HostileKind;
pub use report::Report;

/// Why a benchmark could not run; the sentence says what to change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    fn new(message: impl Into<String>) -> Self {
        BenchError(message.into())
    }
}

/// Load generator for Switchboard: drives a deployment over the real protocol and reports
/// latency, throughput, CPU and memory figures.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-bench", version)]
pub struct BenchArgs {
    /// Signaling endpoint(s), e.g. `ws://127.0.0.1:8080`; repeat for several nodes.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080", global = true)]
    pub urls: Vec<String>,
    /// Token endpoint (default: `/auth/token` on the first URL's host).
    #[arg(long, global = true)]
    pub auth_url: Option<String>,
    /// API key for the token endpoint, when the server issues only with one
    /// (TOKEN_ISSUANCE=api-key, the production default).
    #[arg(long, hide_env_values = true, env = "BENCH_API_KEY", global = true)]
    pub api_key: Option<String>,
    /// Mint tokens locally with this signing secret instead of calling the token endpoint.
    #[arg(long, hide_env_values = true, env = "BENCH_SECRET", global = true)]
    pub secret: Option<String>,
    /// Server process(es) to measure (CPU from /proc/<pid>/stat, memory from status).
    #[arg(long = "server-pid", global = true)]
    pub server_pids: Vec<u32>,
    /// Local source addresses to spread connections over (e.g. 127.0.0.2); one address
    /// reaches about 28,000 connections to one server port.
    #[arg(long = "source", value_delimiter = ',', global = true)]
    pub sources: Vec<IpAddr>,
    /// Print the results as one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also write the JSON results to this file.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Claims of minted tokens; they must match the server's.
    #[command(flatten)]
    pub claims: switchboard::config::ClaimSettings,
    /// What to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The benchmark scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Pairs exchanging offers/answers/candidates, both peers of a pair on one node.
    Relay(RelayArgs),
    /// Like `relay`, with the two peers of each pair on different nodes (needs 2+ URLs).
    MultiNode(RelayArgs),
    /// Hold N authenticated, joined connections (2 per room); memory per connection.
    Idle(IdleArgs),
    /// Token + connect + join handshakes per second.
    JoinStorm(StormArgs),
    /// Hostile clients of every kind next to honest pairs, against a node it starts with
    /// production settings (or `--attach`es to); memory, latency and what was closed.
    Soak(SoakArgs),
}

/// What the relayed messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageKind {
    /// Offers answered by answers (SDP of `--sdp-bytes`).
    Offer,
    /// ICE candidates (of `--candidate-bytes`).
    Candidate,
}

/// Which time an open-loop sender writes into a message, which latency is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stamp {
    /// When the schedule meant it to be sent: a sender held up (by the generator or by
    /// backpressure) counts its delay too, so the tail is what a client sees
    /// (coordinated omission corrected).
    Intended,
    /// When it was actually sent: the relay's latency alone, hiding any delay that held
    /// the sender up.
    Sent,
}

/// `relay` and `multi-node` arguments.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Number of pairs (each pair is a room of two peers).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Message kind.
    #[arg(long, value_enum, default_value_t = MessageKind::Offer)]
    pub message: MessageKind,
    /// Size of an SDP (offer or answer) in bytes.
    #[arg(long, default_value_t = 2048)]
    pub sdp_bytes: usize,
    /// Size of an ICE candidate in bytes.
    #[arg(long, default_value_t = 200)]
    pub candidate_bytes: usize,
    /// Open loop at this total rate: relayed messages per second over all pairs, both
    /// directions counted (20,000 means 10,000 offers and 10,000 answers a second).
    /// Without it, closed loop: one message in flight per pair, answered before the next.
    #[arg(long)]
    pub rate: Option<f64>,
    /// In open loop, where one-way latency is measured from: each message's intended send
    /// time (what a client sees), or the time it was actually sent.
    #[arg(long, value_enum, default_value_t = Stamp::Intended)]
    pub latency_from: Stamp,
    /// Raise the rate step by step (from `--rate`, default 1000/s) until p99 passes
    /// `--p99-bound`, messages are lost or the rate is not reached; report the highest
    /// sustained rate.
    #[arg(long)]
    pub sweep: bool,
    /// Highest rate a sweep tries.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Each sweep step multiplies the rate by this.
    #[arg(long, default_value_t = 1.25)]
    pub sweep_factor: f64,
    /// Latency bound for `--sweep`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    pub p99_bound: Duration,
    /// Length of a run (of each sweep step).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop a run after this many messages, whichever comes first.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_messages: u64,
    /// Time given to messages still in flight when sending stops before they count as lost.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub drain: Duration,
}

/// `idle` arguments.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// How long to hold the connections once all are joined (RSS is read at the end).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub hold: Duration,
}

/// `join-storm` arguments.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Handshakes (token + connect + join) in all.
    #[arg(long, default_value_t = 20_000)]
    pub joins: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Upper bound on the run's length.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

/// `soak` arguments.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Length of the run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    pub duration: Duration,
    /// Hostile clients of each kind.
    #[arg(long, default_value_t = 50)]
    pub hostile: usize,
    /// Only these hostile kinds (comma-separated; default: all).
    #[arg(long = "kind", value_enum, value_delimiter = ',')]
    pub kinds: Vec<HostileKind>,
    /// Honest pairs, each exchanging offers and answers.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// Honest messages per second over all pairs, both directions (open loop).
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Size of an honest or fed SDP in bytes.
    #[arg(long, default_value_t = 2048)]
    pub sdp_bytes: usize,
    /// Frames per second each ping or empty-frame flooder sends.
    #[arg(long, default_value_t = 1000.0)]
    pub flood_rate: f64,
    /// Offers per second sent to each slow consumer (the server's default per-connection
    /// limit is 50/s).
    #[arg(long, default_value_t = 40.0)]
    pub feed_rate: f64,
    /// How long after every connection of the soak closed the server's memory is read
    /// last (sessions wait RESUME_GRACE, 30 s by default, for a resume).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub settle: Duration,
    /// Use the deployment at --url instead of starting a node (memory needs --server-pid).
    #[arg(long)]
    pub attach: bool,
    /// Server binary to start [default: `switchboard` beside this binary].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Environment of the started node, KEY=VALUE, over the soak's production settings
    /// (it inherits this process's environment too); repeat for several.
    #[arg(long = "server-env", value_parser = key_value)]
    pub server_env: Vec<(String, String)>,
    /// Keep the started node's log in this file.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

/// Parses `KEY=VALUE`.
fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s}: expected KEY=VALUE"))
}

/// Runs the chosen scenario and prints its report.
pub async fn run(mut args: BenchArgs) -> Result<Report, BenchError> {
    // One source address reaches ~28,000 connections to one port: spread bigger idle runs
    // against a loopback server over 127.0.0.x by themselves.
    if let Scenario::Idle(idle) = &args.scenario
        && args.sources.is_empty()
        && idle.connections > idle::PER_SOURCE
        && args
            .urls
            .iter()
            .all(|u| u.starts_with("ws://127.") || u.starts_with("ws://localhost"))
    {
        args.sources = idle::loopback_sources(idle.connections);
    }
    let report = measure(&args).await?;
    let json = serde_json::to_string_pretty(&report).expect("reports serialise");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| BenchError::new(format!("cannot write {}: {e}", path.display())))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(report)
}

/// Runs the chosen scenario.
async fn measure(args: &BenchArgs) -> Result<Report, BenchError> {
    let target = || client::Target::new(args).map(std::sync::Arc::new);
    match &args.scenario {
        Scenario::Relay(r) => relay::run(&target()?, r, false).await,
        Scenario::MultiNode(r) => {
            if args.urls.len() < 2 {
                return Err(BenchError::new(
                    "multi-node needs at least two --url values, one per node.",
                ));
            }
            relay::run(&target()?, r, true).await
        }
        Scenario::Idle(i) => idle::run(&target()?, i).await,
        Scenario::JoinStorm(s) => storm::run(&target()?, s).await,
        // A soak may start its own node, so it makes its own target.
        Scenario::Soak(s) => soak::run(args, s).await,
    }
}
