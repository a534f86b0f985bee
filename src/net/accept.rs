//! The accept loop: every TCP connection gets HTTP/1.1 (over TLS when configured, its
//! handshake due within `HEAD_TIMEOUT`) with a deadline for each request head
//! (`HEAD_TIMEOUT`) and one for becoming a WebSocket (`UPGRADE_TIMEOUT`), counts as
//! pending until it upgrades ([`Pending`]), and running out of file descriptors sheds the
//! oldest pending connections instead of stopping the node.
//!
//! Our own loop rather than `axum::serve`, which exposes no HTTP settings (so no head
//! timeout) and pauses a whole second on every failed accept. Modelled on it: one task per
//! connection, graceful shutdown by a watch channel, the client address handed to handlers
//! as axum's `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use futures_util::future::BoxFuture;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use super::elastic::{ElasticStream, Transport};
use super::head::{self, RequestHead};
use super::pending::{Pending, Shed, Ticket};
use super::tls::TlsAcceptor;
use super::websocket::ClientStream;
use crate::telemetry::Metrics;

/// How long a response in flight when `UPGRADE_TIMEOUT` passes may take to finish.
const FINISH_GRACE: Duration = Duration::from_secs(1);
/// Oldest pending connections closed each time an accept finds no file descriptor left:
/// enough that the next accepts (a health check among them) go through at full speed.
const SHED_WHEN_OUT_OF_FILES: usize = 32;
/// Pause after shedding for lack of descriptors, so the shed connections' tasks run and
/// give their descriptors back before the next accept.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(10);
/// Pause after any other failed accept, so a persistent failure does not spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning per this long about failing accepts.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// Most bytes of one request head held while it arrives (hyper's default is about 400 KiB):
/// a token in the query (at most 4 KiB) and browser headers fit many times over. A head
/// still incomplete at this size gets 431; the read that crosses it may bring up to as much
/// again, so a pending connection pins at most about 64 KiB until `HEAD_TIMEOUT`.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// One kind of request served without hyper or the router when it is a connection's
/// first. Hyper's connection state, request and upgrade machinery, and the router's
/// layers (routing, the access-log middleware, extractors cloning the headers, the boxed
/// route services cloned per request) cost a WebSocket upgrade, which ends the HTTP
/// exchange at once, more than its own checks; a request that common can skip them.
pub trait Shortcut: Send + Sync + 'static {
    /// The path whose `GET` this answers.
    fn path(&self) -> &'static str;
    /// Answers `request` from `remote`, the first on `stream`, as the router's route for
    /// it would; nothing more is served on `stream` over HTTP.
    fn serve(
        &self,
        request: RequestHead,
        stream: ClientStream,
        remote: SocketAddr,
    ) -> BoxFuture<'static, ()>;
}

/// One route answered without the router, on connections hyper serves: its requests are
/// taken before the router sees them, so they skip its routing and the route services it
/// clones for every request.
pub trait RouteShortcut: Send + Sync + 'static {
    /// Whether this answers `request`.
    fn takes(&self, request: &Request<Incoming>) -> bool;
    /// Answers `request`, as the router's route for it would.
    fn serve(&self, request: Request<Incoming>) -> BoxFuture<'static, Response>;
}

/// What the accept loop answers without the router.
#[derive(Default, Clone)]
pub struct Shortcuts {
    /// A connection's first request, before hyper.
    pub first: Option<Arc<dyn Shortcut>>,
    /// One route, on connections hyper serves.
    pub route: Option<Arc<dyn RouteShortcut>>,
}

/// The deadlines of a connection's HTTP phase.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Longest wait for a request head.
    pub head: Duration,
    /// Longest from accept to a completed WebSocket upgrade.
    pub upgrade: Duration,
}

/// Serves `router` (and `shortcuts` before it) on `listener` (over TLS when `tls` is given)
/// until `shutdown` resolves, then closes idle connections, lets requests in flight
/// finish, and returns once every connection not yet upgraded is gone (upgraded WebSockets
/// are the router's to close).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shortcuts: Shortcuts,
    tls: Option<TlsAcceptor>,
    pending: Arc<Pending>,
    deadlines: Deadlines,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shortcuts = Arc::new(shortcuts);
    let (stopping, stop_signal) = watch::channel(false);
    let (all_done, done) = watch::channel(());
    let mut failing = Failing::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((tcp, remote)) => {
                let ticket = pending.admit(remote.ip());
                let connection = Connection {
                    remote,
                    accepted: Instant::now(),
                    ticket,
                    router: router.clone(),
                    shortcuts: shortcuts.clone(),
                    deadlines,
                    metrics: metrics.clone(),
                    stopping: stop_signal.clone(),
                    _done: done.clone(),
                };
                tokio::spawn(connection.serve(tcp, tls.clone()));
            }
            // The client gave up between its SYN and our accept: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) if is_out_of_files(&e) => {
                let shed = pending.shed_oldest(SHED_WHEN_OUT_OF_FILES, Shed::OutOfFiles);
                failing.warn(&e, shed, pending.len());
                let pause = if shed > 0 {
                    OUT_OF_FILES_PAUSE
                } else {
                    ERROR_PAUSE
                };
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                failing.warn(&e, 0, pending.len());
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    // No new connections from here; those in progress end gracefully.
    drop(listener);
    let _ = stopping.send(true);
    drop(done);
    all_done.closed().await;
    Ok(())
}

/// Connections the kernel may hold completed for the accept loop (capped by
/// `net.core.somaxconn`, 4096 on current kernels). tokio's default is 1024: a burst of
/// connections beyond it while the loop is busy has its handshakes dropped, and the
/// clients only notice after a minute of retransmitted SYN-ACKs.
const BACKLOG: u32 = 4096;

/// A listening socket on `addr` with a backlog of [`BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it, so a restarted node can listen at once).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// One accepted connection, until it upgrades or closes.
struct Connection {
    remote: SocketAddr,
    accepted: Instant,
    /// Its place among the pending connections, freed when this ends.
    ticket: Ticket,
    router: Router,
    shortcuts: Arc<Shortcuts>,
    deadlines: Deadlines,
    metrics: Arc<Metrics>,
    /// Turns true when the server stops.
    stopping: watch::Receiver<bool>,
    /// Dropped when this ends; the server waits for every one.
    _done: watch::Receiver<()>,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        // No Nagle delay on client sockets: a relayed message must not wait for the ACK of
        // the one before it (a 40 ms stall at the tail otherwise).
        let _ = tcp.set_nodelay(true);
        match tls {
            None => self.http(tcp).await,
            // Boxed: a TLS connection's future is several KB larger, and a plain one's
            // would be as large (and be moved as such when spawned) otherwise.
            Some(tls) => Box::pin(self.serve_tls(tcp, tls)).await,
        }
    }

    /// The TLS handshake (within the request-head deadline), then HTTP over it.
    async fn serve_tls(mut self, tcp: TcpStream, tls: TlsAcceptor) {
        if *self.stopping.borrow() {
            return;
        }
        // The handshake is the first thing a slowloris can stall: it counts as pending
        // (the ticket is held) and is due within the request-head deadline.
        let deadline = tokio::time::sleep_until(self.accepted + self.deadlines.head);
        let handshake = tokio::select! {
            done = tls.accept(tcp) => done,
            () = deadline => {
                self.metrics.cut("head_timeout");
                return;
            }
            _ = &mut self.ticket.shed => return,
            _ = self.stopping.changed() => return,
        };
        match handshake {
            Ok(stream) => self.http(stream).await,
            // Plain HTTP, a scanner, a client distrusting the certificate: nothing to serve.
            Err(e) => tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed"),
        }
    }

    async fn http<S>(mut self, mut stream: S)
    where
        S: Transport + Send + 'static,
        ClientStream: From<ElasticStream<S>>,
    {
        let mut read = Vec::new();
        if let Some(shortcut) = self.shortcuts.first.clone() {
            let Some(first) = self.first_head(&mut stream).await else {
                return;
            };
            match RequestHead::get(first, shortcut.path()) {
                Ok(request) => {
                    let stream = ElasticStream::new(stream).into();
                    let answer = shortcut.serve(request, stream, self.remote);
                    return self.answer(answer).await;
                }
                Err(first) => read = first,
            }
        }
        // Boxed: hyper's connection state would otherwise make every connection's future
        // (an upgrade's too, which never reaches it) that much larger, and every move of
        // it that much longer.
        Box::pin(self.hyper(stream, read)).await;
    }

    /// Serves HTTP/1.1 on `stream` with hyper, which reads `read` first.
    async fn hyper<S>(mut self, stream: S, read: Vec<u8>)
    where
        S: Transport + Send + 'static,
    {
        // Hyper reads again what was read here.
        let io = TokioIo::new(ElasticStream::with_unread(stream, read));
        let remote = self.remote;
        let router = self.router.clone();
        let shortcut = self.shortcuts.route.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            let shortcut = shortcut.as_ref().filter(|s| s.takes(&request)).cloned();
            // A router is always ready, and its clone is a reference count.
            let mut router = router.clone();
            crate::telemetry::access_logged(remote, request, move |request| async move {
                match shortcut {
                    Some(shortcut) => shortcut.serve(request).await,
                    None => match router.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                }
            })
        });
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.deadlines.head)
            .max_buf_size(MAX_HEAD_BYTES);
        let conn = http.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let deadline = tokio::time::sleep_until(self.accepted + self.deadlines.upgrade);
        tokio::pin!(deadline);
        let mut overdue = false;
        let mut stopping = *self.stopping.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served && e.is_timeout() {
                        self.metrics.cut("head_timeout");
                    }
                    return;
                }
                // Counted where it was shed; dropping the connection closes the socket.
                _ = &mut self.ticket.shed => return,
                () = &mut deadline => {
                    if overdue {
                        return;
                    }
                    overdue = true;
                    self.metrics.cut("upgrade_timeout");
                    // Closes an idle connection now, or once the response in flight is out.
                    conn.as_mut().graceful_shutdown();
                    deadline.as_mut().reset(Instant::now() + FINISH_GRACE);
                }
                _ = self.stopping.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// The connection's first request head, read within its deadlines as hyper would read
    /// it; `None` when the connection is to close instead.
    async fn first_head<S: Transport>(&mut self, stream: &mut S) -> Option<Vec<u8>> {
        if *self.stopping.borrow() {
            return None;
        }
        // One timer, for whichever deadline comes first.
        let (due, reason) = if self.deadlines.head <= self.deadlines.upgrade {
            (self.deadlines.head, "head_timeout")
        } else {
            (self.deadlines.upgrade, "upgrade_timeout")
        };
        tokio::select! {
            read = head::read_first(stream, MAX_HEAD_BYTES) => read.ok(),
            () = tokio::time::sleep_until(self.accepted + due) => {
                self.metrics.cut(reason);
                None
            }
            _ = &mut self.ticket.shed => None,
            _ = self.stopping.changed() => None,
        }
    }

    /// Waits for a shortcut's `answer`, as for a request hyper serves: past
    /// `UPGRADE_TIMEOUT` it gets [`FINISH_GRACE`] more. A stopping server lets it finish.
    async fn answer(mut self, answer: BoxFuture<'static, ()>) {
        tokio::pin!(answer);
        tokio::select! {
            () = &mut answer => return,
            _ = &mut self.ticket.shed => return,
            () = tokio::time::sleep_until(self.accepted + self.deadlines.upgrade) => {
                self.metrics.cut("upgrade_timeout");
            }
        }
        tokio::select! {
            () = answer => {}
            _ = &mut self.ticket.shed => {}
            () = tokio::time::sleep(FINISH_GRACE) => {}
        }
    }
}

/// Accept failures of one connection that the next accept does not share.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The process or the system has no file descriptor (or socket buffer) left for a new
/// connection.
fn is_out_of_files(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// Failing accepts, logged at most once per [`WARN_EVERY`].
#[derive(Default)]
struct Failing {
    last_warned: Option<Instant>,
    /// Failures since the last warning.
    unreported: u64,
}

impl Failing {
    fn warn(&mut self, e: &io::Error, shed: usize, pending: usize) {
        self.unreported += 1;
        let now = Instant::now();
        if self.last_warned.is_some_and(|at| now - at < WARN_EVERY) {
            return;
        }
        self.last_warned = Some(now);
        let failures = std::mem::take(&mut self.unreported);
        if is_out_of_files(e) {
            tracing::warn!(
                error = %e,
                failures,
                shed,
                pending,
                "out of file descriptors: closing the oldest pending connections and accepting on; \
                 raise the open-file limit or lower MAX_PENDING_CONNECTIONS if this persists"
            );
        } else {
            tracing::warn!(error = %e, failures, "accepting a connection failed; retrying");
        }
    }
}
