//! The node's client sockets: accepting them with a deadline for every phase before the
//! WebSocket, capping those still pending, buffering each only while bytes move, and
//! serving TLS with a certificate reloaded when its files change; the WebSocket they
//! become; and the one bounded HTTP exchange a node makes with other servers.

pub mod accept;
pub mod answer;
mod elastic;
pub mod fetch;
pub mod head;
mod pending;
mod tls;
pub mod websocket;

pub use accept::{Deadlines, RouteShortcut, Shortcut, Shortcuts, listen, serve};
pub use elastic::{ElasticStream, Transport};
pub use pending::{Pending, Shed, Ticket};
pub use tls::{Reloader, TlsAcceptor, TlsError, TlsFiles};
