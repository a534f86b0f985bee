//! The byte stream under an upgraded connection: the node's own client socket, taken back
//! from hyper once the `101` is out.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::net::ElasticStream;

/// A client's byte stream after the upgrade.
pub enum ClientStream {
    /// Plain TCP, as the accept loop served it (held here rather than behind hyper's
    /// boxed stream: one allocation and one indirection less per connection).
    Tcp(ElasticStream<TcpStream>),
    /// TLS, boxed: its state is over a kilobyte, and most nodes sit behind a TLS edge.
    Tls(Box<ElasticStream<TlsStream<TcpStream>>>),
    /// A connection served some other way, as hyper hands it over.
    Upgraded(TokioIo<Upgraded>),
}

impl ClientStream {
    /// The stream under `upgraded`, and whether the client sent bytes after its request
    /// that hyper read before the `101` (RFC 6455 §4.1 forbids them).
    pub fn take(upgraded: Upgraded) -> (Self, bool) {
        let upgraded = match upgraded.downcast::<TokioIo<ElasticStream<TcpStream>>>() {
            Ok(parts) => {
                let early = !parts.read_buf.is_empty();
                return (Self::Tcp(parts.io.into_inner()), early);
            }
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<ElasticStream<TlsStream<TcpStream>>>>() {
            Ok(parts) => {
                let early = !parts.read_buf.is_empty();
                (Self::Tls(Box::new(parts.io.into_inner())), early)
            }
            // Hyper replays what it read ahead, so nothing is lost.
            Err(upgraded) => (Self::Upgraded(TokioIo::new(upgraded)), false),
        }
    }
}

impl From<ElasticStream<TcpStream>> for ClientStream {
    fn from(stream: ElasticStream<TcpStream>) -> Self {
        Self::Tcp(stream)
    }
}

impl From<ElasticStream<TlsStream<TcpStream>>> for ClientStream {
    fn from(stream: ElasticStream<TlsStream<TcpStream>>) -> Self {
        Self::Tls(Box::new(stream))
    }
}

/// Runs `$call` on whichever stream this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            ClientStream::Tcp($s) => $call,
            ClientStream::Tls($s) => $call,
            ClientStream::Upgraded($s) => $call,
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Tcp(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
            ClientStream::Upgraded(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
