//! Tokens from the app's own identity provider (`OIDC_ISSUER`): Keycloak, Auth0, Cognito
//! or any OpenID Connect issuer. Its keys are found through discovery and cached like the
//! Auth service's ([`RemoteJwks`]); its tokens are checked here and mapped onto the
//! claims of a Switchboard session.
//!
//! What is checked: the signature with the key the `kid` names, in that key's algorithm
//! only (RS256, ES256 or EdDSA); `iss` exactly; `aud` holding our audience; `exp`, `nbf`
//! and `iat` with the leeway of our own tokens, and a lifetime within the policy's cap;
//! the user id claim by the rules of every user id. A new session id is drawn per
//! connection, as `POST /auth/token` does, and no room restriction applies.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::{Claims, LEEWAY_SECS, TokenError, map_error, random_hex};
use super::jwks::RemoteJwks;
use super::keyring::Verifier;
use crate::clock::unix_now;
use crate::identifier;

/// The claim that names the user unless `OIDC_USER_CLAIM` says otherwise.
pub const DEFAULT_USER_CLAIM: &str = "sub";

/// An identity provider whose tokens admit connections.
pub struct IdentityProvider {
    /// `iss` of its tokens, exactly as the provider writes it.
    issuer: String,
    /// The `aud` value its tokens must hold for this app.
    audience: String,
    /// The claim holding the user id.
    user_claim: String,
    /// Its signing keys, from the `jwks_uri` of its discovery document.
    keys: Arc<RemoteJwks>,
    /// Longest `exp - iat` accepted, in seconds.
    max_lifetime: u64,
}

impl IdentityProvider {
    /// A provider `issuer` whose tokens for `audience` name the user in `user_claim`,
    /// verified with `keys` and living at most `max_lifetime`.
    pub fn new(
        issuer: &str,
        audience: &str,
        user_claim: &str,
        keys: Arc<RemoteJwks>,
        max_lifetime: Duration,
    ) -> Self {
        Self {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            user_claim: user_claim.to_string(),
            keys,
            max_lifetime: max_lifetime.as_secs(),
        }
    }

    /// The provider's `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's cached keys.
    pub fn keys(&self) -> &Arc<RemoteJwks> {
        &self.keys
    }

    /// Verifies `token`, whose header declares `alg` and `kid`, with the cached keys.
    pub fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Claims, TokenError> {
        // The provider's key sets always name their keys; a token without kid is not its.
        let kid = kid.ok_or(TokenError::MissingKeyId)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        self.verify_with(token, alg, &key)
    }

    /// Verifies `token` with `key`, pinned to the key's own algorithm.
    fn verify_with(
        &self,
        token: &str,
        alg: Algorithm,
        key: &Verifier,
    ) -> Result<Claims, TokenError> {
        // The key's algorithm, never the header's, decides how the token is checked.
        if alg != key.alg || !matches!(alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA)
        {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| map_error(e.kind()))?;
        self.claims(&data.claims, unix_now())
    }

    /// The session claims of a verified token's payload at `now`: times the library leaves
    /// to us, the user id, a fresh session.
    fn claims(&self, raw: &Map<String, Value>, now: u64) -> Result<Claims, TokenError> {
        let time = |name: &'static str| match raw.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or(TokenError::BadClaim(name)),
        };
        let exp = time("exp")?.ok_or(TokenError::BadClaim("exp"))?;
        let iat = time("iat")?;
        if iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(TokenError::IssuedInFuture);
        }
        // Without `iat` the lifetime left is what counts: an `exp` years away is refused.
        if exp.saturating_sub(iat.unwrap_or(now)) > self.max_lifetime {
            return Err(TokenError::LifetimeTooLong(self.max_lifetime));
        }
        let user = raw
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::BadUserId {
                claim: self.user_claim.clone(),
                why: "is missing or not a string",
            })?;
        identifier::check(user).map_err(|why| TokenError::BadUserId {
            claim: self.user_claim.clone(),
            why,
        })?;
        let iat = iat.unwrap_or(now);
        Ok(Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            session_id: random_hex(),
            jti: raw
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            iat,
            nbf: time("nbf")?.unwrap_or(iat),
            exp,
            room: None,
            metadata: None,
            from_identity_provider: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::auth::keygen::{KeyAlg, generate};
    use crate::auth::keyring::verifier_from_jwk;
    use crate::telemetry::Metrics;

    const ISSUER: &str = "https://sso.example.com/realms/app";

    fn provider(user_claim: &str) -> IdentityProvider {
        let keys = RemoteJwks::discovered(ISSUER, Metrics::new());
        IdentityProvider::new(
            ISSUER,
            "switchboard-app",
            user_claim,
            keys,
            Duration::from_secs(24 * 3600),
        )
    }

    fn payload(extra: Value) -> Map<String, Value> {
        let now = unix_now();
        let mut base = json!({
            "iss": ISSUER, "aud": ["account", "switchboard-app"], "sub": "f81d4fae",
            "iat": now, "exp": now + 300, "email": "alice@example.com",
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base.as_object().unwrap().clone()
    }

    #[test]
    fn the_user_claim_names_the_user_and_each_token_gets_a_new_session() {
        let now = unix_now();
        let by_sub = provider("sub").claims(&payload(json!({})), now).unwrap();
        assert_eq!(by_sub.sub, "f81d4fae");
        assert!(by_sub.room.is_none() && by_sub.from_identity_provider);
        assert_eq!(by_sub.session_id.len(), 32);
        let again = provider("sub").claims(&payload(json!({})), now).unwrap();
        assert_ne!(by_sub.session_id, again.session_id);
        let by_email = provider("email").claims(&payload(json!({})), now).unwrap();
        assert_eq!(by_email.sub, "alice@example.com");
    }

    #[test]
    fn user_ids_breaking_the_identifier_rules_are_refused_by_claim_name() {
        let now = unix_now();
        let p = provider("preferred_username");
        let missing = p.claims(&payload(json!({})), now).unwrap_err();
        assert!(
            missing.to_string().contains("preferred_username"),
            "{missing}"
        );
        let number = provider("sub").claims(&payload(json!({"sub": 42})), now);
        assert!(matches!(number, Err(TokenError::BadUserId { .. })));
        let bidi = provider("sub")
            .claims(&payload(json!({"sub": "admin\u{202E}txt"})), now)
            .unwrap_err();
        assert!(bidi.to_string().contains("bidirectional"), "{bidi}");
        assert!(
            !bidi.to_string().contains("admin"),
            "the value is echoed: {bidi}"
        );
        let long = provider("sub").claims(&payload(json!({"sub": "a".repeat(129)})), now);
        assert!(matches!(long, Err(TokenError::BadUserId { .. })));
    }

    #[test]
    fn times_are_checked_with_the_leeway_of_our_own_tokens() {
        let now = unix_now();
        let p = provider("sub");
        let skewed = payload(json!({"iat": now + LEEWAY_SECS / 2}));
        assert!(p.claims(&skewed, now).is_ok());
        let future = payload(json!({"iat": now + 300}));
        assert_eq!(p.claims(&future, now), Err(TokenError::IssuedInFuture));
        let forever = payload(json!({"exp": 32_503_680_000u64}));
        assert_eq!(
            p.claims(&forever, now),
            Err(TokenError::LifetimeTooLong(86_400))
        );
        let mut no_iat = payload(json!({"exp": now + 3 * 86_400}));
        no_iat.remove("iat");
        assert_eq!(
            p.claims(&no_iat, now),
            Err(TokenError::LifetimeTooLong(86_400))
        );
        let float = payload(json!({"exp": (now + 60) as f64 + 0.5}));
        assert_eq!(p.claims(&float, now).unwrap().exp, now + 60);
    }

    #[test]
    fn signatures_are_checked_with_the_keys_own_algorithm_and_claims() {
        let key = generate(KeyAlg::Es256, Some("ec1")).unwrap();
        let verifier = verifier_from_jwk(&key.public_jwk).unwrap();
        let signing = EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap();
        let p = provider("sub");
        let sign = |alg: Algorithm, claims: &Map<String, Value>| {
            let mut header = Header::new(alg);
            header.kid = Some("ec1".into());
            jsonwebtoken::encode(&header, claims, &signing).unwrap()
        };
        let good = sign(Algorithm::ES256, &payload(json!({})));
        assert!(p.verify_with(&good, Algorithm::ES256, &verifier).is_ok());
        let cases = [
            (
                json!({"iss": "https://evil.example.com"}),
                TokenError::WrongIssuer,
            ),
            (json!({"aud": "another-app"}), TokenError::WrongAudience),
            (json!({"exp": unix_now() - 600}), TokenError::Expired),
            (json!({"nbf": unix_now() + 600}), TokenError::NotYetValid),
        ];
        for (extra, refusal) in cases {
            let token = sign(Algorithm::ES256, &payload(extra.clone()));
            assert_eq!(
                p.verify_with(&token, Algorithm::ES256, &verifier),
                Err(refusal),
                "{extra}"
            );
        }
        // The header claiming another algorithm than the key's is refused before decoding.
        assert_eq!(
            p.verify_with(&good, Algorithm::HS256, &verifier),
            Err(TokenError::WrongAlgorithm)
        );
        // No kid: not a token of this provider.
        assert_eq!(
            p.verify(&good, Algorithm::ES256, None),
            Err(TokenError::MissingKeyId)
        );
        assert_eq!(
            p.verify(&good, Algorithm::ES256, Some("ec1")),
            Err(TokenError::UnknownKey)
        );
    }
}
