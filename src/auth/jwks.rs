//! Public keys fetched from another service's JWKS (`AUTH_JWKS_URL`): fetched at start,
//! cached, refreshed periodically and when a token names a `kid` the cache lacks.
//!
//! Refetches are rate limited (one per [`MIN_REFETCH`]) and each has a deadline, so an
//! unreachable Auth service costs an unknown `kid` a bounded wait and a 401, while every
//! key already cached keeps verifying.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::fetch;
use super::keyring::{Verifier, verifier_from_jwk};
use crate::telemetry::Metrics;

/// At most one fetch per this long, however many unknown `kid`s arrive.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Deadline of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A remote key set and its cache.
pub struct RemoteJwks {
    url: String,
    keys: RwLock<Arc<HashMap<String, Arc<Verifier>>>>,
    /// When the last fetch started; held while fetching, so concurrent misses wait for
    /// that one fetch instead of starting their own.
    last_fetch: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl RemoteJwks {
    /// An empty cache of the key set at `url`.
    pub fn new(url: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            url: url.to_string(),
            keys: RwLock::default(),
            last_fetch: Mutex::new(None),
            metrics,
        })
    }

    /// The cached key `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<Verifier>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .cloned()
    }

    /// Fetches the key set unless a fetch started less than [`MIN_REFETCH`] ago; true when
    /// the cache was replaced.
    pub async fn refresh(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return false;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
                kids.sort_unstable();
                tracing::info!(url = %self.url, kids = ?kids, "public keys fetched");
                let keys = Arc::new(keys);
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                self.metrics.jwks_fetched("success");
                true
            }
            Err(e) => {
                self.metrics.jwks_fetched("failure");
                tracing::warn!("public keys not fetched, the cached ones stay: {e}");
                false
            }
        }
    }

    /// Refreshes every `every` (at least [`MIN_REFETCH`]) for as long as the node runs.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(MIN_REFETCH));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Verifier>>, String> {
        let body = fetch::get(&self.url, FETCH_TIMEOUT, MAX_JWKS_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        parse(&body).map_err(|why| format!("{}: {why}", self.url))
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
