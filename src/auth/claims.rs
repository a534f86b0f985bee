//! The claims Switchboard relies on, what a live session keeps of them, and why a token
//! is refused: shared by its own tokens ([`super::token`]) and an identity provider's
//! ([`super::oidc`]).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;

/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub(super) const LEEWAY_SECS: u64 = 30;

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
    /// The participant's initial metadata, set by the app's backend: a JSON object, as
    /// text.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "json_object")]
    pub metadata: Option<String>,
    /// Admitted by an identity provider's token (OIDC), not one of ours: never written.
    #[serde(skip)]
    pub from_identity_provider: bool,
}

impl Claims {
    /// The peer id of this session: `<sub>-<session_id>`.
    pub fn peer_id(&self) -> String {
        peer_id(&self.sub, &self.session_id)
    }
}

/// The `metadata` claim: a JSON object written verbatim, kept as its text.
mod json_object {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        let raw = value
            .as_deref()
            .map(|text| RawValue::from_string(text.to_string()))
            .transpose()
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let raw = Option::<Box<RawValue>>::deserialize(d)?;
        match raw {
            Some(raw) if raw.get().starts_with('{') => Ok(Some(raw.get().to_string())),
            Some(_) => Err(D::Error::custom("the metadata claim must be a JSON object")),
            None => Ok(None),
        }
    }
}

/// The peer id of a user's session: `<sub>-<session_id>`.
fn peer_id(sub: &str, session_id: &str) -> String {
    // Concatenated, not `format!`ted: every join builds it, twice.
    let mut id = String::with_capacity(sub.len() + 1 + session_id.len());
    id.push_str(sub);
    id.push('-');
    id.push_str(session_id);
    id
}

/// What a live session keeps of its token's claims: whose it is, which session, the room
/// it may join and its expiry. A connection holds it for its whole life, so issuer,
/// audience and token id, never read again, are not kept, and the user and session ids
/// are kept once, as the peer id `<sub>-<session_id>` the node's tables share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `<sub>-<session_id>`.
    peer: Arc<str>,
    /// Where the user id ends in `peer`.
    sub_len: u32,
    /// Admitted by an identity provider's token: the provider, not this node, decides how
    /// long the session lives, so no fresh token of ours extends it.
    pub from_identity_provider: bool,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// The only room it may join, when restricted.
    pub room: Option<Box<str>>,
    /// The participant's initial metadata (a JSON object, as text).
    pub metadata: Option<Box<str>>,
}

impl From<Claims> for Grant {
    fn from(c: Claims) -> Self {
        Self {
            from_identity_provider: c.from_identity_provider,
            exp: c.exp,
            room: c.room.map(String::into_boxed_str),
            metadata: c.metadata.map(String::into_boxed_str),
            ..Self::new(&c.sub, &c.session_id)
        }
    }
}

impl Grant {
    /// A grant for `sub`'s session `session_id`, unrestricted, with no metadata, expired.
    pub fn new(sub: &str, session_id: &str) -> Self {
        Self {
            peer: peer_id(sub, session_id).into(),
            // A token is at most MAX_TOKEN_BYTES long, and so is any of its claims.
            sub_len: u32::try_from(sub.len()).expect("a user id is shorter than a token"),
            from_identity_provider: false,
            exp: 0,
            room: None,
            metadata: None,
        }
    }

    /// The user id.
    pub fn sub(&self) -> &str {
        &self.peer[..self.sub_len as usize]
    }

    /// The signaling session.
    pub fn session_id(&self) -> &str {
        &self.peer[self.sub_len as usize + 1..]
    }

    /// The peer id of this session: `<sub>-<session_id>`.
    pub fn peer_id(&self) -> &str {
        &self.peer
    }

    /// The peer id, shared: the node's tables key the session by this one copy.
    pub fn peer(&self) -> &Arc<str> {
        &self.peer
    }

    /// Time left before the token expires (zero when already expired), capped at 24 h.
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.exp.saturating_sub(unix_now()).min(24 * 3600))
    }
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
    /// `iat` in the future beyond the leeway: the issuer's clock is wrong or the token forged.
    #[error("the token's iat (issued at) is in the future; check the issuer's clock")]
    IssuedInFuture,
    /// `exp - iat` above the policy's maximum lifetime.
    #[error(
        "the token lives longer than the {0} s maximum (exp - iat, TOKEN_MAX_LIFETIME); issue \
         shorter-lived tokens"
    )]
    LifetimeTooLong(u64),
    /// The header names critical extensions (`crit`), none of which this server implements.
    #[error("the token header lists critical extensions (crit) this server does not understand")]
    UnknownCritical,
    /// Signed with another algorithm than its key's (including `none`).
    #[error(
        "the token is not signed with the algorithm of its key (HS256 for a shared secret, \
         EdDSA, ES256 or RS256 for a public key)"
    )]
    WrongAlgorithm,
    /// The header names no key (`kid`), and this server's keys all have ids.
    #[error("the token names no signing key (kid); request a new token")]
    MissingKeyId,
    /// The header's `kid` names no key this server knows (retired, or never ours).
    #[error("the token's signing key (kid) is not known here; request a new token")]
    UnknownKey,
    /// Signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `iss` differs.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` differs.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// The identity provider's user id claim is absent or breaks the rules of user ids.
    #[error("the token's {claim} claim is not a usable user id: it {why}")]
    BadUserId {
        /// The claim (OIDC_USER_CLAIM), never its value.
        claim: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A claim is missing or malformed.
    #[error("the token's {0} claim is missing or invalid")]
    BadClaim(&'static str),
    /// Not a JWT at all.
    #[error("the token is malformed")]
    Malformed,
}

/// The refusal a decoding error of the JWT library stands for.
pub(super) fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            TokenError::BadClaim(claim_name(c))
        }
        ErrorKind::Json(e) => claims_error(e),
        _ => TokenError::Malformed,
    }
}

/// The refusal of claims that do not read as [`Claims`]: names the claim at fault.
pub(super) fn claims_error(e: &serde_json::Error) -> TokenError {
    TokenError::BadClaim(claim_name(&e.to_string()))
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

/// 128 random bits, hex-encoded, from rand's per-thread CSPRNG (ChaCha, seeded and
/// reseeded from the operating system's): a system call for each id was two of a join's
/// sixteen (a token needs a session id and a token id).
pub(super) fn random_hex() -> String {
    // Into a buffer, not `hex::encode`: that collects a `char` iterator, about a thousand
    // instructions for 32 characters, twice per join.
    let mut text = [0u8; 32];
    hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut text).expect("32 bytes hold 16 in hex");
    String::from_utf8(text.to_vec()).expect("hex is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_32_lowercase_hex_digits_and_differ() {
        let (a, b) = (random_hex(), random_hex());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn the_peer_id_is_the_user_a_dash_and_the_session() {
        let grant = Grant::new("alice", "0123abcd");
        assert_eq!(grant.peer_id(), "alice-0123abcd");
        assert_eq!(grant.sub(), "alice");
        assert_eq!(grant.session_id(), "0123abcd");
    }
}
