//! JWT minting and verification: HS256 only, with the claims Switchboard relies on.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::SigningSecret;
use crate::clock::unix_now;
use crate::identifier;

/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The claims of a Switchboard token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id the app vouched for.
    pub sub: String,
    /// 128 random bits naming one signaling session.
    pub session_id: String,
    /// Unique token id.
    pub jti: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Not before (unix seconds).
    pub nbf: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// The only room this token may join, when restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

impl Claims {
    /// The peer id of this session: `<sub>-<session_id>`.
    pub fn peer_id(&self) -> String {
        peer_id(&self.sub, &self.session_id)
    }
}

/// The peer id of a user's session: `<sub>-<session_id>`.
fn peer_id(sub: &str, session_id: &str) -> String {
    format!("{sub}-{session_id}")
}

/// What a live session keeps of its token's claims: whose it is, which session, the room
/// it may join and its expiry. A connection holds it for its whole life, so issuer,
/// audience and token id, never read again, are not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The user id.
    pub sub: String,
    /// The signaling session.
    pub session_id: String,
    /// The only room it may join, when restricted.
    pub room: Option<String>,
    /// Expiry (unix seconds).
    pub exp: u64,
}

impl From<Claims> for Grant {
    fn from(c: Claims) -> Self {
        Self {
            sub: c.sub,
            session_id: c.session_id,
            room: c.room,
            exp: c.exp,
        }
    }
}

impl Grant {
    /// The peer id of this session: `<sub>-<session_id>`.
    pub fn peer_id(&self) -> String {
        peer_id(&self.sub, &self.session_id)
    }

    /// Time left before the token expires (zero when already expired), capped at 24 h.
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.exp.saturating_sub(unix_now()).min(24 * 3600))
    }
}

/// A freshly signed token and its claims.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// What it says.
    pub claims: Claims,
}

/// Why a token was refused; the message never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in the request.
    #[error("a token is required: pass ?token= or the bearer.<token> subprotocol")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Past its `exp`.
    #[error("the token has expired; request a new one")]
    Expired,
    /// Before its `nbf`.
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// Signed with another algorithm than HS256 (including `none`).
    #[error("the token is not signed with HS256")]
    WrongAlgorithm,
    /// Signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `iss` differs.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` differs.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A claim is missing or malformed.
    #[error("the token's {0} claim is missing or invalid")]
    BadClaim(&'static str),
    /// Not a JWT at all.
    #[error("the token is malformed")]
    Malformed,
}

/// Signs tokens with the configured secret and policy.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// An issuer for `iss`/`aud` whose tokens live `ttl`.
    pub fn new(secret: &SigningSecret, issuer: &str, audience: &str, ttl: Duration) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
        }
    }

    /// Mints a token for `user` with a new session, optionally restricted to `room`.
    pub fn issue(&self, user: &str, room: Option<&str>, ttl: Option<Duration>) -> IssuedToken {
        self.sign(user, &random_hex(), room, ttl.unwrap_or(self.ttl))
    }

    /// A fresh token for the same user, session and room as `grant`, with a new lifetime.
    pub fn reissue(&self, grant: &Grant) -> IssuedToken {
        self.sign(
            &grant.sub,
            &grant.session_id,
            grant.room.as_deref(),
            self.ttl,
        )
    }

    fn sign(&self, user: &str, session_id: &str, room: Option<&str>, ttl: Duration) -> IssuedToken {
        let now = unix_now();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            session_id: session_id.to_string(),
            jti: random_hex(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
            room: room.map(str::to_string),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing of a serialisable struct cannot fail");
        IssuedToken { token, claims }
    }
}

/// Verifies tokens; one instance is shared by the Auth and Signaling services.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier pinned to HS256 with exact `iss`/`aud`.
    pub fn new(secret: &SigningSecret, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Checks signature, algorithm, times and claims; returns the claims when all hold.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        check_header(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| map_error(e.kind()))?;
        let claims = data.claims;
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
}

/// Reads the header's `alg` before anything else, so `none` or an algorithm the JWT library
/// does not even know is reported as what it is rather than as a parse failure.
fn check_header(token: &str) -> Result<(), TokenError> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct JoseHeader {
        alg: Option<String>,
    }
    let first = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| TokenError::Malformed)?;
    let header: JoseHeader = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match header.alg.as_deref() {
        Some("HS256") => Ok(()),
        _ => Err(TokenError::WrongAlgorithm),
    }
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => TokenError::BadClaim(claim_name(c)),
        ErrorKind::Json(e) => TokenError::BadClaim(claim_name(&e.to_string())),
        _ => TokenError::Malformed,
    }
}

/// The claim a decoding error is about, as a static name (never echoing token content).
fn claim_name(text: &str) -> &'static str {
    const CLAIMS: &[&str] = &[
        "session_id",
        "sub",
        "exp",
        "nbf",
        "iat",
        "jti",
        "iss",
        "aud",
        "room",
    ];
    CLAIMS
        .iter()
        .find(|c| text == **c || text.contains(&format!("`{c}`")))
        .copied()
        .unwrap_or("required")
}

/// 128 bits from the operating system's CSPRNG, hex-encoded.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system random source is unavailable");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
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
            TokenVerifier::new(&secret, "switchboard", "switchboard"),
        )
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
}
