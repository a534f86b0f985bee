//! Counts the WebSocket frames a client sends, beneath the WebSocket layer.
//!
//! The WebSocket layer ([`super::websocket`]) assembles a fragmented message out of sight: the connection sees one message
//! however many continuation frames made it, so a client could send empty continuation
//! frames for ever and never be counted. The meter watches the bytes the client sends, from
//! the server's `101` on, reads each frame's header (the payload is skipped, never kept)
//! and stops the stream when a message takes more than [`MAX_FRAGMENTS`] frames. It adds
//! every continuation frame to the connection's [`FrameTally`], which the connection
//! charges against its message rate with the message they belong to: a frame is a frame,
//! whether the WebSocket layer hands it up or folds it into a message.
//!
//! It keeps a few dozen bytes of state per connection and allocates nothing. It knows
//! HTTP/1.1 upgrades only: the server is built without axum's `http2` feature, and a
//! WebSocket over HTTP/2 (RFC 8441) would pass it unmetered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Most frames one message may arrive in; the next one closes the connection (1009).
pub const MAX_FRAGMENTS: u16 = 64;

/// Continuation frames a client sent that no one has charged yet, shared by the meter
/// (beneath the WebSocket layer) and the connection (above it).
#[derive(Debug, Clone, Default)]
pub struct FrameTally(Arc<AtomicU32>);

impl FrameTally {
    /// Adds `frames` continuation frames.
    pub(super) fn add(&self, frames: u32) {
        self.0.fetch_add(frames, Ordering::Relaxed);
    }

    /// The frames added since the last call.
    pub fn take(&self) -> u32 {
        // Most messages come whole: a load is cheaper than a swap on the hot path.
        if self.0.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// Longest frame header: 2 bytes, then an extended length of up to 8 (RFC 6455 §5.2).
const HEADER_MAX: usize = 10;
/// The end of an HTTP request head.
const HEAD_END: &[u8; 4] = b"\r\n\r\n";

/// Why the meter stopped a client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameViolation {
    /// A message came in more fragments than [`MAX_FRAGMENTS`].
    #[error("a message arrived in more than {MAX_FRAGMENTS} fragments")]
    TooManyFragments,
    /// The client sent bytes after its upgrade request before the server's `101` (RFC 6455
    /// §4.1 forbids it): the meter could not tell where its first frame starts.
    #[error("the client sent data before the handshake response")]
    EarlyData,
}

/// Where the client's byte stream stands.
#[derive(Debug)]
pub(super) enum Meter {
    /// HTTP requests, until the server writes a `101`.
    Http(HeadWatch),
    /// WebSocket frames.
    Frames(FrameParser),
    /// The stream broke a rule: reading fails from now on.
    Stopped(FrameViolation),
}

impl Default for Meter {
    fn default() -> Self {
        Meter::Http(HeadWatch::default())
    }
}

impl Meter {
    /// Takes note of `bytes` the client sent, as they are handed up to the server.
    pub(super) fn received(&mut self, bytes: &[u8]) -> Result<(), FrameViolation> {
        match self {
            Meter::Http(watch) => {
                watch.received(bytes);
                Ok(())
            }
            Meter::Frames(parser) => parser.received(bytes).inspect_err(|&v| {
                *self = Meter::Stopped(v);
            }),
            Meter::Stopped(v) => Err(*v),
        }
    }

    /// Takes note of what the server starts to write: a response head that switches
    /// protocols starts the frame count, provided the client sent nothing past its request.
    pub(super) fn writing(&mut self, first: &[u8]) {
        let Meter::Http(watch) = self else {
            return;
        };
        if first.starts_with(b"HTTP/1.1 101 ") {
            *self = if watch.ends_on_one_head() {
                Meter::Frames(FrameParser::default())
            } else {
                Meter::Stopped(FrameViolation::EarlyData)
            };
        } else if first.starts_with(b"HTTP/") {
            // The requests so far are answered; the next one starts afresh.
            *watch = HeadWatch::default();
        }
    }

    /// Continuation frames read since the last call.
    pub(super) fn take_continuations(&mut self) -> u32 {
        match self {
            Meter::Frames(parser) => std::mem::take(&mut parser.continuations),
            _ => 0,
        }
    }

    /// The violation that stopped the stream, if one did.
    pub(super) fn stopped(&self) -> Option<FrameViolation> {
        match self {
            Meter::Stopped(v) => Some(*v),
            _ => None,
        }
    }
}

/// Request heads received since the last response.
#[derive(Debug, Default)]
pub(super) struct HeadWatch {
    /// How much of [`HEAD_END`] the last bytes matched.
    matched: u8,
    /// Heads ended since the last response.
    heads: u8,
    /// Bytes arrived after the last head's end.
    trailing: bool,
}

impl HeadWatch {
    fn received(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.trailing = true;
            self.matched = if b == HEAD_END[usize::from(self.matched)] {
                self.matched + 1
            } else {
                u8::from(b == b'\r')
            };
            if usize::from(self.matched) == HEAD_END.len() {
                self.heads = self.heads.saturating_add(1);
                self.trailing = false;
                self.matched = 0;
            }
        }
    }

    /// Exactly one request head arrived since the last response, and nothing after it: the
    /// next byte is the client's first frame.
    fn ends_on_one_head(&self) -> bool {
        self.heads == 1 && !self.trailing
    }
}

/// Frame headers read so far and the payload to skip.
#[derive(Debug, Default)]
pub(super) struct FrameParser {
    header: [u8; HEADER_MAX],
    /// Bytes of `header` received.
    have: u8,
    /// Bytes of the current frame (masking key and payload) still to pass.
    skip: u64,
    /// Frames of the message being assembled; 0 between messages.
    fragments: u16,
    /// Continuation frames read and not yet taken into the tally.
    continuations: u32,
}

impl FrameParser {
    fn received(&mut self, mut bytes: &[u8]) -> Result<(), FrameViolation> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
                bytes = &bytes[n..];
                self.skip -= n as u64;
                continue;
            }
            let have = usize::from(self.have);
            let need = self.header_len();
            let n = (need - have).min(bytes.len());
            self.header[have..have + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.have += n as u8;
            // The extended length's size is known once two bytes are in.
            if usize::from(self.have) == self.header_len() {
                self.on_header()?;
            }
        }
        Ok(())
    }

    /// Header bytes before the masking key, as far as known.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        match self.header[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    fn on_header(&mut self) -> Result<(), FrameViolation> {
        let h = &self.header;
        let length = match h[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            short => u64::from(short),
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0F;
        self.have = 0;
        self.skip = length.saturating_add(mask);
        // Anything else malformed (a continuation with nothing to continue, a reserved
        // opcode, a fragmented control frame) is the WebSocket layer's to refuse.
        match opcode {
            // Continuation.
            0 if self.fragments > 0 => {
                self.fragments += 1;
                self.continuations = self.continuations.saturating_add(1);
                if self.fragments > MAX_FRAGMENTS {
                    return Err(FrameViolation::TooManyFragments);
                }
                if fin {
                    self.fragments = 0;
                }
            }
            // Text or binary: a message starts.
            1 | 2 => self.fragments = u16::from(!fin),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(payload.iter().map(|b| b ^ 1));
        out
    }

    /// A meter past an upgrade request and its `101`.
    fn upgraded() -> Meter {
        let mut meter = Meter::default();
        meter
            .received(b"GET /ws/signal HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        meter.writing(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert!(matches!(meter, Meter::Frames(_)));
        meter
    }

    /// A message of `fragments` frames, each carrying `each` bytes.
    fn fragmented(fragments: usize, each: usize) -> Vec<u8> {
        let payload = vec![b'a'; each];
        let mut out = frame(0x01, &payload);
        for i in 1..fragments {
            let fin = if i + 1 == fragments { 0x80 } else { 0 };
            out.extend(frame(fin, &payload));
        }
        out
    }

    #[test]
    fn sixty_four_fragments_pass_and_sixty_five_stop_the_stream() {
        let mut meter = upgraded();
        for _ in 0..3 {
            meter.received(&fragmented(64, 0)).unwrap();
        }
        assert_eq!(
            meter.received(&fragmented(65, 0)),
            Err(FrameViolation::TooManyFragments)
        );
        assert_eq!(meter.stopped(), Some(FrameViolation::TooManyFragments));
        assert!(meter.received(&frame(0x81, b"{}")).is_err());
    }

    #[test]
    fn frames_split_at_every_byte_are_read_alike() {
        let mut stream = fragmented(64, 300);
        stream.extend(frame(0x89, b"ping"));
        stream.extend(frame(0x82, &vec![0; 70_000]));
        stream.extend(fragmented(65, 1));
        let mut meter = upgraded();
        let mut result = Ok(());
        for b in &stream {
            result = meter.received(std::slice::from_ref(b));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(FrameViolation::TooManyFragments));
    }

    #[test]
    fn control_frames_between_fragments_are_not_fragments() {
        let mut meter = upgraded();
        let mut stream = frame(0x01, b"");
        for _ in 0..62 {
            stream.extend(frame(0x00, b""));
            stream.extend(frame(0x89, b""));
            stream.extend(frame(0x8A, b""));
        }
        stream.extend(frame(0x80, b""));
        meter.received(&stream).unwrap();
    }

    #[test]
    fn data_sent_before_the_handshake_response_stops_the_stream() {
        let mut meter = Meter::default();
        let mut early = b"GET /ws/signal HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        early.extend(frame(0x81, b"{}"));
        meter.received(&early).unwrap();
        meter.writing(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(meter.stopped(), Some(FrameViolation::EarlyData));
    }

    #[test]
    fn a_second_head_sent_before_the_response_stops_the_stream() {
        let mut meter = Meter::default();
        meter
            .received(b"GET /ws/signal HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .unwrap();
        meter.writing(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(meter.stopped(), Some(FrameViolation::EarlyData));
    }

    #[test]
    fn an_upgrade_after_other_requests_on_the_connection_is_metered() {
        let mut meter = Meter::default();
        meter
            .received(b"POST /auth/token HTTP/1.1\r\n\r\n{\"userId\":\"a\"}")
            .unwrap();
        meter.writing(b"HTTP/1.1 200 OK\r\n");
        meter.received(b"GET /ws/signal HTTP/1.1\r\n").unwrap();
        meter.received(b"Host: x\r").unwrap();
        meter.received(b"\n\r\n").unwrap();
        meter.writing(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert!(matches!(meter, Meter::Frames(_)));
    }
}
