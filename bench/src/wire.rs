//! WebSocket and HTTP/1.1 by hand, for clients that break the rules: a WebSocket library
//! will not send an endless fragmented message or stop mid-handshake, so the soak's
//! hostile clients write their bytes themselves and read the server's frames raw.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a hostile client waits for its TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP head or frame read from the server; anything larger is an error.
const MOST_READ: usize = 1 << 20;

/// WebSocket opcodes.
pub mod opcode {
    pub use switchboard::net::websocket::frame::{CLOSE, CONTINUATION, PING, PONG, TEXT};
}

/// Opens a TCP connection to `addr`, from `source` if given, with a receive buffer of
/// `recv_buffer` bytes if given (set before connecting, so the window is small from the
/// start).
pub async fn connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    recv_buffer: Option<u32>,
) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The request line and headers of a WebSocket upgrade to `path`, without the blank line
/// that ends them.
pub fn upgrade_head(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: c29hay1ib3Jpbmcta2V5IQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
}

/// One frame from the client: masked (as RFC 6455 requires of clients), with `fin` and
/// `opcode`.
pub use switchboard::net::websocket::frame::client_frame as frame;

/// A client's close frame with `code` and no reason.
pub fn close_frame(code: u16) -> Vec<u8> {
    frame(opcode::CLOSE, true, &code.to_be_bytes())
}

/// A frame from the server.
pub struct Frame {
    /// Its opcode.
    pub opcode: u8,
    /// Its payload (unmasked: servers do not mask).
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Bytes from the server, read as an HTTP head first and frames after.
pub struct Incoming<R> {
    reader: R,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Incoming<R> {
    /// Reads from `reader`.
    pub fn new(reader: R) -> Self {
        Incoming {
            reader,
            buffer: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; an end of stream is an `UnexpectedEof` error.
    async fn fill(&mut self) -> io::Result<()> {
        if self.buffer.len() > MOST_READ {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too much data"));
        }
        let mut chunk = [0u8; 4096];
        match self.reader.read(&mut chunk).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// The status code of the next HTTP response head; its body, if any, is left unread.
    pub async fn status(&mut self) -> io::Result<u16> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 4);
                return head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not HTTP"));
            }
            self.fill().await?;
        }
    }

    /// The next frame.
    pub async fn frame(&mut self) -> io::Result<Frame> {
        loop {
            if let Some((opcode, start, len)) = parse_header(&self.buffer) {
                if len > MOST_READ {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "frame too large",
                    ));
                }
                if self.buffer.len() >= start + len {
                    let payload = self.buffer[start..start + len].to_vec();
                    self.buffer.drain(..start + len);
                    return Ok(Frame { opcode, payload });
                }
            }
            self.fill().await?;
        }
    }

    /// Reads and discards until the end of the stream.
    pub async fn drain(&mut self) -> io::Result<()> {
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        while self.reader.read(&mut chunk).await? > 0 {}
        Ok(())
    }
}

/// Opcode, payload offset and payload length of the frame at the start of `bytes`, once
/// its header has arrived.
fn parse_header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let masked = second & 0x80 != 0;
    let (len, mut start) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as u64,
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if masked {
        start += 4;
    }
    Some((
        first & 0x0f,
        start,
        usize::try_from(len).unwrap_or(usize::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_the_reader_once_unmasked() {
        for size in [0, 5, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let masked = frame(opcode::TEXT, true, &payload);
            // A server's frame is the same without the mask bit and key.
            let (_, start, len) = parse_header(&masked).unwrap();
            assert_eq!(len, size);
            let mut unmasked = masked[..start - 4].to_vec();
            unmasked[1] &= 0x7f;
            unmasked.extend_from_slice(&payload);
            let mut close = vec![0x88, 2];
            close.extend_from_slice(&4003u16.to_be_bytes());
            unmasked.extend_from_slice(&close);
            let mut incoming = Incoming::new(&unmasked[..]);
            let got = incoming.frame().await.unwrap();
            assert_eq!((got.opcode, got.payload), (opcode::TEXT, payload));
            assert_eq!(incoming.frame().await.unwrap().close_code(), Some(4003));
            assert!(incoming.frame().await.is_err());
        }
    }

    #[tokio::test]
    async fn a_status_line_is_read_and_the_rest_kept() {
        let bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        let mut incoming = Incoming::new(&bytes[..]);
        assert_eq!(incoming.status().await.unwrap(), 101);
        assert_eq!(incoming.frame().await.unwrap().payload, b"hi");
    }
}
