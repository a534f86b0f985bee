//! `relay` and `multi-node`: pairs of peers exchanging offers/answers or candidates, closed
//! loop or open loop at a rate (optionally swept), with one-way latency, loss, duplicates
//! and reordering from the sequence number and timestamp each payload carries.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Socket, Target, await_peer, join};
use super::pacer::{self, Due};
use super::process::Meter;
use super::report::{Latency, RelayRun, Report, histogram};
use super::{BenchError, MessageKind, RelayArgs, Stamp, progress};

/// How long after the senders' tasks are spawned an open loop's schedule starts.
const SCHEDULE_LEAD: Duration = Duration::from_millis(50);

/// Most connection set-ups in flight at once.
const SETUP_CONCURRENCY: usize = 64;
/// Most sweep steps: the rate grows geometrically, so this spans any sane range.
const MAX_SWEEP_STEPS: usize = 40;
/// Sweep start when `--rate` is not given.
const SWEEP_START: f64 = 1000.0;

/// Nanoseconds since the bench started: senders and receivers share one process clock.
fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// `at` on the clock of [`now_ns`].
fn ns_at(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_nanos() as u64
}

/// Frames of one kind from one peer to another, each stamped `#<seq>.<send ns>#` at the
/// start of its SDP or candidate string and padded to a realistic size.
struct Frames {
    head: String,
    tail: String,
}

/// SDP-like filler: what most of a real offer is made of (escaped CRLF included).
const SDP_LINE: &str = "a=candidate:842163049 1 udp 1677729535 203.0.113.7 61234 typ srflx raddr 10.0.0.2 rport 61234 generation 0\\r\\n";

impl Frames {
    fn new(kind: &str, to: &str, args: &RelayArgs) -> Self {
        let pad = |bytes: usize| {
            let body = SDP_LINE.repeat(bytes / SDP_LINE.len() + 1);
            // Never end on half an escape: a lone backslash would escape the closing quote.
            body[..bytes.saturating_sub(48).min(body.len())]
                .trim_end_matches('\\')
                .to_string()
        };
        let (head, tail) = match kind {
            "offer" | "answer" => (
                format!(r#"{{"type":"{kind}","peerId":"{to}","sdp":""#),
                format!(r#"v=0\r\n{}"}}"#, pad(args.sdp_bytes)),
            ),
            _ => (
                format!(
                    r#"{{"type":"ice-candidate","peerId":"{to}","candidate":{{"candidate":"candidate:"#
                ),
                format!(
                    r#" {}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"f9Qe"}}}}"#,
                    pad(args.candidate_bytes.saturating_sub(40))
                ),
            ),
        };
        Frames { head, tail }
    }

    fn frame(&self, seq: u64) -> Message {
        self.frame_at(seq, now_ns())
    }

    /// A frame stamped with `sent_ns` (on the clock of [`now_ns`]).
    fn frame_at(&self, seq: u64, sent_ns: u64) -> Message {
        Message::text(format!("{}#{seq}.{sent_ns}#{}", self.head, self.tail))
    }
}

/// What a received frame was.
enum Received {
    /// A relayed message with its sequence number and send time.
    Relayed { seq: u64, sent_ns: u64 },
    /// An `error` reply.
    Error,
    /// Anything else (peer_joined, pong, ...).
    Other,
}

fn classify(text: &str) -> Received {
    if text.starts_with(r#"{"type":"error""#) {
        return Received::Error;
    }
    let Some(start) = text.find('#') else {
        return Received::Other;
    };
    let stamp = &text[start + 1..];
    let parsed = stamp.split_once('#').and_then(|(stamp, _)| {
        let (seq, sent) = stamp.split_once('.')?;
        Some((seq.parse().ok()?, sent.parse().ok()?))
    });
    match parsed {
        Some((seq, sent_ns)) => Received::Relayed { seq, sent_ns },
        None => Received::Other,
    }
}

/// What one receiver saw of one sender's numbered messages.
struct Track {
    seen: Vec<u64>,
    max_seen: Option<u64>,
    received: u64,
    duplicated: u64,
    reordered: u64,
    errors: u64,
    /// `error` replies: messages the server refused (counted in `errors` too).
    refused: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

impl Track {
    fn new() -> Self {
        Track {
            seen: Vec::new(),
            max_seen: None,
            received: 0,
            duplicated: 0,
            reordered: 0,
            errors: 0,
            refused: 0,
            first_error: None,
            latency: histogram(),
        }
    }

    fn record(&mut self, seq: u64, sent_ns: u64) {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        if self.max_seen.is_some_and(|m| seq < m) {
            self.reordered += 1;
        }
        self.max_seen = self.max_seen.max(Some(seq));
        let _ = self.latency.record(now_ns().saturating_sub(sent_ns).max(1));
    }

    /// Counts an error; the first one's text is kept for the report.
    fn error(&mut self, what: &str) {
        self.errors += 1;
        self.first_error
            .get_or_insert_with(|| what.chars().take(300).collect());
    }

    /// Counts an `error` reply: a refusal, and an error.
    fn refusal(&mut self, text: &str) {
        self.refused += 1;
        self.error(text);
    }

    fn merge(&mut self, other: Track) {
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.errors += other.errors;
        self.refused += other.refused;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        let _ = self.latency.add(other.latency);
    }
}

/// One pair: `a` and `b` in a room of their own.
pub(super) struct Pair {
    a: Socket,
    b: Socket,
    a_to_b: Frames,
    b_to_a: Frames,
}

/// Connects and joins every pair; a pair's peers go to one node, or two nodes if `cross`.
pub(super) async fn set_up(
    target: &Arc<Target>,
    args: &RelayArgs,
    cross: bool,
) -> Result<Vec<Pair>, BenchError> {
    let run = format!("{:x}", now_ns() ^ u64::from(std::process::id()) << 32);
    let bar = progress::counter(args.pairs as u64, "pairs");
    let mut pending = JoinSet::new();
    let mut pairs = Vec::with_capacity(args.pairs);
    for i in 0..args.pairs {
        if pending.len() >= SETUP_CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            pairs.push(done.expect("set-up task")?);
            bar.inc(1);
        }
        let (target, args, room) = (target.clone(), args.clone(), format!("bench-{run}-{i}"));
        let node_a = i % target.nodes();
        let node_b = if cross { node_a + 1 } else { node_a };
        pending.spawn(async move {
            let mut a = target.connect(node_a, &format!("bench-a{i}")).await?;
            let mut b = target.connect(node_b, &format!("bench-b{i}")).await?;
            let a_id = join(&mut a, &room).await?;
            let b_id = join(&mut b, &room).await?;
            await_peer(&mut a, &b_id).await?;
            let (to_b, to_a) = match args.message {
                MessageKind::Offer => ("offer", "answer"),
                MessageKind::Candidate => ("ice-candidate", "ice-candidate"),
            };
            Ok::<_, BenchError>(Pair {
                a_to_b: Frames::new(to_b, &b_id, &args),
                b_to_a: Frames::new(to_a, &a_id, &args),
                a,
                b,
            })
        });
    }
    while let Some(done) = pending.join_next().await {
        pairs.push(done.expect("set-up task")?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(pairs)
}

/// Sums up a run.
fn summarise(
    target_rate: Option<f64>,
    sending: Duration,
    sent: u64,
    track: &Track,
    meter: &Meter,
) -> Result<RelayRun, BenchError> {
    let used = meter.stop()?;
    Ok(RelayRun {
        target_rate,
        achieved_rate: track.received as f64 / sending.as_secs_f64().max(1e-9),
        duration_s: sending.as_secs_f64(),
        sent,
        received: track.received,
        lost: sent.saturating_sub(track.received),
        duplicated: track.duplicated,
        reordered: track.reordered,
        errors: track.errors,
        refused: track.refused,
        latency_us: Latency::of(&track.latency),
        server_cpu_us_per_msg: used
            .server_cpu
            .map(|c| c.as_secs_f64() * 1e6 / (track.received.max(1) as f64)),
        server_cpu_share: used.server_share,
        generator_cpu_share: used.own_share,
        first_error: track.first_error.clone(),
    })
}

/// Reads the next relayed message into `track` (counting errors); `None` when the
/// connection ended or `until` passed.
async fn receive_one(
    socket: &mut SplitStream<Socket>,
    track: &mut Track,
    until: tokio::time::Instant,
) -> Option<u64> {
    loop {
        let message = tokio::time::timeout_at(until, socket.next()).await.ok()?;
        match message {
            Some(Ok(Message::Text(text))) => match classify(&text) {
                Received::Relayed { seq, sent_ns } => {
                    track.record(seq, sent_ns);
                    return Some(seq);
                }
                Received::Error => track.refusal(&text),
                Received::Other => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                track.error(&format!("connection failed: {e}"));
                return None;
            }
            None => {
                track.error("the server closed the connection");
                return None;
            }
        }
    }
}

/// One message of a closed loop: sent on `out`, awaited on `incoming`; false when the
/// loop must stop (a failed send, a closed connection, nothing by `until`).
async fn hop(
    out: &mut SplitSink<Socket, Message>,
    frames: &Frames,
    seq: u64,
    incoming: &mut SplitStream<Socket>,
    at_sender: &mut Track,
    at_receiver: &mut Track,
    until: tokio::time::Instant,
) -> bool {
    if let Err(e) = out.send(frames.frame(seq)).await {
        at_sender.error(&format!("send failed: {e}"));
        return false;
    }
    receive_one(incoming, at_receiver, until).await.is_some()
}

/// Closed loop: one message in flight per pair; b answers each message of a.
async fn closed_loop(
    pairs: Vec<Pair>,
    args: &RelayArgs,
    pids: &[u32],
) -> Result<RelayRun, BenchError> {
    let per_pair = (args.max_messages / (2 * pairs.len() as u64)).max(1);
    let meter = Meter::start(pids)?;
    let deadline = tokio::time::Instant::now() + args.duration;
    let bar = progress::timed(args.duration, "closed loop");
    let mut tasks = JoinSet::new();
    for pair in pairs {
        let Pair {
            a,
            b,
            a_to_b,
            b_to_a,
        } = pair;
        let grace = args.drain;
        tasks.spawn(async move {
            let (mut a_out, mut a_in) = a.split();
            let (mut b_out, mut b_in) = b.split();
            let (mut at_a, mut at_b) = (Track::new(), Track::new());
            let mut sent = 0;
            for seq in 0..per_pair {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let until = tokio::time::Instant::now() + grace;
                sent += 1;
                if !hop(
                    &mut a_out, &a_to_b, seq, &mut b_in, &mut at_a, &mut at_b, until,
                )
                .await
                {
                    break;
                }
                sent += 1;
                if !hop(
                    &mut b_out, &b_to_a, seq, &mut a_in, &mut at_b, &mut at_a, until,
                )
                .await
                {
                    break;
                }
            }
            // A message that never arrived was most likely refused: the refusal went
            // back to its sender.
            for (incoming, track) in [(&mut a_in, &mut at_a), (&mut b_in, &mut at_b)] {
                let quiet = tokio::time::Instant::now() + Duration::from_millis(100);
                while receive_one(incoming, track, quiet).await.is_some() {}
            }
            at_a.merge(at_b);
            (sent, at_a)
        });
    }
    let ticker = tick_progress(&bar);
    let (mut sent, mut track) = (0, Track::new());
    while let Some(done) = tasks.join_next().await {
        let (s, t) = done.expect("pair task");
        sent += s;
        track.merge(t);
    }
    ticker.abort();
    bar.finish_and_clear();
    let sending = meter.started().elapsed().min(args.duration);
    summarise(None, sending, sent, &track, &meter)
}

fn tick_progress(bar: &indicatif::ProgressBar) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    let start = Instant::now();
    tokio::spawn(async move {
        loop {
            bar.set_position(start.elapsed().as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// One direction of a pair in open loop: what its sender did, for its receiver.
#[derive(Default)]
struct Flow {
    sent: AtomicU64,
    done: AtomicBool,
}

type Half = (SplitSink<Socket, Message>, SplitStream<Socket>);
/// What a side's task hands back: its sink, the stream it read, and its frames.
type Returned = (SplitSink<Socket, Message>, SplitStream<Socket>, Arc<Frames>);

/// Open loop at `rate` messages/s over every connection, each message stamped as `stamp`
/// says; returns the run and the sockets.
pub(super) async fn open_loop(
    pairs: Vec<Pair>,
    rate: f64,
    stamp: Stamp,
    args: &RelayArgs,
    pids: &[u32],
) -> Result<(RelayRun, Vec<Pair>), BenchError> {
    let senders = 2 * pairs.len();
    let period = Duration::from_secs_f64(senders as f64 / rate);
    let per_sender = (args.max_messages / senders as u64).max(1);
    let bar = progress::timed(args.duration, &format!("{rate:.0}/s"));
    let meter = Meter::start(pids)?;
    let (clock, dues) = pacer::clock(senders);
    let mut dues = dues.into_iter();
    let mut tasks = JoinSet::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        let Pair {
            a,
            b,
            a_to_b,
            b_to_a,
        } = pair;
        let frames = [Arc::new(a_to_b), Arc::new(b_to_a)];
        let halves: [Half; 2] = [a.split(), b.split()];
        let flows = [Arc::new(Flow::default()), Arc::new(Flow::default())];
        let [(a_out, a_in), (b_out, b_in)] = halves;
        // a sends on a_out and receives b's flow on a_in, and the other way round.
        for (side, (out, incoming)) in [(a_out, b_in), (b_out, a_in)].into_iter().enumerate() {
            let (frames, flow, peer_flow) = (
                frames[side].clone(),
                flows[side].clone(),
                flows[1 - side].clone(),
            );
            let due = dues.next().expect("one clock per sender");
            let drain = args.drain;
            tasks.spawn(async move {
                let send = send_when_due(out, &frames, &flow, due, stamp);
                let receive = receive_flow(incoming, &peer_flow, drain);
                let ((out, send_errors), (incoming, mut track)) = tokio::join!(send, receive);
                track.errors += send_errors;
                (
                    side,
                    i,
                    out,
                    incoming,
                    frames,
                    flow.sent.load(Ordering::Relaxed),
                    track,
                )
            });
        }
    }
    // The schedule starts once every sender's task is spawned, with a moment for each to
    // be polled: a message due before its sender could run would count that as latency.
    let start = Instant::now() + SCHEDULE_LEAD;
    clock.start(period, start, start + args.duration, per_sender);
    let ticker = tick_progress(&bar);
    let mut parts: Vec<[Option<Returned>; 2]> = Vec::new();
    let (mut sent, mut track) = (0, Track::new());
    while let Some(done) = tasks.join_next().await {
        let (side, i, out, incoming, frames, s, t) = done.expect("sender task");
        if parts.len() <= i {
            parts.resize_with(i + 1, || [None, None]);
        }
        parts[i][side] = Some((out, incoming, frames));
        sent += s;
        track.merge(t);
    }
    ticker.abort();
    bar.finish_and_clear();
    let sending = start.elapsed().min(args.duration);
    let run = summarise(Some(rate), sending, sent, &track, &meter)?;
    // Put the sockets back together: side 0 holds a's sink and b's stream.
    let mut pairs = Vec::with_capacity(parts.len());
    for [zero, one] in parts {
        let (a_out, b_in, a_to_b) = zero.expect("side 0 returned");
        let (b_out, a_in, b_to_a) = one.expect("side 1 returned");
        let a = a_out.reunite(a_in).expect("halves of one socket");
        let b = b_out.reunite(b_in).expect("halves of one socket");
        let unwrap = |f: Arc<Frames>| Arc::try_unwrap(f).ok().expect("frames no longer shared");
        pairs.push(Pair {
            a,
            b,
            a_to_b: unwrap(a_to_b),
            b_to_a: unwrap(b_to_a),
        });
    }
    Ok((run, pairs))
}

/// Sends each message the pacer hands out, stamped as `stamp` says, until it has no more.
async fn send_when_due(
    mut out: SplitSink<Socket, Message>,
    frames: &Frames,
    flow: &Flow,
    mut due: UnboundedReceiver<Due>,
    stamp: Stamp,
) -> (SplitSink<Socket, Message>, u64) {
    let mut errors = 0;
    while let Some((seq, at)) = due.recv().await {
        let frame = match stamp {
            Stamp::Sent => frames.frame(seq),
            Stamp::Intended => frames.frame_at(seq, ns_at(at)),
        };
        if out.send(frame).await.is_err() {
            errors += 1;
            break;
        }
        flow.sent.fetch_add(1, Ordering::Relaxed);
    }
    flow.done.store(true, Ordering::Release);
    (out, errors)
}

/// Receives a peer's flow until all it sent arrived, or `drain` after it stopped sending.
async fn receive_flow(
    mut incoming: SplitStream<Socket>,
    flow: &Flow,
    drain: Duration,
) -> (SplitStream<Socket>, Track) {
    let mut track = Track::new();
    let mut stopped_at: Option<tokio::time::Instant> = None;
    loop {
        if flow.done.load(Ordering::Acquire) {
            let now = tokio::time::Instant::now();
            let since = *stopped_at.get_or_insert(now);
            if track.received >= flow.sent.load(Ordering::Relaxed) || now >= since + drain {
                break;
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(50);
        match tokio::time::timeout_at(until, incoming.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(text)))) => match classify(&text) {
                Received::Relayed { seq, sent_ns } => track.record(seq, sent_ns),
                Received::Error => track.refusal(&text),
                Received::Other => {}
            },
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                track.error(&format!("connection failed: {e}"));
                break;
            }
            Ok(None) => {
                track.error("the server closed the connection");
                break;
            }
        }
    }
    (incoming, track)
}

/// A sweep step passes when nothing was lost or failed, the rate was reached and p99 held.
fn sustained(run: &RelayRun, bound: Duration) -> bool {
    run.lost == 0
        && run.errors == 0
        && run.duplicated == 0
        && run.achieved_rate >= 0.95 * run.target_rate.unwrap_or(0.0)
        && run.latency_us.p99 <= bound.as_secs_f64() * 1e6
}

/// Runs the scenario.
pub async fn run(
    target: &Arc<Target>,
    args: &RelayArgs,
    cross: bool,
) -> Result<Report, BenchError> {
    if args.pairs == 0 {
        return Err(BenchError::new("--pairs must be at least 1"));
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) || args.sweep_factor <= 1.0 {
        return Err(BenchError::new(
            "--rate must be above 0 and --sweep-factor above 1",
        ));
    }
    switchboard::fd_limit::raise();
    let mut pairs = set_up(target, args, cross).await?;
    let size = match args.message {
        MessageKind::Offer => format!("{} B SDP", args.sdp_bytes),
        MessageKind::Candidate => format!("{} B candidates", args.candidate_bytes),
    };
    let placement = if cross {
        format!("peers of a pair on different nodes of {}", target.nodes())
    } else if target.nodes() > 1 {
        format!(
            "both peers of a pair on one node, pairs over {}",
            target.nodes()
        )
    } else {
        "one node".to_string()
    };
    let mut report = Report {
        scenario: if cross { "multi-node" } else { "relay" },
        mode: "closed-loop",
        label: format!("{} pairs, {size}, {placement}", args.pairs),
        runs: Vec::new(),
        max_sustained_rate: None,
        latency_from: (args.rate.is_some() || args.sweep).then_some(args.latency_from),
        idle: None,
        storm: None,
        soak: None,
        first_error: None,
    };
    let pids = &target.server_pids;
    match (args.rate, args.sweep) {
        (None, false) => report.runs.push(closed_loop(pairs, args, pids).await?),
        (Some(rate), false) => {
            report.mode = "open-loop";
            report.runs.push(
                open_loop(pairs, rate, args.latency_from, args, pids)
                    .await?
                    .0,
            );
        }
        (start, true) => {
            report.mode = "sweep";
            let mut rate = start.unwrap_or(SWEEP_START);
            let most = args.max_rate.unwrap_or(f64::INFINITY);
            for _ in 0..MAX_SWEEP_STEPS {
                if rate > most * 1.0001 {
                    break;
                }
                let (run, back) = open_loop(pairs, rate, args.latency_from, args, pids).await?;
                pairs = back;
                let ok = sustained(&run, args.p99_bound);
                eprintln!(
                    "{rate:>9.0}/s: achieved {:.0}/s, p99 {:.2} ms, lost {}, errors {}{}",
                    run.achieved_rate,
                    run.latency_us.p99 / 1000.0,
                    run.lost,
                    run.errors,
                    if ok { "" } else { " (over the bounds: stop)" }
                );
                report.runs.push(run);
                if !ok {
                    break;
                }
                report.max_sustained_rate = Some(rate);
                rate *= args.sweep_factor;
            }
        }
    }
    report.first_error = report.runs.iter().find_map(|r| r.first_error.clone());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_relay_and_are_read_back() {
        let args = RelayArgs {
            pairs: 1,
            message: MessageKind::Offer,
            sdp_bytes: 2048,
            candidate_bytes: 200,
            rate: None,
            sweep: false,
            max_rate: None,
            sweep_factor: 1.25,
            p99_bound: Duration::from_millis(10),
            duration: Duration::from_secs(1),
            max_messages: 10,
            drain: Duration::from_secs(1),
            latency_from: Stamp::Intended,
        };
        for (kind, size) in [("offer", 2048), ("ice-candidate", 200)] {
            let Message::Text(text) = Frames::new(kind, "bob-1", &args).frame(41) else {
                panic!("a text frame")
            };
            let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(value["type"], kind);
            assert!(
                text.len().abs_diff(size) < 64,
                "{kind}: {} bytes",
                text.len()
            );
            assert!(matches!(classify(&text), Received::Relayed { seq: 41, .. }));
        }
        assert!(matches!(
            classify(r#"{"type":"error","code":"peer_not_found"}"#),
            Received::Error
        ));
        assert!(matches!(
            classify(r#"{"type":"peer_joined"}"#),
            Received::Other
        ));
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        let mut track = Track::new();
        for seq in [0, 1, 3, 2, 3, 200] {
            track.record(seq, now_ns());
        }
        assert_eq!(track.received, 5);
        assert_eq!(track.duplicated, 1);
        assert_eq!(track.reordered, 1);
        assert_eq!(track.latency.len(), 5);
    }
}
