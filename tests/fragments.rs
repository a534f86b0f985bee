//! Fragmented messages: every frame a client sends counts against its message rate,
//! including the continuation frames tungstenite folds into one message.

mod common;

use common::hostile::{Attacker, CONTINUATION, Received, TEXT, frame};
use common::{settings, start};
use serde_json::Value;

/// Frames each message below arrives in.
const FRAMES: usize = 40;

/// One text message carrying `json`, in [`FRAMES`] frames (the rest empty continuations).
fn fragmented(json: &str) -> Vec<u8> {
    let mut bytes = frame(TEXT, false, json.as_bytes());
    for _ in 0..FRAMES - 2 {
        bytes.extend(frame(CONTINUATION, false, b""));
    }
    bytes.extend(frame(CONTINUATION, true, b""));
    bytes
}

/// The next error frame's `code` and `ref`.
async fn next_error(attacker: &mut Attacker) -> (String, String) {
    loop {
        match attacker.receive().await {
            Received::Frame(TEXT, payload) => {
                let message: Value = serde_json::from_slice(&payload).unwrap();
                if message["type"] == "error" {
                    return (
                        message["code"].as_str().unwrap().to_string(),
                        message["ref"].as_str().unwrap_or_default().to_string(),
                    );
                }
            }
            Received::Frame(..) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn each_fragment_of_a_message_counts_against_the_message_rate() {
    let mut s = settings();
    // 100 frames at once, then hardly any: the burst is what is spent.
    s.limits.message_burst = 100.0;
    s.limits.message_rate = 0.1;
    let server = start(s).await;
    let mut attacker = Attacker::connect(&server.addr.to_string(), "fragments").await;
    // Messages of 40 frames: the first two leave 20 of the 100, the third is let through
    // into debt, the fourth finds nothing left. Counted as one frame each, all four pass.
    for i in 1..=4 {
        let message = format!(r#"{{"type":"no_such_type","id":"m{i}"}}"#);
        attacker.send(&fragmented(&message)).await;
    }
    for i in 1..=3 {
        assert_eq!(
            next_error(&mut attacker).await,
            ("unknown_type".to_string(), format!("m{i}"))
        );
    }
    assert_eq!(
        next_error(&mut attacker).await,
        ("rate_limited".to_string(), "m4".to_string())
    );
}
