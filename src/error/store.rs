//! The failure of a state store or bus call.

/// A store operation that failed; the hub turns it into `error` `unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the state store is unavailable: {0}")]
pub struct StoreError(pub String);
