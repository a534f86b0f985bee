//! Where the keys come from (settings and files) and how they are read into a
//! [`Keyring`]: once at start, and again on every reload.
//!
//! Errors name the setting to fix and never quote what a file holds.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;

use super::keyring::{KeyError, Keyring, parse_hmac_keys};
use super::{ApiKeys, MIN_SECRET_BYTES, SigningSecret, Weakness};

/// A value given in a setting, or the file that holds it (re-read on reloads).
#[derive(Clone)]
pub enum Source<T> {
    /// Given directly (environment or flag): fixed for the process's life.
    Value(T),
    /// Read from this file.
    File(PathBuf),
}

impl<T> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Value(_) => f.write_str("Value(<redacted>)"),
            Source::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

/// Every configured source of keys and API keys.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// AUTH_SECRET / AUTH_SECRET_FILE: the single HS256 key of tokens without `kid`.
    pub secret: Option<Source<SigningSecret>>,
    /// AUTH_KEYS / AUTH_KEYS_FILE: `kid=secret` HS256 keys.
    pub hmac_keys: Option<Source<String>>,
    /// AUTH_SIGNING_KID: which key signs (or the id of AUTH_SIGNING_KEY_FILE's key).
    pub signing_kid: Option<String>,
    /// AUTH_SIGNING_KEY_FILE: an Ed25519 or P-256 private key, PKCS#8 PEM.
    pub signing_key_file: Option<PathBuf>,
    /// AUTH_PUBLIC_KEYS_FILE: a JWKS of public keys that verify.
    pub public_keys_file: Option<PathBuf>,
    /// AUTH_API_KEYS: comma-separated.
    pub api_keys: Option<String>,
    /// AUTH_API_KEYS_FILE: one per line.
    pub api_keys_file: Option<PathBuf>,
    /// Production refuses a weak AUTH_SECRET (elsewhere it is only warned about).
    pub production: bool,
}

/// What one read of the sources produced.
#[derive(Debug)]
pub struct LoadedKeys {
    /// The keys.
    pub keyring: Keyring,
    /// The API keys of `POST /auth/token` and `/auth/revoke`.
    pub api_keys: ApiKeys,
    /// AUTH_SECRET is short or well known (tolerated outside production, with a warning).
    pub weak_secret: bool,
}

impl KeySources {
    /// True when some key is configured that can sign.
    pub fn can_sign(&self) -> bool {
        self.secret.is_some() || self.hmac_keys.is_some() || self.signing_key_file.is_some()
    }

    /// True when some key is configured at all.
    pub fn any(&self) -> bool {
        self.can_sign() || self.public_keys_file.is_some()
    }

    /// The files a reload reads.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        if let Some(Source::File(p)) = &self.secret {
            files.push(p.as_path());
        }
        if let Some(Source::File(p)) = &self.hmac_keys {
            files.push(p.as_path());
        }
        files.extend(self.signing_key_file.as_deref());
        files.extend(self.public_keys_file.as_deref());
        files.extend(self.api_keys_file.as_deref());
        files
    }

    /// A hash of every file's contents (or of why it cannot be read), to notice changes.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        for path in self.files() {
            path.hash(&mut hasher);
            match std::fs::read(path) {
                Ok(bytes) => bytes.hash(&mut hasher),
                Err(e) => e.kind().hash(&mut hasher),
            }
        }
        hasher.finish()
    }

    /// Reads every source into a keyring and API keys.
    pub fn load(&self) -> Result<LoadedKeys, KeyError> {
        let mut keyring = Keyring::default();
        if let Some(source) = &self.hmac_keys {
            let (text, origin) = match source {
                Source::Value(text) => (text.clone(), "AUTH_KEYS".to_string()),
                Source::File(path) => (
                    read(path, "AUTH_KEYS_FILE")?,
                    format!("AUTH_KEYS_FILE {}", path.display()),
                ),
            };
            let keys = parse_hmac_keys(&text, &origin)?;
            for (kid, secret) in &keys {
                keyring.add_hmac(kid, secret)?;
            }
            if self.signing_key_file.is_none() {
                // The first key signs unless AUTH_SIGNING_KID names another: reordering
                // the file switches the signing key without a restart.
                let wanted = self.signing_kid.as_deref().unwrap_or(&keys[0].0);
                let (kid, secret) = keys.iter().find(|(k, _)| k == wanted).ok_or_else(|| {
                    KeyError(format!(
                        "AUTH_SIGNING_KID names \"{wanted}\", which {origin} does not list; \
                         add that key or change AUTH_SIGNING_KID"
                    ))
                })?;
                keyring.sign_with_hmac(kid, secret);
            }
        }
        if let Some(path) = &self.signing_key_file {
            let pem = read(path, "AUTH_SIGNING_KEY_FILE")?;
            keyring
                .sign_with_pem(pem.as_bytes(), self.signing_kid.as_deref())
                .map_err(|e| KeyError(format!("AUTH_SIGNING_KEY_FILE {}: {e}", path.display())))?;
        }
        if let Some(path) = &self.public_keys_file {
            let text = read(path, "AUTH_PUBLIC_KEYS_FILE")?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|_| {
                KeyError(format!(
                    "AUTH_PUBLIC_KEYS_FILE {} is not a JWK set ({{\"keys\": [...]}})",
                    path.display()
                ))
            })?;
            let signing = keyring.signer().and_then(|s| s.kid()).map(str::to_string);
            for jwk in &set.keys {
                // The signing key's own public half may be listed (a rotation adds it
                // before it signs): it is published already.
                if signing.is_some() && jwk.common.key_id == signing {
                    continue;
                }
                keyring.add_public(jwk).map_err(|e| {
                    KeyError(format!("AUTH_PUBLIC_KEYS_FILE {}: {e}", path.display()))
                })?;
            }
        }
        let mut weak_secret = false;
        if let Some(source) = &self.secret {
            let secret = match source {
                Source::Value(secret) => secret.clone(),
                Source::File(path) => {
                    let raw = read(path, "AUTH_SECRET_FILE")?;
                    SigningSecret::new(raw.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
                }
            };
            self.check_secret(&secret)?;
            weak_secret = secret.is_weak();
            keyring.set_unnamed_secret(&secret);
        }
        Ok(LoadedKeys {
            keyring,
            api_keys: self.load_api_keys()?,
            weak_secret,
        })
    }

    fn check_secret(&self, secret: &SigningSecret) -> Result<(), KeyError> {
        if secret.as_bytes().is_empty() {
            return Err(KeyError(
                "AUTH_SECRET is empty; set at least 32 random bytes.".into(),
            ));
        }
        if !self.production {
            return Ok(());
        }
        match secret.weakness() {
            Some(Weakness::WellKnown) => Err(KeyError(
                "AUTH_SECRET is a published, well-known value; generate a new random secret."
                    .into(),
            )),
            Some(Weakness::TooShort) => Err(KeyError(format!(
                "AUTH_SECRET is {} bytes; production requires at least {MIN_SECRET_BYTES}.",
                secret.as_bytes().len()
            ))),
            None => Ok(()),
        }
    }

    fn load_api_keys(&self) -> Result<ApiKeys, KeyError> {
        let mut keys: Vec<String> = Vec::new();
        if let Some(list) = &self.api_keys {
            keys.extend(list.split(',').map(str::trim).map(String::from));
        }
        if let Some(path) = &self.api_keys_file {
            let raw = read(path, "AUTH_API_KEYS_FILE")?;
            keys.extend(
                raw.lines()
                    .map(str::trim)
                    .filter(|l| !l.starts_with('#'))
                    .map(String::from),
            );
        }
        keys.retain(|k| !k.is_empty());
        if let Some(short) = keys.iter().find(|k| k.len() < 16) {
            return Err(KeyError(format!(
                "an API key of {} characters is too short to resist guessing; use at least 16.",
                short.len()
            )));
        }
        Ok(ApiKeys::new(keys))
    }
}

/// A key file's text; the error names the setting and the file, never its contents.
fn read(path: &Path, setting: &str) -> Result<String, KeyError> {
    std::fs::read_to_string(path)
        .map_err(|e| KeyError(format!("{setting} {} cannot be read: {e}.", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac(list: &str) -> KeySources {
        KeySources {
            hmac_keys: Some(Source::Value(list.into())),
            ..KeySources::default()
        }
    }

    #[test]
    fn the_first_key_signs_unless_another_is_named() {
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let list = format!("one={a},two={b}");
        let ring = hmac(&list).load().unwrap().keyring;
        assert_eq!(ring.signer().unwrap().kid(), Some("one"));
        assert_eq!(ring.kids(), ["one", "two"]);
        assert!(ring.unnamed().is_none());
        let mut named = hmac(&list);
        named.signing_kid = Some("two".into());
        assert_eq!(
            named.load().unwrap().keyring.signer().unwrap().kid(),
            Some("two")
        );
        named.signing_kid = Some("three".into());
        assert!(named.load().unwrap_err().0.contains("AUTH_SIGNING_KID"));
        // HMAC secrets are never published.
        assert!(
            hmac(&list)
                .load()
                .unwrap()
                .keyring
                .published()
                .keys
                .is_empty()
        );
    }

    #[test]
    fn a_secret_file_is_trimmed_and_checked_in_production() {
        let path = std::env::temp_dir().join(format!("sb-keyfiles-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", "s".repeat(40))).unwrap();
        let mut sources = KeySources {
            secret: Some(Source::File(path.clone())),
            production: true,
            ..KeySources::default()
        };
        let before = sources.fingerprint();
        assert!(!sources.load().unwrap().weak_secret);
        std::fs::write(&path, "short\n").unwrap();
        assert_ne!(sources.fingerprint(), before);
        let refused = sources.load().unwrap_err().0;
        assert!(refused.contains("at least 32") && !refused.contains("short"));
        sources.production = false;
        assert!(sources.load().unwrap().weak_secret);
        std::fs::remove_file(&path).unwrap();
        assert!(sources.load().unwrap_err().0.contains("AUTH_SECRET_FILE"));
    }

    #[test]
    fn the_signing_keys_own_jwk_may_be_listed_among_the_public_keys() {
        use crate::auth::keygen::{KeyAlg, generate};
        let dir = std::env::temp_dir().join(format!("sb-keyfiles-jwk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (signing, other) = (
            generate(KeyAlg::Ed25519, None).unwrap(),
            generate(KeyAlg::Es256, Some("old")).unwrap(),
        );
        std::fs::write(dir.join("key.pem"), &signing.private_pem).unwrap();
        let set = serde_json::json!({ "keys": [signing.public_jwk, other.public_jwk] });
        std::fs::write(dir.join("public.json"), set.to_string()).unwrap();
        let sources = KeySources {
            signing_key_file: Some(dir.join("key.pem")),
            public_keys_file: Some(dir.join("public.json")),
            ..KeySources::default()
        };
        let ring = sources.load().unwrap().keyring;
        assert_eq!(ring.kids().len(), 2);
        assert_eq!(ring.published().keys.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
