//! Where a request carries its credential: `Authorization: Bearer`, or `?token=` for
//! browsers' WebSocket upgrades (which cannot set headers).

use axum::http::{HeaderMap, header};

/// The value of `Authorization: Bearer <value>`, if present.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|v| !v.is_empty())
}

/// The `token` query parameter, decoded.
pub fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_token_is_decoded() {
        let q = "room=r1&token=eyJhbGciOi.abc.def&Access_Token=x";
        assert_eq!(query_token(q).as_deref(), Some("eyJhbGciOi.abc.def"));
        assert_eq!(query_token("token=a%2Eb").as_deref(), Some("a.b"));
    }
}
