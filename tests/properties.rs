//! Properties of what a hostile client feeds the server: the message parser never panics
//! and every rejection names a code and a reason; a peer's outbound queue never holds
//! more than its capacity, keeps order, and closes a peer that cannot keep up (4003)
//! instead of losing a frame unnoticed.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use switchboard::signaling::outbox;
use switchboard::signaling::protocol::{self, Command, ErrorCode, close};

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A message shaped like a client's: a known or unknown `type`, maybe an `id`, and the
/// protocol's fields holding anything at all.
fn client_message() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("join"),
        Just("leave"),
        Just("offer"),
        Just("answer"),
        Just("ice-candidate"),
        Just("update"),
        Just("message"),
        Just("ping"),
        Just("joined"),
        Just(""),
    ];
    let field = prop_oneof![
        Just("roomId"),
        Just("peerId"),
        Just("sdp"),
        Just("candidate"),
        Just("metadata"),
        Just("data"),
        Just("id"),
        Just("extra"),
    ];
    (
        kind,
        prop::collection::vec((field, any_json()), 0..5),
        any::<bool>(),
    )
        .prop_map(|(kind, fields, typed)| {
            let mut object = Map::new();
            if typed {
                object.insert("type".into(), json!(kind));
            }
            for (name, value) in fields {
                object.insert(name.into(), value);
            }
            Value::Object(object)
        })
}

/// Checks what the parser said about `text`.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let (reference, parsed) = protocol::parse(text);
    match parsed {
        Ok(_) => {}
        Err(rejected) => {
            prop_assert!(
                matches!(
                    rejected.code,
                    ErrorCode::InvalidMessage | ErrorCode::UnknownType
                ),
                "parse rejects with {:?}",
                rejected.code
            );
            prop_assert!(
                rejected.message.len() > 10,
                "a rejection says why: {:?}",
                rejected.message
            );
            prop_assert_eq!(
                rejected.reference.map(|r| r.get()),
                reference.map(|r| r.get())
            );
        }
    }
    Ok(())
}

proptest! {
    // No failure files: a failing case is printed, minimal, in the test's output.
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary text never panics the parser, and a rejection names its code and reason.
    #[test]
    fn any_text_is_parsed_or_refused_with_a_reason(text in ".{0,200}") {
        check_parse(&text)?;
    }

    /// Arbitrary bytes that happen to be UTF-8, including broken JSON around valid parts.
    #[test]
    fn json_fragments_are_parsed_or_refused_with_a_reason(
        message in client_message(),
        cut in 0usize..64,
    ) {
        let text = message.to_string();
        check_parse(&text)?;
        let end = text.len().saturating_sub(cut);
        if text.is_char_boundary(end) {
            check_parse(&text[..end])?;
        }
    }

    /// Messages shaped like a client's: whatever their fields hold, the parser either
    /// refuses them with a code, or the command carries exactly what the client sent; the
    /// client's `id` comes back verbatim (unless it is too long to echo).
    #[test]
    fn a_parsed_command_carries_what_the_client_sent(message in client_message()) {
        let text = message.to_string();
        check_parse(&text)?;
        let (reference, parsed) = protocol::parse(&text);
        // Verbatim: the text the client sent, not a re-encoding of its value.
        // (A null `id` is no `id`.)
        let sent = message.get("id").filter(|id| !id.is_null()).map(|id| id.to_string());
        match reference {
            Some(reference) => prop_assert_eq!(Some(reference.get().to_owned()), sent),
            None => prop_assert!(sent.is_none_or(|id| id.len() > 128), "an id was dropped"),
        }
        match parsed {
            Ok(Command::Join { room }) => {
                prop_assert_eq!(message["type"].as_str(), Some("join"));
                prop_assert_eq!(Some(&*room), message["roomId"].as_str());
            }
            Ok(Command::Relay { to, .. }) => {
                let kind = message["type"].as_str().unwrap_or_default();
                prop_assert!(["offer", "answer", "ice-candidate"].contains(&kind));
                prop_assert_eq!(Some(&*to), message["peerId"].as_str());
            }
            Ok(Command::Leave { .. }) => prop_assert_eq!(message["type"].as_str(), Some("leave")),
            Ok(Command::Ping) => prop_assert_eq!(message["type"].as_str(), Some("ping")),
            Ok(Command::Update { metadata }) => {
                prop_assert_eq!(message["type"].as_str(), Some("update"));
                prop_assert!(message["metadata"].is_object());
                // Verbatim: the very text the client sent.
                prop_assert_eq!(metadata.get(), message["metadata"].to_string());
            }
            Ok(Command::Message { to, data }) => {
                prop_assert_eq!(message["type"].as_str(), Some("message"));
                prop_assert_eq!(to.as_deref(), message["peerId"].as_str());
                prop_assert_eq!(data.get(), message["data"].to_string());
            }
            Err(_) => {}
        }
    }

    /// A peer's queue holds at most its capacity, in order; the frame that finds it full
    /// is refused and closes the peer with 4003, so its client knows to resync.
    #[test]
    fn the_outbound_queue_is_bounded_ordered_and_never_loses_silently(
        capacity in 1usize..16,
        steps in prop::collection::vec(any::<bool>(), 0..200),
    ) {
        let (outbox, inbox) = outbox::channel(capacity);
        let mut model = std::collections::VecDeque::new();
        let mut overflowed = false;
        for (n, deliver) in steps.into_iter().enumerate() {
            if deliver {
                let queued = outbox.deliver(n.to_string().into());
                prop_assert_eq!(queued, model.len() < capacity);
                if queued {
                    model.push_back(n.to_string());
                } else {
                    overflowed = true;
                }
            } else {
                let got = inbox.try_recv().map(|o| o.frame.as_str().to_owned());
                prop_assert_eq!(got, model.pop_front());
            }
            prop_assert_eq!(outbox.is_full(), model.len() >= capacity);
            let code = outbox.closing().and_then(|c| c.code);
            prop_assert_eq!(code, overflowed.then_some(close::RESYNC));
        }
    }
}
