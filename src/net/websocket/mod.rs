//! The server's WebSocket (RFC 6455): the opening handshake, and messages over the
//! upgraded connection.
//!
//! Hand-rolled rather than tungstenite under axum: a node holds tens of thousands of idle
//! WebSockets, and tungstenite keeps per connection a read buffer, a copy of the largest
//! frame it sent, its context and waker proxies (about 750 B in all, a fifth of what an
//! idle connection cost), and reads each frame through that buffer. Here a connection
//! keeps a 14-byte header buffer and nothing else between messages: a frame's payload is
//! read straight into a buffer of its final size, and a frame is written from the
//! message's own bytes. No extension (compression) is offered, so none is negotiated.

pub mod frame;
mod handshake;
mod socket;
mod stream;

use bytes::Bytes;

pub use handshake::{Handshake, NotWebSocket, Upgrade};
pub use socket::WebSocket;
pub use stream::ClientStream;
/// Text known to be UTF-8, shared without copying.
pub use tungstenite::Utf8Bytes;

/// Most frames one message may arrive in; the next one closes the connection (1009).
pub const MAX_FRAGMENTS: u16 = 64;

/// The close code for a frame that broke the protocol.
const PROTOCOL_ERROR: u16 = 1002;

/// One WebSocket message, or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Utf8Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The close frame: its code and reason, or none.
    Close(Option<CloseFrame>),
}

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: Utf8Bytes,
}

/// Why reading or writing a WebSocket failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The client sent what RFC 6455 forbids (answered with 1002).
    #[error("the client broke the WebSocket protocol: {0}")]
    Protocol(&'static str),
    /// A text message (or a close reason) is not UTF-8 (answered with 1007).
    #[error("a text message is not valid UTF-8")]
    Utf8,
    /// A message is over the node's limit (answered with 1009).
    #[error("a message is larger than this node accepts")]
    TooBig,
    /// A message came in more than [`MAX_FRAGMENTS`] frames (answered with 1009).
    #[error("a message arrived in more than {MAX_FRAGMENTS} fragments")]
    TooManyFragments,
    /// The client sent frames before the server's `101` (RFC 6455 §4.1 forbids it;
    /// answered with 1002).
    #[error("the client sent data before the handshake response")]
    EarlyData,
    /// A message was sent after a close frame.
    #[error("the WebSocket is closing; no further message can be sent")]
    Closed,
    /// The connection itself failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
