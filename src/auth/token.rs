//! JWT minting and verification with the keys in service ([`ActiveKeys`]).
//!
//! The header's `kid` picks the key and the key fixes the algorithm: a token is verified
//! only with the algorithm of the key it names (HS256, EdDSA, ES256 or RS256).
//!
//! Verification follows the JWT best current practice (RFC 8725): the algorithm is pinned,
//! a header naming critical extensions (`crit`) is refused since we understand none, and
//! the times must be plausible: `iat` and `nbf` not in the future beyond a small leeway,
//! and `exp - iat` no longer than the lifetime the policy allows, so a token signed with
//! the right key but an `exp` in the year 3000 is still refused.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::active::{ActiveKeys, Lookup};
use super::claims::{
    Claims, Grant, LEEWAY_SECS, MAX_TOKEN_BYTES, TokenError, claims_error, map_error, random_hex,
};
use super::keyring::Keyring;
use super::oidc::IdentityProvider;
use super::{ApiKeys, SigningSecret};
use crate::clock::unix_now;
use crate::identifier;

/// A freshly signed token and its claims.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// What it says.
    pub claims: Claims,
}

/// Signs tokens with the signing key in service and the configured policy.
#[derive(Clone)]
pub struct TokenIssuer {
    /// Always holds a signing key: see [`TokenIssuer::with_keys`].
    keys: Arc<ActiveKeys>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// An issuer signing with the single `secret` for `iss`/`aud`, whose tokens live `ttl`.
    pub fn new(secret: &SigningSecret, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let keys = ActiveKeys::new(Keyring::from_secret(secret), ApiKeys::default(), None);
        Self::with_keys(keys, issuer, audience, ttl).expect("a secret signs")
    }

    /// An issuer signing with whatever key is in service in `keys`; `None` when they hold
    /// no signing key (a reload never takes the signing key away).
    pub fn with_keys(
        keys: Arc<ActiveKeys>,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Option<Self> {
        keys.keyring().signer()?;
        Some(Self {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
        })
    }

    /// Mints a token for `user` with a new session, optionally restricted to `room`.
    pub fn issue(&self, user: &str, room: Option<&str>, ttl: Option<Duration>) -> IssuedToken {
        self.issue_with(user, room, ttl, None)
    }

    /// A token as [`TokenIssuer::issue`] makes, carrying the participant's initial
    /// `metadata` (a JSON object, as text).
    pub fn issue_with(
        &self,
        user: &str,
        room: Option<&str>,
        ttl: Option<Duration>,
        metadata: Option<&str>,
    ) -> IssuedToken {
        let mut grant = Grant::new(user, &random_hex());
        grant.room = room.map(Box::from);
        grant.metadata = metadata.map(Box::from);
        self.sign(&grant, ttl.unwrap_or(self.ttl))
    }

    /// A fresh token for the same user, session and room as `grant`, with a new lifetime.
    pub fn reissue(&self, grant: &Grant) -> IssuedToken {
        self.sign(grant, self.ttl)
    }

    /// Signs the claims of `grant` (user, session, room, metadata) for `ttl` from now.
    fn sign(&self, grant: &Grant, ttl: Duration) -> IssuedToken {
        let now = unix_now();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: grant.sub().to_string(),
            session_id: grant.session_id().to_string(),
            jti: random_hex(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
            room: grant.room.as_deref().map(str::to_string),
            metadata: grant.metadata.as_deref().map(str::to_string),
            from_identity_provider: false,
        };
        let keyring = self.keys.keyring();
        let signer = keyring
            .signer()
            .expect("an issuer's keys always hold a signing key");
        let token = jsonwebtoken::encode(&signer.header(), &claims, signer.key())
            .expect("a loaded key signs any serialisable struct");
        IssuedToken { token, claims }
    }
}

/// The algorithms a key may have; each gets its own pinned validation.
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::RS256,
];

/// Verifies tokens; one instance is shared by the Auth and Signaling services.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<ActiveKeys>,
    /// The `iss` a token must carry.
    issuer: Arc<str>,
    /// The `aud` a token must carry.
    audience: Arc<str>,
    /// Longest `exp - iat` accepted, in seconds: the issuance policy's cap.
    max_lifetime: u64,
    /// The identity provider whose tokens are accepted beside ours (OIDC_ISSUER).
    provider: Option<Arc<IdentityProvider>>,
}

impl TokenVerifier {
    /// A verifier of the single HS256 `secret` with exact `iss`/`aud`, accepting lifetimes
    /// (`exp - iat`) up to `max_lifetime`.
    pub fn new(
        secret: &SigningSecret,
        issuer: &str,
        audience: &str,
        max_lifetime: Duration,
    ) -> Self {
        let keys = ActiveKeys::new(Keyring::from_secret(secret), ApiKeys::default(), None);
        Self::with_keys(keys, issuer, audience, max_lifetime)
    }

    /// A verifier of the keys in service in `keys`, with exact `iss`/`aud`, accepting
    /// lifetimes (`exp - iat`) up to `max_lifetime`.
    pub fn with_keys(
        keys: Arc<ActiveKeys>,
        issuer: &str,
        audience: &str,
        max_lifetime: Duration,
    ) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            max_lifetime: max_lifetime.as_secs(),
            provider: None,
        }
    }

    /// This verifier, accepting the tokens of `provider` too.
    pub fn with_identity_provider(mut self, provider: Arc<IdentityProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Checks signature, algorithm, times and claims; returns the claims when all hold.
    /// A `kid` the cache of a remote key set lacks makes it refetch that set (rate
    /// limited, with a deadline) before the token is refused.
    pub async fn verify_fetching(&self, token: &str) -> Result<Claims, TokenError> {
        match self.verify(token) {
            Err(TokenError::UnknownKey) => {
                let remote = match self.provider_of(token) {
                    Some(provider) => Some(provider.keys()),
                    None => self.keys.remote(),
                };
                // Boxed: the fetch's future is about 9 KB, and every upgrade and
                // validation handler would carry (and move) that much otherwise.
                match remote {
                    Some(remote) if Box::pin(remote.refresh()).await => self.verify(token),
                    _ => Err(TokenError::UnknownKey),
                }
            }
            other => other,
        }
    }

    /// Checks signature, algorithm, times and claims with the keys at hand; returns the
    /// claims when all hold.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let parts = Parts::split(token)?;
        let header = check_header(parts.header)?;
        if let Some(provider) = self.provider_of(token) {
            return provider.verify(token, header.alg, header.kid.as_deref());
        }
        let key = self
            .keys
            .find(header.kid.as_deref())
            .map_err(|missing| match missing {
                Lookup::MissingKid => TokenError::MissingKeyId,
                Lookup::UnknownKid => TokenError::UnknownKey,
            })?;
        // The key's algorithm, never the header's, decides how the token is checked.
        if header.alg != key.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        // The library's own `decode` reads the header twice more and the claims twice (once
        // for its checks, once for ours): a third of a WebSocket upgrade's CPU went there.
        // So the library checks the signature, and the claims are read once, here.
        match jsonwebtoken::crypto::verify(
            parts.signature,
            parts.message.as_bytes(),
            &key.key,
            key.alg,
        ) {
            Ok(true) => {}
            Ok(false) => return Err(TokenError::BadSignature),
            Err(e) => return Err(map_error(e.kind())),
        }
        let claims = read_claims(parts.payload)?;
        self.check_registered(&claims)?;
        self.check_claims(claims)
    }

    /// The registered claims the library used to check (RFC 7519 §4.1): `exp` and `nbf`
    /// within the leeway, then `iss` and `aud` exactly ours. `Claims` has no defaults, so
    /// each one is present once the claims are read.
    fn check_registered(&self, claims: &Claims) -> Result<(), TokenError> {
        let now = unix_now();
        if claims.exp < now.saturating_sub(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + LEEWAY_SECS {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != *self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != *self.audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(())
    }

    /// The claims' own rules, once the signature holds.
    fn check_claims(&self, claims: Claims) -> Result<Claims, TokenError> {
        self.check_times(&claims)?;
        if identifier::check(&claims.sub).is_err() {
            return Err(TokenError::BadClaim("sub"));
        }
        let session_ok = (1..=64).contains(&claims.session_id.len())
            && claims
                .session_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !session_ok {
            return Err(TokenError::BadClaim("session_id"));
        }
        if let Some(room) = &claims.room
            && identifier::check(room).is_err()
        {
            return Err(TokenError::BadClaim("room"));
        }
        Ok(claims)
    }

    /// The checks the JWT library leaves to us (it validates only `exp` and `nbf`): `iat`
    /// not in the future and a lifetime within the policy. Both are read after the
    /// signature, so they speak about what the key holder wrote.
    fn check_times(&self, claims: &Claims) -> Result<(), TokenError> {
        if claims.iat > unix_now() + LEEWAY_SECS {
            return Err(TokenError::IssuedInFuture);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime {
            return Err(TokenError::LifetimeTooLong(self.max_lifetime));
        }
        Ok(())
    }
}

impl TokenVerifier {
    /// The identity provider whose tokens say they come from it (`iss`, read before the
    /// signature): that only picks whose keys and rules check the token, all of which it
    /// must then pass. Our own issuer never equals the provider's (config refuses it).
    fn provider_of(&self, token: &str) -> Option<&Arc<IdentityProvider>> {
        let provider = self.provider.as_ref()?;
        (unverified_issuer(token).as_deref() == Some(provider.issuer())).then_some(provider)
    }
}

/// The payload's `iss`, unverified; `None` when the payload is unreadable.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Payload {
        iss: Option<String>,
    }
    let second = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(second)
        .ok()?;
    serde_json::from_slice::<Payload>(&bytes).ok()?.iss
}

/// The three parts of a compact JWS, as written.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// What the signature covers: the header, a dot and the payload.
    message: &'a str,
}

impl<'a> Parts<'a> {
    /// Splits `token` at its two dots; any other number of parts is malformed.
    fn split(token: &'a str) -> Result<Self, TokenError> {
        let (message, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            header,
            payload,
            signature,
            message,
        })
    }
}

/// Reads the claims from the base64url `payload` (after the signature held).
fn read_claims(payload: &str) -> Result<Claims, TokenError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|e| claims_error(&e))
}

/// What the header says, read before any key is chosen.
struct JoseHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the header's `alg` and `kid` before anything else, so `none` or an algorithm we
/// do not accept is reported as what it is rather than as a parse failure; and refuses any
/// `crit` (RFC 7515 §4.1.11: an extension the recipient does not understand makes the
/// token invalid, and we understand none).
fn check_header(header: &str) -> Result<JoseHeader, TokenError> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Raw {
        alg: Option<String>,
        kid: Option<String>,
        /// Any value, even an empty list (which RFC 7515 forbids), is refused.
        crit: Option<serde_json::Value>,
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Raw = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let alg = header
        .alg
        .as_deref()
        .and_then(|name| name.parse::<Algorithm>().ok())
        .filter(|alg| ALGORITHMS.contains(alg))
        .ok_or(TokenError::WrongAlgorithm)?;
    if header.crit.is_some() {
        return Err(TokenError::UnknownCritical);
    }
    Ok(JoseHeader {
        alg,
        kid: header.kid,
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde::Serialize;

    use super::*;

    fn pair() -> (TokenIssuer, TokenVerifier) {
        let secret = SigningSecret::new(vec![7u8; 32]);
        (
            TokenIssuer::new(
                &secret,
                "switchboard",
                "switchboard",
                Duration::from_secs(60),
            ),
            TokenVerifier::new(&secret, "switchboard", "switchboard", MAX_LIFETIME),
        )
    }

    const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

    /// Valid claims for `alice`, issued now and living ten minutes.
    fn claims() -> Claims {
        let now = unix_now();
        Claims {
            iss: "switchboard".into(),
            aud: "switchboard".into(),
            sub: "alice".into(),
            session_id: "s1".into(),
            jti: "j1".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            room: None,
            metadata: None,
            from_identity_provider: false,
        }
    }

    /// Signs `claims` under `header` with the verifier's own key, as a key holder could.
    fn sign(header: &Header, claims: &impl Serialize) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(&[7u8; 32])).unwrap()
    }

    #[test]
    fn critical_header_extensions_are_refused_even_when_signed() {
        let (_, verifier) = pair();
        let plain = Header::new(Algorithm::HS256);
        assert!(verifier.verify(&sign(&plain, &claims())).is_ok());
        let mut crit = plain.clone();
        crit.crit = Some(vec!["exp".into()]);
        assert_eq!(
            verifier.verify(&sign(&crit, &claims())),
            Err(TokenError::UnknownCritical)
        );
        // An empty list is invalid JOSE as well.
        crit.crit = Some(Vec::new());
        assert_eq!(
            verifier.verify(&sign(&crit, &claims())),
            Err(TokenError::UnknownCritical)
        );
    }

    #[test]
    fn iat_and_nbf_in_the_future_are_refused_beyond_the_leeway() {
        let (_, verifier) = pair();
        let header = Header::new(Algorithm::HS256);
        let now = unix_now();
        let mut skewed = claims();
        skewed.iat = now + LEEWAY_SECS / 2;
        assert!(verifier.verify(&sign(&header, &skewed)).is_ok());
        let mut future = claims();
        future.iat = now + 300;
        assert_eq!(
            verifier.verify(&sign(&header, &future)),
            Err(TokenError::IssuedInFuture)
        );
        let mut not_yet = claims();
        not_yet.nbf = now + 300;
        assert_eq!(
            verifier.verify(&sign(&header, &not_yet)),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn expiry_issuer_and_audience_are_checked_once_the_signature_holds() {
        let (_, verifier) = pair();
        let header = Header::new(Algorithm::HS256);
        let now = unix_now();
        let with = |change: &dyn Fn(&mut Claims)| {
            let mut c = claims();
            change(&mut c);
            verifier.verify(&sign(&header, &c))
        };
        // Expired, but within the leeway; then beyond it.
        assert!(with(&|c| (c.iat, c.exp) = (now - 600, now - LEEWAY_SECS + 1)).is_ok());
        assert_eq!(
            with(&|c| (c.iat, c.exp) = (now - 600, now - LEEWAY_SECS - 1)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            with(&|c| c.iss = "evil".into()),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            with(&|c| c.aud = "someone-else".into()),
            Err(TokenError::WrongAudience)
        );
        // A payload swapped under a valid signature is a bad signature, whatever it says.
        let good = sign(&header, &claims());
        let mut other = claims();
        other.iss = "evil".into();
        let forged = sign(&header, &other);
        let [h, _, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
        let payload = forged.split('.').nth(1).unwrap();
        assert_eq!(
            verifier.verify(&format!("{h}.{payload}.{s}")),
            Err(TokenError::BadSignature)
        );
        // Only three parts make a token.
        assert_eq!(
            verifier.verify(&format!("{good}.x")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verifier.verify(&format!("{h}.{s}")),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn lifetimes_above_the_policy_cap_are_refused() {
        let (_, verifier) = pair();
        let header = Header::new(Algorithm::HS256);
        let mut longest = claims();
        longest.exp = longest.iat + MAX_LIFETIME.as_secs();
        assert!(verifier.verify(&sign(&header, &longest)).is_ok());
        let mut longer = claims();
        longer.exp = longer.iat + MAX_LIFETIME.as_secs() + 1;
        let refused = verifier.verify(&sign(&header, &longer));
        assert_eq!(refused, Err(TokenError::LifetimeTooLong(86_400)));
        assert!(refused.unwrap_err().to_string().contains("86400 s maximum"));
        // The year 3000, with an old `iat` that would otherwise make it look short-lived.
        let mut forever = claims();
        forever.iat = 0;
        forever.exp = 32_503_680_000;
        assert_eq!(
            verifier.verify(&sign(&header, &forever)),
            Err(TokenError::LifetimeTooLong(86_400))
        );
    }

    #[test]
    fn a_token_without_iat_is_refused_naming_the_claim() {
        let (_, verifier) = pair();
        let mut value = serde_json::to_value(claims()).unwrap();
        value.as_object_mut().unwrap().remove("iat");
        assert_eq!(
            verifier.verify(&sign(&Header::new(Algorithm::HS256), &value)),
            Err(TokenError::BadClaim("iat"))
        );
    }

    #[test]
    fn issued_tokens_verify_and_carry_a_fresh_session() {
        let (issuer, verifier) = pair();
        let a = issuer.issue("alice", Some("r1"), None);
        let b = issuer.issue("alice", None, None);
        let claims = verifier.verify(&a.token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.room.as_deref(), Some("r1"));
        assert_eq!(claims.session_id.len(), 32);
        assert_ne!(a.claims.session_id, b.claims.session_id);
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn reissue_keeps_the_session() {
        let (issuer, verifier) = pair();
        let a = issuer.issue("bob", Some("r"), None);
        let b = issuer.reissue(&a.claims.clone().into());
        let claims = verifier.verify(&b.token).unwrap();
        assert_eq!(claims.session_id, a.claims.session_id);
        assert_eq!(claims.room, a.claims.room);
        assert_ne!(claims.jti, a.claims.jti);
    }

    #[test]
    fn oversized_and_empty_tokens_are_refused_unread() {
        let (_, verifier) = pair();
        assert_eq!(verifier.verify(""), Err(TokenError::Missing));
        assert_eq!(
            verifier.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenError::TooLong)
        );
        assert_eq!(verifier.verify("not-a-jwt"), Err(TokenError::Malformed));
        assert_eq!(
            verifier.verify("eyJhbGciOiJub25lIn0.e30."),
            Err(TokenError::WrongAlgorithm)
        );
    }

    /// A verifier over `keys` as a node would build it.
    fn over(list: &str) -> (Arc<ActiveKeys>, TokenVerifier) {
        let sources = crate::auth::key_files::KeySources {
            hmac_keys: Some(crate::auth::key_files::Source::Value(list.into())),
            ..Default::default()
        };
        let loaded = sources.load().unwrap();
        let keys = ActiveKeys::new(loaded.keyring, loaded.api_keys, None);
        let verifier =
            TokenVerifier::with_keys(keys.clone(), "switchboard", "switchboard", MAX_LIFETIME);
        (keys, verifier)
    }

    #[test]
    fn named_keys_verify_their_own_tokens_and_refuse_missing_or_unknown_kids() {
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        let (keys, verifier) = over(&format!("new={new},old={old}"));
        let issuer =
            TokenIssuer::with_keys(keys, "switchboard", "switchboard", Duration::from_secs(60))
                .unwrap();
        let issued = issuer.issue("alice", None, None);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("new"));
        assert!(verifier.verify(&issued.token).is_ok());
        let signed = |kid: Option<&str>, secret: &str| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(String::from);
            jsonwebtoken::encode(
                &header,
                &claims(),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        assert!(verifier.verify(&signed(Some("old"), &old)).is_ok());
        assert_eq!(
            verifier.verify(&signed(None, &old)),
            Err(TokenError::MissingKeyId)
        );
        assert_eq!(
            verifier.verify(&signed(Some("gone"), &old)),
            Err(TokenError::UnknownKey)
        );
        // A kid naming one key does not let another key's signature through.
        assert_eq!(
            verifier.verify(&signed(Some("new"), &old)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_key_verifies_only_its_own_algorithm() {
        let key = crate::auth::keygen::generate(crate::auth::keygen::KeyAlg::Ed25519, Some("ed"))
            .unwrap();
        let mut ring = Keyring::default();
        ring.sign_with_pem(key.private_pem.as_bytes(), Some("ed"))
            .unwrap();
        let keys = ActiveKeys::new(ring, ApiKeys::default(), None);
        let verifier =
            TokenVerifier::with_keys(keys.clone(), "switchboard", "switchboard", MAX_LIFETIME);
        let issuer =
            TokenIssuer::with_keys(keys, "switchboard", "switchboard", Duration::from_secs(60))
                .unwrap();
        assert!(
            verifier
                .verify(&issuer.issue("alice", None, None).token)
                .is_ok()
        );
        // HS256 with the public key's bytes as the secret: the classic confusion.
        let public = serde_json::to_vec(&key.public_jwk).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed".into());
        let confused =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(verifier.verify(&confused), Err(TokenError::WrongAlgorithm));
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","kid":"ed"}"#),
            b64(&serde_json::to_string(&claims()).unwrap())
        );
        assert_eq!(verifier.verify(&none), Err(TokenError::WrongAlgorithm));
    }

    fn b64(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}
