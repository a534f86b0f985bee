//! The node's client sockets: accepting them with a deadline for every phase before the
//! WebSocket, capping those still pending, and buffering each only while bytes move.

pub mod accept;
mod elastic;
mod frame_meter;
mod pending;

pub use accept::{Deadlines, serve};
pub use elastic::ElasticStream;
pub use frame_meter::{FrameViolation, MAX_FRAGMENTS};
pub use pending::{Pending, Shed, Ticket};
