//! One task per WebSocket: it registers the connection with the hub, runs its
//! [`Link`] (commands in, queued frames out), then parks the session for a resume or says
//! goodbye to the room and the client.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::future::maybe_done;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::Instrument;

use super::hub::{Hub, MembershipError, REMOTE_RELAY_FAILED, Registration, RelayError, Route};
use super::link::{Ended, Link, Parts};
use super::outbox::{CloseReason, Inbox, Outbound, Outbox};
use super::protocol::{self, Command, ErrorCode, Outgoing, close};
use crate::auth::{Grant, IceServer, IceServers, TokenIssuer};
use crate::identifier;
use crate::resilience::{ConnectionSlot, IpPermit};
use crate::telemetry::Metrics;

/// Refused messages within [`STRIKE_WINDOW`] after which the sender is closed with 1008.
pub(super) const STRIKES_TO_CLOSE: u32 = 50;
/// Window in which refused messages count towards closing the connection.
pub(super) const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// How long a closing connection may take to flush and send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a server-closed connection waits for the client's close reply.
const LINGER: Duration = Duration::from_secs(2);

/// Per-connection limits and timers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Silence after which the connection is closed.
    pub idle_timeout: Duration,
    /// Lead time for pushing a fresh token; zero disables refresh.
    pub refresh_before: Duration,
    /// Sustained messages per second.
    pub message_rate: f64,
    /// Message burst.
    pub message_burst: f64,
    /// How long a dropped connection's session waits for a resume (zero: no resume).
    pub resume_grace: Duration,
}

/// Everything a connection task needs.
pub struct Connection {
    /// The node's hub.
    pub hub: Arc<Hub>,
    /// Mints refreshed tokens.
    pub issuer: Arc<TokenIssuer>,
    /// STUN/TURN servers told to the client in `joined` and `resumed`.
    pub ice_servers: Arc<IceServers>,
    /// Timers and rates, shared by the node's connections.
    pub limits: Arc<Limits>,
    /// Client address, for logs.
    pub remote: SocketAddr,
    /// The node's connection slot and the client IP's, released when the connection ends.
    pub held: (ConnectionSlot, IpPermit),
}

/// Drives one WebSocket, whose token granted `grant`, until it closes.
///
/// Not an `async fn`: the future it returns holds only boxes. An
/// async wrapper would keep its own copies of its arguments for the connection's life,
/// which made every idle connection's task kilobytes larger; the grant is boxed for the
/// same reason (their box is freed once the session holds them).
pub fn run(
    socket: WebSocket,
    conn: Box<Connection>,
    grant: Box<Grant>,
) -> impl Future<Output = ()> + Send {
    let peer_id = grant.peer_id();
    let span = tracing::info_span!(
        "connection",
        peer = %peer_id,
        session = %grant.session_id,
        node = %conn.hub.node(),
        remote = %conn.remote,
    );
    conn.serve(grant, Box::new(socket), peer_id)
        .instrument(span)
}

/// Mutable state of a live connection.
pub(super) struct Session {
    pub(super) peer_id: String,
    pub(super) epoch: u64,
    pub(super) outbox: Outbox,
    pub(super) grant: Grant,
    pub(super) room: Option<String>,
    /// The close code the client sent, if it closed first.
    pub(super) client_close: Option<u16>,
    /// The connection dropped without a close frame (network loss): resumable.
    pub(super) dropped: bool,
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
    /// A relay to a peer on another node.
    SendRemote {
        node: Arc<str>,
        to: String,
        frame: Utf8Bytes,
        reference: Option<Box<RawValue>>,
    },
    /// Extends the session's store TTL after a token refresh.
    KeepAlive,
}

impl Connection {
    async fn serve(self: Box<Self>, grant: Box<Grant>, mut ws: Box<WebSocket>, peer_id: String) {
        let started = Instant::now();
        let metrics = self.hub.metrics().clone();
        metrics.connections.inc();
        // Decrements on every way out, early returns included.
        let _open = scopeguard(move || {
            metrics.connections.dec();
        });
        // Boxed, like every membership change: inline, its state would make every
        // connection's task (idle ones included) as large as the largest of them.
        let Some((session, inbox, prelude)) = Box::pin(self.open(*grant, peer_id)).await else {
            let _ = ws
                .send(close_message(close::INTERNAL, "state store unavailable"))
                .await;
            return;
        };
        let mut link = Link::new(&self, session, ws, inbox, prelude);
        let ended = (&mut link).await;
        Box::pin(self.part(link.into_parts(), ended, started)).await;
    }

    /// Registers the connection with the hub: its session, its queue and, for a resume,
    /// the frames to write first. `None` when the store could not be reached.
    async fn open(
        &self,
        grant: Grant,
        peer_id: String,
    ) -> Option<(Session, Inbox, Vec<Utf8Bytes>)> {
        let ttl = session_ttl(&grant);
        let Registration {
            epoch,
            outbox,
            inbox,
            resumed,
        } = match self
            .hub
            .attach(&grant.session_id, &grant.sub, &peer_id, ttl)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not register the connection");
                return None;
            }
        };
        tracing::info!("websocket connected");
        let mut session = Session {
            peer_id,
            epoch,
            outbox,
            grant,
            room: None,
            client_close: None,
            dropped: false,
        };
        let prelude = match resumed {
            Some(resumed) => {
                tracing::info!("session resumed");
                let ice_servers = self.ice_servers_for(&session.grant);
                let frame = Outgoing::Resumed {
                    room_id: resumed.room.as_deref(),
                    peer_id: &session.peer_id,
                    peers: &resumed.peers,
                    ice_servers: &ice_servers,
                }
                .to_frame();
                session.room = resumed.room.map(|r| r.to_string());
                std::iter::once(frame).chain(resumed.queued).collect()
            }
            None => Vec::new(),
        };
        Some((session, inbox, prelude))
    }

    /// Ends the connection once reading stopped: parks the session for a resume, or
    /// tells the room and sends the close frame.
    async fn part(&self, parts: Parts, ended: Ended, started: Instant) {
        let Parts {
            mut session,
            ws,
            inbox,
            failed,
            unflushed,
            unsent,
        } = parts;
        // Split only now: the reading and the writing side may both wait for a while.
        let (sink, mut stream) = (*ws).split();
        let writer = maybe_done(finish_writing(
            sink,
            inbox,
            failed,
            unflushed,
            unsent,
            self.hub.metrics().clone(),
        ));
        tokio::pin!(writer);
        let mut writing = true;
        if ended.read_on {
            // A drain's close frame is on its way; what the client sent before it saw
            // that frame is still handled, until its close reply.
            let reader = self.read_until_close(&mut stream, &mut session);
            tokio::pin!(reader);
            loop {
                tokio::select! {
                    () = &mut reader => break,
                    () = writer.as_mut(), if writing => writing = false,
                }
            }
        }
        let reason = ended.reason;
        // Stop the writer (unless it already stopped); it returns the queue.
        if session.outbox.closing().is_none() {
            session.outbox.close(None, "");
        }
        // A drained node's clients reconnect elsewhere and take their sessions along.
        let restarting = session
            .outbox
            .closing()
            .is_some_and(|c| c.code == Some(close::RESTART));
        let resumable = (session.dropped || restarting) && !self.limits.resume_grace.is_zero();
        let mut parked = false;
        if resumable {
            // The socket is gone, so the writer stops at once (no close frame to send).
            let stopped = !writing
                || tokio::time::timeout(CLOSE_GRACE, writer.as_mut())
                    .await
                    .is_ok();
            writing = false;
            if let Some(queue) = stopped.then(|| writer.as_mut().take_output()).flatten() {
                parked = Box::pin(self.hub.park(
                    &session.peer_id,
                    session.epoch,
                    queue,
                    self.limits.resume_grace,
                ))
                .await;
            }
        }
        if parked {
            tracing::info!(
                grace_ms = self.limits.resume_grace.as_millis() as u64,
                "connection lost; session kept for a resume"
            );
        } else {
            // Tell the room at once; the close frame to a slow client may take its time
            // meanwhile.
            let detach = Box::pin(self.hub.detach(
                &session.grant.session_id,
                &session.peer_id,
                session.epoch,
                reason,
            ));
            let client_gone = session.dropped || session.client_close.is_some();
            let finish = async {
                if writing {
                    let grace = CLOSE_GRACE + Duration::from_secs(1);
                    let _ = tokio::time::timeout(grace, writer.as_mut()).await;
                }
                if !client_gone {
                    linger(&mut stream).await;
                }
            };
            tokio::join!(detach, finish);
        }
        let server_code = session.outbox.closing().and_then(|c| c.code);
        let (closed_by, code) = match (server_code, session.client_close) {
            (Some(code), _) => ("server", code),
            (None, Some(code)) => ("client", code),
            (None, None) => ("network", 1006),
        };
        self.hub.metrics().closed(code);
        tracing::info!(
            room = session.room.as_deref().unwrap_or(""),
            close_code = code,
            closed_by,
            reason = reason.as_str(),
            duration_ms = started.elapsed().as_millis() as u64,
            "websocket closed"
        );
    }

    /// After a drain's close frame, handles what the client sent before it saw that frame
    /// (until its close reply, bounded), so no message is lost in the handshake.
    async fn read_until_close(&self, stream: &mut SplitStream<WebSocket>, session: &mut Session) {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Text(text) => self.handle_text(session, &text).await,
                    Message::Close(frame) => {
                        session.client_close = Some(frame.map_or(1005, |f| f.code));
                        return;
                    }
                    _ => {}
                }
            }
        })
        .await;
    }

    /// Tells the sender its message was not relayed because of the rate limit.
    pub(super) fn refuse_over_limit(
        &self,
        session: &Session,
        frame: Option<&Result<Message, axum::Error>>,
    ) {
        self.hub.metrics().rate_limited.inc();
        let text = match frame {
            Some(Ok(Message::Text(t))) => t.as_str(),
            _ => "",
        };
        let (reference, parsed) = protocol::parse(text);
        let kind = parsed.map(|c| c.kind()).unwrap_or("message");
        let message = format!(
            "Rate limit exceeded ({} messages per second, bursts of {}): this {kind} was not delivered; slow down.",
            self.limits.message_rate, self.limits.message_burst
        );
        send_error(session, ErrorCode::RateLimited, &message, reference);
    }

    /// STUN/TURN servers for this session, TURN credentials expiring with its token.
    fn ice_servers_for(&self, grant: &Grant) -> Vec<IceServer> {
        self.ice_servers.for_session(&grant.session_id, grant.exp)
    }

    /// Extends the session's store TTL to the (possibly refreshed) token's life.
    async fn keep_alive(&self, session: &Session) {
        let ttl = session_ttl(&session.grant);
        match self
            .hub
            .refresh(
                &session.grant.session_id,
                &session.peer_id,
                session.epoch,
                ttl,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => session
                .outbox
                .close(Some(close::REPLACED), "replaced by a newer connection"),
            Err(e) => tracing::warn!(error = %e, "could not refresh the session"),
        }
    }

    /// When to push a fresh token, if refresh is on.
    pub(super) fn refresh_at(&self, grant: &Grant) -> Option<Instant> {
        if self.limits.refresh_before.is_zero() {
            return None;
        }
        // Never sooner than half the remaining life, so a lead longer than a token's lifetime
        // cannot turn into a refresh loop.
        let remaining = grant.remaining();
        let wait = remaining
            .saturating_sub(self.limits.refresh_before)
            .max(remaining / 2);
        Some(Instant::now() + wait)
    }

    /// Handles one text frame: at once when it needs nothing but this node (a relay to a
    /// local peer, a ping, a refusal), else returns what is left to wait for.
    pub(super) fn dispatch(
        &self,
        session: &mut Session,
        text: &str,
        received: Instant,
    ) -> Option<Deferred> {
        let metrics = self.hub.metrics();
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
        let reference = || reference.map(ToOwned::to_owned);
        match command {
            Command::Ping => {
                session.outbox.deliver(Outgoing::Pong.to_frame());
                None
            }
            Command::Join { room } => Some(Deferred::Join {
                room: room.into_owned(),
                reference: reference(),
                received,
            }),
            Command::Leave { room } => Some(Deferred::Leave {
                room: room.map(Cow::into_owned),
                reference: reference(),
            }),
            Command::Relay { kind, to, payload } => {
                let (node, frame) = match self.hub.route(&session.peer_id, &to) {
                    Ok(Route::Local(outbox)) => {
                        let frame = Outgoing::relay(kind, &session.peer_id, payload).to_frame();
                        match outbox.relay(frame, Some(received)) {
                            Ok(_) => return None,
                            // Its connection ended a moment ago, or its session just moved
                            // to another node: route once more.
                            Err(frame) => match self.hub.route(&session.peer_id, &to) {
                                Ok(Route::Remote(node)) => (node, frame),
                                Ok(Route::Local(outbox)) => {
                                    outbox.deliver_relayed(frame, Some(received));
                                    return None;
                                }
                                Err(e) => {
                                    relay_error(session, e, reference().as_deref());
                                    return None;
                                }
                            },
                        }
                    }
                    Ok(Route::Remote(node)) => {
                        let frame = Outgoing::relay(kind, &session.peer_id, payload).to_frame();
                        (node, frame)
                    }
                    Err(e) => {
                        relay_error(session, e, reference().as_deref());
                        return None;
                    }
                };
                Some(Deferred::SendRemote {
                    node,
                    to: to.into_owned(),
                    frame,
                    reference: reference(),
                })
            }
        }
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
                self.hub
                    .metrics()
                    .join_latency
                    .observe(received.elapsed().as_secs_f64());
            }
            Deferred::Leave { room, reference } => {
                match Box::pin(
                    self.hub
                        .leave(&session.peer_id, session.epoch, room.as_deref()),
                )
                .await
                {
                    Ok(()) => session.room = None,
                    Err(e) => membership_error(session, e, reference.as_deref()),
                }
            }
            Deferred::SendRemote {
                node,
                to,
                frame,
                reference,
            } => {
                let sent =
                    self.hub
                        .send_remote(&node, &to, frame, &session.outbox, reference.as_deref());
                if let Err(e) = Box::pin(sent).await {
                    tracing::warn!(error = %e, "cross-node relay failed");
                    send_error(
                        session,
                        ErrorCode::Unavailable,
                        REMOTE_RELAY_FAILED,
                        reference.as_deref(),
                    );
                }
            }
            Deferred::KeepAlive => Box::pin(self.keep_alive(session)).await,
        }
    }

    /// Handles one text frame to the end.
    async fn handle_text(&self, session: &mut Session, text: &str) {
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
        match self.hub.join(&session.peer_id, session.epoch, room).await {
            Ok(peers) => {
                session.room = Some(room.to_string());
                let ice_servers = self.ice_servers_for(&session.grant);
                let frame = Outgoing::Joined {
                    room_id: room,
                    peer_id: &session.peer_id,
                    peers: &peers,
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
            tracing::warn!(error = %e, "membership change failed");
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

/// The writing side's end, once reading stopped and the close reason is set: the frames
/// whose write failed, or (for a close frame) what is left flushed and the close frame
/// sent. Returns the queue, and the frames that may not have arrived, so a parked session
/// keeps both for its resume.
async fn finish_writing(
    mut sink: SplitSink<WebSocket, Message>,
    inbox: Inbox,
    failed: Option<Vec<Utf8Bytes>>,
    unflushed: Vec<Utf8Bytes>,
    unsent: Vec<Utf8Bytes>,
    metrics: Arc<Metrics>,
) -> (Inbox, Vec<Utf8Bytes>) {
    if let Some(frames) = failed {
        return (inbox, frames);
    }
    match inbox.closed().await {
        Some(CloseReason {
            code: Some(code),
            text,
        }) => {
            // What was handed to the socket goes out with the close frame.
            let unsent = unsent
                .into_iter()
                .map(|frame| Outbound { frame, since: None })
                .collect();
            Box::pin(say_goodbye(&mut sink, &inbox, unsent, code, text, &metrics)).await;
            (inbox, Vec::new())
        }
        // The client is gone: nothing not confirmed written can be vouched for.
        _ => (inbox, unflushed.into_iter().chain(unsent).collect()),
    }
}

/// Flushes what is queued (unless the peer is too slow for that) and sends the close frame,
/// within [`CLOSE_GRACE`].
async fn say_goodbye(
    sink: &mut SplitSink<WebSocket, Message>,
    inbox: &Inbox,
    unsent: Vec<Outbound>,
    code: u16,
    text: &'static str,
    metrics: &Metrics,
) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if code != close::SLOW_CONSUMER {
            let queued = std::iter::from_fn(|| inbox.try_recv());
            for Outbound { frame, .. } in unsent.into_iter().chain(queued) {
                metrics.outbound(&frame);
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
        }
        let _ = sink.send(close_message(code, text)).await;
    })
    .await;
}

/// After the server's close frame, reads (and drops) what the client still sends until
/// its close reply, for at most [`LINGER`]. Closing a socket with unread data makes the
/// kernel reset the connection, and the client may then never read the close frame (a
/// flooder closed with 1008 would see only a reset).
async fn linger(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                return;
            }
        }
    })
    .await;
}

fn close_message(code: u16, text: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(text),
    }))
}

/// Store TTL of a session: the token's remaining life plus a margin covering the verifier's
/// clock-skew leeway, so a just-expired token's session is not gone before it is closed.
fn session_ttl(grant: &Grant) -> Duration {
    grant.remaining() + Duration::from_secs(60)
}

/// When the token expires.
pub(super) fn deadline_of(grant: &Grant) -> Instant {
    Instant::now() + grant.remaining()
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// True when the read failed because a message exceeded the size limit.
pub(super) fn is_too_big(e: axum::Error) -> bool {
    let inner = e.into_inner();
    matches!(
        inner.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}
