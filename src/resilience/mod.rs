//! Protections that keep a node serving under load and abuse: per-connection message rate
//! limits, per-IP limits at the upgrade and token endpoints, and load shedding driven by
//! the process's real CPU and memory use.

mod client_ip;
mod load;
mod rate_limit;

pub use client_ip::{TrustedNet, client_ip};
pub use load::{LoadGuard, LoadSample};
pub use rate_limit::{IpLimiter, IpPermit, MessageLimiter, TokenBucket, Verdict};
