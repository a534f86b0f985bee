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

/// Microseconds since the Unix epoch: the unit of session epochs, which the store draws
/// from its own clock; a node draws one itself only while the store is away.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch: the unit of the dates the server API reports.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 64 random bits from the operating system, for names that must not repeat between
/// processes (inbox generations, message origins).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system random source is unavailable");
    u64::from_le_bytes(bytes)
}
