//! The access log: one line per HTTP request, carrying no credential.
//!
//! The rule, so that no way of passing a token or key can leak it:
//! - every query value is replaced by `REDACTED` (only the keys are kept), whatever the key
//!   is called: `?jwt=`, `?t=`, `?token[]=` and `?api_key=` are all treated like `?token=`;
//! - anywhere in the path and the query keys, a JWT or a long opaque key is replaced by
//!   `[masked]` (the rule is in [`super::redact`], which also masks JWTs in every log line).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use hyper::body::Incoming;

use super::redact::mask;

/// What a query value is logged as.
const REDACTED: &str = "REDACTED";

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

/// The answer `respond` gives to `request` from `remote`, with one log line: method,
/// masked path, redacted query, status, duration, remote. Called by the accept loop for
/// every request hyper serves, rather than as a layer of the router: a layer clones every
/// route service below it and boxes a future on every request, logged or not.
pub async fn access_logged<F>(
    remote: SocketAddr,
    request: Request<Incoming>,
    respond: impl FnOnce(Request<Incoming>) -> F,
) -> Result<Response, Infallible>
where
    F: Future<Output = Response>,
{
    if !enabled() {
        return Ok(respond(request).await);
    }
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let respond = respond(request);
    let query = uri.query();
    Ok(logged(
        &method,
        uri.path(),
        query,
        remote,
        respond,
        Response::status,
    )
    .await)
}

/// Whether access lines are written. Below `info` for this target nothing is, so nothing
/// is prepared either: the masking and the formatting are a few percent of a join's CPU.
fn enabled() -> bool {
    tracing::enabled!(target: "switchboard::access", tracing::Level::INFO)
}

/// `respond`, logged as [`access_logged`] logs a request of `method` to `path` and `query`
/// from `remote`, with the status its answer has by `status`.
pub async fn logged<R>(
    method: &Method,
    path: &str,
    query: Option<&str>,
    remote: SocketAddr,
    respond: impl Future<Output = R>,
    status: impl FnOnce(&R) -> StatusCode,
) -> R {
    if !enabled() {
        return respond.await;
    }
    let started = Instant::now();
    let path = mask(path);
    let query = query.map(redact_query).unwrap_or_default();
    let remote = remote.to_string();
    let answer = respond.await;
    tracing::info!(
        target: "switchboard::access",
        %method,
        path,
        query,
        status = status(&answer).as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        remote,
        "http request"
    );
    answer
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
        assert_eq!(redact_query(JWT), "[masked]");
        assert_eq!(redact_query(&format!("{KEY}=1")), "[masked]=REDACTED");
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
