//! Wall-clock time, for what other parties read as a date: token claims, TURN credential
//! expiry, node heartbeats. Timers inside the process use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, from the wall clock (JWT times are wall-clock times).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
