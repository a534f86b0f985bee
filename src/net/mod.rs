//! The node's client sockets: accepting them with a deadline for every phase before the
//! WebSocket, capping those still pending, buffering each only while bytes move, and
//! serving TLS with a certificate reloaded when its files change; and the one bounded
//! HTTP exchange a node makes with other servers.

pub mod accept;
mod elastic;
pub mod fetch;
mod frame_meter;
mod pending;
mod tls;
pub mod websocket;

pub use accept::{Deadlines, listen, serve};
pub use elastic::{ElasticStream, Transport};
pub use frame_meter::{FrameTally, FrameViolation, MAX_FRAGMENTS};
pub use pending::{Pending, Shed, Ticket};
pub use tls::{Reloader, TlsAcceptor, TlsError, TlsFiles};
