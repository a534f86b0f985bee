//! Room events delivered to the app's backend: webhooks signed the Standard Webhooks way
//! and a log the server API's `GET /api/v1/events` reads. The store records the events
//! with the membership changes that cause them (`store::events`); the dispatcher on every
//! node delivers them, one node per room at a time, in order, until each endpoint has
//! acknowledged each event or its retry time ran out. docs/SERVER_API.md states the
//! guarantees.

mod dispatch;
mod webhook;

pub use dispatch::{DispatchConfig, Dispatcher};
pub use webhook::WebhookSecret;
