//! The Auth service: signing keys, token minting and verification, HTTP routes.

mod keys;
pub mod routes;
mod token;
mod turn;

pub use keys::{
    ApiKeys, Issuance, MIN_SECRET_BYTES, PUBLISHED_DEFAULT_SECRET, SigningSecret, Weakness,
};
pub use token::{
    Claims, Grant, IssuedToken, MAX_TOKEN_BYTES, TokenError, TokenIssuer, TokenVerifier, unix_now,
};
pub use turn::{IceServer, IceServers};
