//! The hub revokes sessions for the Auth service, which knows it only as a [`Revocation`].

use std::time::Duration;

use async_trait::async_trait;

use super::Hub;
use crate::auth::Revocation;
use crate::error::StoreError;

#[async_trait]
impl Revocation for Hub {
    async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<bool, StoreError> {
        Hub::revoke(self, session_id, ttl).await
    }
}
