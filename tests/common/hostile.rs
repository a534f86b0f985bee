//! The attacker's side of the `tests/hostile_*.rs` files: a `switchboard serve` process to
//! attack ([`Node`]), a WebSocket client over raw TCP that writes frames by hand (a client
//! library refuses to send bad ones), and the bystanders who must not notice the attack:
//! an honest pair relaying offers in another room, `/health/live`, and the server
//! process's resident memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::MaybeTlsStream;

use super::process::Running;
use super::{Client, DEADLINE, SECRET, client_at, issuer, patient};

/// The API key a production [`Node`] issues tokens for.
pub const API_KEY: &str = "hostile-test-key-0123456789abcdef";
/// The one origin a production [`Node`] allows.
pub const ORIGIN: &str = "https://app.example.com";

/// A `switchboard serve` process to attack, on 127.0.0.1 and a free port.
pub struct Node {
    /// The process (its logs, its pid).
    pub process: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The same, as `host:port`.
    pub address: String,
    /// Where its `/metrics` answers, as `host:port`.
    metrics: String,
}

impl Node {
    /// A development node with `vars` (which win over the test's own): the test secret,
    /// and no per-IP rate or CPU shedding (every client comes from 127.0.0.1 on a busy
    /// test machine; neither is under test).
    pub fn development(vars: &[(&str, &str)]) -> Node {
        Self::start(&[], vars)
    }

    /// A production node, as the hostile client of the issue met it: tokens only for
    /// [`API_KEY`], upgrades only from [`ORIGIN`] (or no origin), `/metrics` on a listener
    /// of its own; `vars` win.
    pub fn production(vars: &[(&str, &str)]) -> Node {
        let production = [
            ("SWITCHBOARD_ENV", "production"),
            ("TOKEN_ISSUANCE", "api-key"),
            ("AUTH_API_KEYS", API_KEY),
            ("ALLOWED_ORIGINS", ORIGIN),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ];
        Self::start(&production, vars)
    }

    fn start(mode: &[(&str, &str)], vars: &[(&str, &str)]) -> Node {
        let mut all = vec![
            ("AUTH_SECRET", SECRET),
            ("RATE_PER_IP_PER_MINUTE", "0"),
            ("SHED_CPU_PERCENT", "0"),
        ];
        all.extend_from_slice(mode);
        // Later values of a variable replace earlier ones.
        all.extend_from_slice(vars);
        let own_metrics = all.iter().any(|(name, _)| *name == "METRICS_ADDR");
        let (mut process, address) = Running::start(&all);
        let metrics = if own_metrics {
            // Logged before "listening", so already seen.
            let line = process.wait_for(|l| l.contains("serving /metrics"));
            let record: Value = serde_json::from_str(&line).unwrap();
            record["address"].as_str().unwrap().to_string()
        } else {
            address.clone()
        };
        Node {
            process,
            addr: address.parse().unwrap(),
            address,
            metrics,
        }
    }

    /// A node for a process started otherwise (under a resource limit, say), serving
    /// `/metrics` on its main port.
    pub fn of(process: Running, address: String) -> Node {
        Node {
            process,
            addr: address.parse().unwrap(),
            metrics: address.clone(),
            address,
        }
    }

    /// The process id, for its resident memory.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// An honest pair and `/health/live`, watched from now on.
    pub async fn bystanders(&self) -> Bystanders {
        Bystanders::start(&self.address, self.pid()).await
    }

    /// The sum of the samples of `/metrics` whose line starts with `series` (a name, or
    /// a name with one label set); 0 when there is none.
    pub async fn metric(&self, series: &str) -> f64 {
        let base = format!("http://{}", self.metrics);
        super::metric_total(&reqwest::Client::new(), &base, series).await
    }

    /// `switchboard_deadline_closes_total` for `reason`.
    pub async fn deadline_closes(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "switchboard_deadline_closes_total{{reason=\"{reason}\"}}"
        ))
        .await
    }
}

/// A protocol client of `user` connected to `addr` from the local address `from` (a
/// loopback alias), registered and with its peer id set.
pub async fn client_from(addr: SocketAddr, from: IpAddr, user: &str) -> Client {
    let issued = issuer(Duration::from_secs(600)).issue(user, None, None);
    let tcp = super::sockets::connect(addr, Some(from))
        .await
        .expect("connect from the alias");
    let url = format!("ws://{addr}/ws/signal?token={}", issued.token);
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .expect("websocket upgrade");
    let mut client = Client::registered(ws).await;
    client.peer_id = issued.claims.peer_id();
    client
}

/// Bytes as MiB, for the printed figures.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Opcodes (RFC 6455 §5.2), and a masked client frame: `opcode`, with FIN set when `fin`.
#[allow(unused_imports)] // Each test crate that includes this module uses a few of them.
pub use switchboard::net::websocket::frame::{
    BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, client_frame as frame,
};

/// The attacker's receive buffer: small, so a server that answers a client that never
/// reads hits a full socket after kilobytes rather than megabytes.
const RECEIVE_BUFFER: u32 = 4096;
/// Bytes handed to the kernel per write of a flood.
const FLOOD_CHUNK: usize = 64 * 1024;

/// A close frame carrying `code`, or no body at all.
pub fn close_frame(code: Option<u16>) -> Vec<u8> {
    let body = code.map(u16::to_be_bytes);
    frame(CLOSE, true, body.as_ref().map_or(&[][..], |b| &b[..]))
}

/// How a flood ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodEnd {
    /// The server closed the connection (a write failed or the socket reached its end).
    Closed,
    /// The deadline passed with the connection still open.
    Deadline,
}

/// What a flood did.
#[derive(Debug)]
pub struct Flooded {
    /// How it ended.
    pub end: FloodEnd,
    /// Bytes the kernel took.
    pub sent: u64,
    /// From the first byte to the end.
    pub elapsed: Duration,
}

/// What the attacker read next.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A frame from the server: its opcode and payload.
    Frame(u8, Vec<u8>),
    /// The server closed TCP in order (end of stream).
    End,
    /// The connection failed (a reset).
    Failed(String),
}

/// A raw WebSocket connection that writes whatever it is told to.
pub struct Attacker {
    socket: TcpStream,
    /// Bytes received and not yet parsed into frames.
    received: Vec<u8>,
}

impl Attacker {
    /// Upgrades a raw socket to `/ws/signal` on `addr` with a fresh token for `user`.
    pub async fn connect(addr: &str, user: &str) -> Attacker {
        Self::connect_sending(addr, user, &[]).await
    }

    /// Like [`Attacker::connect`], writing `early` right behind the upgrade request, before
    /// the server's answer (RFC 6455 §4.1 forbids it).
    pub async fn connect_sending(addr: &str, user: &str, early: &[u8]) -> Attacker {
        let token = issuer(Duration::from_secs(600))
            .issue(user, None, None)
            .token;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(RECEIVE_BUFFER).unwrap();
        let mut socket = socket.connect(addr.parse().unwrap()).await.unwrap();
        let request = format!(
            "GET /ws/signal?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let mut request = request.into_bytes();
        request.extend_from_slice(early);
        socket.write_all(&request).await.unwrap();
        let mut received = Vec::new();
        let head_end = tokio::time::timeout(patient(DEADLINE), async {
            let mut buf = [0u8; 1024];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the server closed during the handshake");
                received.extend_from_slice(&buf[..n]);
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    return end + 4;
                }
            }
        })
        .await
        .expect("a handshake response before the deadline");
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        received.drain(..head_end);
        Attacker { socket, received }
    }

    /// Writes `bytes` and fails the test if the server does not take them in time.
    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(patient(DEADLINE), self.socket.write_all(bytes))
            .await
            .expect("the server to take the bytes in time")
            .expect("the server to take the bytes");
    }

    /// Writes `unit` over and over, never reading, until the server closes the connection
    /// or `within` (stretched by the patience) has passed.
    pub async fn flood(&mut self, unit: &[u8], within: Duration) -> Flooded {
        let chunk = unit.repeat((FLOOD_CHUNK / unit.len()).max(1));
        let started = Instant::now();
        let deadline = started + patient(within);
        let mut sent = 0u64;
        // Where the next write starts in `chunk`: a partial write must not break a frame.
        let mut at = 0;
        let end = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break FloodEnd::Deadline;
            }
            // A write that waits means the server is not reading (it is closing, or
            // lingering); the loop goes on until it fails or the deadline passes.
            match tokio::time::timeout(left, self.socket.write(&chunk[at..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => break FloodEnd::Closed,
                Ok(Ok(n)) => {
                    sent += n as u64;
                    at = (at + n) % chunk.len();
                }
                Err(_) => break FloodEnd::Deadline,
            }
        };
        Flooded {
            end,
            sent,
            elapsed: started.elapsed(),
        }
    }

    /// The code of the server's close frame, skipping the frames before it; `None` when
    /// the stream ended without one.
    pub async fn close_code(&mut self) -> Option<Option<u16>> {
        loop {
            match self.receive().await {
                Received::Frame(CLOSE, payload) => return Some(close_code(&payload)),
                Received::Frame(..) => continue,
                _ => return None,
            }
        }
    }

    /// The next frame from the server, the end of the stream, or a failure; fails the test
    /// when nothing comes within the deadline.
    pub async fn receive(&mut self) -> Received {
        let read = async {
            loop {
                if let Some((opcode, payload, used)) = parse(&self.received) {
                    self.received.drain(..used);
                    return Received::Frame(opcode, payload);
                }
                let mut buf = [0u8; 4096];
                match self.socket.read(&mut buf).await {
                    Ok(0) if self.received.is_empty() => return Received::End,
                    Ok(0) => return Received::Failed("the stream ended mid-frame".into()),
                    Ok(n) => self.received.extend_from_slice(&buf[..n]),
                    Err(e) => return Received::Failed(e.to_string()),
                }
            }
        };
        tokio::time::timeout(patient(DEADLINE), read)
            .await
            .expect("a frame or the end of the stream before the deadline")
    }
}

/// One unmasked server frame at the start of `bytes`: opcode, payload and bytes used.
fn parse(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(second & 0x80, 0, "the server masked a frame");
    let (length, start) = match second & 0x7F {
        126 => (
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = bytes.get(start..start + length)?.to_vec();
    Some((first & 0x0F, payload, start + length))
}

/// The unmasked frame a client must never send (RFC 6455 §5.1).
pub fn unmasked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

/// The close code a close frame's payload carries, if any.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// The resident memory of process `pid`, in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// `switchboard_closes_total{code}` from the server's `/metrics`.
pub async fn closes(addr: &str, code: u16) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("switchboard_closes_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// What the bystanders saw while an attack ran.
#[derive(Debug)]
pub struct Watched {
    /// The server's resident memory before the attack.
    pub baseline: u64,
    /// The most it held meanwhile.
    pub peak: u64,
    /// Offers the honest pair relayed meanwhile.
    pub relays: u64,
    /// `/health/live` answers meanwhile (each a 200).
    pub live: u64,
}

impl Watched {
    /// How far resident memory rose above the baseline, in bytes.
    pub fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }

    /// The figures, for a test's printed line.
    pub fn summary(&self) -> String {
        format!(
            "server RSS {:.1} MiB, peak growth {:.2} MiB; {} offers relayed and {} \
             /health/live answers meanwhile",
            mib(self.baseline),
            mib(self.growth()),
            self.relays,
            self.live,
        )
    }

    /// Fails the test unless memory grew by less than `bound` and the bystanders were
    /// served throughout (each check at least twice: before the attack ended and after).
    pub fn assert_unharmed(&self, what: &str, bound: u64) {
        assert!(
            self.growth() < bound,
            "{what}: the server's memory grew by {:.2} MiB (bound {:.0} MiB): {self:?}",
            mib(self.growth()),
            mib(bound),
        );
        assert!(self.relays >= 2 && self.live >= 2, "{what}: {self:?}");
    }
}

/// An honest pair in its own room relaying offers, `/health/live` and the server's
/// memory, checked in turn until [`Bystanders::finish`].
pub struct Bystanders {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Watched>,
}

impl Bystanders {
    /// Joins an honest pair on the server at `addr` (process `pid`) and starts watching.
    pub async fn start(addr: &str, pid: u32) -> Bystanders {
        let room = "honest-room";
        let (mut alice, _) = client_at(addr, "honest-alice").await;
        let (mut bob, _) = client_at(addr, "honest-bob").await;
        alice.join(room).await;
        bob.join(room).await;
        alice.expect("peer_joined").await;
        let baseline = rss(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let live_url = format!("http://{addr}/health/live");
        let task = tokio::spawn(async move {
            // A fresh connection for every check, as a load balancer's probe: a kept-alive
            // one would be closed by UPGRADE_TIMEOUT between two checks.
            let http = reqwest::Client::builder()
                .timeout(patient(DEADLINE))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let mut watched = Watched {
                baseline,
                peak: baseline,
                relays: 0,
                live: 0,
            };
            // One last round after the stop, so a server that stopped relaying fails here,
            // and one before it however fast the attack ended.
            let mut last = false;
            while !last {
                last = watched.relays > 0 && stopping.load(Ordering::Acquire);
                let sdp = format!("v=0 honest {}", watched.relays);
                alice.offer(&bob.peer_id, &sdp).await;
                let offer = bob.expect("offer").await;
                assert_eq!(
                    offer["sdp"],
                    json!(sdp),
                    "the honest pair got another offer"
                );
                watched.relays += 1;
                let live = http.get(&live_url).send().await.expect("/health/live");
                assert_eq!(live.status(), 200, "/health/live during the attack");
                watched.live += 1;
                watched.peak = watched.peak.max(rss(pid));
                // Paced under the honest pair's own message rate (50/s).
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            watched
        });
        Bystanders { stop, task }
    }

    /// Stops watching and returns what was seen; fails the test if a bystander failed.
    pub async fn finish(self) -> Watched {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("the bystanders kept working")
    }
}
