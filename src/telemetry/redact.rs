//! What counts as a credential in a log line, and how it is masked.
//!
//! Three rules. Every log line, whatever wrote it: a run of base64url characters containing
//! `eyJ` (the encoding of `{"` that starts every JWT) and at least two dots is a JWT and is
//! replaced by `[masked]`, and so is every secret the process holds (signing secrets, API
//! keys, the webhook secret: [`hold_secret`]), wherever it appears. The access log's path and query keys, written by clients, also
//! lose any run containing `eyJ` and any run of 24 or more base64url characters (an API
//! key); route segments are short words, so nothing needed for diagnosis is lost there.

use std::io::{self, Write};
use std::sync::{PoisonError, RwLock};

use tracing_subscriber::fmt::MakeWriter;

/// What a token-shaped run of characters is logged as.
const MASKED: &str = "[masked]";
/// Shortest run of base64url characters treated as an opaque key (a 128-bit key in
/// base64url is 22 characters; route segments and node ids are far shorter).
const MIN_KEY_CHARS: usize = 24;

/// Shortest secret masked by value: shorter ones would mask ordinary words (and production
/// refuses secrets this short anyway).
const MIN_HELD_CHARS: usize = 8;

/// The secrets this process holds, masked in every log line.
static HELD: RwLock<Vec<Box<str>>> = RwLock::new(Vec::new());

/// Masks `secret` in every log line from now on. Called wherever a secret is read in; a
/// rotated-out secret stays masked, since old log lines may still quote it.
pub fn hold_secret(secret: &[u8]) {
    // A secret that is not UTF-8 cannot appear verbatim in a (UTF-8) log line.
    let Ok(secret) = std::str::from_utf8(secret) else {
        return;
    };
    if secret.chars().count() < MIN_HELD_CHARS {
        return;
    }
    let mut held = HELD.write().unwrap_or_else(PoisonError::into_inner);
    if !held.iter().any(|s| &**s == secret) {
        held.push(secret.into());
    }
}

/// `line` with every held secret replaced by `[masked]`, or `None` when it holds none.
fn mask_held(line: &str) -> Option<String> {
    let held = HELD.read().unwrap_or_else(PoisonError::into_inner);
    let mut masked: Option<String> = None;
    for secret in held.iter() {
        let current = masked.as_deref().unwrap_or(line);
        if current.contains(&**secret) {
            masked = Some(current.replace(&**secret, MASKED));
        }
    }
    masked
}

/// `text` with every JWT-shaped or long opaque run of characters replaced by `[masked]`
/// (for text a client chose: paths and query keys).
pub fn mask(text: &str) -> String {
    mask_runs(text, |run| {
        // `contains`, not `starts_with`: a percent-escape such as `%20` may glue onto the front.
        run.contains("eyJ")
            || run
                .split(['.', '='])
                .any(|part| part.len() >= MIN_KEY_CHARS)
    })
}

/// `line` with every JWT replaced by `[masked]` (for any log line).
pub fn mask_jwts(line: &str) -> String {
    mask_runs(line, |run| {
        run.contains("eyJ") && run.matches('.').count() >= 2
    })
}

fn mask_runs(text: &str, secret: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_token_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let end = run.find(|c| !is_token_char(c)).unwrap_or(run.len());
        let word = &run[..end];
        out.push_str(if secret(word) { MASKED } else { word });
        rest = &run[end..];
    }
    out.push_str(rest);
    out
}

/// Characters of base64url, the dots that join a JWT's parts, and base64 padding.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+')
}

/// Wraps a log writer so that no JWT or held secret reaches the log sink, whoever logged it.
pub struct Masking<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masking<M> {
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter(self.0.make_writer())
    }
}

/// One log event's writer, masking JWTs on the way through.
pub struct MaskingWriter<W>(W);

impl<W: Write> Write for MaskingWriter<W> {
    // The formatter writes each event in one call, so a whole line is seen at once.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Ok(line) = std::str::from_utf8(buf) else {
            return self.0.write(buf);
        };
        let held = mask_held(line);
        let line = held.as_deref().unwrap_or(line);
        if line.contains("eyJ") {
            self.0.write_all(mask_jwts(line).as_bytes())?;
        } else if held.is_some() {
            self.0.write_all(line.as_bytes())?;
        } else {
            return self.0.write(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl";

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn no_log_line_carries_a_jwt_whoever_logged_it() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(Masking(move || writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(header = %format!("Bearer {JWT}"), "refused {JWT}");
            tracing::info!(peer = "alice", room = "monkeyJoe.v1", "joined");
        });
        let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for part in JWT.split('.') {
            assert!(!logged.contains(part), "{part} in {logged}");
        }
        assert!(logged.contains("Bearer [masked]"), "{logged}");
        // Ordinary values stay readable.
        assert!(logged.contains("monkeyJoe.v1") && logged.contains("alice"));
    }

    #[test]
    fn every_secret_the_process_holds_is_masked_in_every_line() {
        let api_key = "ak-7f3c9e1d5b2a4f60";
        hold_secret(api_key.as_bytes());
        hold_secret(b"short"); // too short to mask by value
        hold_secret(&[0xff, 0xfe, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]); // not text
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Masking(move || writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(header = %format!("Bearer {api_key}"), "refused {api_key}, short");
        });
        let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!logged.contains(api_key), "{logged}");
        assert_eq!(logged.matches("[masked]").count(), 2, "{logged}");
        assert!(logged.contains("short"), "{logged}");
    }

    #[test]
    fn client_text_loses_jwts_and_long_keys_and_keeps_routes() {
        let key = "sk_live_0123456789abcdefGHIJKLMN";
        assert_eq!(mask(&format!("/a/{JWT}")), "/a/[masked]");
        assert_eq!(
            mask(&format!("/ws/signal/{key}/x")),
            "/ws/signal/[masked]/x"
        );
        assert_eq!(mask("/bearer%20eyJabc"), "/bearer%[masked]");
        for path in ["/ws/signal", "/auth/token", "/health/live", "/app.js", "/"] {
            assert_eq!(mask(path), path);
        }
        // Any line: only JWTs, so ids and hashes stay readable.
        assert_eq!(mask_jwts(key), key);
        assert_eq!(mask_jwts(&format!("x: {JWT};")), "x: [masked];");
    }
}
