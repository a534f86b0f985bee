//! The access log: one line per HTTP request, carrying no credential.
//!
//! The rule, so that no way of passing a token or key can leak it:
//! - every query value is replaced by `REDACTED` (only the keys are kept), whatever the key
//!   is called: `?jwt=`, `?t=`, `?token[]=` and `?api_key=` are all treated like `?token=`;
//! - anywhere in the path and the query keys, a JWT (a run of base64url characters and dots
//!   containing `eyJ`, the encoding of `{"` that starts every JWT) or a long opaque key (24
//!   or more base64url characters in a row) is replaced by `[masked]`. Route segments are short words, so
//!   nothing a route needs for diagnosis is lost.

use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

/// What a query value is logged as.
const REDACTED: &str = "REDACTED";
/// What a token-shaped run of characters is logged as.
const MASKED: &str = "[masked]";
/// Shortest run of base64url characters treated as an opaque key (a 128-bit key in
/// base64url is 22 characters; route segments and node ids are far shorter).
const MIN_KEY_CHARS: usize = 24;

/// The query string with every value replaced by `REDACTED` and token-shaped keys masked.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() => format!("{}={REDACTED}", mask(key)),
            Some((key, _)) => format!("{}=", mask(key)),
            None => mask(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `text` with every JWT-shaped or long opaque run of characters replaced by `[masked]`.
pub fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_token_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let end = run.find(|c| !is_token_char(c)).unwrap_or(run.len());
        let word = &run[..end];
        out.push_str(if looks_like_credential(word) {
            MASKED
        } else {
            word
        });
        rest = &run[end..];
    }
    out.push_str(rest);
    out
}

/// Characters of base64url, the dots that join a JWT's parts, and base64 padding.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+')
}

fn looks_like_credential(word: &str) -> bool {
    // `contains`, not `starts_with`: a percent-escape such as `%20` may glue onto the front.
    word.contains("eyJ")
        || word
            .split(['.', '='])
            .any(|part| part.len() >= MIN_KEY_CHARS)
}

/// One log line per HTTP request: method, masked path, redacted query, status, duration,
/// remote.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = mask(request.uri().path());
    let query = request.uri().query().map(redact_query).unwrap_or_default();
    let remote = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let response = next.run(request).await;
    tracing::info!(
        target: "switchboard::access",
        %method,
        path,
        query,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        remote,
        "http request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl";
    const KEY: &str = "sk_live_0123456789abcdefGHIJKLMN";

    #[test]
    fn every_query_value_is_redacted_whatever_its_key() {
        for key in [
            "token",
            "Access_Token",
            "jwt",
            "auth",
            "t",
            "token[]",
            "token%5B%5D",
            "api_key",
        ] {
            for value in [JWT, KEY, "short"] {
                let logged = redact_query(&format!("room=r1&{key}={value}"));
                assert_eq!(logged, format!("room=REDACTED&{key}=REDACTED"));
            }
        }
    }

    #[test]
    fn keys_without_values_are_kept_and_token_shaped_keys_masked() {
        assert_eq!(redact_query("debug&x="), "debug&x=");
        assert_eq!(redact_query(JWT), MASKED);
        assert_eq!(redact_query(&format!("{KEY}=1")), "[masked]=REDACTED");
    }

    #[test]
    fn tokens_and_keys_in_the_path_are_masked_and_routes_kept() {
        assert_eq!(
            mask(&format!("/auth/validate/{JWT}")),
            "/auth/validate/[masked]"
        );
        assert_eq!(
            mask(&format!("/ws/signal/{KEY}/x")),
            "/ws/signal/[masked]/x"
        );
        assert_eq!(mask("/bearer%20eyJabc"), "/bearer%[masked]");
        for path in ["/ws/signal", "/auth/token", "/health/live", "/app.js", "/"] {
            assert_eq!(mask(path), path);
        }
    }

    #[test]
    fn a_secret_never_survives_in_any_part() {
        let logged = format!(
            "{} {}",
            mask(&format!("/x/{JWT}")),
            redact_query(&format!("a={JWT}&{JWT}&b={KEY}"))
        );
        for part in JWT.split('.').chain([KEY]) {
            assert!(!logged.contains(part), "{part} in {logged}");
        }
    }
}
