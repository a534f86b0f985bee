//! Secret material: the JWT signing secret and the API keys of app backends.

use std::fmt;

use subtle::ConstantTimeEq;

/// The original project's published default secret; accepting it would let anyone mint tokens.
pub const PUBLISHED_DEFAULT_SECRET: &str = "carrier-grade-webrtc-secret-change-in-production";
/// Secrets too well known to be secret, refused in production and warned about elsewhere.
const WEAK_SECRETS: &[&str] = &[
    PUBLISHED_DEFAULT_SECRET,
    "secret",
    "changeme",
    "change-me",
    "your-256-bit-secret",
];
/// Minimum secret length required by the security policy.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why production refuses a signing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakness {
    /// A published or well-known value: anyone could mint tokens with it.
    WellKnown,
    /// Shorter than [`MIN_SECRET_BYTES`].
    TooShort,
}

/// The HS256 signing secret. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Wraps configured secret bytes (masked in every log line from now on).
    pub fn new(bytes: Vec<u8>) -> Self {
        crate::telemetry::hold_secret(&bytes);
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

    /// Why production would refuse this secret, if it would; a well-known value is named
    /// before its length, since no length makes it secret.
    pub fn weakness(&self) -> Option<Weakness> {
        if WEAK_SECRETS.iter().any(|w| w.as_bytes() == self.0) {
            Some(Weakness::WellKnown)
        } else if self.0.len() < MIN_SECRET_BYTES {
            Some(Weakness::TooShort)
        } else {
            None
        }
    }

    /// True when production would refuse this secret.
    pub fn is_weak(&self) -> bool {
        self.weakness().is_some()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(<{} bytes redacted>)", self.0.len())
    }
}

/// Who may call `POST /auth/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Issuance {
    /// Anyone may obtain a token for any user id (demo mode).
    Open,
    /// Callers must present one of the configured API keys as a bearer token.
    ApiKey,
}

/// API keys accepted by `POST /auth/token` in api-key mode. `Debug` hides them.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<Vec<u8>>);

impl ApiKeys {
    /// Wraps the configured keys (masked in every log line from now on).
    pub fn new(keys: Vec<String>) -> Self {
        for key in &keys {
            crate::telemetry::hold_secret(key.as_bytes());
        }
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
    fn well_known_and_short_secrets_are_weak() {
        let weakness = |s: &str| SigningSecret::new(s.as_bytes().to_vec()).weakness();
        assert_eq!(
            weakness(PUBLISHED_DEFAULT_SECRET),
            Some(Weakness::WellKnown)
        );
        assert_eq!(weakness("changeme"), Some(Weakness::WellKnown));
        assert_eq!(weakness(&"x".repeat(31)), Some(Weakness::TooShort));
        assert_eq!(weakness(&"x".repeat(32)), None);
        assert!(!SigningSecret::generate().is_weak());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = SigningSecret::new(b"super-secret-value-0123456789abcdef".to_vec());
        assert!(!format!("{s:?}").contains("super"));
        let k = ApiKeys::new(vec!["key-material-123456".into()]);
        assert!(!format!("{k:?}").contains("key-material"));
    }
}
