//! Rules for user and room identifiers, and the one shared copy of an id that many entries
//! name.
//!
//! An identifier is 1–128 characters of UTF-8 and contains none of:
//! - control characters (Unicode category Cc: U+0000–U+001F, U+007F–U+009F);
//! - bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), which
//!   make an id display as another one ("Trojan Source", CVE-2021-42574);
//! - line and paragraph separators (U+2028, U+2029), which break lines in logs and in
//!   JavaScript string literals as a newline does.
//!
//! Ids are echoed to other peers (a peer id is `<userId>-<sessionId>`) and written to logs,
//! so the same rule holds wherever one enters: `POST /auth/token`, the token's claims, and
//! `join` on the socket.

use std::collections::HashMap;
use std::sync::Arc;

/// Longest identifier, in characters.
pub const MAX_CHARS: usize = 128;

/// The copy of `id` that `map` holds as a key, or a new one: an id many entries name (a
/// node's, a room's, a peer's) is then kept once rather than once per entry.
pub fn shared<V>(map: &HashMap<Arc<str>, V>, id: &str) -> Arc<str> {
    map.get_key_value(id)
        .map_or_else(|| Arc::from(id), |(key, _)| key.clone())
}

/// Checks one identifier; the error is a sentence fragment naming the problem.
pub fn check(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.chars().count() > MAX_CHARS {
        return Err("must be at most 128 characters");
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if value.chars().any(is_bidi_control) {
        return Err(
            "must not contain bidirectional control characters (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C)",
        );
    }
    if value.chars().any(|c| matches!(c, '\u{2028}' | '\u{2029}')) {
        return Err("must not contain line or paragraph separators (U+2028, U+2029)");
    }
    Ok(())
}

/// The Unicode bidirectional formatting characters (UAX #9): embeddings, overrides,
/// isolates and marks.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn limits() {
        assert!(check("alice").is_ok());
        assert!(check(&"é".repeat(128)).is_ok());
        assert!(check(&"é".repeat(129)).is_err());
        assert!(check("").is_err());
        assert!(check("a\nb").is_err());
        assert!(check("a\u{7f}").is_err());
        assert!(check("a\u{85}").is_err());
    }

    #[test]
    fn bidi_controls_are_refused_by_name() {
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let why = check(&format!("admin{c}txt")).unwrap_err();
            assert!(why.contains("bidirectional"), "U+{:04X}: {why}", c as u32);
        }
    }

    #[test]
    fn line_and_paragraph_separators_are_refused_by_name() {
        for c in ['\u{2028}', '\u{2029}'] {
            let why = check(&format!("a{c}b")).unwrap_err();
            assert!(why.contains("separator"), "U+{:04X}: {why}", c as u32);
        }
    }

    #[test]
    fn other_scripts_and_joiners_stay_allowed() {
        // Right-to-left letters, CJK, emoji with a zero-width joiner: real names.
        for ok in ["שלום", "مرحبا", "会議室", "👩\u{200D}💻", "room-1_a.b"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        // Neighbours of the refused ranges are not swept up.
        for ok in ["\u{2027}", "\u{202F}", "\u{2065}", "\u{206A}", "\u{200D}"] {
            assert!(
                check(ok).is_ok(),
                "U+{:04X}",
                ok.chars().next().unwrap() as u32
            );
        }
    }
}
