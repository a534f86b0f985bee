//! Switchboard: a WebRTC signaling server.
//!
//! Browsers get a JWT from the Auth service (`auth`), open `/ws/signal` on the Signaling
//! service (`signaling`), join rooms, and exchange SDP offers/answers and ICE candidates
//! that the server relays between members of the same room. Media never passes through.
//!
//! Layers; a module uses only the ones below it (`tests/layering.rs` fails on a cycle):
//!
//! ```text
//! main                       the binary: flags, logging, runtime
//! server                     the node: composes each service's state, serves a role
//! health  web  auth::routes  signaling::upgrade      HTTP edges, each on its own state
//! auth    signaling::{hub, commands, link, connection, outbox, protocol}
//! store   bus   redis        shared state, cross-node delivery, the Redis client
//! error  clock  identifier  room  config  resilience  telemetry::metrics  net  fd_limit
//! ```
//!
//! Not there yet: `config` still names types of `auth`, `redis` and `resilience`, and
//! `auth::keys` and the log set-up read `config`; `tests/layering.rs` allows those edges
//! by name until each settings group resolves into its owner's config.
//!
//! Modules:
//! - [`config`]: settings, flags and environment, production checks.
//! - [`error`]: the HTTP error body and the state store's failure.
//! - [`clock`]: wall-clock seconds for token claims and heartbeats.
//! - [`identifier`]: user and room id rules, and the shared copy of an id.
//! - [`room`]: room vocabulary the protocol and the bus share (why a peer left).
//! - [`resilience`]: circuit breaker, rate limits, connection caps, load shedding.
//! - [`net`]: client sockets that hold no read or write buffer while idle.
//! - [`fd_limit`]: the open-file limit that bounds a node's connections.
//! - [`telemetry`]: logs, the redacting access log, Prometheus metrics.
//! - [`redis`]: the Redis client shared by the store and the bus (topology, timeouts, keys).
//! - [`store`]: the state trait (sessions, rooms, TTLs), embedded and on Redis.
//! - [`bus`]: each node's ordered inbox of messages from other nodes.
//! - [`auth`]: signing secret, token issue/verify, revocation, HTTP routes.
//! - [`signaling`]: wire protocol, one task per connection, the hub that routes.
//! - [`health`]: liveness, readiness and dependency health routes.
//! - [`web`]: the embedded browser client.
//! - [`server`]: the node's state, a role's routes, and the HTTP server.
//! - `bench`: the load generator.
#![forbid(unsafe_code)]

pub mod auth;
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
