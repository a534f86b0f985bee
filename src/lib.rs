//! Switchboard: a WebRTC signaling server.
//!
//! Browsers get a JWT from the Auth service (`auth`), open `/ws/signal` on the Signaling
//! service (`signaling`), join rooms, and exchange SDP offers/answers and ICE candidates
//! that the server relays between members of the same room. Media never passes through.
//!
//! Layers; a module uses only the ones below it (`tests/layering.rs` fails on a cycle or
//! on anything reaching up into `server`):
//!
//! ```text
//! main                       the binary: flags, logging, runtime
//! server  config             the node: each service's state from the resolved settings
//! health  web  auth::routes  signaling::upgrade  api HTTP edges, each on its own state
//! cors                                               which other origins' pages they admit
//! auth    signaling::{hub, commands, link, connection, outbox, protocol}    events
//! store   bus   redis        shared state, cross-node delivery, the Redis client
//! error  clock  identifier  room  resilience  telemetry  net  fd_limit
//! ```
//!
//! `config` sits beside `server`, its only user: it resolves each settings group into the
//! config of the module that owns it (auth, Redis, limits, ICE, logging, timing).
//! docs/ARCHITECTURE.md follows a join and a relayed message through these modules.
//!
//! Modules:
//! - [`error`]: the HTTP error body and the state store's failure.
//! - [`clock`]: wall-clock seconds for token claims and heartbeats.
//! - [`identifier`]: user and room id rules, and the shared copy of an id.
//! - [`room`]: room vocabulary the protocol and the bus share (why a peer left).
//! - [`resilience`]: circuit breaker, rate limits, connection caps, load shedding.
//! - [`net`]: the accept loop (a deadline per phase, pending connections capped), client
//!   sockets that hold no read or write buffer while idle, and the WebSocket over them.
//! - [`fd_limit`]: the open-file limit that bounds a node's connections.
//! - [`telemetry`]: logs, the redacting access log, Prometheus metrics.
//! - [`redis`]: the Redis client shared by the store and the bus (topology, timeouts, keys).
//! - [`store`]: the state trait (sessions, rooms, TTLs), embedded and on Redis.
//! - [`bus`]: each node's ordered inbox of messages from other nodes.
//! - [`auth`]: signing secret, token issue/verify, revocation, HTTP routes.
//! - [`events`]: room events delivered as signed webhooks and kept for the pull API.
//! - [`signaling`]: wire protocol, one task per connection, the hub (a folder of
//!   concerns around one routing table) that routes.
//! - [`api`]: the server API for an app's backend (rooms, members, messages).
//! - [`health`]: liveness, readiness and dependency health routes.
//! - [`web`]: the embedded browser client.
//! - [`cors`]: which other origins' pages may fetch tokens and import the client module.
//! - [`config`]: settings by owner, flags and environment, production checks.
//! - [`server`]: the node's state, a role's routes, and the HTTP server.
//!
//! The load generator is a binary of its own, `switchboard-bench` (`bench/`).
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
pub mod cors;
pub mod error;
pub mod events;
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
