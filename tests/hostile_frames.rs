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
    Attacker, BINARY, CONTINUATION, FloodEnd, Node, PING, PONG, Received, TEXT, close_frame,
    closes, frame, mib, unmasked,
};
use common::{DEADLINE, eventually};

/// Most a flood may take before the server must have closed the attacker. Generous: a
/// closed attacker ends the flood at once, and a server closing a flooder lingers 2 s and
/// may first wait up to 5 s for a close frame the attacker never reads.
const FLOOD_DEADLINE: Duration = Duration::from_secs(30);
/// Resident memory the server may gain during an attack. The unguarded server gained
/// 836 MB in 15 s from one ping flood.
const RSS_BOUND: u64 = 32 << 20;

/// Sends `prefix`, then floods `unit` without ever reading, against a fresh server with
/// `vars`; the attacker must be closed with `code` while the bystanders carry on.
async fn withstands(name: &str, vars: &[(&str, &str)], prefix: &[u8], unit: &[u8], code: u16) {
    let node = Node::development(vars);
    let addr = node.address.clone();
    let bystanders = node.bystanders().await;
    let mut attacker = Attacker::connect(&addr, "mallory").await;
    if !prefix.is_empty() {
        attacker.send(prefix).await;
    }
    let flooded = attacker.flood(unit, FLOOD_DEADLINE).await;
    let watched = bystanders.finish().await;
    println!(
        "{name}: {:?} after {:.1?} ({:.1} MiB sent); {}",
        flooded.end,
        flooded.elapsed,
        mib(flooded.sent),
        watched.summary(),
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
    watched.assert_unharmed(name, RSS_BOUND);
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

/// Each client close in `cases` (the code it sends, none for an empty close) on a fresh
/// connection to a fresh server must be answered with a close frame carrying the code
/// paired with it before the server closes TCP in order, while the bystanders carry on.
async fn answers_every_close(what: &str, cases: &[(Option<u16>, Option<u16>)]) {
    let node = Node::development(&[]);
    let addr = node.address.clone();
    let bystanders = node.bystanders().await;
    let mut slowest = Duration::ZERO;
    for &(sent, expected) in cases {
        let mut attacker = Attacker::connect(&addr, "closer").await;
        let closed = std::time::Instant::now();
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
        slowest = slowest.max(closed.elapsed());
    }
    let watched = bystanders.finish().await;
    println!(
        "{what}: {} codes answered, each within {slowest:.2?} and TCP closed after; {}",
        cases.len(),
        watched.summary()
    );
    watched.assert_unharmed(what, RSS_BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_close_is_answered_with_a_close_frame_before_tcp_closes() {
    // The code a client sends, and the one the server must echo.
    let cases = [
        (Some(1000), Some(1000)),
        (Some(1001), Some(1001)),
        (Some(1008), Some(1008)),
        (Some(3000), Some(3000)),
        (Some(4000), Some(4000)),
        (Some(4999), Some(4999)),
        (None, None),
    ];
    answers_every_close("close handshakes", &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_code_no_endpoint_may_send_is_answered_with_1002_before_tcp_closes() {
    // Codes only a local API reports (1005 no status, 1006 abnormal, 1015 TLS), a reserved
    // one (1004), and codes outside the ranges RFC 6455 allows on the wire (below 1000,
    // 1016 to 2999, from 5000): each is answered with a protocol error.
    let cases = [1005, 1006, 1015, 1004, 0, 999, 1016, 2999, 5000, 65535]
        .map(|code| (Some(code), Some(1002)));
    answers_every_close("forbidden close codes", &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_closed_with_the_matching_code() {
    let node = Node::development(&[]);
    let addr = node.address.clone();
    let bystanders = node.bystanders().await;
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
    watched.assert_unharmed("malformed frames", RSS_BOUND);
}
