//! The Auth service: signing and verifying keys (several, reloadable, local or fetched),
//! token minting and verification, revocation, HTTP routes.

mod active;
mod claims;
mod credentials;
mod discovery;
pub mod jwks;
pub mod key_files;
pub mod keygen;
mod keyring;
mod keys;
pub mod oidc;
pub mod reload;
mod revocation;
pub mod routes;
mod token;
mod turn;

pub use active::ActiveKeys;
pub use credentials::{bearer, query_token};
pub use keyring::{KeyError, Keyring};
pub use keys::{
    ApiKeys, Issuance, MIN_SECRET_BYTES, PUBLISHED_DEFAULT_SECRET, SigningSecret, Weakness,
};
pub use revocation::Revocation;
pub use routes::AuthState;

/// Re-exported: token times are wall-clock times.
pub use crate::clock::unix_now;
pub use claims::{Claims, Grant, MAX_TOKEN_BYTES, TokenError};
pub use token::{IssuedToken, TokenIssuer, TokenVerifier};
pub use turn::{IceServer, IceServers};
