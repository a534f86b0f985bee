//! Native TLS on the real binary: https and wss on one port, certificate renewal without a
//! restart (open connections untouched, a broken renewal ignored), and the refusals and
//! deadlines a TLS port owes the clients that do not speak TLS or never finish.

mod common;

use std::time::{Duration, Instant};

use common::process::{Running, switchboard};
use common::tls::{Authority, Files, Leaf};
use common::{Client, DEADLINE, SECRET, eventually, metric_sum, patient};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `serve` with TLS from `files` and `vars`, on a free port.
fn start(files: &Files, vars: &[(&str, &str)]) -> (Running, String) {
    let cert = files.cert().display().to_string();
    let key = files.key().display().to_string();
    let mut all = vec![
        ("AUTH_SECRET", SECRET),
        ("TLS_CERT_FILE", cert.as_str()),
        ("TLS_KEY_FILE", key.as_str()),
        ("TLS_RELOAD_INTERVAL", "100ms"),
        ("DRAIN_TIMEOUT", "2s"),
        // Other tests share the machine's CPUs; shedding is tested on its own.
        ("SHED_CPU_PERCENT", "0"),
    ];
    all.extend_from_slice(vars);
    Running::start(&all)
}

/// Joins `room` and learns the client's peer id from `joined`.
async fn join(client: &mut Client, room: &str) {
    client.send(json!({"type": "join", "roomId": room})).await;
    let joined = client.expect("joined").await;
    client.peer_id = joined["peerId"].as_str().unwrap().to_string();
}

/// `from` offers `to` an SDP that `to` must receive, from `from`.
async fn relays(from: &mut Client, to: &mut Client, sdp: &str) {
    from.offer(&to.peer_id, sdp).await;
    let offer = to.expect("offer").await;
    assert_eq!(offer["sdp"], sdp);
    assert_eq!(offer["peerId"], from.peer_id.as_str());
}

/// `Ok` once a new connection to `addr` is served `leaf`.
async fn serves(ca: &Authority, addr: &str, leaf: &Leaf) -> Result<(), String> {
    match ca.served(addr).await {
        Ok((served, _)) if served == leaf.der => Ok(()),
        Ok(_) => Err("a new connection is served another certificate".into()),
        Err(e) => Err(e),
    }
}

fn token(user: &str) -> String {
    common::issuer(Duration::from_secs(600))
        .issue(user, None, None)
        .token
}

/// One value of the node's `/metrics`, 0 when the series is absent.
async fn metric(https: &reqwest::Client, addr: &str, series: &str) -> u64 {
    metric_sum(https, &format!("https://{addr}"), &format!("{series} ")).await
}

#[tokio::test]
async fn one_port_serves_https_and_wss_and_a_renewed_certificate_reaches_new_connections_only() {
    let ca = Authority::new();
    let first = ca.issue("first.switchboard.test", 1);
    let files = Files::new(&first);
    let (mut server, addr) = start(&files, &[]);
    let listening = server.wait_for(|l| l.contains("\"listening\""));
    assert!(listening.contains("\"scheme\":\"https\""), "{listening}");

    // Everything on the one port: health, auth, the web app, metrics (development).
    let https = ca.https();
    for path in ["/health/live", "/health/ready", "/", "/metrics"] {
        let response = https
            .get(format!("https://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let issued: serde_json::Value = https
        .post(format!("https://{addr}/auth/token"))
        .json(&json!({"userId": "carol"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(issued["token"].is_string(), "{issued}");
    let (served, alpn) = ca.served(&addr).await.unwrap();
    assert_eq!(served, first.der);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Two clients over wss relay through the node.
    let mut alice = ca.connect(&addr, &token("alice")).await;
    let mut bob = ca.connect(&addr, &token("bob")).await;
    join(&mut alice, "r1").await;
    join(&mut bob, "r1").await;
    alice.expect("peer_joined").await;
    relays(&mut alice, &mut bob, "v=0 before renewal").await;

    // Renewal: new connections get the new certificate, the open ones keep relaying.
    let second = ca.issue("second.switchboard.test", 2);
    files.replace(&second);
    eventually(
        "a new connection to see the renewed certificate",
        DEADLINE,
        async || ca.served(&addr).await.map(|(c, _)| c == second.der),
    )
    .await;
    server.wait_for(|l| l.contains("TLS certificate reloaded"));
    relays(&mut alice, &mut bob, "v=0 after renewal").await;
    relays(&mut bob, &mut alice, "v=0 answer after renewal").await;
    let mut dave = ca.connect(&addr, &token("dave")).await;
    join(&mut dave, "r1").await;
    alice.expect("peer_joined").await;
    bob.expect("peer_joined").await;
    relays(&mut dave, &mut alice, "v=0 from a new connection").await;

    // A half-written chain and a key of another certificate: both refused, the renewed
    // certificate stays in service, and the warnings say why without key material.
    files.overwrite(&files.cert(), "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let warning = server.wait_for(|l| l.contains("not reloaded"));
    assert!(warning.contains("TLS_CERT_FILE"), "{warning}");
    assert_eq!(ca.served(&addr).await.unwrap().0, second.der);
    let third = ca.issue("third.switchboard.test", 3);
    files.overwrite(&files.cert(), &third.chain_pem);
    let mismatch = server.wait_for(|l| l.contains("not reloaded") && l.contains("TLS_KEY_FILE"));
    assert!(mismatch.contains("the certificate's own"), "{mismatch}");
    assert_eq!(ca.served(&addr).await.unwrap().0, second.der);
    relays(&mut alice, &mut bob, "v=0 after a broken renewal").await;

    // Fixing the key puts the third certificate in service.
    files.replace(&third);
    eventually("the repaired renewal to be served", DEADLINE, async || {
        serves(&ca, &addr, &third).await
    })
    .await;
    assert_eq!(
        metric(
            &https,
            &addr,
            "switchboard_tls_reloads_total{result=\"success\"}"
        )
        .await,
        2
    );
    // At least the two broken renewals; a look between two renames may add one.
    assert!(
        metric(
            &https,
            &addr,
            "switchboard_tls_reloads_total{result=\"failure\"}"
        )
        .await
            >= 2
    );

    drop((alice, bob, dave));
    let logs = server.terminate().join("\n");
    for key in [&first.key_pem, &second.key_pem, &third.key_pem] {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!logs.contains(&body[..32]), "key material reached the logs");
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused_at_once() {
    let ca = Authority::new();
    let files = Files::new(&ca.issue("plain.switchboard.test", 1));
    // A long head deadline, so a prompt close cannot be the deadline's.
    let (_server, addr) = start(&files, &[("HEAD_TIMEOUT", "60s")]);
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _closed = tokio::time::timeout(patient(Duration::from_secs(5)), async {
        tcp.read_to_end(&mut answer).await
    })
    .await
    .expect("the plain request is closed at once, not left to a deadline");
    // Closed (or reset), at most after a TLS alert: never an HTTP answer.
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert!(started.elapsed() < patient(Duration::from_secs(5)));
    let error = reqwest::get(format!("http://{addr}/health/live"))
        .await
        .unwrap_err();
    assert!(!error.is_status(), "{error}");
}

#[tokio::test]
async fn a_handshake_never_finished_is_closed_at_the_head_deadline_and_counts_as_pending() {
    let ca = Authority::new();
    let files = Files::new(&ca.issue("slow.switchboard.test", 1));
    let (_server, addr) = start(&files, &[("HEAD_TIMEOUT", "1s")]);
    // A TLS record header and no more: the handshake starts and never finishes.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(patient(DEADLINE), stalled.read(&mut byte))
        .await
        .expect("the stalled handshake is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(
        took < Duration::from_secs(1) + patient(Duration::from_secs(3)),
        "{took:?}"
    );
    assert_eq!(
        metric(
            &ca.https(),
            &addr,
            "switchboard_deadline_closes_total{reason=\"head_timeout\"}"
        )
        .await,
        1
    );

    // Handshakes in progress are pending connections: over the per-IP cap the oldest goes
    // long before its (here one-minute) deadline.
    // Production: a development node spares loopback (the benchmark beside `cargo run`).
    let (_server, addr) = start(
        &files,
        &[
            ("HEAD_TIMEOUT", "60s"),
            ("MAX_PENDING_PER_IP", "2"),
            ("SWITCHBOARD_ENV", "production"),
            ("TOKEN_ISSUANCE", "api-key"),
            ("AUTH_API_KEYS", "tls-test-key-0123456789"),
            ("ALLOWED_ORIGINS", "https://app.example.com"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ],
    );
    let mut oldest = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    let _third = TcpStream::connect(&addr).await.unwrap();
    let read = tokio::time::timeout(patient(DEADLINE), oldest.read(&mut byte))
        .await
        .expect("the oldest pending handshake is shed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[test]
fn start_up_refuses_a_missing_half_or_unusable_certificate_naming_the_file() {
    let ca = Authority::new();
    let leaf = ca.issue("refused.switchboard.test", 1);
    let other = ca.issue("other.switchboard.test", 2);
    let files = Files::new(&leaf);
    let cert = files.cert().display().to_string();
    let key = files.key().display().to_string();
    let run = |vars: &[(&str, &str)]| {
        let mut all = vec![("AUTH_SECRET", SECRET)];
        all.extend_from_slice(vars);
        let out = switchboard(&["serve", "--bind", "127.0.0.1", "--port", "0"], &all)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {vars:?}");
        String::from_utf8(out.stderr).unwrap()
    };

    let half = run(&[("TLS_CERT_FILE", &cert)]);
    assert!(half.contains("without TLS_KEY_FILE"), "{half}");
    let half = run(&[("TLS_KEY_FILE", &key)]);
    assert!(half.contains("without TLS_CERT_FILE"), "{half}");

    let missing = run(&[
        ("TLS_CERT_FILE", "/nonexistent/fullchain.pem"),
        ("TLS_KEY_FILE", &key),
    ]);
    assert!(
        missing.contains("TLS_CERT_FILE /nonexistent/fullchain.pem cannot be read"),
        "{missing}"
    );

    files.overwrite(&files.key(), &other.key_pem);
    let mismatch = run(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)]);
    assert!(mismatch.contains("TLS_KEY_FILE"), "{mismatch}");
    let body: String = other
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !mismatch.contains(&body[..32]),
        "key material in {mismatch}"
    );

    files.overwrite(&files.cert(), "not a certificate\n");
    files.overwrite(&files.key(), &leaf.key_pem);
    let garbage = run(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)]);
    assert!(garbage.contains("holds no certificate"), "{garbage}");
}

/// Production without TLS or a proxy starts, with a warning saying what to set.
#[test]
fn production_without_tls_or_a_proxy_warns_that_browsers_need_https() {
    let secret = "k".repeat(48);
    let (server, _) = Running::start(&[
        ("SWITCHBOARD_ENV", "production"),
        ("AUTH_SECRET", &secret),
        ("TOKEN_ISSUANCE", "api-key"),
        ("AUTH_API_KEYS", "backend-key-0123456789"),
        ("ALLOWED_ORIGINS", "https://app.example.com"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let logs = server.terminate().join("\n");
    assert!(
        logs.contains("camera and microphone only to pages served over https")
            && logs.contains("TLS_CERT_FILE")
            && logs.contains("TRUSTED_PROXIES"),
        "{logs}"
    );
}

/// A measurement, run by hand against a release build: what an idle joined connection
/// costs the server over wss:// and over ws://, side by side in one run.
/// `cargo test --release --test tls -- --ignored --nocapture memory_per_idle`
#[tokio::test]
#[ignore = "a measurement: thousands of connections; run by hand against a release build"]
async fn memory_per_idle_connection_with_and_without_tls() {
    const CLIENTS: usize = 2000;
    let ca = Authority::new();
    let files = Files::new(&ca.issue("memory.switchboard.test", 1));
    let quiet = [("PING_INTERVAL", "10m"), ("IDLE_TIMEOUT", "20m")];
    let mut figures = Vec::new();
    for tls in [true, false] {
        let (server, addr) = match tls {
            true => start(&files, &quiet),
            false => Running::start(&[
                ("AUTH_SECRET", SECRET),
                ("SHED_CPU_PERCENT", "0"),
                quiet[0],
                quiet[1],
            ]),
        };
        let connect = async |i: usize| {
            let token = token(&format!("u{i}"));
            let mut client = match tls {
                true => ca.connect(&addr, &token).await,
                false => common::connect_at(&addr, &token).await,
            };
            join(&mut client, &format!("room-{}", i / 2)).await;
            client
        };
        // Warm up the allocator and the node's tables, then measure from there.
        let warm: Vec<Client> = futures_util::future::join_all((0..100).map(connect)).await;
        drop(warm);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = common::hostile::rss(server.pid());
        let mut clients = Vec::with_capacity(CLIENTS);
        for batch in (100..100 + CLIENTS).collect::<Vec<_>>().chunks(50) {
            clients.extend(futures_util::future::join_all(batch.iter().map(|i| connect(*i))).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = common::hostile::rss(server.pid());
        let per = (after.saturating_sub(before)) as f64 / CLIENTS as f64;
        println!(
            "{}: {CLIENTS} idle joined connections, RSS {:.1} MiB -> {:.1} MiB: {per:.0} B each",
            if tls { "wss" } else { "ws" },
            before as f64 / 1048576.0,
            after as f64 / 1048576.0
        );
        figures.push(per);
        drop(clients);
    }
    println!(
        "TLS adds {:.0} B per idle connection",
        figures[0] - figures[1]
    );
}
