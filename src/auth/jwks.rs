//! Public keys fetched from another service's JWKS: the Auth service's (`AUTH_JWKS_URL`)
//! or an identity provider's (`OIDC_ISSUER`, found through its discovery document).
//! Fetched at start, cached, refreshed periodically and when a token names a `kid` the
//! cache lacks.
//!
//! Refetches are rate limited (one per [`MIN_REFETCH`]) and each has one deadline over
//! discovery and key set together, so an unreachable server costs an unknown `kid` a
//! bounded wait and a 401, while every key already cached keeps verifying.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::discovery;
use super::keyring::{Verifier, verifier_from_jwk};
use crate::net::fetch;
use crate::telemetry::Metrics;

/// At most one fetch per this long, however many unknown `kid`s arrive.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Deadline of one fetch (discovery included).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Where a key set is found.
#[derive(Debug, Clone)]
enum Location {
    /// At this URL (`AUTH_JWKS_URL`).
    Url(String),
    /// At the `jwks_uri` of this issuer's discovery document (`OIDC_ISSUER`).
    Issuer(String),
}

/// What the fetches share: when the last one started and, for an issuer, where its key
/// set was found (discovered again after a failed fetch, in case it moved).
#[derive(Default)]
struct FetchState {
    last: Option<Instant>,
    jwks_uri: Option<String>,
}

/// A remote key set and its cache.
pub struct RemoteJwks {
    location: Location,
    keys: RwLock<Arc<HashMap<String, Arc<Verifier>>>>,
    /// Held while fetching, so concurrent misses wait for that one fetch instead of
    /// starting their own.
    state: Mutex<FetchState>,
    metrics: Arc<Metrics>,
}

impl RemoteJwks {
    /// An empty cache of the key set at `url`.
    pub fn new(url: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::at(Location::Url(url.to_string()), metrics)
    }

    /// An empty cache of the key set `issuer` announces in its OpenID discovery document.
    pub fn discovered(issuer: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::at(Location::Issuer(issuer.to_string()), metrics)
    }

    fn at(location: Location, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            location,
            keys: RwLock::default(),
            state: Mutex::default(),
            metrics,
        })
    }

    /// The cached key `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<Verifier>> {
        self.cached().get(kid).cloned()
    }

    fn cached(&self) -> Arc<HashMap<String, Arc<Verifier>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches the key set unless a fetch started less than [`MIN_REFETCH`] ago; true when
    /// the cache was replaced.
    pub async fn refresh(&self) -> bool {
        let mut state = self.state.lock().await;
        if state.last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return false;
        }
        state.last = Some(Instant::now());
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(&mut state))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{} did not answer within {}",
                    self.origin(),
                    humantime::format_duration(FETCH_TIMEOUT)
                ))
            });
        match fetched {
            Ok((url, keys)) => {
                let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
                kids.sort_unstable();
                tracing::info!(url = %url, kids = ?kids, "public keys fetched");
                let keys = Arc::new(keys);
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                self.metrics.jwks_fetched("success");
                true
            }
            Err(e) => {
                state.jwks_uri = None;
                self.metrics.jwks_fetched("failure");
                let cached = self.cached().len();
                tracing::warn!(
                    cached_keys = cached,
                    "public keys not fetched ({}); the {cached} cached keys stay and the \
                     fetch is retried: {e}",
                    self.origin()
                );
                false
            }
        }
    }

    /// Refreshes every `every` (at least [`MIN_REFETCH`]) for as long as the node runs;
    /// every [`MIN_REFETCH`] while nothing is cached, so a server that was unreachable at
    /// start is picked up soon after it answers.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            let wait = if self.cached().is_empty() {
                MIN_REFETCH
            } else {
                every.max(MIN_REFETCH)
            };
            tokio::time::sleep(wait).await;
            self.refresh().await;
        }
    }

    /// The setting this key set comes from, for logs.
    fn origin(&self) -> String {
        match &self.location {
            Location::Url(url) => format!("AUTH_JWKS_URL {url}"),
            Location::Issuer(issuer) => format!("OIDC_ISSUER {issuer}"),
        }
    }

    /// The key set's URL and its usable keys.
    async fn fetch(
        &self,
        state: &mut FetchState,
    ) -> Result<(String, HashMap<String, Arc<Verifier>>), String> {
        let url = match (&self.location, &state.jwks_uri) {
            (Location::Url(url), _) => url.clone(),
            (Location::Issuer(_), Some(found)) => found.clone(),
            (Location::Issuer(issuer), None) => {
                let found = discovery::jwks_uri(issuer, FETCH_TIMEOUT).await?;
                state.jwks_uri = Some(found.clone());
                found
            }
        };
        let body = fetch::get(&url, FETCH_TIMEOUT, MAX_JWKS_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let keys = parse(&body).map_err(|why| format!("{url}: {why}"))?;
        Ok((url, keys))
    }
}

/// The usable keys of a JWKS document: keys without `kid`, of unsupported types or meant
/// for encryption are skipped (a provider may publish such beside ours), symmetric ones
/// too; a document with none usable is an error, so it never empties the cache.
pub fn parse(body: &[u8]) -> Result<HashMap<String, Arc<Verifier>>, String> {
    let set: JwkSet = serde_json::from_slice(body)
        .map_err(|_| "the answer is not a JWK set ({\"keys\": [...]})".to_string())?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else {
            continue;
        };
        if let Ok(verifier) = verifier_from_jwk(jwk) {
            keys.insert(kid.clone(), Arc::new(verifier));
        }
    }
    if keys.is_empty() {
        return Err(
            "the key set holds no usable public key (EdDSA, ES256 or RS256 with a kid)".into(),
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_anonymous_keys_are_skipped_and_an_empty_set_refused() {
        let key = crate::auth::keygen::generate(crate::auth::keygen::KeyAlg::Ed25519, Some("e1"))
            .unwrap();
        let mut public = serde_json::to_value(&key.public_jwk).unwrap();
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
            public.clone(),
        ]});
        let keys = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["e1"]);
        public.as_object_mut().unwrap().remove("kid");
        let anonymous = serde_json::json!({ "keys": [public] });
        assert!(parse(anonymous.to_string().as_bytes()).is_err());
        assert!(parse(b"<html>").is_err());
    }
}
