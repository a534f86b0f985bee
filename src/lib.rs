//! Switchboard: a WebRTC signaling server.
//!
//! Browsers get a JWT from the Auth service (`auth`), open `/ws/signal` on the Signaling
//! service (`signaling`), join rooms, and exchange SDP offers/answers and ICE candidates
//! that the server relays between members of the same room. Media never passes through.
//!
//! Layout:
//! - [`config`]: settings, flags and environment, production checks.
//! - [`auth`]: signing secret, token issue/verify, HTTP routes.
//! - [`signaling`]: wire protocol, one task per connection, the hub that routes.
//! - [`store`]: the state trait (sessions, rooms, TTLs) and the embedded in-memory store.
//! - [`net`]: client sockets that hold no read or write buffer while idle.
//! - [`fd_limit`]: the open-file limit that bounds a node's connections.
//! - [`server`]: assembles a role's routes and runs the HTTP server.
//! - [`telemetry`]: logs and the redacting access log.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod bus;
pub mod clock;
pub mod config;
pub mod error;
pub mod fd_limit;
pub mod health;
pub mod identifier;
pub mod net;
pub mod redis;
pub mod resilience;
pub mod room;
pub mod server;
pub mod signaling;
pub mod store;
pub mod telemetry;
pub mod web;
