//! One server-side WebSocket: the client's messages as a [`Stream`], frames to it as a
//! [`Sink`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes};
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::frame::{self, Head, MAX_CLIENT_HEAD};
use super::stream::ClientStream;
use super::{CloseFrame, MAX_FRAGMENTS, Message, Utf8Bytes, WsError};

/// A WebSocket over an upgraded client connection (or any byte stream, for tests).
///
/// It keeps no buffer between messages: a frame's payload is allocated at its final size
/// once its header arrives, and a frame to send is written from the message's own bytes.
/// What exists only meanwhile (a frame being read, a fragmented message, an owed pong)
/// is boxed, so an idle connection carries none of its space.
pub struct WebSocket<S = ClientStream> {
    io: S,
    max_message: usize,
    /// Bytes read beyond the last frame: the next header, and perhaps more.
    ahead: [u8; MAX_CLIENT_HEAD],
    ahead_len: u8,
    /// The client's close frame arrived.
    peer_closed: bool,
    /// The server's close frame was handed to [`Sink::start_send`].
    closed_by_us: bool,
    /// Reading is over: the stream ended, failed or finished the closing handshake.
    read_ended: bool,
    /// The client sent frames before it had the `101`; reading fails at once.
    early_data: bool,
    /// Continuation frames read since [`WebSocket::take_continuations`] last asked.
    continuations: u32,
    /// The frame whose payload is arriving.
    reading: Option<Box<Frame>>,
    /// A message whose later fragments are still to come.
    partial: Option<Box<Partial>>,
    /// The pong to the client's latest ping, or the reply to its close: written before
    /// anything else, at the next write or flush.
    owed: Option<Box<Outgoing>>,
    /// The frame [`Sink::start_send`] was given, until it is written.
    queued: Option<Outgoing>,
}

/// A client frame: its header and its payload, read so far into a buffer of the payload's
/// size (allocated, not zeroed: zero-filling each payload before reading over it was a
/// tenth of the instructions the node spent per relayed offer).
struct Frame {
    head: Head,
    payload: Vec<u8>,
}

/// A message that arrives in fragments.
struct Partial {
    opcode: u8,
    /// Frames of it so far.
    frames: u16,
    bytes: Vec<u8>,
}

/// A frame on its way to the client. Its header is made again for each write attempt
/// (a few instructions) rather than kept: two of these live in every connection.
struct Outgoing {
    payload: Bytes,
    opcode: u8,
    /// Bytes of header and payload written so far.
    written: u32,
}

impl Outgoing {
    fn new(opcode: u8, payload: Bytes) -> Self {
        Self {
            payload,
            opcode,
            written: 0,
        }
    }

    fn close(frame: Option<&CloseFrame>) -> Self {
        let payload = match frame {
            Some(f) => {
                let mut bytes = Vec::with_capacity(2 + f.reason.len());
                bytes.extend_from_slice(&f.code.to_be_bytes());
                bytes.extend_from_slice(f.reason.as_bytes());
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        Self::new(frame::CLOSE, payload)
    }

    /// Writes what is left of the frame, as far as `io` takes it.
    fn poll_write(
        &mut self,
        io: &mut (impl AsyncWrite + Unpin),
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let (head, head_len) = frame::server_head(self.opcode, self.payload.len());
        let head_len = usize::from(head_len);
        loop {
            let written = self.written as usize;
            if written >= head_len + self.payload.len() {
                return Poll::Ready(Ok(()));
            }
            let n = if written < head_len {
                let bufs = [
                    IoSlice::new(&head[written..head_len]),
                    IoSlice::new(&self.payload),
                ];
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?
            } else {
                let rest = &self.payload[written - head_len..];
                ready!(Pin::new(&mut *io).poll_write(cx, rest))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // Frames are at most `MAX_MESSAGE_BYTES` (far below 4 GiB).
            self.written += n as u32;
        }
    }
}

impl WebSocket {
    /// The WebSocket over a connection whose `101` is out.
    pub fn upgraded(upgraded: Upgraded, max_message: usize) -> Self {
        let (io, early_data) = ClientStream::take(upgraded);
        Self::answered(io, early_data, max_message)
    }

    /// The WebSocket over `io` once its `101` is out; `early_data` when the client sent
    /// bytes before it (RFC 6455 §4.1 forbids them: the first read fails).
    pub fn answered(io: ClientStream, early_data: bool, max_message: usize) -> Self {
        Self {
            early_data,
            ..Self::new(io, max_message)
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// A WebSocket whose handshake is done, taking messages of up to `max_message` bytes.
    pub fn new(io: S, max_message: usize) -> Self {
        Self {
            io,
            max_message,
            ahead: [0; MAX_CLIENT_HEAD],
            ahead_len: 0,
            peer_closed: false,
            closed_by_us: false,
            read_ended: false,
            early_data: false,
            continuations: 0,
            reading: None,
            partial: None,
            owed: None,
            queued: None,
        }
    }

    /// Continuation frames read since the last call: the connection charges them against
    /// its message rate with the message they belong to (a frame is a frame, whether it
    /// is handed up or folded into a message).
    pub fn take_continuations(&mut self) -> u32 {
        std::mem::take(&mut self.continuations)
    }

    /// Reads the next whole frame, its payload unmasked; `None` at the end of the stream.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Box<Frame>>, WsError>> {
        loop {
            if let Some(frame) = &mut self.reading {
                let rest = frame.head.len as usize - frame.payload.len();
                if rest > 0 {
                    // At most the rest of this payload: what follows is the next frame's.
                    let mut buf = (&mut frame.payload).limit(rest);
                    let read = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut buf))?;
                    if read == 0 {
                        return Poll::Ready(Ok(None));
                    }
                    continue;
                }
                let mut frame = self.reading.take().expect("a frame is being read");
                frame::unmask(&mut frame.payload, frame.head.mask);
                return Poll::Ready(Ok(Some(frame)));
            }
            let ahead_len = usize::from(self.ahead_len);
            match Head::parse(&self.ahead[..ahead_len])? {
                Some(head) => self.begin(head)?,
                None => {
                    let mut buf = ReadBuf::new(&mut self.ahead[ahead_len..]);
                    ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
                    match buf.filled().len() {
                        0 => return Poll::Ready(Ok(None)),
                        n => self.ahead_len += n as u8,
                    }
                }
            }
        }
    }

    /// Starts reading the payload of the frame `head` announces, with the bytes of it
    /// already read.
    fn begin(&mut self, head: Head) -> Result<(), WsError> {
        let so_far = match self.partial.as_deref_mut() {
            Some(partial) if head.opcode == frame::CONTINUATION => {
                partial.frames += 1;
                if partial.frames > MAX_FRAGMENTS {
                    return Err(WsError::TooManyFragments);
                }
                partial.bytes.len() as u64
            }
            _ => 0,
        };
        if so_far.saturating_add(head.len) > self.max_message as u64 {
            return Err(WsError::TooBig);
        }
        let mut payload = Vec::with_capacity(head.len as usize);
        let ahead_len = usize::from(self.ahead_len);
        let here = (ahead_len - head.size).min(head.len as usize);
        payload.extend_from_slice(&self.ahead[head.size..head.size + here]);
        self.ahead.copy_within(head.size + here..ahead_len, 0);
        self.ahead_len = (ahead_len - head.size - here) as u8;
        self.reading = Some(Box::new(Frame { head, payload }));
        Ok(())
    }

    /// What a whole frame means: a message to hand up, or `None` for a fragment of one.
    fn on_frame(&mut self, Frame { head, payload, .. }: Frame) -> Result<Option<Message>, WsError> {
        if self.peer_closed {
            return Err(WsError::Protocol("a frame after the close frame"));
        }
        let message = match head.opcode {
            frame::PING => {
                let payload = Bytes::from(payload);
                // No pong once the server has said goodbye.
                if !self.closed_by_us {
                    self.owed = Some(Box::new(Outgoing::new(frame::PONG, payload.clone())));
                }
                Message::Ping(payload)
            }
            frame::PONG => Message::Pong(Bytes::from(payload)),
            frame::CLOSE => return self.on_close(payload).map(Some),
            frame::CONTINUATION => {
                let Some(partial) = self.partial.as_deref_mut() else {
                    return Err(WsError::Protocol("a continuation frame starts no message"));
                };
                self.continuations += 1;
                partial.bytes.extend_from_slice(&payload);
                if !head.fin {
                    return Ok(None);
                }
                let Partial { opcode, bytes, .. } =
                    *self.partial.take().expect("a message is in fragments");
                data_message(opcode, bytes)?
            }
            opcode => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol(
                        "a new message began before the last one ended",
                    ));
                }
                if !head.fin {
                    self.partial = Some(Box::new(Partial {
                        opcode,
                        frames: 1,
                        bytes: payload,
                    }));
                    return Ok(None);
                }
                data_message(opcode, payload)?
            }
        };
        Ok(Some(message))
    }

    /// The client's close frame: answered with the same code (or with 1002 for a code no
    /// endpoint may send), unless it answers the server's.
    fn on_close(&mut self, payload: Vec<u8>) -> Result<Message, WsError> {
        let frame = match payload.len() {
            0 => None,
            1 => return Err(WsError::Protocol("a close frame's code is one byte long")),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = Utf8Bytes::try_from(Bytes::from(payload).slice(2..))
                    .map_err(|_| WsError::Utf8)?;
                Some(CloseFrame { code, reason })
            }
        };
        let frame = frame.map(|f| match frame::close_code_allowed(f.code) {
            true => f,
            false => CloseFrame {
                code: super::PROTOCOL_ERROR,
                reason: Utf8Bytes::from_static("Protocol violation"),
            },
        });
        self.peer_closed = true;
        if !self.closed_by_us {
            self.owed = Some(Box::new(Outgoing::close(frame.as_ref())));
        }
        Ok(Message::Close(frame))
    }

    /// Writes the owed control frame and the queued one, as far as the stream takes them.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(out) = &mut self.owed {
            ready!(out.poll_write(&mut self.io, cx))?;
            self.owed = None;
        }
        if let Some(out) = &mut self.queued {
            ready!(out.poll_write(&mut self.io, cx))?;
            self.queued = None;
        }
        Poll::Ready(Ok(()))
    }
}

/// A whole text or binary message.
fn data_message(opcode: u8, bytes: Vec<u8>) -> Result<Message, WsError> {
    let bytes = Bytes::from(bytes);
    match opcode {
        frame::TEXT => Utf8Bytes::try_from(bytes)
            .map(Message::Text)
            .map_err(|_| WsError::Utf8),
        _ => Ok(Message::Binary(bytes)),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, WsError>;

    /// The client's next message; `None` once the stream ended or the closing handshake
    /// is complete. An error ends reading too.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.early_data) {
            this.read_ended = true;
            return Poll::Ready(Some(Err(WsError::EarlyData)));
        }
        loop {
            if this.read_ended {
                return Poll::Ready(None);
            }
            let read = ready!(this.poll_frame(cx))
                .and_then(|frame| frame.map(|frame| this.on_frame(*frame)).transpose());
            match read {
                Ok(Some(None)) => {}
                Ok(Some(Some(message))) => {
                    this.read_ended = this.peer_closed && this.closed_by_us;
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {
                    this.read_ended = true;
                    return Poll::Ready(None);
                }
                Err(e) => {
                    this.read_ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(ready!(self.get_mut().poll_write_pending(cx))?))
    }

    /// Queues `message`. Once either side has sent its close frame, a further close is
    /// a no-op and anything else an error.
    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        if this.peer_closed || this.closed_by_us {
            return match message {
                Message::Close(_) => Ok(()),
                _ => Err(WsError::Closed),
            };
        }
        let out = match message {
            Message::Text(text) => Outgoing::new(frame::TEXT, Bytes::from(text)),
            Message::Binary(bytes) => Outgoing::new(frame::BINARY, bytes),
            Message::Ping(bytes) => Outgoing::new(frame::PING, bytes),
            Message::Pong(bytes) => Outgoing::new(frame::PONG, bytes),
            Message::Close(frame) => {
                this.closed_by_us = true;
                Outgoing::close(frame.as_ref())
            }
        };
        debug_assert!(this.queued.is_none(), "start_send without poll_ready");
        this.queued = Some(out);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        Poll::Ready(Ok(ready!(Pin::new(&mut this.io).poll_flush(cx))?))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        Poll::Ready(Ok(ready!(Pin::new(&mut this.io).poll_shutdown(cx))?))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    use super::frame::client_frame;

    fn socket(max_message: usize) -> (WebSocket<DuplexStream>, DuplexStream) {
        let (server, client) = duplex(1 << 20);
        (WebSocket::new(server, max_message), client)
    }

    /// Every wait is bounded: a socket that broke hangs no test.
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

    /// Reads what the server wrote so far (the client side is never closed here).
    async fn written(client: &mut DuplexStream) -> Vec<u8> {
        let mut bytes = vec![0; 1 << 16];
        let read = tokio::time::timeout(DEADLINE, client.read(&mut bytes));
        let n = read.await.expect("the server wrote within 5 s").unwrap();
        bytes.truncate(n);
        bytes
    }

    /// The socket's next message, within the deadline.
    async fn next(ws: &mut WebSocket<DuplexStream>) -> Option<Result<Message, WsError>> {
        let next = tokio::time::timeout(DEADLINE, ws.next());
        next.await.expect("the socket answered within 5 s")
    }

    fn text(s: &str) -> Message {
        Message::Text(Utf8Bytes::from(s))
    }

    #[tokio::test]
    async fn frames_arrive_whole_however_the_bytes_are_split() {
        let (mut ws, mut client) = socket(1 << 16);
        let offer = "o".repeat(2048);
        let mut wire = client_frame(frame::TEXT, true, offer.as_bytes());
        wire.extend(client_frame(frame::TEXT, true, b"{}"));
        wire.extend(client_frame(frame::BINARY, true, b""));
        // Byte by byte for the first frame, then the rest (two frames) in one write.
        for byte in &wire[..2056] {
            client.write_all(&[*byte]).await.unwrap();
        }
        client.write_all(&wire[2056..]).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), text(&offer));
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), text("{}"));
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::Binary(Bytes::new())
        );
        drop(client);
        assert!(
            next(&mut ws).await.is_none(),
            "the end of the stream ends it"
        );
    }

    #[tokio::test]
    async fn fragments_make_one_message_and_a_ping_between_them_is_answered() {
        let (mut ws, mut client) = socket(1 << 16);
        let mut wire = client_frame(frame::TEXT, false, b"hel");
        wire.extend(client_frame(frame::PING, true, b"p1"));
        wire.extend(client_frame(frame::CONTINUATION, false, b"lo "));
        wire.extend(client_frame(frame::CONTINUATION, true, "wörld".as_bytes()));
        client.write_all(&wire).await.unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::Ping(Bytes::from_static(b"p1"))
        );
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), text("hello wörld"));
        // The pong goes out with the next flush, unmasked.
        ws.flush().await.unwrap();
        assert_eq!(written(&mut client).await, [0x8A, 2, b'p', b'1']);
    }

    #[tokio::test]
    async fn continuation_frames_are_counted_and_a_65th_frame_is_refused() {
        let (mut ws, mut client) = socket(1 << 16);
        let mut wire = client_frame(frame::TEXT, false, b"a");
        wire.extend(client_frame(frame::CONTINUATION, false, b"b"));
        wire.extend(client_frame(frame::CONTINUATION, true, b"c"));
        client.write_all(&wire).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), text("abc"));
        assert_eq!(ws.take_continuations(), 2);
        assert_eq!(ws.take_continuations(), 0, "taken once");

        let mut wire = client_frame(frame::TEXT, false, b"");
        for _ in 0..MAX_FRAGMENTS {
            wire.extend(client_frame(frame::CONTINUATION, false, b""));
        }
        client.write_all(&wire).await.unwrap();
        assert!(matches!(
            next(&mut ws).await,
            Some(Err(WsError::TooManyFragments))
        ));
        assert_eq!(ws.take_continuations(), u32::from(MAX_FRAGMENTS) - 1);
    }

    #[tokio::test]
    async fn only_the_latest_ping_is_answered_and_before_the_next_frame() {
        let (mut ws, mut client) = socket(1 << 16);
        let mut wire = client_frame(frame::PING, true, b"a");
        wire.extend(client_frame(frame::PING, true, b"b"));
        client.write_all(&wire).await.unwrap();
        next(&mut ws).await.unwrap().unwrap();
        next(&mut ws).await.unwrap().unwrap();
        ws.send(text("x")).await.unwrap();
        assert_eq!(written(&mut client).await, [0x8A, 1, b'b', 0x81, 1, b'x']);
    }

    #[tokio::test]
    async fn a_frame_longer_than_a_message_may_be_is_refused_before_its_payload() {
        let (mut ws, mut client) = socket(100);
        // Only the header is sent: the refusal must not wait for (or allocate) 1 MB.
        let wire = client_frame(frame::TEXT, true, &vec![b'a'; 1 << 20]);
        client.write_all(&wire[..14]).await.unwrap();
        assert!(matches!(next(&mut ws).await, Some(Err(WsError::TooBig))));
        assert!(next(&mut ws).await.is_none(), "an error ends reading");

        let (mut ws, mut client) = socket(100);
        let mut wire = client_frame(frame::TEXT, false, &[b'a'; 60]);
        wire.extend(client_frame(frame::CONTINUATION, true, &[b'a'; 60]));
        client.write_all(&wire).await.unwrap();
        assert!(matches!(next(&mut ws).await, Some(Err(WsError::TooBig))));
    }

    #[tokio::test]
    async fn broken_sequences_and_bad_text_are_refused() {
        type Expected = fn(&WsError) -> bool;
        let protocol: Expected = |e| matches!(e, WsError::Protocol(_));
        let utf8: Expected = |e| matches!(e, WsError::Utf8);
        let cases = [
            (
                "a continuation with nothing to continue",
                client_frame(frame::CONTINUATION, true, b"x"),
                protocol,
            ),
            (
                "a new message inside a fragmented one",
                [
                    client_frame(frame::TEXT, false, b"a"),
                    client_frame(frame::TEXT, true, b"b"),
                ]
                .concat(),
                protocol,
            ),
            (
                "text that is not UTF-8",
                client_frame(frame::TEXT, true, &[0xC3, 0x28]),
                utf8,
            ),
            (
                "a close code of one byte",
                client_frame(frame::CLOSE, true, &[3]),
                protocol,
            ),
            (
                "a close reason that is not UTF-8",
                client_frame(frame::CLOSE, true, &[3, 232, 0xFF]),
                utf8,
            ),
        ];
        for (what, wire, expected) in cases {
            let (mut ws, mut client) = socket(1 << 16);
            client.write_all(&wire).await.unwrap();
            match next(&mut ws).await {
                Some(Err(e)) if expected(&e) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_close_is_echoed_and_then_nothing_else_is_sent() {
        let (mut ws, mut client) = socket(1 << 16);
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        client
            .write_all(&client_frame(frame::CLOSE, true, &payload))
            .await
            .unwrap();
        let expected = CloseFrame {
            code: 4000,
            reason: "bye".into(),
        };
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::Close(Some(expected.clone()))
        );
        assert!(matches!(ws.send(text("late")).await, Err(WsError::Closed)));
        // The server's own close is then a no-op; the flush sends the echo.
        ws.send(Message::Close(None)).await.unwrap();
        assert_eq!(
            written(&mut client).await,
            [0x88, 5, 0x0F, 0xA0, b'b', b'y', b'e']
        );
    }

    #[tokio::test]
    async fn a_close_code_no_endpoint_may_send_is_answered_with_1002() {
        let (mut ws, mut client) = socket(1 << 16);
        client
            .write_all(&client_frame(frame::CLOSE, true, &1005u16.to_be_bytes()))
            .await
            .unwrap();
        let Some(Ok(Message::Close(Some(frame)))) = next(&mut ws).await else {
            panic!("a close frame");
        };
        assert_eq!(frame.code, 1002);
        ws.flush().await.unwrap();
        let answer = written(&mut client).await;
        assert_eq!(&answer[..4], &[0x88, 20, 0x03, 0xEA]);
    }

    #[tokio::test]
    async fn after_the_servers_close_reading_ends_with_the_clients_reply() {
        let (mut ws, mut client) = socket(1 << 16);
        ws.send(Message::Close(Some(CloseFrame {
            code: 1012,
            reason: "restart".into(),
        })))
        .await
        .unwrap();
        assert_eq!(written(&mut client).await[..4], [0x88, 9, 0x03, 0xF4]);
        assert!(matches!(ws.send(text("late")).await, Err(WsError::Closed)));
        // What the client sent before it saw the close is still read, then its reply;
        // a ping meanwhile is not answered.
        let mut wire = client_frame(frame::TEXT, true, b"{}");
        wire.extend(client_frame(frame::PING, true, b""));
        wire.extend(client_frame(frame::CLOSE, true, &1012u16.to_be_bytes()));
        client.write_all(&wire).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), text("{}"));
        assert!(matches!(next(&mut ws).await, Some(Ok(Message::Ping(_)))));
        assert!(matches!(
            next(&mut ws).await,
            Some(Ok(Message::Close(Some(_))))
        ));
        assert!(
            next(&mut ws).await.is_none(),
            "the closing handshake is complete"
        );
        ws.flush().await.unwrap();
        drop(ws);
        assert!(
            written(&mut client).await.is_empty(),
            "no pong, no second close"
        );
    }
}
