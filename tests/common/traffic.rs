//! Numbered cross-node calls: pairs of clients, each pair split over two nodes, both sides
//! sending `offer`s at a steady rate, and a checker that accounts for every message by its
//! sequence number.
//!
//! Each offer's `sdp` starts with `seq:<n>` and its `id` is `n`, so an `error` about it
//! names it (`ref`). Sends follow a fixed schedule (the intended send time of `n` is known
//! to both sides), so a stall is measured from when a message should have left, not from
//! when a delayed sender got round to it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::eventually::{Pacing, patient};
use super::{Client, client_at};

/// How much traffic to drive: from `FAULT_PAIRS`, `FAULT_RATE` and `FAULT_SDP_BYTES`,
/// with small defaults so the scenarios run in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Calls, each with one side on each of two nodes.
    pub pairs: usize,
    /// Offers per second over all calls and both directions.
    pub rate: f64,
    /// Size of each offer's `sdp` (a real one is 2 to 6 KB).
    pub sdp_bytes: usize,
}

impl Plan {
    /// The plan from the environment, or the defaults given.
    pub fn from_env(pairs: usize, rate: f64) -> Plan {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
                Err(_) => default,
            }
        }
        let plan = Plan {
            pairs: var("FAULT_PAIRS", pairs),
            rate: var("FAULT_RATE", rate),
            sdp_bytes: var("FAULT_SDP_BYTES", 1024),
        };
        assert!(plan.pairs > 0 && plan.rate > 0.0, "{plan:?}");
        plan
    }

    /// Time between two offers of one direction.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(2.0 * self.pairs as f64 / self.rate)
    }
}

/// One client of a call.
#[derive(Debug, Clone)]
pub struct Side {
    /// `a<i>` or `b<i>` for call `i`.
    pub name: String,
    /// The node it is connected to (an index into the addresses given).
    pub node: usize,
    /// Its peer id.
    pub peer_id: String,
    /// The room of its call.
    pub room: String,
    /// Index of the other side of the call.
    pub partner: usize,
    /// When its offer 0 was due; offer `n` is due `n` intervals later.
    first_due: Instant,
}

/// What one client saw, with when.
#[derive(Debug, Default)]
pub struct SideLog {
    /// Offers it sent (0..sent), each accepted by its socket.
    pub sent: u64,
    /// Its partner's offers it received: (seq, when), in arrival order.
    pub received: Vec<(u64, Instant)>,
    /// Errors naming one of its offers: (seq, code, when).
    pub refused: Vec<(u64, String, Instant)>,
    /// `peer_left`: (peer, reason, when).
    pub peer_left: Vec<(String, String, Instant)>,
    /// `peer_joined`: (peer, when).
    pub peer_joined: Vec<(String, Instant)>,
    /// Its connection ended: the close code (none without a close frame) and when.
    pub closed: Option<(Option<u16>, Instant)>,
    /// Anything else (errors without a usable `ref`, offers from strangers, …).
    pub unexpected: Vec<String>,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Sending,
    Draining,
    Stopped,
}

/// Calls running in the background.
pub struct Traffic {
    plan: Plan,
    /// Every side: pair `i` is sides `2i` (a) and `2i + 1` (b).
    sides: Vec<Side>,
    logs: Vec<Arc<Mutex<SideLog>>>,
    stage: watch::Sender<Stage>,
    tasks: Vec<JoinHandle<()>>,
    /// When the first offer was due.
    pub started: Instant,
}

impl Traffic {
    /// Connects `plan.pairs` calls, call `i` with side a on node `i % n` and side b on
    /// node `(i + 1) % n` of `addrs`, each in its own room; once both sides of every call
    /// see each other, both start sending.
    pub async fn start(addrs: &[String], plan: Plan) -> Traffic {
        assert!(addrs.len() >= 2, "calls need two nodes");
        let mut clients = Vec::new();
        let mut sides = Vec::new();
        // The schedule starts once every call is connected (set below).
        let unscheduled = Instant::now();
        for i in 0..plan.pairs {
            let room = format!("call-{i}");
            let (na, nb) = (i % addrs.len(), (i + 1) % addrs.len());
            let (mut a, _) = client_at(&addrs[na], &format!("a{i}")).await;
            let (mut b, _) = client_at(&addrs[nb], &format!("b{i}")).await;
            a.join(&room).await;
            b.join(&room).await;
            let joined = a.expect("peer_joined").await;
            assert_eq!(joined["peerId"], b.peer_id.as_str(), "call {i}");
            for (name, node, client, partner) in [("a", na, &a, 2 * i + 1), ("b", nb, &b, 2 * i)] {
                sides.push(Side {
                    name: format!("{name}{i}"),
                    node,
                    peer_id: client.peer_id.clone(),
                    room: room.clone(),
                    partner,
                    first_due: unscheduled,
                });
            }
            clients.push(a);
            clients.push(b);
        }
        // Directions are spread evenly over one interval so the aggregate rate is steady.
        let started = Instant::now() + Duration::from_millis(100);
        let directions = sides.len() as u32;
        for (d, side) in sides.iter_mut().enumerate() {
            side.first_due = started + plan.interval() * d as u32 / directions;
        }
        let (stage, _) = watch::channel(Stage::Sending);
        let logs: Vec<Arc<Mutex<SideLog>>> = sides.iter().map(|_| Arc::default()).collect();
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let partner = &sides[sides[i].partner];
                tokio::spawn(converse(Conversation {
                    client,
                    me: sides[i].clone(),
                    partner_id: partner.peer_id.clone(),
                    interval: plan.interval(),
                    sdp_bytes: plan.sdp_bytes,
                    log: logs[i].clone(),
                    stage: stage.subscribe(),
                }))
            })
            .collect();
        Traffic {
            plan,
            sides,
            logs,
            stage,
            tasks,
            started,
        }
    }

    /// Every side.
    pub fn sides(&self) -> &[Side] {
        &self.sides
    }

    /// Reads side `i`'s log.
    pub fn log<R>(&self, i: usize, read: impl FnOnce(&SideLog) -> R) -> R {
        read(&self.logs[i].lock().unwrap())
    }

    /// Offers delivered so far, over all directions.
    pub fn delivered(&self) -> usize {
        self.logs
            .iter()
            .map(|l| l.lock().unwrap().received.len())
            .sum()
    }

    /// Each room and the peer ids that belong in it.
    pub fn rooms(&self) -> Vec<(String, Vec<String>)> {
        self.sides
            .chunks(2)
            .map(|p| {
                (
                    p[0].room.clone(),
                    vec![p[0].peer_id.clone(), p[1].peer_id.clone()],
                )
            })
            .collect()
    }

    /// Waits (bounded by `within`, without failing) until every direction whose sender
    /// still sends and whose receiver is connected has delivered or refused an offer due
    /// at or after `instant`; returns whether that happened.
    pub async fn wait_past(&self, instant: Instant, within: Duration) -> bool {
        holds_within(within, async || {
            (0..self.sides.len()).all(|s| {
                let receiver = self.sides[s].partner;
                let sender_log = self.logs[s].lock().unwrap();
                let receiver_log = self.logs[receiver].lock().unwrap();
                if sender_log.closed.is_some() || receiver_log.closed.is_some() {
                    return true;
                }
                let due = |seq: u64| self.due(s, seq) >= instant;
                receiver_log.received.iter().any(|(seq, _)| due(*seq))
                    || sender_log.refused.iter().any(|(seq, _, _)| due(*seq))
            })
        })
        .await
    }

    /// When side `s`'s offer `seq` was due.
    fn due(&self, s: usize, seq: u64) -> Instant {
        self.sides[s].first_due + self.plan.interval().mul_f64(seq as f64)
    }

    /// Stops sending, waits (up to `settle_within`) until every offer sent is delivered
    /// or refused, stops the clients and accounts for every message.
    pub async fn finish(self, scenario: &str, settle_within: Duration) -> Report {
        self.stage.send_replace(Stage::Draining);
        let settled = holds_within(settle_within, async || {
            (0..self.sides.len()).all(|s| {
                let receiver = self.sides[s].partner;
                let sender = self.logs[s].lock().unwrap();
                let receiver_log = self.logs[receiver].lock().unwrap();
                let answered = receiver_log.received.len() + sender.refused.len();
                receiver_log.closed.is_some() || answered as u64 >= sender.sent
            })
        })
        .await;
        self.stage.send_replace(Stage::Stopped);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let mut report = Report::new(scenario, self.plan, settled);
        for (s, side) in self.sides.iter().enumerate() {
            let receiver = &self.sides[side.partner];
            let sender_log = self.logs[s].lock().unwrap();
            let receiver_log = self.logs[side.partner].lock().unwrap();
            report.account(side, receiver, &sender_log, &receiver_log, |seq| {
                side.first_due + self.plan.interval().mul_f64(seq as f64)
            });
        }
        report
    }
}

/// Polls `check` until it holds or `within` (times the patience) passed; unlike
/// `eventually` it reports instead of failing, so a scenario can list every failure.
pub async fn holds_within(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    let mut pacing = Pacing::new(patient(within));
    loop {
        if check().await {
            return true;
        }
        match pacing.next(started.elapsed()) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return false,
        }
    }
}

/// What one client task needs.
struct Conversation {
    client: Client,
    me: Side,
    partner_id: String,
    interval: Duration,
    sdp_bytes: usize,
    log: Arc<Mutex<SideLog>>,
    stage: watch::Receiver<Stage>,
}

/// An offer body of `bytes` bytes starting with its sequence number.
fn sdp(seq: u64, bytes: usize) -> String {
    let mut sdp = format!("seq:{seq}\r\nv=0\r\n");
    while sdp.len() + 2 < bytes {
        sdp.push_str("a=x-pad:0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    }
    sdp.truncate(bytes.max(16));
    sdp
}

/// The sequence number at the start of a relayed `sdp`.
fn seq_of(sdp: &str) -> Option<u64> {
    let rest = sdp.strip_prefix("seq:")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Sends offers on schedule while recording everything the server sends, until stopped or
/// the connection ends.
async fn converse(c: Conversation) {
    let Conversation {
        client,
        me,
        partner_id,
        interval,
        sdp_bytes,
        log,
        mut stage,
    } = c;
    let mut ws = client.ws;
    let mut seq: u64 = 0;
    // Set when a send failed: the connection is gone and its end shows up as a read.
    let mut broken = false;
    loop {
        let now_stage = *stage.borrow();
        if now_stage == Stage::Stopped {
            return;
        }
        let due = me.first_due + interval.mul_f64(seq as f64);
        let sending = now_stage == Stage::Sending && !broken;
        tokio::select! {
            changed = stage.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(due), if sending => {
                let offer = json!({"type": "offer", "peerId": partner_id,
                    "sdp": sdp(seq, sdp_bytes), "id": seq});
                // Counted before the send: `finish` may stop sending while this one is on
                // its way, and must then wait for its answer too. The stage is read again
                // under the log's lock, which `finish` takes to check: either it sees this
                // offer counted, or this offer sees the stage changed and is not sent.
                {
                    let mut log = log.lock().unwrap();
                    if *stage.borrow() != Stage::Sending {
                        continue;
                    }
                    log.sent = seq + 1;
                }
                if ws.send(Message::text(offer.to_string())).await.is_err() {
                    log.lock().unwrap().sent = seq;
                    broken = true;
                    continue;
                }
                seq += 1;
            }
            message = ws.next() => {
                let now = Instant::now();
                let mut log = log.lock().unwrap();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let m: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        record(&mut log, &m, &partner_id, now);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        log.closed = Some((frame.map(|f| u16::from(f.code)), now));
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        log.closed.get_or_insert((None, now));
                        return;
                    }
                }
            }
        }
    }
}

/// Files one server message in `log`.
fn record(log: &mut SideLog, m: &Value, partner: &str, now: Instant) {
    let peer = || m["peerId"].as_str().unwrap_or_default().to_string();
    match m["type"].as_str().unwrap_or_default() {
        "offer" if m["peerId"] == partner => match m["sdp"].as_str().and_then(seq_of) {
            Some(seq) => log.received.push((seq, now)),
            None => log.unexpected.push(format!("unnumbered offer: {m}")),
        },
        "error" => match m["ref"].as_u64() {
            Some(seq) => {
                let code = m["code"].as_str().unwrap_or_default().to_string();
                log.refused.push((seq, code, now));
            }
            None => log.unexpected.push(m.to_string()),
        },
        "peer_left" => {
            let reason = m["reason"].as_str().unwrap_or_default().to_string();
            log.peer_left.push((peer(), reason, now));
        }
        "peer_joined" => log.peer_joined.push((peer(), now)),
        "pong" | "token" => {}
        _ => log.unexpected.push(m.to_string()),
    }
}

/// Every message of a run accounted for, per direction and in total.
#[derive(Debug)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The traffic driven.
    pub plan: Plan,
    /// Whether every sent offer was answered before the settle deadline.
    pub settled: bool,
    /// Offers sent.
    pub sent: u64,
    /// Offers delivered (once).
    pub delivered: u64,
    /// Refusals by error code.
    pub refused: BTreeMap<String, u64>,
    /// Offers neither delivered nor refused: (direction, seq).
    pub lost: Vec<(String, u64)>,
    /// Of those, sent after their receiver's connection had closed.
    pub lost_to_closed: u64,
    /// Offers delivered more than once: (direction, seq).
    pub duplicated: Vec<(String, u64)>,
    /// Offers both delivered and refused: (direction, seq).
    pub contradicted: Vec<(String, u64)>,
    /// Offers delivered after a later one of the same direction: (direction, seq).
    pub reordered: Vec<(String, u64)>,
    /// Clients whose connection ended: (side, node, close code).
    pub closed: Vec<(String, usize, Option<u16>)>,
    /// Longest time from an offer's due time to its delivery, and which one.
    pub longest_stall: (Duration, String),
    /// Messages nobody expected, per side.
    pub unexpected: Vec<(String, String)>,
}

impl Report {
    fn new(scenario: &str, plan: Plan, settled: bool) -> Report {
        Report {
            scenario: scenario.into(),
            plan,
            settled,
            sent: 0,
            delivered: 0,
            refused: BTreeMap::new(),
            lost: Vec::new(),
            lost_to_closed: 0,
            duplicated: Vec::new(),
            contradicted: Vec::new(),
            reordered: Vec::new(),
            closed: Vec::new(),
            longest_stall: (Duration::ZERO, String::new()),
            unexpected: Vec::new(),
        }
    }

    /// Accounts for the direction `from` → `to`, whose offer `seq` was due at `due(seq)`.
    fn account(
        &mut self,
        from: &Side,
        to: &Side,
        sender: &SideLog,
        receiver: &SideLog,
        due: impl Fn(u64) -> Instant,
    ) {
        let direction = format!("{}→{}", from.name, to.name);
        self.sent += sender.sent;
        if let Some((code, _)) = sender.closed {
            self.closed.push((from.name.clone(), from.node, code));
        }
        self.unexpected.extend(
            sender
                .unexpected
                .iter()
                .map(|u| (from.name.clone(), u.clone())),
        );
        let mut seen = HashSet::new();
        let mut highest: Option<u64> = None;
        for (seq, at) in &receiver.received {
            if !seen.insert(*seq) {
                self.duplicated.push((direction.clone(), *seq));
                continue;
            }
            self.delivered += 1;
            if highest.is_some_and(|h| *seq < h) {
                self.reordered.push((direction.clone(), *seq));
            }
            highest = highest.max(Some(*seq));
            let stall = at.saturating_duration_since(due(*seq));
            if stall > self.longest_stall.0 {
                self.longest_stall = (stall, format!("{direction} #{seq}"));
            }
        }
        let mut refused = HashSet::new();
        for (seq, code, _) in &sender.refused {
            *self.refused.entry(code.clone()).or_default() += 1;
            if seen.contains(seq) {
                self.contradicted.push((direction.clone(), *seq));
            }
            refused.insert(*seq);
        }
        let receiver_closed = receiver.closed.map(|(_, at)| at);
        for seq in 0..sender.sent {
            if !seen.contains(&seq) && !refused.contains(&seq) {
                self.lost.push((direction.clone(), seq));
                if receiver_closed.is_some_and(|at| due(seq) >= at) {
                    self.lost_to_closed += 1;
                }
            }
        }
    }

    /// What breaks the promise every scenario holds the server to: nothing lost silently,
    /// duplicated, contradicted or reordered, and no client closed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.lost.is_empty() {
            failures.push(format!(
                "{} offers silently lost (neither delivered nor refused; {} of them sent after \
                 the receiver was closed), e.g. {}",
                self.lost.len(),
                self.lost_to_closed,
                sample(&self.lost)
            ));
        }
        if !self.duplicated.is_empty() {
            failures.push(format!(
                "{} offers delivered twice, e.g. {}",
                self.duplicated.len(),
                sample(&self.duplicated)
            ));
        }
        if !self.contradicted.is_empty() {
            failures.push(format!(
                "{} offers both delivered and refused, e.g. {}",
                self.contradicted.len(),
                sample(&self.contradicted)
            ));
        }
        if !self.reordered.is_empty() {
            failures.push(format!(
                "{} offers delivered after a later one, e.g. {}",
                self.reordered.len(),
                sample(&self.reordered)
            ));
        }
        if !self.closed.is_empty() {
            let closed: Vec<String> = self
                .closed
                .iter()
                .take(8)
                .map(|(side, node, code)| match code {
                    Some(code) => format!("{side} on node-{node} with {code}"),
                    None => format!("{side} on node-{node} without a close frame"),
                })
                .collect();
            failures.push(format!(
                "{} clients closed: {}{}",
                self.closed.len(),
                closed.join(", "),
                if self.closed.len() > 8 { ", …" } else { "" }
            ));
        }
        if !self.unexpected.is_empty() {
            failures.push(format!(
                "{} unexpected messages, e.g. {:?}",
                self.unexpected.len(),
                &self.unexpected[..self.unexpected.len().min(3)]
            ));
        }
        failures
    }

    /// Refusals, total.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// The first few of a list, for a failure message.
fn sample(items: &[(String, u64)]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(5)
        .map(|(direction, seq)| format!("{direction} #{seq}"))
        .collect();
    format!(
        "{}{}",
        shown.join(", "),
        if items.len() > 5 { ", …" } else { "" }
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(code, n)| format!("{code}×{n}"))
            .collect();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for (_, _, code) in &self.closed {
            let code = code.map_or("none".into(), |c| c.to_string());
            *codes.entry(code).or_default() += 1;
        }
        let closed: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        write!(
            f,
            "{}: {} pairs, {} offers/s: sent {}, delivered {}, refused {} [{}], lost {}, \
             duplicated {}, reordered {}, both {}, clients closed {} [{}], longest stall \
             {:.2} s ({}){}",
            self.scenario,
            self.plan.pairs,
            self.plan.rate,
            self.sent,
            self.delivered,
            self.refused_total(),
            refused.join(" "),
            self.lost.len(),
            self.duplicated.len(),
            self.reordered.len(),
            self.contradicted.len(),
            self.closed.len(),
            closed.join(" "),
            self.longest_stall.0.as_secs_f64(),
            self.longest_stall.1,
            if self.settled {
                ""
            } else {
                ", unsettled at the deadline"
            }
        )
    }
}
