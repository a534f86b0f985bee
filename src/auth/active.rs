//! The credentials in service now, swapped whole by a reload: the keyring, the API keys,
//! and the cache of a remote key set. Everyone who signs or verifies reads them here, so
//! a reload reaches every new request at once and no open connection notices.

use std::sync::{Arc, RwLock};

use super::ApiKeys;
use super::jwks::RemoteJwks;
use super::keyring::{Keyring, Verifier};

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The token names no `kid` and only named keys are configured.
    MissingKid,
    /// No key here (nor in the remote set's cache) has the token's `kid`.
    UnknownKid,
}

/// The keys and API keys in service.
pub struct ActiveKeys {
    keyring: RwLock<Arc<Keyring>>,
    api_keys: RwLock<Arc<ApiKeys>>,
    /// The Auth service's published keys, on nodes configured with AUTH_JWKS_URL.
    remote: Option<Arc<RemoteJwks>>,
}

impl ActiveKeys {
    /// Keys in service from `keyring`, `api_keys` and, optionally, a remote key set.
    pub fn new(keyring: Keyring, api_keys: ApiKeys, remote: Option<Arc<RemoteJwks>>) -> Arc<Self> {
        Arc::new(Self {
            keyring: RwLock::new(Arc::new(keyring)),
            api_keys: RwLock::new(Arc::new(api_keys)),
            remote,
        })
    }

    /// The keyring in service.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The API keys in service.
    pub fn api_keys(&self) -> Arc<ApiKeys> {
        self.api_keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The remote key set, when one is configured.
    pub fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        self.remote.as_ref()
    }

    /// Puts a reloaded keyring and API keys in service.
    pub fn replace(&self, keyring: Keyring, api_keys: ApiKeys) {
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
        *self.api_keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(api_keys);
    }

    /// The key that verifies a token whose header names `kid`.
    ///
    /// A named key (local, then the remote cache) wins. A token without `kid` is verified
    /// by `AUTH_SECRET` when one is configured; so is any token on a node with nothing but
    /// `AUTH_SECRET`, exactly as before key ids existed.
    pub fn find(&self, kid: Option<&str>) -> Result<Arc<Verifier>, Lookup> {
        let keyring = self.keyring();
        if let Some(kid) = kid {
            if let Some(key) = keyring.named(kid) {
                return Ok(key);
            }
            if let Some(key) = self.remote.as_ref().and_then(|r| r.get(kid)) {
                return Ok(key);
            }
            let secret_only = !keyring.has_named_keys() && self.remote.is_none();
            return match keyring.unnamed() {
                Some(key) if secret_only => Ok(key),
                _ => Err(Lookup::UnknownKid),
            };
        }
        keyring.unnamed().ok_or(Lookup::MissingKid)
    }
}
