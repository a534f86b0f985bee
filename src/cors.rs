//! Cross-origin access for browser apps on other origins: which pages may call
//! `POST /auth/token` and `GET /auth/validate`, and import `/signaling-client.js`.
//!
//! The same list that admits an origin to `/ws/signal` (`ALLOWED_ORIGINS`) admits it here,
//! so a page that may open a signaling socket may also fetch its token and the client
//! module. A page from any other origin gets no CORS headers and its browser blocks it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer (Chromium caps it at 2 h anyway).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins whose pages may make cross-origin calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrossOrigin {
    /// Any origin (development without `ALLOWED_ORIGINS`, or with a `*` entry).
    Any,
    /// These origins, compared without case and without a trailing `/`.
    Only(Arc<[String]>),
}

impl CrossOrigin {
    /// The policy for `ALLOWED_ORIGINS` (`None`: not set). Production never allows every
    /// origin: an unset list allows none and a `*` entry counts for nothing, where
    /// development takes either as "any", like the origin check of `/ws/signal`.
    pub fn from_allowed(allowed: Option<&[String]>, production: bool) -> Self {
        let any = |list: &[String]| list.iter().any(|o| o == "*");
        match allowed {
            None if !production => CrossOrigin::Any,
            Some(list) if !production && any(list) => CrossOrigin::Any,
            None => CrossOrigin::Only(Arc::from([])),
            Some(list) => CrossOrigin::Only(list.iter().filter(|o| *o != "*").cloned().collect()),
        }
    }

    /// True when a page from `origin` (an `Origin` header's value) may call.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        match self {
            CrossOrigin::Any => true,
            CrossOrigin::Only(list) => list.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        }
    }

    /// The CORS layer for the browser-facing routes: an allowed origin is echoed in
    /// `Access-Control-Allow-Origin` (with `Vary: Origin`, so caches keep one answer per
    /// origin), preflights are answered with the methods and headers those routes take,
    /// and `Retry-After` is readable by the page after a 429.
    pub fn layer(&self) -> CorsLayer {
        let policy = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|o| policy.allows(o))
            }))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(origins: &[&str]) -> Vec<String> {
        origins.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn development_without_a_list_allows_any_origin() {
        let policy = CrossOrigin::from_allowed(None, false);
        assert!(policy.allows("https://anything.example"));
    }

    #[test]
    fn production_never_allows_every_origin() {
        assert!(!CrossOrigin::from_allowed(None, true).allows("https://a.example"));
        let star = list(&["*", "https://app.example"]);
        let policy = CrossOrigin::from_allowed(Some(&star), true);
        assert!(!policy.allows("https://a.example"));
        assert!(policy.allows("https://app.example"));
    }

    #[test]
    fn a_list_allows_its_origins_without_case_or_trailing_slash() {
        let allowed = list(&["https://App.example"]);
        let policy = CrossOrigin::from_allowed(Some(&allowed), false);
        assert!(policy.allows("https://app.example"));
        assert!(policy.allows("https://app.example/"));
        assert!(!policy.allows("https://app.example.evil"));
        assert!(!policy.allows("http://app.example"));
    }
}
