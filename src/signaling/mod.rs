//! The Signaling service: the `/ws/signal` upgrade, the wire protocol, one task per
//! connection, and the hub that routes between peers.

mod commands;
pub mod connection;
pub mod heartbeat;
pub mod hub;
mod link;
pub mod outbox;
pub mod protocol;
mod revocation;
mod state;
mod timers;
mod upgrade;

pub use hub::Hub;
pub use state::SignalingState;
pub use upgrade::{UpgradeShortcut, router};
