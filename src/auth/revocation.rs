//! How the Auth service reaches whoever holds live connections, without depending on it.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::StoreError;

/// Revokes sessions: refuses their new upgrades and closes their live connections.
///
/// The Auth service holds one of these; the signaling hub implements it, so the
/// dependency points from the hub to auth and not back.
#[async_trait]
pub trait Revocation: Send + Sync + 'static {
    /// Refuses `session_id`'s upgrades for at least `ttl` and closes its connection;
    /// true when a live connection was found.
    async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<bool, StoreError>;
}
