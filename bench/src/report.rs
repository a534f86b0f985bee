//! Results: one serialisable report per run, printed as a table or as JSON.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Stamp;

/// A latency histogram in nanoseconds, up to one minute, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest seen.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of `h` (nanoseconds) in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: (h.mean() / 100.0).round() / 10.0,
        }
    }
}

/// One relay run (one step of a sweep).
#[derive(Debug, Clone, Serialize)]
pub struct RelayRun {
    /// Rate asked for (open loop), messages/s.
    pub target_rate: Option<f64>,
    /// Messages received per second of sending.
    pub achieved_rate: f64,
    /// Seconds spent sending.
    pub duration_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Sent but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a later message of the same sender.
    pub reordered: u64,
    /// Send failures, error replies and closed connections.
    pub errors: u64,
    /// Error replies: messages the server refused (also counted in `lost` and `errors`).
    pub refused: u64,
    /// One-way latency, send to receipt.
    pub latency_us: Latency,
    /// Server CPU time per received message (needs --server-pid).
    pub server_cpu_us_per_msg: Option<f64>,
    /// Share of one core the server(s) used while sending (needs --server-pid).
    pub server_cpu_share: Option<f64>,
    /// Share of one core this generator used: near 1.0 it, not the server, is the limit.
    pub generator_cpu_share: f64,
    /// The first error of the run, to act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Figures of an `idle` run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleFigures {
    /// Connections asked for.
    pub connections: usize,
    /// Connections authenticated, joined and held at the end.
    pub held: usize,
    /// Failed handshakes.
    pub errors: u64,
    /// Handshakes (token + connect + join) per second while opening.
    pub connect_rate: f64,
    /// Server memory before opening (needs --server-pid), bytes.
    pub server_rss_before: Option<u64>,
    /// Server memory with every connection held, bytes.
    pub server_rss_after: Option<u64>,
    /// (after - before) / held.
    pub bytes_per_connection: Option<f64>,
    /// This process's open-file limit.
    pub fd_limit: u64,
}

/// Figures of a `join-storm` run.
#[derive(Debug, Clone, Serialize)]
pub struct StormFigures {
    /// Handshakes asked for.
    pub joins: usize,
    /// Handshakes that reached `joined`.
    pub completed: u64,
    /// Failed handshakes.
    pub errors: u64,
    /// Completed handshakes per second.
    pub rate: f64,
    /// Token + connect + join latency.
    pub latency_us: Latency,
    /// Server CPU per handshake (needs --server-pid).
    pub server_cpu_us_per_join: Option<f64>,
}

/// Smallest, median and largest of a set of durations, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `seconds` (`None` when empty).
    pub fn of(mut seconds: Vec<f64>) -> Option<Self> {
        seconds.sort_by(f64::total_cmp);
        Some(Spread {
            min: *seconds.first()?,
            p50: seconds[seconds.len() / 2],
            max: *seconds.last()?,
        })
    }
}

/// What became of one kind of hostile client in a soak.
#[derive(Debug, Clone, Serialize)]
pub struct HostileFigures {
    /// The kind (`ping-flood`, `slowloris`, ...).
    pub kind: &'static str,
    /// Clients started.
    pub clients: usize,
    /// TCP connections per client (2 for a slow consumer and its feeder).
    pub connections_per_client: usize,
    /// Clients that got as far as their attack needs (upgraded, for WebSocket kinds).
    pub connected: usize,
    /// Clients that did not, with the first reason.
    pub refused: usize,
    /// Why the first refused client was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
    /// HTTP answers (and feeder endings) the clients got, by kind: `http 413` -> count.
    pub answers: std::collections::BTreeMap<String, usize>,
    /// How the server ended clients: `close 1008`, `eof`, `reset` -> count.
    pub closed: std::collections::BTreeMap<String, usize>,
    /// Seconds from connecting to being ended, over the ended clients.
    pub closed_after_s: Option<Spread>,
    /// Connected clients the server had not ended when the run stopped.
    pub open_at_end: usize,
    /// Of those, clients whose write was stuck at the end (the server stopped reading).
    pub blocked_at_end: usize,
    /// Server RSS growth while this kind's clients were being opened (before the next
    /// kind started), per connection it held open then; bytes.
    pub rss_per_connection: Option<f64>,
}

/// Server memory over a soak, bytes (needs a started node or --server-pid).
#[derive(Debug, Clone, Serialize)]
pub struct SoakMemory {
    /// Before any connection.
    pub start: u64,
    /// With the honest pairs running, before the first hostile client.
    pub baseline: u64,
    /// Highest sample (every 100 ms) while hostile clients ran.
    pub peak: u64,
    /// When the run stopped, every client still connected.
    pub end: u64,
    /// `--settle` after every client of the soak was gone.
    pub after: u64,
    /// That wait, seconds.
    pub settle_s: f64,
    /// Hostile connections that were established.
    pub hostile_connections: usize,
    /// (peak - baseline) / hostile connections.
    pub peak_per_hostile_connection: Option<f64>,
}

/// Figures of a `soak` run; the honest pairs' relay run is the report's first run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakFigures {
    /// Seconds the run lasted.
    pub duration_s: f64,
    /// Honest pairs, exchanging offers and answers.
    pub pairs: usize,
    /// Their total rate, messages/s.
    pub rate: f64,
    /// Seconds between the starts of two hostile kinds.
    pub stagger_s: f64,
    /// Each kind's clients.
    pub hostile: Vec<HostileFigures>,
    /// Server memory.
    pub memory: Option<SoakMemory>,
    /// The started node's settings, or `attached`.
    pub server: String,
}

/// Everything one `switchboard-bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `relay`, `multi-node`, `idle`, `join-storm` or `soak`.
    pub scenario: &'static str,
    /// `closed-loop`, `open-loop` or `sweep` for relays.
    pub mode: &'static str,
    /// A one-line description of the set-up.
    pub label: String,
    /// Relay runs, in order (one per sweep step).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RelayRun>,
    /// Highest rate a sweep sustained within its bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sustained_rate: Option<f64>,
    /// Open-loop runs: where one-way latency was measured from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_from: Option<Stamp>,
    /// Idle figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleFigures>,
    /// Join-storm figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormFigures>,
    /// Soak figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakFigures>,
    /// The first error seen, to act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("{} ({}): {}\n", self.scenario, self.mode, self.label);
        if !self.runs.is_empty() {
            let _ = writeln!(
                out,
                "{:>9} {:>9} {:>9} {:>5} {:>5} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
                "target/s",
                "rate/s",
                "received",
                "lost",
                "dup",
                "reord",
                "err",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "srv µs",
                "srv %",
                "gen %"
            );
            for r in &self.runs {
                let ms = |us: f64| format!("{:.3}", us / 1000.0);
                let _ = writeln!(
                    out,
                    "{:>9} {:>9.0} {:>9} {:>5} {:>5} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6.0}",
                    opt(r.target_rate, 0),
                    r.achieved_rate,
                    r.received,
                    r.lost,
                    r.duplicated,
                    r.reordered,
                    r.errors,
                    ms(r.latency_us.p50),
                    ms(r.latency_us.p90),
                    ms(r.latency_us.p99),
                    ms(r.latency_us.p999),
                    ms(r.latency_us.max),
                    opt(r.server_cpu_us_per_msg, 1),
                    opt(r.server_cpu_share.map(|s| s * 100.0), 0),
                    r.generator_cpu_share * 100.0,
                );
            }
        }
        if self.runs.iter().any(|r| r.target_rate.is_some()) {
            let _ = writeln!(
                out,
                "rates count relayed messages over all pairs, both directions; latency is one-way, from each message's {} send time",
                match self.latency_from {
                    Some(Stamp::Sent) => "actual",
                    _ => "intended",
                }
            );
        }
        if let Some(rate) = self.max_sustained_rate {
            let _ = writeln!(out, "highest sustained rate: {rate:.0} messages/s");
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                out,
                "held {}/{} connections ({} errors), {:.0} handshakes/s while opening, fd limit {}",
                i.held, i.connections, i.errors, i.connect_rate, i.fd_limit
            );
            if let (Some(before), Some(after)) = (i.server_rss_before, i.server_rss_after) {
                let _ = writeln!(
                    out,
                    "server RSS {:.1} MiB -> {:.1} MiB: {} bytes per connection",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    opt(i.bytes_per_connection, 0)
                );
            }
        }
        if let Some(s) = &self.storm {
            let _ = writeln!(
                out,
                "{}/{} handshakes ({} errors): {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server {} µs CPU per handshake",
                s.completed,
                s.joins,
                s.errors,
                s.rate,
                s.latency_us.p50 / 1000.0,
                s.latency_us.p99 / 1000.0,
                s.latency_us.max / 1000.0,
                opt(s.server_cpu_us_per_join, 1)
            );
        }
        if let Some(s) = &self.soak {
            soak_table(&mut out, s, self.runs.first());
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "first error: {e}");
        }
        out
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The soak's part of the table: honest traffic, memory, then one line per hostile kind.
fn soak_table(out: &mut String, s: &SoakFigures, honest: Option<&RelayRun>) {
    if let Some(r) = honest {
        let _ = writeln!(
            out,
            "honest: {} pairs at {:.0}/s for {:.0} s: sent {}, delivered {}, refused {}, lost {} \
             (refused included); latency from intended send time p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.pairs,
            s.rate,
            s.duration_s,
            r.sent,
            r.received,
            r.refused,
            r.lost,
            r.latency_us.p50 / 1000.0,
            r.latency_us.p99 / 1000.0,
            r.latency_us.max / 1000.0,
        );
    }
    if let Some(m) = &s.memory {
        let _ = writeln!(
            out,
            "server RSS: start {}, baseline {}, peak {}, end {}, {:.0} s after {}: {} bytes per \
             hostile connection at the peak ({} connections)",
            mib(m.start),
            mib(m.baseline),
            mib(m.peak),
            mib(m.end),
            m.settle_s,
            mib(m.after),
            opt(m.peak_per_hostile_connection, 0),
            m.hostile_connections,
        );
    }
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>9} {:>7} {:>10} {:>8} {:>12}  closed by the server / answers",
        "hostile kind", "clients", "connected", "refused", "open@end", "blocked", "B/conn"
    );
    for h in &s.hostile {
        let counts = |m: &std::collections::BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{v}x {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut what = counts(&h.closed);
        if let Some(after) = &h.closed_after_s {
            let _ = write!(
                what,
                " after {:.1}/{:.1}/{:.1} s (min/p50/max)",
                after.min, after.p50, after.max
            );
        }
        if what.is_empty() {
            what.push_str("none");
        }
        if !h.answers.is_empty() {
            let _ = write!(what, "; answers: {}", counts(&h.answers));
        }
        if let Some(r) = &h.first_refusal {
            let _ = write!(what, "; first refusal: {r}");
        }
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>9} {:>7} {:>10} {:>8} {:>12}  {what}",
            h.kind,
            h.clients,
            h.connected,
            h.refused,
            h.open_at_end,
            h.blocked_at_end,
            opt(h.rss_per_connection, 0),
        );
    }
}
