//! The live part of a connection: one hand-written future that reads commands and writes
//! the peer's queued frames, with one timer for pings, the idle timeout and the token.
//!
//! Hand-written rather than two `async` loops side by side: every idle connection keeps
//! this state for its whole life, and the compiler lays out an `async` loop with room for
//! every future it might await at once (the reader's and the writer's, their `select!`s,
//! their timers). This struct holds only what an idle connection needs; a command that
//! waits on the store or another node runs as a boxed future that exists only meanwhile.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, Sleep, sleep_until};

use super::commands::{Connection, Deferred, Session, deadline_of, send_error};
use super::outbox::{CloseReason, Inbox, Outbound};
use super::protocol::{ErrorCode, LeaveReason, Outgoing, close};
use super::timers::{Due, Timers};
use crate::net::websocket::{Message, Utf8Bytes, WebSocket, WsError};
use crate::resilience::{MessageLimiter, Verdict};

/// Most queued frames written to the socket's buffer before it is flushed.
const WRITE_BATCH: usize = 32;

/// A command waiting on the store or another node; it holds the session meanwhile.
type Busy<'c> = Pin<Box<dyn Future<Output = Session> + Send + 'c>>;

/// Reads and writes one WebSocket until reading must stop (see [`Link::poll`]).
pub(super) struct Link<'c> {
    conn: &'c Connection,
    /// `None` while a command holds it: reading waits for that command to finish, so
    /// commands apply in the order they arrived.
    session: Option<Session>,
    busy: Option<Busy<'c>>,
    /// Not split into halves: one task reads and writes it, and halves would put it
    /// behind a shared lock. Boxed, so the connection's task does not keep a copy of it
    /// from before the link began (an `async fn` keeps its arguments' space for its life).
    ws: Box<WebSocket>,
    inbox: Inbox,
    /// Frames written first (a resume's `resumed` and what was queued), last one first.
    prelude: Vec<Utf8Bytes>,
    /// Frames handed to the socket since its last completed flush.
    unflushed: Vec<Outbound>,
    /// The socket's buffer holds something to flush.
    dirty: bool,
    /// Pings the socket owes a pong since it last confirmed a flush (it answers pings by
    /// itself, the latest one with the next flush). They count against the outbound
    /// queue's room, so a client that pings without reading is closed as a slow consumer.
    owed: u32,
    writer: Writer,
    ping_due: bool,
    /// Boxed so the link can be moved apart once it is done.
    timer: Pin<Box<Sleep>>,
    limiter: MessageLimiter,
    timers: Timers,
}

/// Where the writing side stands.
enum Writer {
    /// Writing queued frames as they come.
    Open,
    /// A close reason was set: what is left goes out with the close frame, later.
    Stopped,
    /// The socket failed; these frames may not have arrived.
    Failed(Vec<Utf8Bytes>),
}

/// Why the link stopped reading.
pub(super) struct Ended {
    /// For the room's `peer_left`.
    pub reason: LeaveReason,
    /// A drain's close: the client's messages sent before it saw the close frame are
    /// still to be read.
    pub read_on: bool,
}

/// What a finished link hands back for the closing handshake.
pub(super) struct Parts {
    pub session: Session,
    pub ws: Box<WebSocket>,
    pub inbox: Inbox,
    /// Set when the socket failed: frames that may not have arrived.
    pub failed: Option<Vec<Utf8Bytes>>,
    /// Frames handed to the socket but not confirmed flushed.
    pub unflushed: Vec<Utf8Bytes>,
    /// Frames not handed to the socket yet, in order.
    pub unsent: Vec<Utf8Bytes>,
}

impl<'c> Link<'c> {
    /// A link writing `prelude` first.
    pub(super) fn new(
        conn: &'c Connection,
        session: Session,
        ws: Box<WebSocket>,
        inbox: Inbox,
        mut prelude: Vec<Utf8Bytes>,
    ) -> Self {
        let now = Instant::now();
        let limits = &conn.node.connection_limits;
        prelude.reverse();
        let mut link = Self {
            conn,
            timers: Timers::new(
                now,
                limits.ping_interval,
                deadline_of(&session.grant),
                conn.refresh_at(&session.grant),
                // A resume into a room has joined already.
                session.room.is_none().then(|| now + limits.join_timeout),
            ),
            session: Some(session),
            busy: None,
            ws,
            inbox,
            prelude,
            unflushed: Vec::new(),
            dirty: false,
            owed: 0,
            writer: Writer::Open,
            ping_due: false,
            timer: Box::pin(sleep_until(now)),
            limiter: MessageLimiter::new(&limits.message_limit(), now),
        };
        link.rearm();
        link
    }

    /// Takes the link apart once it is done.
    pub(super) fn into_parts(self) -> Parts {
        let (failed, unflushed) = match self.writer {
            Writer::Failed(frames) => (Some(frames), Vec::new()),
            Writer::Open | Writer::Stopped => {
                (None, self.unflushed.into_iter().map(|o| o.frame).collect())
            }
        };
        let mut unsent = self.prelude;
        unsent.reverse();
        Parts {
            session: self
                .session
                .expect("a link ends only while it holds the session"),
            ws: self.ws,
            inbox: self.inbox,
            failed,
            unflushed,
            unsent,
        }
    }

    /// Sets the timer for whichever comes first: a ping, or (unless a command holds the
    /// session) the idle timeout, the token refresh or the token's expiry. The idle
    /// deadline follows the last frame only when the timer fires: resetting a timer per
    /// frame was a measurable share of the relay's CPU.
    fn rearm(&mut self) {
        let due = self.timers.next(
            self.conn.node.connection_limits.idle_timeout,
            self.session.is_some(),
        );
        self.timer.as_mut().reset(due);
    }

    /// Lets `command` hold the session until it is done.
    fn defer(&mut self, command: Deferred) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        let conn = self.conn;
        self.busy = Some(Box::pin(async move {
            conn.settle(&mut session, command).await;
            session
        }));
    }

    /// Handles one read result; `Some` ends reading.
    fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Option<LeaveReason> {
        let now = Instant::now();
        self.timers.heard(now);
        let conn = self.conn;
        let session = self.session.as_mut()?;
        // Every frame counts, control frames and empty ones alike: those the socket hands
        // up here, and the continuation frames it folded into a message (at most
        // `MAX_FRAGMENTS` per message).
        if let Some(Ok(message)) = &frame
            && !matches!(message, Message::Close(_))
        {
            let folded = self.ws.take_continuations();
            match self.limiter.check_frames(
                &conn.node.connection_limits.message_limit(),
                now,
                1 + folded,
            ) {
                Verdict::Allowed => {}
                Verdict::Limited if matches!(message, Message::Text(_) | Message::Binary(_)) => {
                    conn.refuse_over_limit(session, frame.as_ref());
                    return None;
                }
                // A control frame names nothing to refuse: the strike is the refusal, and
                // the pong a ping is owed still counts below.
                Verdict::Limited => {
                    conn.node.hub.metrics().rate_limited.inc();
                }
                Verdict::Abuse => {
                    conn.node.hub.metrics().rate_limited.inc();
                    session.outbox.close(Some(close::POLICY), "message flood");
                    return Some(LeaveReason::Disconnected);
                }
            }
        }
        match frame {
            Some(Ok(Message::Text(text))) => {
                if let Some(command) = conn.dispatch(session, &text, now) {
                    self.defer(command);
                }
            }
            Some(Ok(Message::Binary(_))) => send_error(
                session,
                ErrorCode::InvalidMessage,
                "Binary frames are not supported; send JSON text frames.",
                None,
            ),
            Some(Ok(Message::Ping(_))) => {
                // The pong goes out with the next flush; until then it is owed.
                self.owed = self.owed.saturating_add(1);
                self.dirty = true;
                if self.owed as usize > self.inbox.room() {
                    session.outbox.close(Some(close::RESYNC), "slow consumer");
                    return Some(LeaveReason::Disconnected);
                }
            }
            Some(Ok(Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                session.client_close = Some(frame.map_or(1005, |f| f.code));
                return Some(LeaveReason::Disconnected);
            }
            None => {
                session.dropped = true;
                return Some(LeaveReason::Disconnected);
            }
            Some(Err(e)) => {
                match refusal(e) {
                    Some((code, text)) => session.outbox.close(Some(code), text),
                    None => session.dropped = true,
                }
                return Some(LeaveReason::Disconnected);
            }
        }
        None
    }

    /// The timer fired: a ping falls due, or (when the session is free) the token expired,
    /// the client went silent or the token is due for a refresh.
    fn on_timer(&mut self) -> Option<LeaveReason> {
        let limits = &self.conn.node.connection_limits;
        let fired = self.timers.fire(
            Instant::now(),
            limits.ping_interval,
            limits.idle_timeout,
            self.session.is_some(),
        );
        self.ping_due |= fired.ping;
        if let Some(session) = self.session.as_mut() {
            match fired.due {
                Some(Due::Expired) => {
                    session
                        .outbox
                        .close(Some(close::TOKEN_EXPIRED), "token expired");
                    return Some(LeaveReason::Disconnected);
                }
                Some(Due::NoJoin) => {
                    self.conn.node.hub.metrics().cut("join_timeout");
                    session
                        .outbox
                        .close(Some(close::POLICY), "no join within JOIN_TIMEOUT");
                    return Some(LeaveReason::Timeout);
                }
                Some(Due::Idle) => {
                    session
                        .outbox
                        .close(Some(close::GOING_AWAY), "idle timeout");
                    return Some(LeaveReason::Timeout);
                }
                Some(Due::Refresh) | None => {}
            }
            if fired.due == Some(Due::Refresh)
                && let Some(issuer) = &self.conn.node.issuer
            {
                // Signed with the key in service now: a connection opened with a key
                // since retired gets a token that verifies everywhere.
                let fresh = issuer.reissue(&session.grant);
                let frame = Outgoing::Token {
                    token: &fresh.token,
                    expires_at: fresh.claims.exp,
                }
                .to_frame();
                session.outbox.deliver(frame);
                session.grant = fresh.claims.into();
                self.timers.renewed(
                    deadline_of(&session.grant),
                    self.conn.refresh_at(&session.grant),
                );
                self.defer(Deferred::KeepAlive);
            }
        }
        self.rearm();
        None
    }

    /// Writes the prelude, a due ping and queued frames (a burst in one flush) for as
    /// long as the socket takes them. Returns the close reason as writing last saw it,
    /// with the task registered for its change, or `None` when it did not look: the
    /// caller need not take the queue's lock again for it.
    fn write(&mut self, cx: &mut Context<'_>) -> Option<Poll<Option<CloseReason>>> {
        let mut closing = None;
        loop {
            if !matches!(self.writer, Writer::Open) {
                return closing;
            }
            // A close reason stops writing here; the closing handshake sends what is left.
            let now = self.inbox.poll_closed(cx);
            closing = Some(now);
            if now.is_ready() {
                self.writer = Writer::Stopped;
                return closing;
            }
            while self.unflushed.len() < WRITE_BATCH {
                match self.ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => {
                        self.fail();
                        return closing;
                    }
                    Poll::Pending => return closing,
                }
                let message = if self.ping_due {
                    self.ping_due = false;
                    Message::Ping(Default::default())
                } else if let Some(frame) = self.prelude.pop() {
                    self.push(Outbound { frame, since: None })
                } else if let Poll::Ready(Some(out)) = self.inbox.poll_recv(cx) {
                    self.push(out)
                } else {
                    break;
                };
                if self.ws.start_send_unpin(message).is_err() {
                    self.fail();
                    return closing;
                }
                self.dirty = true;
            }
            if !self.dirty {
                return closing;
            }
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    self.dirty = false;
                    self.owed = 0;
                    let metrics = self.conn.node.hub.metrics();
                    // Taken rather than drained: an idle connection keeps no batch space
                    // (one small allocation per flush is the price under load).
                    for out in std::mem::take(&mut self.unflushed) {
                        if let Some(since) = out.since {
                            metrics.relay_latency.observe(since.elapsed().as_secs_f64());
                        }
                    }
                }
                Poll::Ready(Err(_)) => {
                    self.fail();
                    return closing;
                }
                Poll::Pending => return closing,
            }
        }
    }

    /// Counts `out` as written and keeps it until the socket confirms it.
    fn push(&mut self, out: Outbound) -> Message {
        self.conn.node.hub.metrics().outbound(&out.frame);
        let message = Message::Text(out.frame.clone());
        self.unflushed.push(out);
        message
    }

    /// The socket failed: nothing since its last flush (nor the prelude's rest) can be
    /// vouched for.
    fn fail(&mut self) {
        let mut frames: Vec<Utf8Bytes> = self.unflushed.drain(..).map(|o| o.frame).collect();
        frames.extend(self.prelude.drain(..).rev());
        self.writer = Writer::Failed(frames);
    }
}

impl Future for Link<'_> {
    type Output = Ended;

    /// Runs until reading must stop: the client closed or went away, a close reason was
    /// set (a drain's among them), or a limit closed the connection. Writing goes on
    /// meanwhile, also while a command holds the session.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = &mut *self;
        loop {
            if let Some(busy) = this.busy.as_mut()
                && let Poll::Ready(session) = busy.as_mut().poll(cx)
            {
                this.busy = None;
                if session.room.is_some() {
                    this.timers.joined();
                }
                this.session = Some(session);
                this.rearm();
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                if let Some(reason) = this.on_timer() {
                    return Poll::Ready(Ended {
                        reason,
                        read_on: false,
                    });
                }
                // Polls the re-armed timer, and writes a ping that fell due.
                continue;
            }
            let closing = this.write(cx);
            if this.session.is_none() {
                return Poll::Pending;
            }
            // A close reason ends reading before another frame is read.
            let closing = closing.unwrap_or_else(|| this.inbox.poll_closed(cx));
            if let Poll::Ready(closing) = closing {
                let read_on = closing.is_some_and(|r| r.code == Some(close::RESTART));
                let revoked = closing.is_some_and(|r| r.text == close::REVOKED_TEXT);
                return Poll::Ready(Ended {
                    reason: match revoked {
                        true => LeaveReason::Revoked,
                        false => LeaveReason::Disconnected,
                    },
                    read_on,
                });
            }
            match this.ws.poll_next_unpin(cx) {
                Poll::Ready(frame) => {
                    if let Some(reason) = this.on_frame(frame) {
                        return Poll::Ready(Ended {
                            reason,
                            read_on: false,
                        });
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The close code and reason for a read that failed because of what the client sent;
/// `None` when the connection itself failed (a network loss, resumable).
fn refusal(e: WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::TooBig => Some((close::TOO_BIG, "message too big")),
        WsError::TooManyFragments => Some((close::TOO_BIG, "too many fragments")),
        WsError::Utf8 => Some((close::INVALID_DATA, "text is not UTF-8")),
        WsError::Protocol(_) => Some((close::PROTOCOL, "malformed frame")),
        WsError::EarlyData => Some((close::PROTOCOL, "data before the handshake")),
        WsError::Io(_) | WsError::Closed => None,
    }
}
