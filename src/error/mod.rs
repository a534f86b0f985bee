//! Errors every layer shares: the HTTP error body and the state store's failure.
//!
//! A leaf: it imports nothing from the crate, so the store, the bus, Redis and the HTTP
//! services can all name these without depending on each other.

mod http;
mod store;

pub use http::{ApiError, method_not_allowed, not_found, sentence};
pub use store::StoreError;
