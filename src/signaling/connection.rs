//! One task per WebSocket: it registers the connection with the hub, runs its
//! [`Link`] (commands in, queued frames out), then parks the session for a resume or says
//! goodbye to the room and the client.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::maybe_done;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tracing::Instrument;

use super::commands::{Session, session_ttl};
use super::hub::Registration;
use super::link::{Ended, Link, Parts};
use super::outbox::{CloseReason, Inbox, Outbound};
use super::protocol::{Outgoing, close, metadata_from};
use crate::auth::Grant;
use crate::net::websocket::{CloseFrame, Message, Utf8Bytes, WebSocket};
use crate::telemetry::Metrics;

/// Re-exported: the upgrade builds a [`Connection`], the server its [`ConnectionLimits`].
pub use super::commands::Connection;
pub use super::state::ConnectionLimits;

/// How long a closing connection may take to flush and send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a server-closed connection waits for the client's close reply.
const LINGER: Duration = Duration::from_secs(2);

/// Drives one WebSocket, whose token granted `grant`, on a task of its own until it closes.
///
/// The connection's future holds only boxes: an async wrapper would keep its own copies of
/// its arguments for the connection's life, which made every idle connection's task
/// kilobytes larger; the grant is boxed for the same reason (its box is freed once the
/// session holds it).
pub fn spawn(socket: WebSocket, conn: Box<Connection>, grant: Box<Grant>) {
    // At debug level only: an enabled span lives as long as its connection, and its
    // record and formatted fields cost about 0.9 KB of every idle connection (at
    // LOG_LEVEL=info, 3,995 B per connection with the span at info against 3,099 B
    // without). At info, the connection's own lines carry these fields themselves.
    let span = tracing::debug_span!(
        "connection",
        peer = %grant.peer_id(),
        session = %grant.session_id(),
        node = %conn.node.hub.node(),
        remote = %conn.remote,
    );
    let serve = conn.serve(grant, Box::new(socket));
    // Two tasks of their own type: a disabled span still takes 40 B of the task, which is
    // what rounds an idle connection's task up from 512 B to 640 B.
    if span.is_disabled() {
        tokio::spawn(serve);
    } else {
        tokio::spawn(serve.instrument(span));
    }
}

impl Connection {
    /// The connection's life. Not an `async fn` either, and its arguments are used where
    /// they are, never bound anew: an `async fn` moves each argument into a local of its
    /// own and keeps both slots for the future's life, and every byte of this future is a
    /// byte of every idle connection's task (whose size tokio rounds up to 128 B).
    #[allow(clippy::manual_async_fn)] // On purpose: see above.
    fn serve(
        self: Box<Self>,
        grant: Box<Grant>,
        mut ws: Box<WebSocket>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            // Decrements on every way out, early returns included.
            let _open = Open::count(self.node.hub.metrics());
            // Boxed, like every membership change: inline, its state would make every
            // connection's task (idle ones included) as large as the largest of them.
            let Some((session, inbox, prelude)) = Box::pin(self.open(grant)).await else {
                // Boxed too: inline, rustc lays this send out beside the link.
                let goodbye = ws.send(close_message(close::INTERNAL, "state store unavailable"));
                let _ = Box::pin(goodbye).await;
                return;
            };
            let mut link = Link::new(&self, session, ws, inbox, prelude);
            let ended = (&mut link).await;
            Box::pin(self.part(link.into_parts(), ended)).await;
        }
    }

    /// Registers the connection with the hub: its session, its queue and, for a resume,
    /// the frames to write first. `None` when the store could not be reached.
    async fn open(&self, grant: Box<Grant>) -> Option<(Session, Inbox, Vec<Utf8Bytes>)> {
        let grant = *grant;
        let peer_id = grant.peer_id();
        let ttl = session_ttl(&grant);
        let Registration {
            epoch,
            outbox,
            inbox,
            resumed,
        } = match self
            .node
            .hub
            .attach(
                grant.session_id(),
                grant.sub(),
                grant.peer(),
                grant.metadata.as_deref().and_then(metadata_from),
                ttl,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    peer = %peer_id,
                    session = %grant.session_id(),
                    remote = %self.remote,
                    "could not register the connection"
                );
                return None;
            }
        };
        tracing::info!(
            peer = %peer_id,
            session = %grant.session_id(),
            node = %self.node.hub.node(),
            remote = %self.remote,
            "websocket connected"
        );
        let mut session = Session {
            epoch,
            outbox,
            grant,
            room: None,
            client_close: None,
            dropped: false,
        };
        let prelude = match resumed {
            Some(resumed) => {
                tracing::info!(peer = %session.peer_id(), "session resumed");
                let ice_servers = self.ice_servers_for(&session.grant);
                let frame = Outgoing::Resumed {
                    room_id: resumed.room.as_deref(),
                    peer_id: session.peer_id(),
                    peers: &resumed.peers,
                    metadata: (
                        session.peer_id(),
                        resumed.metadata.as_deref(),
                        &resumed.peers,
                    ),
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
    async fn part(&self, parts: Parts, ended: Ended) {
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
            session.client_close.is_some(),
            inbox,
            failed,
            unflushed,
            unsent,
            self.node.hub.metrics().clone(),
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
        let resumable =
            (session.dropped || restarting) && !self.node.connection_limits.resume_grace.is_zero();
        let mut parked = false;
        if resumable {
            // The socket is gone, so the writer stops at once (no close frame to send).
            let stopped = !writing
                || tokio::time::timeout(CLOSE_GRACE, writer.as_mut())
                    .await
                    .is_ok();
            writing = false;
            if let Some(queue) = stopped.then(|| writer.as_mut().take_output()).flatten() {
                parked = Box::pin(self.node.hub.park(
                    session.peer_id(),
                    session.epoch,
                    queue,
                    self.node.connection_limits.resume_grace,
                ))
                .await;
            }
        }
        if parked {
            tracing::info!(
                peer = %session.peer_id(),
                grace_ms = self.node.connection_limits.resume_grace.as_millis() as u64,
                "connection lost; session kept for a resume"
            );
        } else {
            // Tell the room at once; the close frame to a slow client may take its time
            // meanwhile.
            let detach = Box::pin(self.node.hub.detach(
                session.grant.session_id(),
                session.peer_id(),
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
        self.node.hub.metrics().closed(code);
        tracing::info!(
            peer = %session.peer_id(),
            session = %session.grant.session_id(),
            remote = %self.remote,
            room = session.room.as_deref().unwrap_or(""),
            close_code = code,
            closed_by,
            reason = reason.as_str(),
            duration_ms = self.opened.elapsed().as_millis() as u64,
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
}

/// The writing side's end, once reading stopped and the close reason is set: the frames
/// whose write failed, or (for a close frame) what is left flushed and the close frame
/// sent, or (when the client closed first) the reply to its close frame sent. Returns the queue, and the frames that may not have arrived, so a parked session
/// keeps both for its resume.
async fn finish_writing(
    mut sink: SplitSink<WebSocket, Message>,
    client_closed: bool,
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
        // The client closed: the socket queued the reply to its close frame (RFC 6455
        // section 5.5.1: the same code, or none) behind what was already written, and
        // only a write or flush sends it. Without it the client sees a reset (1006).
        _ if client_closed => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.flush()).await;
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
        if code != close::RESYNC {
            let queued = std::iter::from_fn(|| inbox.try_recv());
            for Outbound { frame, .. } in unsent.into_iter().chain(queued) {
                metrics.outbound(&frame);
                if sink.feed(Message::Text(frame)).await.is_err() {
                    break;
                }
            }
        }
        // Sent even when a frame failed: once a client's own close arrived, messages are
        // refused, and this sends the reply to its close instead.
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

/// Counts an open connection in the metrics for as long as it lives.
struct Open(Arc<Metrics>);

impl Open {
    fn count(metrics: &Arc<Metrics>) -> Self {
        metrics.connections.inc();
        Self(metrics.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}
