//! One task per WebSocket: it reads commands and applies them through the hub, and, beside
//! that, writes the frames queued for the peer to the socket's sending half.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::future::maybe_done;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use super::hub::{Hub, MembershipError, Registration, RelayError, Route};
use super::outbox::{CloseReason, Closing, Inbox, Outbound, Outbox};
use super::protocol::{self, Command, ErrorCode, LeaveReason, Outgoing, close};
use crate::auth::{Claims, IceServer, IceServers, TokenIssuer, token_remaining};
use crate::identifier;
use crate::resilience::{IpPermit, MessageLimiter, Verdict};
use crate::server::ConnectionSlot;
use crate::telemetry::Metrics;

/// Refused messages within [`STRIKE_WINDOW`] after which the sender is closed with 1008.
const STRIKES_TO_CLOSE: u32 = 50;
/// Window in which refused messages count towards closing the connection.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// How long a closing connection may take to flush and send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Most queued frames written to a socket in one go.
const WRITE_BATCH: usize = 32;

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
    /// The verified token's claims (moved into the session once it starts).
    pub claims: Claims,
    /// STUN/TURN servers told to the client in `joined` and `resumed`.
    pub ice_servers: Arc<IceServers>,
    /// Timers.
    pub limits: Limits,
    /// Client address, for logs.
    pub remote: SocketAddr,
    /// The node's connection slot and the client IP's, released when the connection ends.
    pub held: (ConnectionSlot, IpPermit),
}

/// Drives one WebSocket until it closes.
///
/// Not an `async fn`: the future it returns holds only the socket's halves and a boxed
/// [`Connection`]. An async wrapper would keep its own copies of both for the connection's
/// life, which made every idle connection's task kilobytes larger.
pub fn run(socket: WebSocket, conn: Box<Connection>) -> impl Future<Output = ()> + Send {
    let peer_id = conn.claims.peer_id();
    let span = tracing::info_span!(
        "connection",
        peer = %peer_id,
        session = %conn.claims.session_id,
        node = %conn.hub.node(),
        remote = %conn.remote,
    );
    let (sink, stream) = socket.split();
    conn.serve(sink, stream, peer_id).instrument(span)
}

/// Mutable state of a live connection.
struct Session {
    peer_id: String,
    epoch: u64,
    outbox: Outbox,
    claims: Claims,
    room: Option<String>,
    /// The close code the client sent, if it closed first.
    client_close: Option<u16>,
    /// The connection dropped without a close frame (network loss): resumable.
    dropped: bool,
}

impl Connection {
    async fn serve(
        mut self: Box<Self>,
        sink: SplitSink<WebSocket, Message>,
        stream: SplitStream<WebSocket>,
        peer_id: String,
    ) {
        let started = Instant::now();
        let metrics = self.hub.metrics().clone();
        metrics.connections.inc();
        // Decrements on every way out, early returns included.
        let _open = scopeguard(move || {
            metrics.connections.dec();
        });
        let ttl = session_ttl(&self.claims);
        // Membership changes are boxed: inline, their state would make every connection's
        // task (idle ones included) as large as the largest of them.
        let Registration {
            epoch,
            outbox,
            inbox,
            resumed,
        } = match Box::pin(self.hub.attach(
            &self.claims.session_id,
            &self.claims.sub,
            &peer_id,
            ttl,
        ))
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not register the connection");
                let mut sink = sink;
                let _ = sink
                    .send(close_message(close::INTERNAL, "state store unavailable"))
                    .await;
                return;
            }
        };
        tracing::info!("websocket connected");
        let mut session = Session {
            peer_id,
            epoch,
            outbox,
            claims: std::mem::take(&mut self.claims),
            room: None,
            client_close: None,
            dropped: false,
        };
        let closing = session.outbox.watch_closing();
        let prelude = match resumed {
            Some(resumed) => {
                tracing::info!("session resumed");
                let ice_servers = self.ice_servers_for(&session.claims);
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
        // The writer runs inside this task, next to the reader, rather than as a task of
        // its own: a second task per connection cost a few hundred bytes of every idle
        // one. Both make progress while either waits (a command on Redis, a slow socket).
        let writer = maybe_done(write_frames(
            sink,
            inbox,
            prelude,
            self.limits.ping_interval,
            self.hub.metrics().clone(),
        ));
        tokio::pin!(writer);
        let mut writing = true;
        let reason = {
            let reader = self.read_frames(stream, &mut session, closing);
            tokio::pin!(reader);
            loop {
                tokio::select! {
                    reason = &mut reader => break reason,
                    () = writer.as_mut(), if writing => writing = false,
                }
            }
        };
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
                &session.claims.session_id,
                &session.peer_id,
                session.epoch,
                reason,
            ));
            let finish = async {
                if writing {
                    let grace = CLOSE_GRACE + Duration::from_secs(1);
                    let _ = tokio::time::timeout(grace, writer.as_mut()).await;
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

    /// Reads until the connection must end; returns why, for `peer_left`.
    async fn read_frames(
        &self,
        mut stream: SplitStream<WebSocket>,
        session: &mut Session,
        closing: Closing,
    ) -> LeaveReason {
        // One timer for the idle timeout, the token refresh and the token's expiry, living
        // as long as the loop: creating or resetting a timer per frame was a measurable
        // share of the relay's CPU, and each timer is 112 bytes of every idle connection.
        // It is set for the earliest of the three and, when it fires, handles what is due
        // and re-arms; the idle deadline follows the last frame only then.
        let mut last_frame = Instant::now();
        let mut expiry = deadline_of(&session.claims);
        let mut refresh = self.refresh_at(&session.claims);
        let next_due = |last_frame: Instant, refresh: Option<Instant>, expiry: Instant| {
            let idle = last_frame + self.limits.idle_timeout;
            idle.min(expiry).min(refresh.unwrap_or(expiry))
        };
        let timer = sleep_until(next_due(last_frame, refresh, expiry));
        tokio::pin!(timer);
        let closed = closing.closed();
        tokio::pin!(closed);
        let mut limiter = MessageLimiter::new(
            self.limits.message_rate,
            self.limits.message_burst,
            STRIKES_TO_CLOSE,
            STRIKE_WINDOW,
            Instant::now(),
        );
        loop {
            tokio::select! {
                biased;
                reason = &mut closed => {
                    if reason.is_some_and(|r| r.code == Some(close::RESTART)) {
                        Box::pin(self.read_until_close(&mut stream, session)).await;
                    }
                    return LeaveReason::Disconnected;
                }
                frame = stream.next() => {
                    let now = Instant::now();
                    last_frame = now;
                    if let Some(Ok(Message::Text(_) | Message::Binary(_))) = &frame {
                        match limiter.check(now) {
                            Verdict::Allowed => {}
                            Verdict::Limited => {
                                self.refuse_over_limit(session, frame.as_ref());
                                continue;
                            }
                            Verdict::Abuse => {
                                self.hub.metrics().rate_limited.inc();
                                session.outbox.close(Some(close::POLICY), "message flood");
                                return LeaveReason::Disconnected;
                            }
                        }
                    }
                    match frame {
                        // Boxed: inline, the handler's state would be part of every
                        // connection's task, idle ones included; one allocation per
                        // message is the cheaper side.
                        Some(Ok(Message::Text(text))) => {
                            Box::pin(self.handle_text(session, &text)).await
                        }
                        Some(Ok(Message::Binary(_))) => send_error(
                            session,
                            ErrorCode::InvalidMessage,
                            "Binary frames are not supported; send JSON text frames.",
                            None,
                        ),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(frame))) => {
                            session.client_close = Some(frame.map_or(1005, |f| f.code));
                            return LeaveReason::Disconnected;
                        }
                        None => {
                            session.dropped = true;
                            return LeaveReason::Disconnected;
                        }
                        Some(Err(e)) => {
                            if is_too_big(e) {
                                session.outbox.close(Some(close::TOO_BIG), "message too big");
                            } else {
                                session.dropped = true;
                            }
                            return LeaveReason::Disconnected;
                        }
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= expiry {
                        session.outbox.close(Some(close::TOKEN_EXPIRED), "token expired");
                        return LeaveReason::Disconnected;
                    }
                    if now >= last_frame + self.limits.idle_timeout {
                        session.outbox.close(Some(close::GOING_AWAY), "idle timeout");
                        return LeaveReason::Timeout;
                    }
                    if refresh.is_some_and(|at| now >= at) {
                        let fresh = self.issuer.reissue(&session.claims);
                        let frame = Outgoing::Token { token: &fresh.token, expires_at: fresh.claims.exp }.to_frame();
                        session.outbox.deliver(frame);
                        session.claims = fresh.claims;
                        expiry = deadline_of(&session.claims);
                        refresh = self.refresh_at(&session.claims);
                        Box::pin(self.keep_alive(session)).await;
                    }
                    timer.as_mut().reset(next_due(last_frame, refresh, expiry));
                }
            }
        }
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
    fn refuse_over_limit(&self, session: &Session, frame: Option<&Result<Message, axum::Error>>) {
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
    fn ice_servers_for(&self, claims: &Claims) -> Vec<IceServer> {
        self.ice_servers.for_session(&claims.session_id, claims.exp)
    }

    /// Extends the session's store TTL to the (possibly refreshed) token's life.
    async fn keep_alive(&self, session: &Session) {
        let ttl = session_ttl(&session.claims);
        match self
            .hub
            .refresh(
                &session.claims.session_id,
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

    fn refresh_at(&self, claims: &Claims) -> Option<Instant> {
        if self.limits.refresh_before.is_zero() {
            return None;
        }
        // Never sooner than half the remaining life, so a lead longer than a token's lifetime
        // cannot turn into a refresh loop.
        let remaining = token_remaining(claims);
        let wait = remaining
            .saturating_sub(self.limits.refresh_before)
            .max(remaining / 2);
        Some(Instant::now() + wait)
    }

    async fn handle_text(&self, session: &mut Session, text: &str) {
        let received = Instant::now();
        let metrics = self.hub.metrics();
        let (reference, parsed) = protocol::parse(text);
        let command = match parsed {
            Ok(c) => c,
            Err(r) => {
                metrics.inbound("invalid");
                return send_error(session, r.code, &r.message, r.reference);
            }
        };
        metrics.inbound(command.kind());
        match command {
            Command::Ping => {
                session.outbox.deliver(Outgoing::Pong.to_frame());
            }
            Command::Join { room } => {
                Box::pin(self.join(session, &room, reference)).await;
                metrics
                    .join_latency
                    .observe(received.elapsed().as_secs_f64());
            }
            Command::Leave { room } => {
                match Box::pin(
                    self.hub
                        .leave(&session.peer_id, session.epoch, room.as_deref()),
                )
                .await
                {
                    Ok(()) => session.room = None,
                    Err(e) => membership_error(session, e, reference),
                }
            }
            Command::Relay { kind, to, payload } => match self.hub.route(&session.peer_id, &to) {
                Ok(route) => {
                    let frame = Outgoing::relay(kind, &session.peer_id, payload).to_frame();
                    self.relay(session, &to, route, frame, received, reference)
                        .await;
                }
                Err(e) => relay_error(session, e, reference),
            },
        }
    }

    /// Hands a relayed frame to its target, here or on another node.
    async fn relay(
        &self,
        session: &Session,
        to: &str,
        route: Route,
        frame: Utf8Bytes,
        received: Instant,
        reference: Option<&RawValue>,
    ) {
        let (node, frame) = match route {
            Route::Local(outbox) => match outbox.relay(frame, Some(received)) {
                Ok(_) => return,
                // Its connection ended a moment ago, or its session just moved to another
                // node: route once more.
                Err(frame) => match self.hub.route(&session.peer_id, to) {
                    Ok(Route::Remote(node)) => (node, frame),
                    Ok(Route::Local(outbox)) => {
                        outbox.deliver_relayed(frame, Some(received));
                        return;
                    }
                    Err(e) => return relay_error(session, e, reference),
                },
            },
            Route::Remote(node) => (node, frame),
        };
        if let Err(e) = Box::pin(self.hub.send_remote(&node, to, frame)).await {
            tracing::warn!(error = %e, "cross-node relay failed");
            send_error(
                session,
                ErrorCode::Unavailable,
                "Relaying to that peer's node failed or timed out; it may not have arrived.",
                reference,
            );
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
            .claims
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
                let ice_servers = self.ice_servers_for(&session.claims);
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

fn send_error(session: &Session, code: ErrorCode, message: &str, reference: Option<&RawValue>) {
    let frame = Outgoing::Error {
        code,
        message,
        reference,
    }
    .to_frame();
    session.outbox.deliver(frame);
}

/// How a writer's loop ended.
enum Ended {
    /// Told to close (the reason, if any), with the frames it had not written yet.
    Closing(Option<CloseReason>, Vec<Outbound>),
    /// The socket failed; these frames may not have arrived.
    Failed(Vec<Utf8Bytes>),
}

/// Writes `prelude`, then queued frames (a burst in one write) and pings; on close,
/// flushes what is queued (unless the peer is too slow for that) and sends the close frame.
/// Returns the queue, and the frames whose write failed, so a parked session keeps both for
/// its resume.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    inbox: Inbox,
    prelude: Vec<Utf8Bytes>,
    ping_every: Duration,
    metrics: Arc<Metrics>,
) -> (Inbox, Vec<Utf8Bytes>) {
    for (i, frame) in prelude.iter().enumerate() {
        metrics.outbound(frame);
        if sink.send(Message::Text(frame.clone())).await.is_err() {
            return (inbox, prelude[i..].to_vec());
        }
    }
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    // Grows on the first burst: an idle connection holds no batch space.
    let mut batch: Vec<Outbound> = Vec::new();
    let ended = {
        // One close future for the connection's life, not a new waiter per frame.
        let closed = inbox.closed();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                biased;
                reason = &mut closed => break Ended::Closing(reason, Vec::new()),
                frame = inbox.recv() => {
                    let Some(first) = frame else { break Ended::Closing(None, Vec::new()) };
                    // Whatever else is queued goes out in the same write (one syscall
                    // for a burst instead of one per frame).
                    batch.clear();
                    batch.push(first);
                    while batch.len() < WRITE_BATCH
                        && let Some(next) = inbox.try_recv()
                    {
                        batch.push(next);
                    }
                    // How many frames of `batch` went into the socket's buffer.
                    let mut fed = 0;
                    let write = async {
                        for out in &batch {
                            metrics.outbound(&out.frame);
                            sink.feed(Message::Text(out.frame.clone())).await?;
                            fed += 1;
                        }
                        sink.flush().await
                    };
                    tokio::select! {
                        written = write => if written.is_err() {
                            // Not one frame of the batch can be vouched for: all go back.
                            break Ended::Failed(batch.drain(..).map(|o| o.frame).collect());
                        },
                        reason = &mut closed => break Ended::Closing(reason, batch.drain(fed..).collect()),
                    }
                    for out in &batch {
                        if let Some(since) = out.since {
                            metrics.relay_latency.observe(since.elapsed().as_secs_f64());
                        }
                    }
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break Ended::Failed(Vec::new());
                    }
                }
            }
        }
    };
    let (reason, unsent) = match ended {
        Ended::Closing(reason, unsent) => (reason, unsent),
        Ended::Failed(frames) => return (inbox, frames),
    };
    let Some(CloseReason {
        code: Some(code),
        text,
    }) = reason
    else {
        return (inbox, Vec::new());
    };
    // Boxed: the closing handshake's state would otherwise be part of every writer's task.
    Box::pin(say_goodbye(&mut sink, &inbox, unsent, code, text, &metrics)).await;
    (inbox, Vec::new())
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

fn close_message(code: u16, text: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(text),
    }))
}

/// Store TTL of a session: the token's remaining life plus a margin covering the verifier's
/// clock-skew leeway, so a just-expired token's session is not gone before it is closed.
fn session_ttl(claims: &Claims) -> Duration {
    token_remaining(claims) + Duration::from_secs(60)
}

fn deadline_of(claims: &Claims) -> Instant {
    Instant::now() + token_remaining(claims)
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
fn is_too_big(e: axum::Error) -> bool {
    let inner = e.into_inner();
    matches!(
        inner.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}
