//! New signing keys for `switchboard keys generate`: a PKCS#8 PEM private key and its
//! public JWK, so an operator needs no other tool.

use base64::Engine;
use jsonwebtoken::jwk::Jwk;

use super::keyring::{KeyError, Keyring};

/// The asymmetric algorithms a signing key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlg {
    /// EdDSA over Ed25519: small, fast, deterministic signatures.
    Ed25519,
    /// ECDSA over P-256 with SHA-256 (JWS `ES256`), for verifiers without EdDSA.
    Es256,
}

/// A generated key pair.
pub struct GeneratedKey {
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_pem: String,
    /// The public key as a JWK with its `kid` (the RFC 7638 thumbprint unless given).
    pub public_jwk: Jwk,
}

/// The fixed PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7): the 32-byte seed
/// follows. v1, not v2 with the public key, is what the JWT library reads.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Generates a key of `alg` from the operating system's CSPRNG, named `kid` or by its
/// thumbprint.
pub fn generate(alg: KeyAlg, kid: Option<&str>) -> Result<GeneratedKey, KeyError> {
    let der = match alg {
        KeyAlg::Ed25519 => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|_| {
                KeyError("the operating system random source is unavailable".into())
            })?;
            let mut der = ED25519_PKCS8_PREFIX.to_vec();
            der.extend_from_slice(&seed);
            der
        }
        KeyAlg::Es256 => {
            let rng = ring::rand::SystemRandom::new();
            ring::signature::EcdsaKeyPair::generate_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .map_err(|_| KeyError("the operating system random source is unavailable".into()))?
            .as_ref()
            .to_vec()
        }
    };
    let private_pem = pem("PRIVATE KEY", &der);
    let mut keyring = Keyring::default();
    keyring.sign_with_pem(private_pem.as_bytes(), kid)?;
    let public_jwk = keyring.published().keys[0].clone();
    Ok(GeneratedKey {
        private_pem,
        public_jwk,
    })
}

/// `der` as PEM with `label`, in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_sign_and_publish_only_public_parts() {
        for alg in [KeyAlg::Ed25519, KeyAlg::Es256] {
            let key = generate(alg, None).unwrap();
            assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let published = serde_json::to_value(&key.public_jwk).unwrap();
            assert!(
                published.get("d").is_none(),
                "{alg:?} publishes its private part"
            );
            let kid = published["kid"].as_str().unwrap();
            assert_eq!(kid.len(), 43, "a SHA-256 thumbprint in base64url");
            // Loading the PEM again derives the same kid.
            let mut ring = Keyring::default();
            ring.sign_with_pem(key.private_pem.as_bytes(), None)
                .unwrap();
            assert_eq!(ring.signer().unwrap().kid(), Some(kid));
        }
        let named = generate(KeyAlg::Ed25519, Some("2026-12")).unwrap();
        assert_eq!(named.public_jwk.common.key_id.as_deref(), Some("2026-12"));
    }
}
