//! The soak's hostile clients: one connection (two for a slow consumer) each, written
//! byte by byte where a WebSocket library would refuse to misbehave, and what the
//! server did to it: refused it, answered it, closed it (how, and when), or left it open.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::client::Target;
use super::wire::{self, Incoming, opcode};

/// How long a WebSocket handshake or a join may take before the client gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A slow consumer's receive buffer: small, so the server's side fills up soon.
const SLOW_RECV_BUFFER: u32 = 4096;
/// How long a client that stopped writing reads on for the server's last words.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// A flooder writes its frames in this many batches a second.
const FLOOD_BATCHES: f64 = 100.0;

/// A kind of hostile client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// WebSocket pings at `--flood-rate` frames/s, never reading the pongs.
    PingFlood,
    /// A text message that never ends: empty frame, then empty continuations.
    EmptyFlood,
    /// TCP connections that never send a byte.
    IdleTcp,
    /// HTTP headers trickled one byte per second, never finished.
    Slowloris,
    /// An upgrade request whose headers stop before the blank line.
    PartialUpgrade,
    /// A WebSocket that answers pings but never joins a room.
    NeverJoins,
    /// `POST /auth/token` declaring a 1 GB body and sending none.
    HugeBody,
    /// Joins a room and never reads while its peer sends it offers.
    SlowConsumer,
    /// An upgrade with a token signed with the right key but unsafe: a `crit` header,
    /// `iat` in the future, `exp` in the year 3000, or a `sub` with a bidi override.
    BadToken,
    /// `POST /auth/token` (with the API key) for a user id with a bidi override.
    BadId,
    /// An upgrade with an 8-byte `Sec-WebSocket-Key`, two `Origin` headers, or no `Host`.
    BadHandshake,
    /// Joins a room and relays an `offer` whose `sdp` is an object, not a string.
    SdpObject,
    /// Sends a close frame, then reads on: the server must answer with its own.
    CloseThenRead,
    /// Puts a valid token and the API key where the server does not read them
    /// (`?jwt=`, `?api_key=`), hoping a log keeps them.
    LogProbe,
    /// `GET /metrics` on the client port (production serves it elsewhere).
    MetricsProbe,
}

impl Kind {
    /// Every kind, in the order the soak starts them.
    pub const ALL: [Kind; 15] = [
        Kind::PingFlood,
        Kind::EmptyFlood,
        Kind::IdleTcp,
        Kind::Slowloris,
        Kind::PartialUpgrade,
        Kind::NeverJoins,
        Kind::HugeBody,
        Kind::SlowConsumer,
        Kind::BadToken,
        Kind::BadId,
        Kind::BadHandshake,
        Kind::SdpObject,
        Kind::CloseThenRead,
        Kind::LogProbe,
        Kind::MetricsProbe,
    ];

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PingFlood => "ping-flood",
            Kind::EmptyFlood => "empty-flood",
            Kind::IdleTcp => "idle-tcp",
            Kind::Slowloris => "slowloris",
            Kind::PartialUpgrade => "partial-upgrade",
            Kind::NeverJoins => "never-joins",
            Kind::HugeBody => "huge-body",
            Kind::SlowConsumer => "slow-consumer",
            Kind::BadToken => "bad-token",
            Kind::BadId => "bad-id",
            Kind::BadHandshake => "bad-handshake",
            Kind::SdpObject => "sdp-object",
            Kind::CloseThenRead => "close-then-read",
            Kind::LogProbe => "log-probe",
            Kind::MetricsProbe => "metrics-probe",
        }
    }

    /// TCP connections one client of this kind opens.
    pub fn connections(self) -> usize {
        if self == Kind::SlowConsumer { 2 } else { 1 }
    }
}

/// What every hostile client shares.
pub struct Attack {
    /// The node's address.
    pub addr: SocketAddr,
    /// Source address of this kind's connections (one per kind against a loopback node,
    /// as a botnet spreads: per-IP limits then apply per kind, not to the whole soak).
    pub source: Option<IpAddr>,
    /// Tokens for the kinds that upgrade.
    pub target: Arc<Target>,
    /// Frames per second of a flooder.
    pub flood_rate: f64,
    /// Offers per second to a slow consumer.
    pub feed_rate: f64,
    /// SDP size of those offers.
    pub sdp_bytes: usize,
    /// Turns true when the run ends.
    pub stop: watch::Receiver<bool>,
    /// Connections of this kind open now.
    pub open: Arc<AtomicUsize>,
    /// Names this run's users and rooms apart from other runs'.
    pub run: String,
    /// The node's signing secret, to forge unsafe tokens with (`bad-token`).
    pub secret: Option<String>,
    /// An API key of the node's (`bad-id`, `log-probe`).
    pub api_key: Option<String>,
}

/// What became of one hostile client.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// It got as far as its attack needs (TCP connected; upgraded for WebSocket kinds).
    pub connected: bool,
    /// Why it did not.
    pub refused: Option<String>,
    /// An HTTP answer it got while attacking (`http 413`).
    pub answer: Option<String>,
    /// How the server ended it (`close 1008`, `eof`, `reset`) and how long after it
    /// connected.
    pub ended: Option<(String, Duration)>,
    /// A write of its was stuck when the run ended (the server stopped reading).
    pub blocked: bool,
}

impl Outcome {
    fn refused(why: impl Into<String>) -> Self {
        Outcome {
            refused: Some(why.into()),
            ..Outcome::default()
        }
    }
}

/// Runs client `i` of `kind` until the server ends it or the run stops.
pub async fn run(kind: Kind, i: usize, attack: Arc<Attack>) -> Outcome {
    let user = format!("soak-{}-{}-{i}", attack.run, kind.name());
    match kind {
        Kind::PingFlood => {
            let ping = wire::frame(opcode::PING, true, b"soak");
            flood(&attack, &user, Vec::new(), ping, false).await
        }
        Kind::EmptyFlood => {
            let first = wire::frame(opcode::TEXT, false, b"");
            let more = wire::frame(opcode::CONTINUATION, false, b"");
            flood(&attack, &user, first, more, true).await
        }
        Kind::IdleTcp => http(&attack, Vec::new(), false).await,
        Kind::Slowloris => {
            let head = format!("GET /ws/signal HTTP/1.1\r\nHost: {}\r\n", attack.addr);
            http(&attack, head.into_bytes(), true).await
        }
        Kind::PartialUpgrade => {
            let head = wire::upgrade_head(attack.addr, "/ws/signal?token=unfinished");
            http(&attack, head.into_bytes(), false).await
        }
        Kind::NeverJoins => never_joins(&attack, &user).await,
        Kind::HugeBody => {
            let head = format!(
                "POST /auth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000000000\r\n\r\n",
                attack.addr
            );
            http(&attack, head.into_bytes(), false).await
        }
        Kind::SlowConsumer => slow_consumer(&attack, &user, i).await,
        Kind::BadToken => {
            let token = unsafe_token(&attack, &user, i);
            let head = wire::upgrade_head(attack.addr, &format!("/ws/signal?token={token}"));
            http(&attack, format!("{head}\r\n").into_bytes(), false).await
        }
        Kind::BadId => {
            let body =
                serde_json::json!({"userId": format!("admin\u{202E}{i}txt.exe")}).to_string();
            let key = attack.api_key.as_deref().unwrap_or("no-key");
            let head = format!(
                "POST /auth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Authorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
                attack.addr,
                body.len()
            );
            http(&attack, head.into_bytes(), false).await
        }
        Kind::BadHandshake => {
            let token = attack.target.tokens.token(&user).await.unwrap_or_default();
            let path = format!("/ws/signal?token={token}");
            let good = wire::upgrade_head(attack.addr, &path);
            let head = match i % 3 {
                0 => good.replace("c29hay1ib3Jpbmcta2V5IQ==", "c2hvcnRrZXk="),
                1 => {
                    format!("{good}Origin: https://app.example\r\nOrigin: https://evil.example\r\n")
                }
                _ => good.replace(&format!("Host: {}\r\n", attack.addr), ""),
            };
            http(&attack, format!("{head}\r\n").into_bytes(), false).await
        }
        Kind::SdpObject => sdp_object(&attack, &user).await,
        Kind::CloseThenRead => close_then_read(&attack, &user).await,
        Kind::LogProbe => {
            let token = attack.target.tokens.token(&user).await.unwrap_or_default();
            let key = attack.api_key.as_deref().unwrap_or("no-key");
            let path = format!("/ws/signal?jwt={token}&api_key={key}");
            let head = wire::upgrade_head(attack.addr, &path);
            http(&attack, format!("{head}\r\n").into_bytes(), false).await
        }
        Kind::MetricsProbe => {
            let head = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", attack.addr);
            http(&attack, head.into_bytes(), false).await
        }
    }
}

/// A token signed with the node's secret (or, without it, none at all) that breaks one
/// rule of token safety, by `i`: a `crit` header, `iat` an hour ahead, `exp` in the year
/// 3000, a `sub` with a bidi override.
fn unsafe_token(attack: &Attack, user: &str, i: usize) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let Some(secret) = &attack.secret else {
        return "eyJhbGciOiJub25lIn0.e30.".to_string();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut header = Header::new(Algorithm::HS256);
    let mut claims = serde_json::json!({
        "iss": "switchboard", "aud": "switchboard", "sub": user,
        "session_id": format!("soak{i}"), "jti": format!("soak{i}"),
        "iat": now, "nbf": now, "exp": now + 600,
    });
    match i % 4 {
        0 => header.crit = Some(vec!["exp".into()]),
        1 => claims["iat"] = (now + 3600).into(),
        2 => claims["exp"] = 32_503_680_000u64.into(),
        _ => claims["sub"] = format!("admin\u{202E}{i}txt.exe").into(),
    }
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Joins a room of its own and relays an `offer` whose `sdp` is an object to itself;
/// the answer is the `error` it gets. Then it leaves with a close frame.
async fn sdp_object(attack: &Attack, user: &str) -> Outcome {
    let (
        Upgraded {
            mut incoming,
            mut out,
            since,
        },
        _held,
    ) = match hold(attack, user).await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let room = format!("soak-{}-{user}", attack.run);
    let joined = async {
        send_json(
            &mut out,
            &serde_json::json!({"type": "join", "roomId": room}),
        )
        .await
        .map_err(|e| label(&e))?;
        let joined = await_text(&mut incoming, |v| v["type"] == "joined").await?;
        let offer = serde_json::json!({
            "type": "offer", "id": "soak", "peerId": joined["peerId"], "sdp": {"v": 0},
        });
        send_json(&mut out, &offer).await.map_err(|e| label(&e))?;
        // `await_text` turns an error into `Err`: here that is the answer.
        match await_text(&mut incoming, |v| v["type"] == "offer").await {
            Ok(_) => Ok("relayed".to_string()),
            Err(e) if e.starts_with("error") => Ok(e),
            Err(e) => Err(e),
        }
    };
    let mut outcome = Outcome {
        connected: true,
        ..Outcome::default()
    };
    match joined.await {
        Ok(answer) => outcome.answer = Some(answer),
        Err(why) => outcome.ended = Some((why, since.elapsed())),
    }
    if outcome.ended.is_none() {
        let _ = out.write_all(&wire::close_frame(1000)).await;
        outcome.ended = Some((until_close(&mut incoming).await, since.elapsed()));
    }
    outcome
}

/// Sends a close frame (1000) at once and reads on: `ended` is the server's answer
/// (`close 1000`) or how the stream ended without one.
async fn close_then_read(attack: &Attack, user: &str) -> Outcome {
    let (
        Upgraded {
            mut incoming,
            mut out,
            since,
        },
        _held,
    ) = match hold(attack, user).await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let how = match out.write_all(&wire::close_frame(1000)).await {
        Ok(()) => until_close(&mut incoming).await,
        Err(e) => label(&e),
    };
    Outcome {
        connected: true,
        ended: Some((how, since.elapsed())),
        ..Outcome::default()
    }
}

/// An upgraded connection: frames in, bytes out, and when it was upgraded.
struct Upgraded {
    incoming: Incoming<OwnedReadHalf>,
    out: OwnedWriteHalf,
    since: Instant,
}

/// Connects and upgrades with a token for `user`; a refusal says what stopped it.
async fn upgrade(
    attack: &Attack,
    user: &str,
    recv_buffer: Option<u32>,
) -> Result<Upgraded, String> {
    let token = attack.target.tokens.token(user).await.map_err(|e| e.0)?;
    let stream = wire::connect(attack.addr, attack.source, recv_buffer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (read, mut out) = stream.into_split();
    let mut incoming = Incoming::new(read);
    let head = wire::upgrade_head(attack.addr, &format!("/ws/signal?token={token}"));
    let status = tokio::time::timeout(STEP_TIMEOUT, async {
        out.write_all(format!("{head}\r\n").as_bytes()).await?;
        incoming.status().await
    })
    .await
    .map_err(|_| "no upgrade answer in time".to_string())?
    .map_err(|e| format!("upgrade: {}", label(&e)))?;
    if status != 101 {
        return Err(format!("http {status}"));
    }
    Ok(Upgraded {
        incoming,
        out,
        since: Instant::now(),
    })
}

/// Upgrades for `user` and counts the connection as open while the guard lives; a
/// refusal is the client's whole outcome.
async fn hold<'a>(attack: &'a Attack, user: &str) -> Result<(Upgraded, Held<'a>), Outcome> {
    let upgraded = upgrade(attack, user, None)
        .await
        .map_err(Outcome::refused)?;
    Ok((upgraded, Held::new(&attack.open, 1)))
}

/// Resolves once the run stops (the watch's guard is not held across awaits: it is
/// not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How an I/O error says the server ended the connection.
fn label(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "eof".into(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "reset".into(),
        kind => format!("{kind}"),
    }
}

/// Reads frames until the server closes: `close <code>`, or how the stream ended.
async fn until_close(incoming: &mut Incoming<OwnedReadHalf>) -> String {
    loop {
        match incoming.frame().await {
            Ok(frame) if frame.opcode == opcode::CLOSE => {
                return frame
                    .close_code()
                    .map_or_else(|| "close".into(), |c| format!("close {c}"));
            }
            Ok(_) => {}
            Err(e) => return label(&e),
        }
    }
}

/// Counts a client's connections as open until dropped.
struct Held<'a>(&'a AtomicUsize, usize);

impl<'a> Held<'a> {
    fn new(open: &'a AtomicUsize, connections: usize) -> Self {
        open.fetch_add(connections, Ordering::Relaxed);
        Held(open, connections)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Writes `first`, then `unit` at `--flood-rate` frames/s until the server ends the
/// connection or the run stops; reads the server's frames meanwhile only if `read`
/// (a ping flooder never does: the pongs pile up on the server's side).
async fn flood(attack: &Attack, user: &str, first: Vec<u8>, unit: Vec<u8>, read: bool) -> Outcome {
    let (
        Upgraded {
            mut incoming,
            mut out,
            since,
        },
        _held,
    ) = match hold(attack, user).await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let mut outcome = Outcome {
        connected: true,
        ..Outcome::default()
    };
    let per_batch = (attack.flood_rate / FLOOD_BATCHES).ceil().max(1.0) as usize;
    let batch = unit.repeat(per_batch);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(
        per_batch as f64 / attack.flood_rate.max(1e-3),
    ));
    // After a stall, go on at the rate rather than make up for the missed batches at once.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = attack.stop.clone();
    let mut written = out.write_all(&first).await;
    let heard = async {
        if read {
            until_close(&mut incoming).await
        } else {
            std::future::pending().await
        }
    };
    tokio::pin!(heard);
    loop {
        if let Err(e) = written {
            outcome.ended = Some((label(&e), since.elapsed()));
            break;
        }
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            how = &mut heard => {
                outcome.ended = Some((how, since.elapsed()));
                break;
            }
            _ = ticks.tick() => {}
        }
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                outcome.blocked = true;
                break;
            }
            how = &mut heard => {
                outcome.ended = Some((how, since.elapsed()));
                break;
            }
            result = out.write_all(&batch) => written = result,
        }
    }
    outcome
}

/// Writes `head` at once (or, if `trickle`, one byte a second followed by endless
/// headers) and waits for the server's answer and end.
async fn http(attack: &Attack, head: Vec<u8>, trickle: bool) -> Outcome {
    let stream = match wire::connect(attack.addr, attack.source, None).await {
        Ok(s) => s,
        Err(e) => return Outcome::refused(format!("connect: {e}")),
    };
    let since = Instant::now();
    let _held = Held::new(&attack.open, 1);
    let (read, mut out) = stream.into_split();
    let mut incoming = Incoming::new(read);
    let mut outcome = Outcome {
        connected: true,
        ..Outcome::default()
    };
    let mut stop = attack.stop.clone();
    // Headers that never end: the request line and host, then `X-Soak-<n>: <n>` lines.
    let mut bytes = head
        .iter()
        .copied()
        .chain((0u64..).flat_map(|n| format!("X-Soak-{n}: {n}\r\n").into_bytes()));
    if !trickle && let Err(e) = out.write_all(&head).await {
        outcome.ended = Some((label(&e), since.elapsed()));
        return outcome;
    }
    let mut answer = None;
    let ended = {
        let heard = async {
            let status = incoming.status().await.map_err(|e| label(&e))?;
            answer = Some(format!("http {status}"));
            incoming.drain().await.map_err(|e| label(&e))?;
            Err::<(), _>("eof".to_string())
        };
        tokio::pin!(heard);
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break None,
                how = &mut heard => break how.err(),
                _ = ticks.tick(), if trickle => {
                    let byte = bytes.next().expect("an endless stream");
                    if let Err(e) = out.write_all(&[byte]).await {
                        // The server's answer, if any, may still be on its way.
                        let last = tokio::time::timeout(LAST_WORDS, &mut heard).await;
                        break Some(last.ok().and_then(Result::err).unwrap_or_else(|| label(&e)));
                    }
                }
            }
        }
    };
    outcome.answer = answer;
    outcome.ended = ended.map(|how| (how, since.elapsed()));
    outcome
}

/// Upgrades, answers the server's pings (as any WebSocket library would) and never joins.
async fn never_joins(attack: &Attack, user: &str) -> Outcome {
    let (
        Upgraded {
            mut incoming,
            mut out,
            since,
        },
        _held,
    ) = match hold(attack, user).await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let mut stop = attack.stop.clone();
    let heard = async {
        loop {
            match incoming.frame().await {
                Ok(frame) if frame.opcode == opcode::PING => {
                    let pong = wire::frame(opcode::PONG, true, &frame.payload);
                    if let Err(e) = out.write_all(&pong).await {
                        return label(&e);
                    }
                }
                Ok(frame) if frame.opcode == opcode::CLOSE => {
                    return frame
                        .close_code()
                        .map_or_else(|| "close".into(), |c| format!("close {c}"));
                }
                Ok(_) => {}
                Err(e) => return label(&e),
            }
        }
    };
    let ended = tokio::select! {
        _ = stopped(&mut stop) => None,
        how = heard => Some((how, since.elapsed())),
    };
    Outcome {
        connected: true,
        ended,
        ..Outcome::default()
    }
}

/// Sends a text frame of `value`.
async fn send_json(out: &mut OwnedWriteHalf, value: &serde_json::Value) -> io::Result<()> {
    out.write_all(&wire::frame(
        opcode::TEXT,
        true,
        value.to_string().as_bytes(),
    ))
    .await
}

/// Reads text frames until one satisfies `wanted`; returns it.
async fn await_text(
    incoming: &mut Incoming<OwnedReadHalf>,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            let frame = incoming.frame().await.map_err(|e| label(&e))?;
            if frame.opcode == opcode::CLOSE {
                return Err(format!("closed: {:?}", frame.close_code()));
            }
            if frame.opcode != opcode::TEXT {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_slice(&frame.payload).unwrap_or_default();
            if value["type"] == "error" {
                return Err(format!("error: {}", value["code"]));
            }
            if wanted(&value) {
                return Ok(value);
            }
        }
    })
    .await
    .map_err(|_| "no answer in time".to_string())?
}

/// A slow consumer and its feeder in a room of their own: the consumer joins, reads its
/// `joined`, and from then on only writes an empty pong a second (no reply is due, and
/// a failed write tells when the server dropped it); the feeder sends it offers at
/// `--feed-rate`.
async fn slow_consumer(attack: &Attack, user: &str, i: usize) -> Outcome {
    let room = format!("soak-{}-slow-{i}", attack.run);
    let set_up = async {
        let mut feeder = upgrade(attack, &format!("{user}-feeder"), None).await?;
        send_json(
            &mut feeder.out,
            &serde_json::json!({"type": "join", "roomId": room}),
        )
        .await
        .map_err(|e| label(&e))?;
        await_text(&mut feeder.incoming, |v| v["type"] == "joined").await?;
        let mut consumer = upgrade(attack, user, Some(SLOW_RECV_BUFFER)).await?;
        send_json(
            &mut consumer.out,
            &serde_json::json!({"type": "join", "roomId": room}),
        )
        .await
        .map_err(|e| label(&e))?;
        let joined = await_text(&mut consumer.incoming, |v| v["type"] == "joined").await?;
        let id = joined["peerId"].as_str().unwrap_or_default().to_string();
        await_text(&mut feeder.incoming, |v| {
            v["type"] == "peer_joined" && v["peerId"] == id.as_str()
        })
        .await?;
        Ok::<_, String>((feeder, consumer, id))
    };
    let (feeder, consumer, id) = match set_up.await {
        Ok(parts) => parts,
        Err(why) => return Outcome::refused(why),
    };
    let _held = Held::new(&attack.open, 2);
    let Upgraded {
        incoming: mut feeder_in,
        out: mut feeder_out,
        ..
    } = feeder;
    let Upgraded {
        incoming: mut consumer_in,
        out: mut consumer_out,
        since,
    } = consumer;
    let sdp = format!("v=0\r\n{}", "a".repeat(attack.sdp_bytes.saturating_sub(6)));
    let offer = wire::frame(
        opcode::TEXT,
        true,
        serde_json::json!({"type": "offer", "peerId": id, "sdp": sdp})
            .to_string()
            .as_bytes(),
    );
    let probe = wire::frame(opcode::PONG, true, b"");
    let mut outcome = Outcome {
        connected: true,
        ..Outcome::default()
    };
    let mut stop = attack.stop.clone();
    let mut feeds =
        tokio::time::interval(Duration::from_secs_f64(1.0 / attack.feed_rate.max(1e-3)));
    let mut probes = tokio::time::interval(Duration::from_secs(1));
    let feeder_heard = until_close(&mut feeder_in);
    tokio::pin!(feeder_heard);
    let mut feeder_open = true;
    let failed = loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break None,
            how = &mut feeder_heard, if feeder_open => {
                outcome.answer = Some(format!("feeder ended: {how}"));
                feeder_open = false;
            }
            _ = probes.tick() => {
                if let Err(e) = consumer_out.write_all(&probe).await {
                    break Some(e);
                }
            }
            _ = feeds.tick(), if feeder_open => {
                if let Err(e) = feeder_out.write_all(&offer).await {
                    outcome.answer = Some(format!("feeder ended: {}", label(&e)));
                    feeder_open = false;
                }
            }
        }
    };
    if let Some(e) = failed {
        let at = since.elapsed();
        // A close frame would sit behind every frame the consumer never read: look for it
        // briefly, else say how the socket failed.
        let heard = tokio::time::timeout(LAST_WORDS, until_close(&mut consumer_in)).await;
        let how = match heard {
            Ok(how) if how.starts_with("close") => how,
            _ => label(&e),
        };
        outcome.ended = Some((how, at));
    }
    outcome
}
