//! The keys in service: the one that signs, every one that verifies (by `kid`), and the
//! public keys published at `/auth/jwks.json`.
//!
//! Each verifying key carries its algorithm, and a token is checked only with the
//! algorithm of the key its `kid` names: an HMAC secret never verifies an EdDSA token,
//! nor a public key an HS256 one (the classic confusion of RFC 8725 §2.1).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

use super::{MIN_SECRET_BYTES, SigningSecret};

/// A key set that cannot be used, with a sentence naming what to fix (never key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn refuse(msg: impl Into<String>) -> KeyError {
    KeyError(msg.into())
}

/// The key that signs new tokens.
#[derive(Clone)]
pub struct Signer {
    /// Written in the header; `None` only for the single `AUTH_SECRET`, as before key ids.
    kid: Option<String>,
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    /// The key id new tokens carry, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWS header of tokens signed with this key.
    pub fn header(&self) -> Header {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        header
    }

    /// The key itself, for `jsonwebtoken::encode`.
    pub fn key(&self) -> &EncodingKey {
        &self.key
    }
}

/// One key that verifies, pinned to its algorithm.
#[derive(Clone)]
pub struct Verifier {
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?}, <key redacted>)", self.alg)
    }
}

/// Every key a node holds at one moment; replaced whole on a reload.
#[derive(Clone, Default)]
pub struct Keyring {
    signer: Option<Signer>,
    /// Verifying keys by `kid`.
    named: HashMap<String, Arc<Verifier>>,
    /// `AUTH_SECRET`: verifies tokens without `kid` (and any token when nothing is named).
    unnamed: Option<Arc<Verifier>>,
    /// Public keys for `/auth/jwks.json`: never an HMAC secret.
    published: JwkSet,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("signing_kid", &self.signer.as_ref().map(|s| s.kid()))
            .field("kids", &self.kids())
            .field("unnamed", &self.unnamed.is_some())
            .finish()
    }
}

impl Keyring {
    /// The single `AUTH_SECRET` of before key ids: signs without `kid`, verifies any HS256.
    pub fn from_secret(secret: &SigningSecret) -> Self {
        Self {
            signer: Some(Signer {
                kid: None,
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(secret.as_bytes()),
            }),
            unnamed: Some(Arc::new(Verifier {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            })),
            ..Self::default()
        }
    }

    /// The key that signs, if this node signs.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// The ids of the named verifying keys, sorted (for logs: ids are not secret).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.named.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// True when a `kid` names some key here.
    pub fn has_named_keys(&self) -> bool {
        !self.named.is_empty()
    }

    /// The named key `kid`.
    pub fn named(&self, kid: &str) -> Option<Arc<Verifier>> {
        self.named.get(kid).cloned()
    }

    /// The `AUTH_SECRET` key, if configured.
    pub fn unnamed(&self) -> Option<Arc<Verifier>> {
        self.unnamed.clone()
    }

    /// The public keys to publish.
    pub fn published(&self) -> &JwkSet {
        &self.published
    }

    /// Adds `AUTH_SECRET` as the key of tokens without `kid`.
    pub fn set_unnamed_secret(&mut self, secret: &SigningSecret) {
        self.unnamed = Some(Arc::new(Verifier {
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.as_bytes()),
        }));
        if self.signer.is_none() {
            self.signer = Keyring::from_secret(secret).signer;
        }
    }

    /// Adds an HS256 key named `kid`.
    pub fn add_hmac(&mut self, kid: &str, secret: &SigningSecret) -> Result<(), KeyError> {
        self.insert(
            kid,
            Verifier {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            },
        )
    }

    /// Adds a public key from a JWK (its `kid` required), published at the JWKS route.
    pub fn add_public(&mut self, jwk: &Jwk) -> Result<(), KeyError> {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| refuse("a public key has no \"kid\"; give every key an id"))?;
        self.insert(&kid, verifier_from_jwk(jwk)?)?;
        self.published.keys.push(jwk.clone());
        Ok(())
    }

    /// Makes the HS256 key `kid` (added before) the signing key.
    pub fn sign_with_hmac(&mut self, kid: &str, secret: &SigningSecret) {
        self.signer = Some(Signer {
            kid: Some(kid.to_string()),
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret.as_bytes()),
        });
    }

    /// Makes a private key (PKCS#8 PEM, Ed25519 or P-256) the signing key, named `kid` or
    /// else by its RFC 7638 thumbprint; its public half verifies and is published.
    pub fn sign_with_pem(&mut self, pem: &[u8], kid: Option<&str>) -> Result<(), KeyError> {
        let (alg, key, mut jwk) = private_key_from_pem(pem)?;
        let kid = match kid {
            Some(k) => k.to_string(),
            None => thumbprint(&jwk)?,
        };
        jwk.common.key_id = Some(kid.clone());
        self.add_public(&jwk)?;
        self.signer = Some(Signer {
            kid: Some(kid),
            alg,
            key,
        });
        Ok(())
    }

    fn insert(&mut self, kid: &str, verifier: Verifier) -> Result<(), KeyError> {
        if kid.is_empty() || kid.len() > 128 || kid.chars().any(|c| c.is_control()) {
            return Err(refuse(
                "a key id is empty, longer than 128 characters or holds control characters",
            ));
        }
        if self
            .named
            .insert(kid.to_string(), Arc::new(verifier))
            .is_some()
        {
            return Err(refuse(format!(
                "the key id \"{kid}\" is used twice; give every key its own id"
            )));
        }
        Ok(())
    }
}

/// Parses `kid=secret` entries separated by commas or newlines (blank lines and `#`
/// comments ignored); every secret at least [`MIN_SECRET_BYTES`] long.
pub fn parse_hmac_keys(text: &str, origin: &str) -> Result<Vec<(String, SigningSecret)>, KeyError> {
    let mut keys = Vec::new();
    for (i, entry) in text
        .split([',', '\n'])
        .map(|e| e.trim_end_matches('\r').trim())
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .enumerate()
    {
        let Some((kid, secret)) = entry.split_once('=') else {
            return Err(refuse(format!(
                "{origin}: entry {} is not kid=secret; write each key as <id>=<secret>",
                i + 1
            )));
        };
        let (kid, secret) = (kid.trim(), secret.trim());
        if kid.is_empty() {
            return Err(refuse(format!(
                "{origin}: entry {} has no key id before '='",
                i + 1
            )));
        }
        let secret = SigningSecret::new(secret.as_bytes().to_vec());
        if secret.is_weak() {
            return Err(refuse(format!(
                "{origin}: the secret of key \"{kid}\" is shorter than {MIN_SECRET_BYTES} bytes \
                 or a well-known value; generate one with `openssl rand -base64 48`"
            )));
        }
        keys.push((kid.to_string(), secret));
    }
    if keys.is_empty() {
        return Err(refuse(format!(
            "{origin} holds no key; list at least one kid=secret"
        )));
    }
    Ok(keys)
}

/// The algorithm a public JWK verifies: its `alg` when given (and consistent with its key
/// type), else the one its curve or type implies. HMAC (`oct`) keys are refused: a secret
/// has no place in a key set that may be published.
pub fn verifier_from_jwk(jwk: &Jwk) -> Result<Verifier, KeyError> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::RSA(p) => {
            check_rsa_size(&p.n)?;
            Algorithm::RS256
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(refuse(
                "a key set holds a symmetric (oct) key; public key sets hold only EdDSA, ES256 \
                 or RS256 public keys",
            ));
        }
        _ => {
            return Err(refuse(
                "a key set holds a key of an unsupported type; use Ed25519, P-256 or RSA",
            ));
        }
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let consistent = matches!(
            (declared, implied),
            (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
                | (KeyAlgorithm::RS256, Algorithm::RS256)
        );
        if !consistent {
            return Err(refuse(format!(
                "a key declares \"alg\": \"{declared:?}\", which its key type does not support"
            )));
        }
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err(refuse(
            "a key is marked for encryption (\"use\": \"enc\"), not signatures",
        ));
    }
    let key =
        DecodingKey::from_jwk(jwk).map_err(|_| refuse("a public key's parameters are invalid"))?;
    Ok(Verifier { alg: implied, key })
}

/// Shortest RSA modulus accepted (NIST SP 800-131A: 1024-bit keys are broken or close).
const MIN_RSA_BITS: usize = 2048;

/// Refuses an RSA key whose modulus (`n`, base64url) is shorter than [`MIN_RSA_BITS`].
fn check_rsa_size(n: &str) -> Result<(), KeyError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map_err(|_| refuse("an RSA key's modulus (n) is not base64url"))?;
    let significant = bytes.iter().skip_while(|b| **b == 0).count();
    if significant * 8 < MIN_RSA_BITS {
        return Err(refuse(format!(
            "an RSA key is shorter than {MIN_RSA_BITS} bits; use 2048 bits or more"
        )));
    }
    Ok(())
}

/// A PKCS#8 PEM private key: its algorithm, signing key and public JWK.
fn private_key_from_pem(pem: &[u8]) -> Result<(Algorithm, EncodingKey, Jwk), KeyError> {
    let (alg, key) = if let Ok(key) = EncodingKey::from_ed_pem(pem) {
        (Algorithm::EdDSA, key)
    } else if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        (Algorithm::ES256, key)
    } else {
        return Err(refuse(
            "the signing key is not an Ed25519 or P-256 private key in PKCS#8 PEM \
             (-----BEGIN PRIVATE KEY-----); create one with `switchboard keys generate`",
        ));
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|_| {
        refuse(
            "the signing key cannot be read (a P-384 key, or a PKCS#8 v2 Ed25519 key?); \
             create one with `switchboard keys generate`",
        )
    })?;
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    // A round trip proves the key signs what its public half verifies.
    let verifier = verifier_from_jwk(&jwk)?;
    let probe =
        jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &key).map_err(|_| {
            refuse("the signing key cannot sign; create one with `switchboard keys generate`")
        })?;
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(&probe, &verifier.key, &validation)
        .map_err(|_| refuse("the signing key's public half does not verify its signatures"))?;
    Ok((alg, key, jwk))
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK.
pub fn thumbprint(jwk: &Jwk) -> Result<String, KeyError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| refuse("the key's thumbprint cannot be computed; set AUTH_SIGNING_KID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_entries_parse_from_commas_and_lines() {
        let text = format!(
            "# rotation\nnew={}\r\n, old={}\n",
            "n".repeat(32),
            "o".repeat(40)
        );
        let keys = parse_hmac_keys(&text, "AUTH_KEYS").unwrap();
        let kids: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kids, ["new", "old"]);
        assert_eq!(keys[1].1.as_bytes().len(), 40);
    }

    #[test]
    fn bad_hmac_entries_are_refused_without_echoing_secrets() {
        let short = parse_hmac_keys("a=short-secret-value", "AUTH_KEYS").unwrap_err();
        assert!(short.0.contains("\"a\"") && !short.0.contains("short-secret-value"));
        let no_id = parse_hmac_keys(&format!("={}", "x".repeat(32)), "F").unwrap_err();
        assert!(no_id.0.contains("no key id"));
        let bare = parse_hmac_keys(&"x".repeat(40), "F").unwrap_err();
        assert!(bare.0.contains("kid=secret") && !bare.0.contains("xxxx"));
        assert!(parse_hmac_keys("# nothing\n", "F").is_err());
        let mut ring = Keyring::default();
        let s = SigningSecret::new(vec![1; 32]);
        ring.add_hmac("a", &s).unwrap();
        assert!(ring.add_hmac("a", &s).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn symmetric_jwks_are_refused() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "kid": "k", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"
        }))
        .unwrap();
        assert!(verifier_from_jwk(&jwk).unwrap_err().0.contains("symmetric"));
    }

    #[test]
    fn a_declared_alg_must_match_the_key_type() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "kid": "k", "alg": "ES256",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        }))
        .unwrap();
        assert!(verifier_from_jwk(&jwk).is_err());
    }
}
