//! What a connection does with each client command: at once when it needs nothing but
//! this node (a local relay, a ping, a refusal), else as a [`Deferred`] step that waits on
//! the store or another node. Also the connection's shared parts ([`Connection`],
//! [`Session`]), which the link and the connection task both drive.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;

use super::hub::{MembershipError, REMOTE_RELAY_FAILED, RelayError, Route};
use super::outbox::Outbox;
use super::protocol::{self, Command, ErrorCode, Metadata, Outgoing, close, metadata_from};
use super::state::SignalingState;
use super::timers::refresh_wait;
use crate::auth::{Grant, IceServer};
use crate::identifier;
use crate::net::websocket::{Message, Utf8Bytes, WsError};
use crate::resilience::{ConnectionSlot, IpPermit};

/// Everything a connection task needs.
pub struct Connection {
    /// The node's parts every connection shares: its hub, token issuer, STUN/TURN
    /// servers and connection limits. One handle rather than one per part: this box is
    /// kept by every idle connection.
    pub node: Arc<SignalingState>,
    /// Client address, for logs.
    pub remote: SocketAddr,
    /// The node's connection slot and the client IP's, released when the connection ends.
    pub held: (ConnectionSlot, IpPermit),
    /// When the upgrade was granted, for the closing log line's duration.
    pub opened: tokio::time::Instant,
}

/// Mutable state of a live connection.
pub(super) struct Session {
    /// Its token's claims; the peer id is the grant's.
    pub(super) grant: Grant,
    pub(super) epoch: u64,
    pub(super) outbox: Outbox,
    pub(super) room: Option<String>,
    /// The close code the client sent, if it closed first.
    pub(super) client_close: Option<u16>,
    /// The connection dropped without a close frame (network loss): resumable.
    pub(super) dropped: bool,
}

impl Session {
    /// The peer id: `<sub>-<session_id>` of its grant.
    pub(super) fn peer_id(&self) -> &str {
        self.grant.peer_id()
    }
}

/// What a command still waits for after [`Connection::dispatch`]; it owns what it needs,
/// as the frame it came from is gone by then.
pub(super) enum Deferred {
    Join {
        room: String,
        reference: Option<Box<RawValue>>,
        received: Instant,
    },
    Leave {
        room: Option<String>,
        reference: Option<Box<RawValue>>,
    },
    /// A relay to peers on other nodes: each peer and its node.
    SendRemote {
        targets: Vec<(Arc<str>, String)>,
        frame: Utf8Bytes,
        reference: Option<Box<RawValue>>,
    },
    /// New participant metadata.
    Update {
        metadata: Metadata,
        reference: Option<Box<RawValue>>,
    },
    /// Extends the session's store TTL after a token refresh.
    KeepAlive,
}

impl Connection {
    /// Tells the sender its message was not relayed because of the rate limit.
    pub(super) fn refuse_over_limit(
        &self,
        session: &Session,
        frame: Option<&Result<Message, WsError>>,
    ) {
        self.node.hub.metrics().rate_limited.inc();
        let text = match frame {
            Some(Ok(Message::Text(t))) => t.as_str(),
            _ => "",
        };
        let (reference, parsed) = protocol::parse(text);
        let kind = parsed.map(|c| c.kind()).unwrap_or("message");
        let message = format!(
            "Rate limit exceeded ({} messages or frames per second, bursts of {}): this {kind} was not delivered; slow down.",
            self.node.connection_limits.message_rate, self.node.connection_limits.message_burst
        );
        send_error(session, ErrorCode::RateLimited, &message, reference);
    }

    /// STUN/TURN servers for this session, TURN credentials expiring with its token.
    pub(super) fn ice_servers_for(&self, grant: &Grant) -> Vec<IceServer> {
        self.node
            .ice_servers
            .for_session(grant.session_id(), grant.exp)
    }

    /// Extends the session's store TTL to the (possibly refreshed) token's life.
    async fn keep_alive(&self, session: &Session) {
        let ttl = session_ttl(&session.grant);
        match self
            .node
            .hub
            .refresh(
                session.grant.session_id(),
                session.peer_id(),
                session.epoch,
                ttl,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => session
                .outbox
                .close(Some(close::REPLACED), "replaced by a newer connection"),
            Err(e) => {
                tracing::warn!(error = %e, peer = %session.peer_id(), "could not refresh the session");
            }
        }
    }

    /// When to push a fresh token, if refresh is on.
    pub(super) fn refresh_at(&self, grant: &Grant) -> Option<Instant> {
        self.node.issuer.as_ref()?;
        if grant.from_identity_provider {
            return None;
        }
        refresh_wait(
            grant.remaining(),
            self.node.connection_limits.refresh_before,
        )
        .map(|w| Instant::now() + w)
    }

    /// Handles one text frame: at once when it needs nothing but this node (a relay to a
    /// local peer, a ping, a refusal), else returns what is left to wait for.
    pub(super) fn dispatch(
        &self,
        session: &mut Session,
        text: &str,
        received: Instant,
    ) -> Option<Deferred> {
        let metrics = self.node.hub.metrics();
        let (reference, parsed) = protocol::parse(text);
        let command = match parsed {
            Ok(c) => c,
            Err(r) => {
                metrics.inbound("invalid");
                send_error(session, r.code, &r.message, r.reference);
                return None;
            }
        };
        metrics.inbound(command.kind());
        let owned_reference = || reference.map(ToOwned::to_owned);
        match command {
            Command::Ping => {
                session.outbox.deliver(Outgoing::Pong.to_frame());
                None
            }
            Command::Join { room } => Some(Deferred::Join {
                room: room.into_owned(),
                reference: owned_reference(),
                received,
            }),
            Command::Leave { room } => Some(Deferred::Leave {
                room: room.map(Cow::into_owned),
                reference: owned_reference(),
            }),
            Command::Relay { kind, to, payload } => {
                let frame = || Outgoing::relay(kind, session.peer_id(), payload).to_frame();
                self.send_to(session, &to, frame, received, reference)
            }
            Command::Message { to: Some(to), data } => {
                let frame = || {
                    Outgoing::Message {
                        from: session.peer_id(),
                        data,
                    }
                    .to_frame()
                };
                self.send_to(session, &to, frame, received, reference)
            }
            Command::Message { to: None, data } => {
                let routes = match self.node.hub.routes_from(session.peer_id()) {
                    Ok(routes) => routes,
                    Err(e) => {
                        relay_error(session, e, reference);
                        return None;
                    }
                };
                let frame = Outgoing::Message {
                    from: session.peer_id(),
                    data,
                }
                .to_frame();
                let mut targets = Vec::new();
                for (peer, route) in routes {
                    match route {
                        Route::Local(outbox) => {
                            outbox.deliver_relayed(frame.clone(), Some(received));
                        }
                        Route::Remote(node) => targets.push((node, peer.to_string())),
                    }
                }
                (!targets.is_empty()).then(|| Deferred::SendRemote {
                    targets,
                    frame,
                    reference: owned_reference(),
                })
            }
            Command::Update { metadata } => {
                let size = metadata.get().len();
                if size > self.node.connection_limits.max_metadata_bytes {
                    let message = format!(
                        "The metadata is {size} bytes; the limit is {} (MAX_METADATA_BYTES).",
                        self.node.connection_limits.max_metadata_bytes
                    );
                    send_error(session, ErrorCode::InvalidMessage, &message, reference);
                    return None;
                }
                // Kept compact: the store and every recipient hold this text.
                let compact = serde_json::from_str::<serde_json::Value>(metadata.get())
                    .ok()
                    .and_then(|v| metadata_from(&v.to_string()));
                let Some(metadata) = compact else {
                    send_error(
                        session,
                        ErrorCode::InvalidMessage,
                        "The metadata is not a JSON object.",
                        reference,
                    );
                    return None;
                };
                Some(Deferred::Update {
                    metadata,
                    reference: owned_reference(),
                })
            }
        }
    }

    /// Sends the frame `frame` makes to member `to` of the sender's room: at once to a
    /// peer on this node, else as a step that hands it to the peer's node.
    fn send_to(
        &self,
        session: &Session,
        to: &str,
        frame: impl FnOnce() -> Utf8Bytes,
        received: Instant,
        reference: Option<&RawValue>,
    ) -> Option<Deferred> {
        let (node, frame) = match self.node.hub.route(session.peer_id(), to) {
            Ok(Route::Local(outbox)) => match outbox.relay(frame(), Some(received)) {
                Ok(_) => return None,
                // Its connection ended a moment ago, or its session just moved to another
                // node: route once more.
                Err(frame) => match self.node.hub.route(session.peer_id(), to) {
                    Ok(Route::Remote(node)) => (node, frame),
                    Ok(Route::Local(outbox)) => {
                        outbox.deliver_relayed(frame, Some(received));
                        return None;
                    }
                    Err(e) => {
                        relay_error(session, e, reference);
                        return None;
                    }
                },
            },
            Ok(Route::Remote(node)) => (node, frame()),
            Err(e) => {
                relay_error(session, e, reference);
                return None;
            }
        };
        Some(Deferred::SendRemote {
            targets: vec![(node, to.to_string())],
            frame,
            reference: reference.map(ToOwned::to_owned),
        })
    }

    /// Finishes what [`Connection::dispatch`] left to wait for.
    pub(super) async fn settle(&self, session: &mut Session, command: Deferred) {
        match command {
            Deferred::Join {
                room,
                reference,
                received,
            } => {
                Box::pin(self.join(session, &room, reference.as_deref())).await;
                self.node
                    .hub
                    .metrics()
                    .join_latency
                    .observe(received.elapsed().as_secs_f64());
            }
            Deferred::Leave { room, reference } => {
                match Box::pin(self.node.hub.leave(
                    session.peer_id(),
                    session.epoch,
                    room.as_deref(),
                ))
                .await
                {
                    Ok(()) => session.room = None,
                    Err(e) => membership_error(session, e, reference.as_deref()),
                }
            }
            Deferred::SendRemote {
                targets,
                frame,
                reference,
            } => {
                for (node, to) in targets {
                    let sent = self.node.hub.send_remote(
                        &node,
                        &to,
                        frame.clone(),
                        &session.outbox,
                        reference.as_deref(),
                    );
                    if let Err(e) = Box::pin(sent).await {
                        tracing::warn!(
                            error = %e,
                            peer = %session.peer_id(),
                            "cross-node relay failed"
                        );
                        send_error(
                            session,
                            ErrorCode::Unavailable,
                            REMOTE_RELAY_FAILED,
                            reference.as_deref(),
                        );
                    }
                }
            }
            Deferred::Update {
                metadata,
                reference,
            } => {
                let updated =
                    self.node
                        .hub
                        .update(session.peer_id(), session.epoch, metadata, false);
                if let Err(e) = Box::pin(updated).await {
                    membership_error(session, e, reference.as_deref());
                }
            }
            Deferred::KeepAlive => Box::pin(self.keep_alive(session)).await,
        }
    }

    /// Handles one text frame to the end.
    pub(super) async fn handle_text(&self, session: &mut Session, text: &str) {
        if let Some(command) = self.dispatch(session, text, Instant::now()) {
            self.settle(session, command).await;
        }
    }

    async fn join(&self, session: &mut Session, room: &str, reference: Option<&RawValue>) {
        if let Err(why) = identifier::check(room) {
            return send_error(
                session,
                ErrorCode::InvalidMessage,
                &format!("roomId {why}."),
                reference,
            );
        }
        if session
            .grant
            .room
            .as_deref()
            .is_some_and(|allowed| allowed != room)
        {
            return send_error(
                session,
                ErrorCode::ForbiddenRoom,
                "Your token does not allow joining this room.",
                reference,
            );
        }
        match self
            .node
            .hub
            .join(session.peer_id(), session.epoch, room)
            .await
        {
            Ok(joined) => {
                session.room = Some(room.to_string());
                let ice_servers = self.ice_servers_for(&session.grant);
                let frame = Outgoing::Joined {
                    room_id: room,
                    peer_id: session.peer_id(),
                    peers: &joined.peers,
                    metadata: (session.peer_id(), joined.metadata.as_deref(), &joined.peers),
                    ice_servers: &ice_servers,
                }
                .to_frame();
                session.outbox.deliver(frame);
            }
            Err(e) => membership_error(session, e, reference),
        }
    }
}

fn membership_error(session: &Session, e: MembershipError, reference: Option<&RawValue>) {
    let (code, message) = match e {
        MembershipError::RoomFull => (ErrorCode::RoomFull, "The room is full."),
        MembershipError::NotInRoom => (ErrorCode::NotInRoom, "You are not in that room."),
        MembershipError::Replaced => return,
        MembershipError::Store(e) => {
            tracing::warn!(error = %e, peer = %session.peer_id(), "membership change failed");
            (
                ErrorCode::Unavailable,
                "Room state is unavailable right now; retry shortly.",
            )
        }
    };
    send_error(session, code, message, reference);
}

fn relay_error(session: &Session, e: RelayError, reference: Option<&RawValue>) {
    let (code, message) = match e {
        RelayError::NotInRoom => (
            ErrorCode::NotInRoom,
            "Join a room before sending offers, answers or candidates.",
        ),
        RelayError::PeerNotFound => (ErrorCode::PeerNotFound, "That peer is not in your room."),
    };
    send_error(session, code, message, reference);
}

pub(super) fn send_error(
    session: &Session,
    code: ErrorCode,
    message: &str,
    reference: Option<&RawValue>,
) {
    let frame = Outgoing::Error {
        code,
        message,
        reference,
    }
    .to_frame();
    session.outbox.deliver(frame);
}

/// Store TTL of a session: the token's remaining life plus a margin covering the verifier's
/// clock-skew leeway, so a just-expired token's session is not gone before it is closed.
pub(super) fn session_ttl(grant: &Grant) -> Duration {
    grant.remaining() + Duration::from_secs(60)
}

/// When the token expires.
pub(super) fn deadline_of(grant: &Grant) -> Instant {
    Instant::now() + grant.remaining()
}
