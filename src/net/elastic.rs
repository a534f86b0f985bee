//! Client sockets whose buffers exist only while bytes are moving.
//!
//! A node holds tens of thousands of idle WebSockets, and a buffer kept per connection is
//! most of what an idle one costs. [`ElasticStream`] reads each burst from the kernel into a
//! buffer on the stack and keeps on the heap only what the reader above it did not take
//! yet, freeing it once taken. So the WebSocket layer can ask for small reads (and keep a
//! small buffer of its own) without a system call per small read. Writes are gathered
//! until a flush and written with one system call, and the gathering buffer is freed
//! once written, so the WebSocket layer can hand each frame down at once and keep no
//! batch-sized buffer after a burst. Hand-rolled because buffered readers and writers
//! (`tokio::io::BufReader`, `BufWriter` and the like) keep their buffer for the stream's
//! life.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes taken from the kernel in one read: a whole 2 KB offer with room to spare.
const BURST_BYTES: usize = 16 * 1024;
/// Most bytes gathered before a write waits for them to reach the kernel.
const GATHER_BYTES: usize = 64 * 1024;

/// A byte stream to a client: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Hands `buf` to the kernel without waiting, as far as it goes at once.
    fn write_now(&mut self, buf: &[u8]);
}

impl Transport for TcpStream {
    fn write_now(&mut self, buf: &[u8]) {
        let _ = self.try_write(buf);
    }
}

/// A client stream that buffers only the unread rest of the last burst it received, and
/// what was written since the last flush.
pub struct ElasticStream<S: Transport = TcpStream> {
    tcp: S,
    /// Bytes received but not read yet; empty (unallocated) between bursts.
    rest: Vec<u8>,
    /// How much of `rest` was read.
    taken: usize,
    /// Bytes written but not handed to the kernel yet; empty (unallocated) once flushed.
    gathered: Vec<u8>,
}

impl<S: Transport> ElasticStream<S> {
    /// Wraps an accepted stream.
    pub fn new(tcp: S) -> Self {
        Self::with_unread(tcp, Vec::new())
    }

    /// Wraps an accepted stream from which `read` was already taken: it is read again
    /// first.
    pub fn with_unread(tcp: S, read: Vec<u8>) -> Self {
        Self {
            tcp,
            rest: read,
            taken: 0,
            gathered: Vec::new(),
        }
    }

    /// Hands what was gathered to the kernel, then frees the buffer.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.gathered))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // A partial write is rare (the kernel's buffer filled up): moving the rest
            // forward then costs less than keeping an offset in every idle connection.
            self.gathered.drain(..n);
        }
        self.gathered = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.tcp
    }
}

/// Hands what is still gathered to the kernel, without waiting: a connection may end
/// with a close reply written and not flushed, and the reply must not be lost with the
/// buffer.
impl<S: Transport> Drop for ElasticStream<S> {
    fn drop(&mut self) {
        if !self.gathered.is_empty() {
            self.tcp.write_now(&self.gathered);
        }
    }
}

impl<S: Transport> AsyncRead for ElasticStream<S> {
    /// Reads the rest of the last burst, or a new burst from the kernel.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.taken < this.rest.len() {
            let n = (this.rest.len() - this.taken).min(buf.remaining());
            buf.put_slice(&this.rest[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.rest.len() {
                this.rest = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= BURST_BYTES {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let mut landing = [MaybeUninit::<u8>::uninit(); BURST_BYTES];
        let mut landing = ReadBuf::uninit(&mut landing);
        ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut landing))?;
        let received = landing.filled();
        let n = received.len().min(buf.remaining());
        buf.put_slice(&received[..n]);
        if n < received.len() {
            this.rest = received[n..].to_vec();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Transport> AsyncWrite for ElasticStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.gathered.len() >= GATHER_BYTES {
            ready!(this.poll_write_gathered(cx))?;
        }
        // Room for all the pieces at once: a frame's header and payload arrive as two, and
        // growing for each copied the header again and allocated twice.
        let n = bufs.iter().map(|buf| buf.len()).sum();
        this.gathered.reserve(n);
        for buf in bufs {
            this.gathered.extend_from_slice(buf);
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: the elastic server side and a plain client.
    async fn pair() -> (ElasticStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (ElasticStream::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_nothing_is_kept_afterwards() {
        let (mut server, mut client) = pair().await;
        let sent: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        while got.len() < sent.len() {
            let n = server.read(&mut small).await.unwrap();
            assert!(n > 0, "the stream ended early");
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent);
        assert_eq!(server.rest.capacity(), 0, "the burst's rest was freed");
    }

    #[tokio::test]
    async fn the_first_small_read_takes_the_whole_burst_from_the_kernel() {
        let (mut server, mut client) = pair().await;
        client.write_all(&[7u8; 3000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut small = [0u8; 10];
        // Wait (bounded by the test's own deadline) until the first read sees data.
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), server.read(&mut small))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 10);
        // The rest of what the kernel had is held here, not left for one syscall per read.
        assert!(!server.rest.is_empty());
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len() + n, 3000);
        // End of stream reads as zero bytes.
        assert_eq!(server.read(&mut small).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn writes_arrive_in_order_once_flushed_and_the_buffer_is_freed() {
        let (mut server, mut client) = pair().await;
        // More than one gathering's worth, so some writes wait for the kernel.
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let writing = async {
            for chunk in sent.chunks(2100) {
                server.write_all(chunk).await.unwrap();
            }
            assert!(!server.gathered.is_empty(), "held until the flush");
            server.flush().await.unwrap();
            assert_eq!(server.gathered.capacity(), 0, "freed once written");
            server.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let reading = client.read_to_end(&mut got);
        let ((), read) = tokio::join!(writing, reading);
        read.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn dropping_writes_what_was_gathered() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"bye").await.unwrap();
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn shutting_down_writes_what_was_gathered_first() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"hello").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
    }
}
