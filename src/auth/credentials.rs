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
    // Nothing to decode in a query without `%` or `+` (a JWT never needs either): the
    // pairs are read as they are, the same pairs the decoder would find, at a fraction of
    // its per-byte cost on a token of several hundred bytes.
    if memchr::memchr2(b'%', b'+', query.as_bytes()).is_none() {
        return query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string());
    }
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
        assert_eq!(query_token("tok%65n=a+b").as_deref(), Some("a b"));
    }

    #[test]
    fn a_query_with_nothing_to_decode_reads_as_the_decoder_reads_it() {
        for q in [
            "token=abc",
            "&&token=abc&",
            "token",
            "token=",
            "token=a=b",
            "x=1&token=first&token=second",
            "tokens=no&xtoken=no",
            "",
            "room=r1",
        ] {
            let decoded = form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned());
            assert_eq!(query_token(q), decoded, "{q:?}");
        }
    }
}
