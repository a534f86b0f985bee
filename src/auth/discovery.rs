//! OpenID Connect Discovery (OpenID Connect Discovery 1.0 §4): where an identity provider
//! publishes its signing keys, read from `<issuer>/.well-known/openid-configuration`.

use std::time::Duration;

use serde::Deserialize;

use crate::net::fetch;

/// A discovery document larger than this is refused (real ones are a few KiB).
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// The discovery document's URL for `issuer`: a trailing `/` is not doubled (§4.1).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches `issuer`'s discovery document within `timeout`; returns its `jwks_uri`.
pub async fn jwks_uri(issuer: &str, timeout: Duration) -> Result<String, String> {
    let url = discovery_url(issuer);
    let body = fetch::get(&url, timeout, MAX_DISCOVERY_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    parse(&body, issuer).map_err(|why| format!("{url}: {why}"))
}

/// The `jwks_uri` of a discovery document, once its `issuer` is exactly `issuer` (§4.3:
/// otherwise a document could vouch for keys of another issuer) and the URI is http(s),
/// and https whenever the issuer is.
pub fn parse(body: &[u8], issuer: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Document {
        issuer: Option<String>,
        jwks_uri: Option<String>,
    }
    let doc: Document = serde_json::from_slice(body)
        .map_err(|_| "the answer is not an OpenID discovery document (JSON)".to_string())?;
    match doc.issuer.as_deref() {
        Some(found) if found == issuer => {}
        Some(found) => {
            return Err(format!(
                "the document names the issuer \"{found}\", not \"{issuer}\"; set OIDC_ISSUER \
                 to exactly the issuer the identity provider announces"
            ));
        }
        None => return Err("the document names no issuer".into()),
    }
    let uri = doc
        .jwks_uri
        .ok_or_else(|| "the document has no jwks_uri".to_string())?;
    let secure = uri.starts_with("https://");
    if !(secure || uri.starts_with("http://")) {
        return Err("the document's jwks_uri is not an http(s) URL".into());
    }
    if issuer.starts_with("https://") && !secure {
        return Err("the document's jwks_uri is plain http while the issuer is https".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYCLOAK: &str = "https://sso.example.com/realms/app";

    #[test]
    fn the_discovery_url_follows_the_issuer_with_or_without_a_slash() {
        assert_eq!(
            discovery_url(KEYCLOAK),
            "https://sso.example.com/realms/app/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://tenant.auth0.com/"),
            "https://tenant.auth0.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn the_jwks_uri_is_taken_when_the_issuer_matches_exactly() {
        let doc = serde_json::json!({
            "issuer": KEYCLOAK,
            "jwks_uri": "https://sso.example.com/realms/app/protocol/openid-connect/certs",
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        assert_eq!(
            parse(doc.to_string().as_bytes(), KEYCLOAK).unwrap(),
            "https://sso.example.com/realms/app/protocol/openid-connect/certs"
        );
        // A trailing slash is a different issuer: tokens carry the exact string.
        let why = parse(doc.to_string().as_bytes(), &format!("{KEYCLOAK}/")).unwrap_err();
        assert!(why.contains("OIDC_ISSUER"), "{why}");
    }

    #[test]
    fn documents_without_issuer_or_usable_jwks_uri_are_refused() {
        let parse_json = |v: serde_json::Value| parse(v.to_string().as_bytes(), KEYCLOAK);
        assert!(parse_json(serde_json::json!({"jwks_uri": "https://x/certs"})).is_err());
        assert!(parse_json(serde_json::json!({"issuer": KEYCLOAK})).is_err());
        let ftp = parse_json(serde_json::json!({"issuer": KEYCLOAK, "jwks_uri": "ftp://x/k"}));
        assert!(ftp.unwrap_err().contains("http(s)"));
        let downgrade =
            parse_json(serde_json::json!({"issuer": KEYCLOAK, "jwks_uri": "http://x/k"}));
        assert!(downgrade.unwrap_err().contains("plain http"));
        assert!(parse(b"<html>", KEYCLOAK).is_err());
    }
}
