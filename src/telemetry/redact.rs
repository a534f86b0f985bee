//! What counts as a credential in a log line, and how it is masked.
//!
//! Two rules. Every log line, whatever wrote it: a run of base64url characters containing
//! `eyJ` (the encoding of `{"` that starts every JWT) and at least two dots is a JWT and is
//! replaced by `[masked]`. The access log's path and query keys, written by clients, also
//! lose any run containing `eyJ` and any run of 24 or more base64url characters (an API
//! key); route segments are short words, so nothing needed for diagnosis is lost there.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// What a token-shaped run of characters is logged as.
const MASKED: &str = "[masked]";
/// Shortest run of base64url characters treated as an opaque key (a 128-bit key in
/// base64url is 22 characters; route segments and node ids are far shorter).
const MIN_KEY_CHARS: usize = 24;

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

/// Wraps a log writer so that no JWT reaches the log sink, whoever logged it.
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
        match std::str::from_utf8(buf) {
            Ok(line) if line.contains("eyJ") => {
                self.0.write_all(mask_jwts(line).as_bytes())?;
                Ok(buf.len())
            }
            _ => self.0.write(buf),
        }
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
