//! The Auth service: signing keys, token minting and verification, HTTP routes.

mod credentials;
mod keys;
mod revocation;
pub mod routes;
mod token;
mod turn;

pub use credentials::{bearer, query_token};

pub use keys::{ApiKeys, SigningSecret};
pub use revocation::Revocation;
pub use routes::AuthState;
pub use token::{
    Claims, Grant, IssuedToken, MAX_TOKEN_BYTES, TokenError, TokenIssuer, TokenVerifier, unix_now,
};
pub use turn::{IceServer, IceServers};
