//! Hostile clients that never get to a WebSocket, or never join once there: every phase
//! has a deadline (`HEAD_TIMEOUT`, `BODY_TIMEOUT`, `UPGRADE_TIMEOUT`, `JOIN_TIMEOUT`),
//! pending connections are capped per IP, and running out of file descriptors does not stop
//! the node. Written as the attacker, with raw TCP on loopback; each test checks the
//! attacker is closed within its deadline while an honest pair keeps relaying and
//! `/health/live` keeps answering.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::process::{BIN, Running};
use common::sockets::{Behaviour, Flood, closed_within, live};
use common::{DEADLINE, SECRET, eventually, patient, settings, start};
use futures_util::StreamExt;
use serde_json::json;
use switchboard::config::Settings;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The deadline under test, short so the suite stays quick.
const SHORT: Duration = Duration::from_secs(1);
/// What a closing may take beyond its deadline on a busy machine (stretched by patience).
const SLACK: Duration = Duration::from_secs(3);
/// Long enough never to fire during a test.
const NEVER: Duration = Duration::from_secs(120);

/// Test settings with every deadline out of the way and no pending cap, for a test to
/// set the one it is about.
fn hostile_settings() -> Settings {
    hostile(settings())
}

/// `s` with every deadline and cap off (see [`hostile_settings`]).
fn hostile(mut s: Settings) -> Settings {
    s.timing.head_timeout = NEVER;
    s.timing.body_timeout = NEVER;
    s.timing.upgrade_timeout = NEVER;
    s.timing.join_timeout = NEVER;
    s.limits.max_pending_per_ip = 0;
    s.limits.max_pending_connections = 100_000;
    s
}

/// Two honest clients join `room` on `addr` and relay an offer.
async fn honest_pair_relays(addr: &str, room: &str) {
    let (mut a, _) = common::client_at(addr, "honest-a").await;
    let (mut b, _) = common::client_at(addr, "honest-b").await;
    a.join(room).await;
    b.join(room).await;
    a.expect("peer_joined").await;
    a.offer(&b.peer_id, "v=0 honest").await;
    assert_eq!(b.expect("offer").await["sdp"], "v=0 honest");
}

/// The value of the metric line starting with `series` in `/metrics` text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

async fn closes(server: &common::TestServer, reason: &str) -> f64 {
    let text = server.metrics().await;
    metric(
        &text,
        &format!("switchboard_deadline_closes_total{{reason=\"{reason}\"}}"),
    )
}

/// Waits until every socket of `flood` is closed, then checks the last went within
/// `deadline` plus slack, and not before `deadline`.
async fn all_closed_within(flood: &Flood, deadline: Duration, what: &str) {
    eventually(what, deadline + SLACK, async || {
        let open = flood.open_now();
        if open == 0 {
            Ok(())
        } else {
            Err(format!("{open} still open"))
        }
    })
    .await;
    let took = flood.last_close_after().expect("the server closed them");
    assert!(
        took <= patient(deadline + SLACK),
        "{what}: the last closed after {took:?}"
    );
    assert!(
        took >= deadline - Duration::from_millis(100),
        "{what}: closed after {took:?}, before the {deadline:?} deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_closed_within_head_timeout() {
    let mut s = hostile_settings();
    s.timing.head_timeout = SHORT;
    let server = start(s).await;
    let flood = Flood::open(server.addr, 300, Behaviour::Idle, 64).await;
    assert!(live(server.addr, patient(DEADLINE)).await, "/health/live");
    honest_pair_relays(&server.addr.to_string(), "r").await;
    all_closed_within(&flood, SHORT, "every idle socket to be closed").await;
    assert!(live(server.addr, patient(DEADLINE)).await, "/health/live");
    assert!(closes(&server, "head_timeout").await >= 300.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_closed_within_head_timeout() {
    let mut s = hostile_settings();
    s.timing.head_timeout = SHORT;
    let server = start(s).await;
    let slowloris = Behaviour::Trickle {
        head: "GET /health/live HTTP/1.1\r\nHost: switchboard\r\n".into(),
        line: "X-Slow: 1\r\n".into(),
        every: Duration::from_millis(200),
    };
    let flood = Flood::open(server.addr, 100, slowloris, 32).await;
    assert!(live(server.addr, patient(DEADLINE)).await, "/health/live");
    honest_pair_relays(&server.addr.to_string(), "r").await;
    all_closed_within(&flood, SHORT, "every slowloris socket to be closed").await;
    assert!(live(server.addr, patient(DEADLINE)).await, "/health/live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_an_upgrade_are_closed_within_upgrade_timeout() {
    let mut s = hostile_settings();
    s.timing.upgrade_timeout = SHORT;
    let server = start(s).await;
    let token = server.token("attacker", None);
    // The head of an upgrade, trickled so slowly it never ends (HEAD_TIMEOUT is far off).
    let unfinished = Behaviour::Trickle {
        head: format!(
            "GET /ws/signal?token={token} HTTP/1.1\r\nHost: switchboard\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ),
        line: "X-Slow: 1\r\n".into(),
        every: Duration::from_millis(200),
    };
    // Cheap requests over one kept-alive connection that never upgrades.
    let request = "GET /health/live HTTP/1.1\r\nHost: switchboard\r\n\r\n".to_string();
    let churn = Behaviour::Trickle {
        head: request.clone(),
        line: request,
        every: Duration::from_millis(100),
    };
    let unfinished = Flood::open(server.addr, 100, unfinished, 32).await;
    let churn = Flood::open(server.addr, 10, churn, 10).await;
    honest_pair_relays(&server.addr.to_string(), "r").await;
    // A response in flight at the deadline gets one more second to finish.
    let deadline = SHORT + Duration::from_secs(1);
    all_closed_within(&unfinished, SHORT, "every unfinished upgrade to be closed").await;
    all_closed_within(&churn, SHORT, "every kept-alive connection to be closed").await;
    assert!(unfinished.last_close_after().unwrap() <= patient(deadline + SLACK));
    assert!(live(server.addr, patient(DEADLINE)).await, "/health/live");
    assert!(closes(&server, "upgrade_timeout").await >= 110.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_joins_is_closed_with_1008_within_join_timeout() {
    let mut s = hostile_settings();
    s.timing.join_timeout = SHORT;
    s.timing.resume_grace = Duration::from_secs(30);
    let server = start(s).await;
    let addr = server.addr.to_string();
    // Joined in time: stays. The pair below opens before the silent socket.
    let (mut a, _) = common::client_at(&addr, "a").await;
    let (mut b, _) = common::client_at(&addr, "b").await;
    a.join("r").await;
    b.join("r").await;
    a.expect("peer_joined").await;
    // A session that dropped and resumed into its room has joined already.
    let issued = server.state.issuer.as_ref().unwrap().issue("c", None, None);
    let mut c = common::connect_at(&addr, &issued.token).await;
    c.peer_id = issued.claims.peer_id();
    c.join("r").await;
    a.expect("peer_joined").await;
    b.expect("peer_joined").await;
    server.lose(c).await;
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(&issued.token))
        .await
        .expect("resume upgrade");
    let mut c = common::Client {
        ws,
        peer_id: issued.claims.peer_id(),
    };
    assert_eq!(c.expect("resumed").await["roomId"], "r");

    // Connected with a valid token, pings, never joins.
    let connected = Instant::now();
    let (mut silent, _) = common::client_at(&addr, "silent").await;
    let close = tokio::time::timeout(patient(SHORT + SLACK), async {
        loop {
            match silent.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the silent socket is closed within JOIN_TIMEOUT")
    .expect("with a close frame");
    let took = connected.elapsed();
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("JOIN_TIMEOUT"), "{}", close.reason);
    assert!(took >= SHORT, "closed after {took:?}, before JOIN_TIMEOUT");

    // Those connected earlier are still there and still relay.
    c.expect_nothing_pending().await;
    a.offer(&b.peer_id, "v=0 after").await;
    assert_eq!(b.expect("offer").await["sdp"], "v=0 after");
    b.send(json!({"type": "offer", "peerId": c.peer_id, "sdp": "to c"}))
        .await;
    assert_eq!(c.expect("offer").await["sdp"], "to c");
    assert!(closes(&server, "join_timeout").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_within_body_timeout() {
    let mut s = hostile_settings();
    s.timing.body_timeout = SHORT;
    let server = start(s).await;
    let head = "POST /auth/token HTTP/1.1\r\nHost: switchboard\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{\"userId\"";
    // One sends part of the body and stops; one trickles a byte every 200 ms.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    let trickled = Flood::open(
        server.addr,
        1,
        Behaviour::Trickle {
            head: head.into(),
            line: " ".into(),
            every: Duration::from_millis(200),
        },
        1,
    )
    .await;
    let (took, answer) = closed_within(&mut stalled, patient(SHORT + SLACK))
        .await
        .expect("closed within BODY_TIMEOUT");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(took >= SHORT - Duration::from_millis(100), "{took:?}");
    all_closed_within(&trickled, SHORT, "the trickled body to be refused").await;
    // Honest requests go on.
    let issued = reqwest::Client::new()
        .post(server.http("/auth/token"))
        .json(&json!({"userId": "honest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 200);
    honest_pair_relays(&server.addr.to_string(), "r").await;
    assert!(closes(&server, "body_timeout").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_pending_cap_leaves_room_for_honest_clients() {
    const CAP: usize = 20;
    // Production: a development node spares loopback (the benchmark beside `cargo run`).
    let mut s = hostile(common::production_settings());
    s.limits.max_pending_per_ip = CAP;
    let server = start(s).await;
    // Far more than the cap, from the honest clients' own address, never closed by a
    // deadline: only the cap can close them.
    let flood = Flood::open(server.addr, 300, Behaviour::Idle, 64).await;
    eventually("the attacker to be held to the cap", DEADLINE, async || {
        let open = flood.open_now();
        if open <= CAP {
            Ok(())
        } else {
            Err(format!("{open} open"))
        }
    })
    .await;
    // The cap is full of the attacker's sockets: an honest pair still gets in (each
    // newcomer sheds the oldest pending socket of the address), and health answers.
    assert!(live(server.addr, patient(DEADLINE)).await, "/health/live");
    honest_pair_relays(&server.addr.to_string(), "r").await;
    let text = server.metrics().await;
    assert!(metric(&text, "switchboard_pending_connections") <= (CAP + 2) as f64);
    assert!(
        metric(
            &text,
            "switchboard_deadline_closes_total{reason=\"pending_per_ip\"}"
        ) >= (300 - CAP) as f64
    );
}

/// `switchboard serve` under an open-file limit of `nofile`, with `vars`.
fn start_limited(nofile: u32, vars: &[(&str, &str)]) -> (Running, String) {
    let mut command = Command::new("/bin/sh");
    command
        .env_clear()
        .args([
            "-c",
            &format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
            BIN,
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .envs(vars.iter().copied());
    Running::spawn(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stop_the_node() {
    const NOFILE: u32 = 1024;
    let (mut server, address) = start_limited(
        NOFILE,
        &[
            ("AUTH_SECRET", SECRET),
            // Only the descriptor limit can stop this flood: no cap, no deadline in time.
            ("MAX_PENDING_PER_IP", "0"),
            ("MAX_PENDING_CONNECTIONS", "100000"),
            ("HEAD_TIMEOUT", "120s"),
            ("UPGRADE_TIMEOUT", "120s"),
            ("MAX_CONNECTIONS", "100"),
            ("RATE_PER_IP_PER_MINUTE", "0"),
            ("SHED_CPU_PERCENT", "0"),
        ],
    );
    let listening = server.wait_for(|l| l.contains("\"listening\""));
    assert!(
        listening.contains(&format!("\"open_files\":{NOFILE}")),
        "{listening}"
    );
    let addr: SocketAddr = address.parse().unwrap();
    // Twice the idle sockets the server may hold.
    let flood = Flood::open(addr, 2 * NOFILE as usize, Behaviour::Idle, 128).await;
    tokio::task::block_in_place(|| {
        server.wait_for(|l| l.contains("out of file descriptors"));
    });
    for _ in 0..3 {
        eventually("/health/live to answer", DEADLINE, async || {
            live(addr, Duration::from_secs(2)).await
        })
        .await;
    }
    honest_pair_relays(&address, "r").await;
    assert!(
        flood.closed.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the oldest pending sockets were shed"
    );
    assert!(live(addr, patient(DEADLINE)).await, "/health/live");
}

/// The figure in docs/SECURITY.md: 10,000 idle sockets from one IP against `serve` in
/// production mode. Run against a release build with
/// `cargo build --release && SWITCHBOARD_BIN=target/release/switchboard cargo test --test
/// hostile_connections -- --ignored --nocapture ten_thousand`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: 10,000 sockets; run by hand against a release build"]
async fn ten_thousand_idle_sockets_from_one_ip() {
    const SOCKETS: usize = 10_000;
    let bin = std::env::var("SWITCHBOARD_BIN").unwrap_or_else(|_| BIN.to_string());
    for (label, per_ip) in [("defaults", "64"), ("per-IP cap off", "0")] {
        let vars = [
            ("SWITCHBOARD_ENV", "production"),
            ("AUTH_SECRET", SECRET),
            ("TOKEN_ISSUANCE", "api-key"),
            ("AUTH_API_KEYS", "measurement-key-0123456789"),
            ("ALLOWED_ORIGINS", "https://app.example.com"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("MAX_PENDING_PER_IP", per_ip),
            ("MAX_PENDING_CONNECTIONS", "20000"),
            ("LOG_LEVEL", "warn,switchboard::server=info"),
        ];
        let mut command = Command::new(&bin);
        command
            .env_clear()
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .envs(vars);
        let (_server, address) = Running::spawn(command);
        let addr: SocketAddr = address.parse().unwrap();
        let flood = Flood::open(addr, SOCKETS, Behaviour::Idle, 512).await;
        let opened = flood.started.elapsed();
        let honest = Instant::now();
        honest_pair_relays(&address, "r").await;
        let honest = honest.elapsed();
        let live_ok = live(addr, Duration::from_secs(2)).await;
        eventually(
            "every attacker socket to be gone",
            DEADLINE * 6,
            async || {
                let open = flood.open_now();
                if open == 0 {
                    Ok(())
                } else {
                    Err(format!("{open} open after {:.1?}", flood.started.elapsed()))
                }
            },
        )
        .await;
        let last = flood.last_close_after().unwrap();
        let answered = if live_ok {
            "answered"
        } else {
            "did not answer"
        };
        println!(
            "{label}: {SOCKETS} idle sockets opened in {opened:.1?}; honest pair joined and \
             relayed in {honest:.1?}; /health/live {answered}; last attacker socket closed \
             {last:.1?} after the flood began, {:.1?} after the last one connected",
            last.saturating_sub(opened)
        );
    }
}
