//! The Auth service: signing keys, token minting and verification, revocation, HTTP routes.

mod credentials;
mod keys;
mod revocation;
pub mod routes;
mod token;
mod turn;

pub use credentials::{bearer, query_token};
pub use keys::{
    ApiKeys, Issuance, MIN_SECRET_BYTES, PUBLISHED_DEFAULT_SECRET, SigningSecret, Weakness,
};
pub use revocation::Revocation;
pub use routes::AuthState;

/// Re-exported: token times are wall-clock times.
pub use crate::clock::unix_now;
pub use token::{
    Claims, Grant, IssuedToken, MAX_TOKEN_BYTES, TokenError, TokenIssuer, TokenVerifier,
};
pub use turn::{IceServer, IceServers};
