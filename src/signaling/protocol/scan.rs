//! The usual client frame read without serde: a flat object of the protocol's own fields
//! whose names and identifiers need no decoding. It exists for the SDP. serde_json checks
//! a 2 KB SDP eight bytes at a time and stops at each of its escapes (`\r\n` ends every
//! line, so about forty); this reader finds the closing quote with `memchr` and then
//! checks the string in one pass that the compiler vectorises, with no branch per escape.
//!
//! It only ever accepts what serde would read the same way. Anything else returns `None`
//! and goes to serde, which alone decides what is wrong with it: a field it does not know
//! or sees twice, a `null` identifier, an identifier or key with an escape, an SDP escape
//! other than `\"`, `\n` and `\r`, and every malformed frame. Such a frame is read twice,
//! here and by serde; the frame size limit bounds what that costs. The tests hold the two
//! readers to the same result on generated frames.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{Frame, Payload};

/// The frame `text` holds, when it has the usual shape; `None` sends it to serde.
pub(super) fn frame(text: &str) -> Option<Frame<'_>> {
    let bytes = text.as_bytes();
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(bytes, at + 1);
    let mut frame = Frame::default();
    if bytes.get(at) == Some(&b'}') {
        return finished(bytes, at + 1).then_some(frame);
    }
    let mut seen = 0u8;
    loop {
        let (key, after_key) = plain_string(text, at)?;
        let field = Field::named(key)?;
        if seen & field as u8 != 0 {
            return None;
        }
        seen |= field as u8;
        at = skip_space(bytes, after_key);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(bytes, at + 1);
        at = match field {
            Field::Type | Field::RoomId | Field::PeerId => {
                let (value, next) = plain_string(text, at)?;
                let slot = match field {
                    Field::Type => &mut frame.kind,
                    Field::RoomId => &mut frame.room_id,
                    _ => &mut frame.peer_id,
                };
                *slot = Some(Cow::Borrowed(value));
                next
            }
            Field::Sdp | Field::Candidate => {
                let (value, next) = if bytes.get(at) == Some(&b'"') {
                    let end = string_end(bytes, at + 1)?;
                    (Payload(&text[at..=end]), end + 1)
                } else {
                    let (raw, next) = any_value(text, at)?;
                    (Payload(raw.get()), next)
                };
                if field == Field::Sdp {
                    frame.sdp = Some(value);
                } else {
                    frame.candidate = Some(value);
                }
                next
            }
            Field::Id | Field::Metadata | Field::Data => {
                let (raw, next) = any_value(text, at)?;
                match field {
                    // serde reads an `id` of null as no id.
                    Field::Id if raw.get() == "null" => return None,
                    Field::Id => frame.id = Some(raw),
                    Field::Metadata => frame.metadata = Some(raw),
                    _ => frame.data = Some(raw),
                }
                next
            }
        };
        at = skip_space(bytes, at);
        match bytes.get(at) {
            Some(b',') => at = skip_space(bytes, at + 1),
            Some(b'}') => return finished(bytes, at + 1).then_some(frame),
            _ => return None,
        }
    }
}

/// The fields of a client frame, each a bit of the set already seen.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Field {
    Type = 1,
    Id = 2,
    RoomId = 4,
    PeerId = 8,
    Sdp = 16,
    Candidate = 32,
    Metadata = 64,
    Data = 128,
}

impl Field {
    fn named(key: &str) -> Option<Field> {
        Some(match key {
            "type" => Field::Type,
            "id" => Field::Id,
            "roomId" => Field::RoomId,
            "peerId" => Field::PeerId,
            "sdp" => Field::Sdp,
            "candidate" => Field::Candidate,
            "metadata" => Field::Metadata,
            "data" => Field::Data,
            _ => return None,
        })
    }
}

/// JSON's whitespace.
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Whether nothing but whitespace follows `at`.
fn finished(bytes: &[u8], at: usize) -> bool {
    skip_space(bytes, at) == bytes.len()
}

/// The string starting at `at` (its opening quote) when it has no escape and no control
/// byte, so its text is its value; and the index after its closing quote.
fn plain_string(text: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let end = at + 1 + memchr::memchr(b'"', &bytes[at + 1..])?;
    let value = &bytes[at + 1..end];
    // An escaped quote would end in a backslash: refused with every other escape.
    if value.iter().any(|&b| b < 0x20 || b == b'\\') {
        return None;
    }
    Some((&text[at + 1..end], end + 1))
}

/// Any JSON value starting at `at`, read by serde, and the index after it.
fn any_value(text: &str, at: usize) -> Option<(&RawValue, usize)> {
    let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<&RawValue>();
    let raw = values.next()?.ok()?;
    Some((raw, at + values.byte_offset()))
}

/// The index of the closing quote of the string whose text starts at `from`, when the
/// string is valid JSON with no escapes but `\"`, `\n` and `\r`. Without
/// `\\`, every backslash escapes the byte after it, so the string ends at the first quote
/// that no backslash precedes, and each backslash is checked against the byte after it.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut search = from;
    let end = loop {
        let quote = search + memchr::memchr(b'"', &bytes[search..])?;
        // `from - 1` is the opening quote, so the look-back stays in the string.
        if bytes[quote - 1] != b'\\' {
            break quote;
        }
        search = quote + 1;
    };
    clean(&bytes[from..=end]).then_some(end)
}

/// Whether the string text before the last byte (its closing quote) has no control byte
/// and no escape but `\"`, `\n` and `\r` (see [`bad_pair`]). One pass over the pairs of
/// neighbouring bytes with no early exit, so the loop compiles to SIMD compares (SSE2,
/// which every x86-64 has) and safe code is enough.
fn clean(bytes: &[u8]) -> bool {
    let pairs = bytes.iter().zip(&bytes[1..]);
    pairs.fold(0, |bad, (&byte, &next)| bad | bad_pair(byte, next)) == 0
}

/// 1 when `byte` followed by `next` is not for this reader: a control byte, or a
/// backslash that does not start `\"`, `\n` or `\r`. Those three are all a browser's
/// SDP holds; the four other one-letter escapes (`\/ \b \f \t`) are valid but go to
/// serde, which makes this check a third cheaper.
#[inline(always)]
fn bad_pair(byte: u8, next: u8) -> u8 {
    let escape = (next == b'"') | (next == b'n') | (next == b'r');
    (byte < 0x20) as u8 | ((byte == b'\\') & !escape) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every field of a frame as text, to compare two readings.
    fn fields(f: &Frame<'_>) -> [Option<String>; 8] {
        let text = |v: Option<&str>| v.map(str::to_string);
        [
            text(f.kind.as_deref()),
            text(f.id.map(RawValue::get)),
            text(f.room_id.as_deref()),
            text(f.peer_id.as_deref()),
            text(f.sdp.map(|p| p.get())),
            text(f.candidate.map(|p| p.get())),
            text(f.metadata.map(RawValue::get)),
            text(f.data.map(RawValue::get)),
        ]
    }

    /// Reads `text` both ways: when this reader accepts it, serde reads the same.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        if let Some(fast) = frame(text) {
            let by_serde = serde_json::from_str::<Frame<'_>>(text);
            prop_assert!(by_serde.is_ok(), "accepted what serde refuses: {text:?}");
            prop_assert_eq!(fields(&fast), fields(&by_serde.unwrap()), "{:?}", text);
        }
        Ok(())
    }

    fn sdp(lines: usize) -> String {
        let line =
            "a=candidate:842163049 1 udp 1677729535 203.0.113.7 61234 typ srflx generation 0\\r\\n";
        format!("\"v=0\\r\\n{}\"", line.repeat(lines))
    }

    #[test]
    fn the_usual_frames_are_read_without_serde() {
        let offer = format!(r#"{{"type":"offer","peerId":"bob-1","sdp":{}}}"#, sdp(20));
        let spaced = format!(
            "\n{{ \"type\" : \"answer\" ,\t\"id\": 7, \"peerId\":\"b\", \"sdp\" :{} }}\r\n",
            sdp(3)
        );
        for text in [
            offer.as_str(),
            spaced.as_str(),
            r#"{"type":"ice-candidate","peerId":"b","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
            r#"{"type":"ice-candidate","peerId":"b","candidate":null}"#,
            r#"{"type":"join","roomId":"room-1","id":"j1"}"#,
            r#"{"type":"message","data":{"chat":"hi \"you\""}}"#,
            r#"{"type":"update","metadata":{"name":"Ann"}}"#,
            r#"{"type":"ping"}"#,
            "{}",
        ] {
            assert!(frame(text).is_some(), "not read: {text}");
            agree(text).unwrap();
        }
        let f = frame(&offer).unwrap();
        assert_eq!(f.sdp.unwrap().get(), sdp(20));
        assert_eq!(f.peer_id.as_deref(), Some("bob-1"));
        let f = frame(&spaced).unwrap();
        assert_eq!(f.id.unwrap().get(), "7");
        assert_eq!(f.sdp.unwrap().get(), sdp(3));
    }

    #[test]
    fn what_serde_must_judge_goes_to_serde() {
        for text in [
            // Escapes this reader does not decode or check.
            r#"{"type":"offer","peerId":"b","sdp":"a\\b"}"#,
            r#"{"type":"offer","peerId":"b","sdp":"a\tb"}"#,
            r#"{"type":"offer","peerId":"b","sdp":"\u00e9"}"#,
            r#"{"type":"offer","peerId":"b\u0062","sdp":"v"}"#,
            r#"{"ty\u0070e":"ping"}"#,
            // Unknown, repeated and null fields.
            r#"{"type":"ping","from":"mallory"}"#,
            r#"{"type":"ping","type":"join"}"#,
            r#"{"type":"ping","id":null}"#,
            r#"{"type":null}"#,
            // Not JSON, or not a valid string.
            r#"{"type":"offer","peerId":"b","sdp":"v=0\x"}"#,
            "{\"type\":\"offer\",\"peerId\":\"b\",\"sdp\":\"v=0\n\"}",
            r#"{"type":"offer","peerId":"b","sdp":"v=0\"}"#,
            r#"{"type":"ping"} x"#,
            r#"{"type":"ping",}"#,
            r#"{"type":"ping""#,
            r#"["type","ping"]"#,
            "",
        ] {
            assert!(frame(text).is_none(), "read: {text}");
        }
    }

    #[test]
    fn a_string_ends_at_its_first_unescaped_quote() {
        let end = |s: &str| string_end(s.as_bytes(), 1);
        assert_eq!(end(r#""abc""#), Some(4));
        assert_eq!(end(r#""""#), Some(1));
        assert_eq!(end(r#""a\"b" x""#), Some(5));
        assert_eq!(end(r#""a\"""#), Some(4));
        // Long enough for the vectorised steps, with the bad byte in each position.
        let long = format!("\"{}\"", "x".repeat(40));
        assert_eq!(end(&long), Some(41));
        for at in 1..41 {
            for bad in ["\\x", "\u{1}", "\\\\", "\\t"] {
                let mut text = long.clone();
                text.replace_range(at..at + bad.len(), bad);
                assert_eq!(end(&text), None, "{text:?}");
            }
        }
        // Unterminated.
        assert_eq!(end(r#""abc\""#), None);
        assert_eq!(end(r#""abc"#), None);
    }

    /// The names [`Field::named`] knows.
    const FIELDS: [&str; 8] = [
        "type",
        "id",
        "roomId",
        "peerId",
        "sdp",
        "candidate",
        "metadata",
        "data",
    ];

    /// Pieces of a frame's text, hostile ones among them.
    fn token() -> impl Strategy<Value = String> {
        let hostile = ["from", "ty\\u0070e", "sdp\\\""];
        let key = prop::sample::select(
            FIELDS
                .iter()
                .chain(&hostile)
                .map(|name| format!("\"{name}\""))
                .collect::<Vec<_>>(),
        );
        let string = prop::collection::vec(
            prop::sample::select(vec![
                "v=0", "a", " ", "é", "\\r\\n", "\\\"", "\\/", "\\t", "\\b", "\\f", "\\\\",
                "\\u0041", "\\x", "\\", "\n", "\u{1}", "\u{7f}", "\"",
            ]),
            0..40,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        let other = prop::sample::select(vec![
            "null",
            "7",
            "-1.5e3",
            "true",
            "[1,\"a\"]",
            "{\"a\":{\"b\":null}}",
            "{",
            "}",
            "[",
            ",",
            ":",
            "nul",
            "\"",
            "{}",
        ])
        .prop_map(str::to_string);
        prop_oneof![key, string, other]
    }

    /// A frame-like text: an object of key and value tokens, with whitespace and
    /// punctuation sometimes where it belongs and sometimes not.
    fn frame_text() -> impl Strategy<Value = String> {
        let space = prop::sample::select(vec!["", "", " ", "\n\t", "\r"]);
        let glue = prop::sample::select(vec![":", ",", ":", ",", "", " "]);
        prop::collection::vec((space.clone(), token(), glue, space), 0..12).prop_map(|parts| {
            let mut text = String::from("{");
            for (before, token, glue, after) in parts {
                text.push_str(before);
                text.push_str(&token);
                text.push_str(after);
                text.push_str(glue);
            }
            text.push('}');
            text
        })
    }

    /// Frames shaped like a client's, so that most of them are read here.
    fn client_frame() -> impl Strategy<Value = String> {
        let key = prop::sample::select(FIELDS.to_vec());
        prop::collection::vec((key, token()), 0..6).prop_map(|members| {
            let members: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", members.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn both_readers_agree_on_frame_like_text(text in frame_text()) {
            agree(&text)?;
        }

        #[test]
        fn both_readers_agree_on_client_frames(text in client_frame()) {
            agree(&text)?;
            // And on every cut of it: frames cut short must go to serde.
            for cut in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
                agree(&text[..cut])?;
            }
        }
    }
}
