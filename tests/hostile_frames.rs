//! Hostile WebSocket frames, sent as an attacker would over raw TCP to a `switchboard
//! serve` process: each attack must end with the attacker closed (with the expected code)
//! in time, while the server's resident memory stays within a bound the unguarded server
//! blew through, an honest pair in another room keeps relaying and `/health/live` answers.
//!
//! `cargo test --release --test hostile_frames -- --nocapture` prints the figures quoted
//! in docs/SECURITY.md.

mod common;

use std::time::Duration;

use common::hostile::{
    Attacker, BINARY, Bystanders, CONTINUATION, FloodEnd, PING, PONG, Received, TEXT, close_frame,
    closes, frame, unmasked,
};
use common::process::Running;
use common::{DEADLINE, SECRET, eventually};

/// Most a flood may take before the server must have closed the attacker. Generous: a
/// closed attacker ends the flood at once, and a server closing a flooder lingers 2 s and
/// may first wait up to 5 s for a close frame the attacker never reads.
const FLOOD_DEADLINE: Duration = Duration::from_secs(30);
/// Resident memory the server may gain during an attack. The unguarded server gained
/// 836 MB in 15 s from one ping flood.
const RSS_BOUND: u64 = 32 << 20;

/// A `serve` process with default limits, except `vars`.
fn server(vars: &[(&str, &str)]) -> (Running, String) {
    let mut all = vec![
        ("AUTH_SECRET", SECRET),
        // Every client comes from 127.0.0.1 on a busy test machine; neither the per-IP
        // rate nor CPU shedding is under test here.
        ("RATE_PER_IP_PER_MINUTE", "0"),
        ("SHED_CPU_PERCENT", "0"),
    ];
    all.extend_from_slice(vars);
    Running::start(&all)
}

/// Sends `prefix`, then floods `unit` without ever reading, against a fresh server with
/// `vars`; the attacker must be closed with `code` while the bystanders carry on.
async fn withstands(name: &str, vars: &[(&str, &str)], prefix: &[u8], unit: &[u8], code: u16) {
    let (server, addr) = server(vars);
    let bystanders = Bystanders::start(&addr, server.pid()).await;
    let mut attacker = Attacker::connect(&addr, "mallory").await;
    if !prefix.is_empty() {
        attacker.send(prefix).await;
    }
    let flooded = attacker.flood(unit, FLOOD_DEADLINE).await;
    let watched = bystanders.finish().await;
    println!(
        "{name}: {:?} after {:.1?} ({:.1} MiB sent); server RSS {:.1} MiB, peak growth \
         {:.2} MiB; {} offers relayed and {} /health/live answers meanwhile",
        flooded.end,
        flooded.elapsed,
        flooded.sent as f64 / f64::from(1 << 20),
        watched.baseline as f64 / f64::from(1 << 20),
        watched.growth() as f64 / f64::from(1 << 20),
        watched.relays,
        watched.live,
    );
    assert_eq!(
        flooded.end,
        FloodEnd::Closed,
        "{name}: the attacker was still connected after {:?}",
        flooded.elapsed,
    );
    eventually(
        format!("{name}: a close with {code}"),
        DEADLINE,
        async || closes(&addr, code).await >= 1,
    )
    .await;
    assert!(
        watched.growth() < RSS_BOUND,
        "{name}: the server's memory grew by {} bytes",
        watched.growth()
    );
    assert!(watched.relays >= 2 && watched.live >= 2, "{watched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_rate_limited_and_closed_with_1008() {
    withstands("ping flood", &[], &[], &frame(PING, true, b""), 1008).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_whose_pongs_are_never_read_close_the_client_as_a_slow_consumer() {
    // A rate high enough never to refuse: only the unread pongs can stop this client.
    let vars = [("MESSAGE_RATE", "1000000"), ("MESSAGE_BURST", "1000000")];
    let ping = frame(PING, true, &[b'p'; 125]);
    withstands("unread pongs", &vars, &[], &ping, 4003).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_frame_flood_is_rate_limited_and_closed_with_1008() {
    let mut unit = frame(TEXT, true, b"");
    unit.extend(frame(BINARY, true, b""));
    unit.extend(frame(PONG, true, b""));
    withstands("empty frames", &[], &[], &unit, 1008).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_pong_flood_is_rate_limited_and_closed_with_1008() {
    withstands("pong flood", &[], &[], &frame(PONG, true, b""), 1008).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_messages_in_zero_length_fragments_is_rate_limited() {
    // Messages of the most fragments allowed (64), every one of them empty.
    let mut message = frame(TEXT, false, b"");
    for _ in 0..62 {
        message.extend(frame(CONTINUATION, false, b""));
    }
    message.extend(frame(CONTINUATION, true, b""));
    withstands("zero-length fragments", &[], &[], &message, 1008).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_too_many_fragments_is_closed_with_1009() {
    // One message that never ends: empty continuation frames for ever.
    let start = frame(TEXT, false, b"");
    let more = frame(CONTINUATION, false, b"");
    withstands("endless fragments", &[], &start, &more, 1009).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_close_is_answered_with_a_close_frame_before_tcp_closes() {
    let (server, addr) = server(&[]);
    let bystanders = Bystanders::start(&addr, server.pid()).await;
    // (code the client sends, code the server must answer with)
    let cases = [
        (Some(1000), Some(1000)),
        (Some(1001), Some(1001)),
        (Some(1008), Some(1008)),
        (Some(3000), Some(3000)),
        (Some(4000), Some(4000)),
        (None, None),
        // A code no endpoint may send is answered with a protocol error.
        (Some(1005), Some(1002)),
    ];
    for (sent, expected) in cases {
        let mut attacker = Attacker::connect(&addr, "closer").await;
        attacker.send(&close_frame(sent)).await;
        let answer = attacker.close_code().await;
        assert_eq!(
            answer,
            Some(expected),
            "the answer to a client close {sent:?}"
        );
        assert_eq!(
            attacker.receive().await,
            Received::End,
            "after answering a close {sent:?} the server closes TCP in order"
        );
    }
    let watched = bystanders.finish().await;
    println!(
        "close handshakes: {} codes answered; server RSS growth {:.2} MiB",
        cases.len(),
        watched.growth() as f64 / f64::from(1 << 20)
    );
    assert!(watched.growth() < RSS_BOUND, "{watched:?}");
    assert!(watched.relays >= 2 && watched.live >= 2, "{watched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_closed_with_the_matching_code() {
    let (server, addr) = server(&[]);
    let bystanders = Bystanders::start(&addr, server.pid()).await;
    let mut too_many = frame(TEXT, false, b"");
    for _ in 0..64 {
        too_many.extend(frame(CONTINUATION, false, b""));
    }
    let mut reserved_bit = frame(TEXT, true, b"{}");
    reserved_bit[0] |= 0x40;
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("a reserved opcode", frame(0x3, true, b""), 1002),
        ("a reserved bit", reserved_bit, 1002),
        ("an unmasked frame", unmasked(TEXT, b"{}"), 1002),
        ("a fragmented ping", frame(PING, false, b""), 1002),
        (
            "text that is not UTF-8",
            frame(TEXT, true, &[0xC3, 0x28]),
            1007,
        ),
        ("a message in 65 fragments", too_many, 1009),
    ];
    for (what, bytes, code) in cases {
        let mut attacker = Attacker::connect(&addr, "malformed").await;
        attacker.send(&bytes).await;
        assert_eq!(attacker.close_code().await, Some(Some(code)), "{what}");
        assert_eq!(attacker.receive().await, Received::End, "{what}");
    }
    // The meter cannot tell where the frames of a client that did not wait for the 101
    // begin: it is closed once the bytes sent early are handled.
    let ping = frame(TEXT, true, br#"{"type":"ping"}"#);
    let mut early = Attacker::connect_sending(&addr, "early", &ping).await;
    assert_eq!(
        early.close_code().await,
        Some(Some(1002)),
        "data before the 101"
    );
    let watched = bystanders.finish().await;
    assert!(watched.growth() < RSS_BOUND, "{watched:?}");
    assert!(watched.relays >= 2 && watched.live >= 2, "{watched:?}");
}
