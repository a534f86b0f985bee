//! Protections that keep a node serving under load, abuse and failures: a circuit breaker
//! for Redis, per-connection message rate limits, per-IP limits at the upgrade and token
//! endpoints, and load shedding driven by the process's real CPU and memory use.

mod breaker;
mod client_ip;
mod load;
mod rate_limit;
mod slots;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use client_ip::{TrustedNet, client_ip, request_ip, via_trusted_proxy};
pub use load::{LoadGuard, LoadSample, Overload};
pub use rate_limit::{IpLimiter, IpPermit, MessageLimit, MessageLimiter, TokenBucket, Verdict};
pub use slots::{ConnectionSlot, ConnectionSlots};
