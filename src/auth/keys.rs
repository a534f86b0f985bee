//! Secret material: the JWT signing secret and the API keys of app backends.

use std::fmt;

use subtle::ConstantTimeEq;

/// The HS256 signing secret. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Wraps configured secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// 48 bytes from the operating system's CSPRNG, for development runs without a secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 48];
        getrandom::fill(&mut bytes).expect("the operating system random source is unavailable");
        Self(bytes)
    }

    /// The raw bytes, for building JWT keys.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when production would refuse this secret.
    pub fn is_weak(&self) -> bool {
        crate::config::secret_is_weak(&self.0)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(<{} bytes redacted>)", self.0.len())
    }
}

/// API keys accepted by `POST /auth/token` in api-key mode. `Debug` hides them.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<Vec<u8>>);

impl ApiKeys {
    /// Wraps the configured keys.
    pub fn new(keys: Vec<String>) -> Self {
        Self(keys.into_iter().map(String::into_bytes).collect())
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares `candidate` with every key in constant time per key, so timing does not
    /// reveal which key (or how much of one) matched.
    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        self.0.iter().fold(0u8, |hit, key| {
            hit | key.as_slice().ct_eq(candidate).unwrap_u8()
        }) == 1
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys(<{} keys redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(vec!["a".repeat(20), "b".repeat(20)]);
        assert!(keys.accepts(&"b".repeat(20)));
        assert!(!keys.accepts(&"b".repeat(19)));
        assert!(!keys.accepts(""));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = SigningSecret::new(b"super-secret-value-0123456789abcdef".to_vec());
        assert!(!format!("{s:?}").contains("super"));
        let k = ApiKeys::new(vec!["key-material-123456".into()]);
        assert!(!format!("{k:?}").contains("key-material"));
    }
}
