//! The access log: one line per HTTP request, with token values redacted.

use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Query parameters whose values never reach a log line.
const SECRET_PARAMS: &[&str] = &["token", "access_token"];

/// The query string with secret parameter values replaced by `REDACTED`.
pub fn redact_query(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
        out.append_pair(&k, if secret { "REDACTED" } else { &v });
    }
    out.finish()
}

/// One log line per HTTP request: method, path, redacted query, status, duration, remote.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
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

    #[test]
    fn token_values_are_redacted_and_other_params_kept() {
        let q = "room=r1&token=eyJhbGciOi.abc.def&Access_Token=x";
        let r = redact_query(q);
        assert!(!r.contains("eyJ"));
        assert!(r.contains("room=r1"));
        assert!(!r.contains("=x"));
    }
}
