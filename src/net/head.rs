//! The first request head of a connection, read before HTTP is served on it: a request
//! a [`Shortcut`](super::accept::Shortcut) takes is answered from it without hyper, and
//! any other is handed to hyper with the bytes already read.
//!
//! Hand-rolled on `httparse` (hyper's own parser) because hyper builds its connection
//! state, buffers, request and upgrade machinery before the first byte is looked at: for a
//! WebSocket upgrade, which ends the HTTP exchange at once, that costs more than the
//! upgrade's own checks.

use std::io;

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes set aside for the first read: an upgrade with a token in its query and a
/// browser's headers fits.
const FIRST_READ: usize = 2048;
/// Most header lines parsed here; a request with more is left to hyper (which allows 100).
const MAX_HEADERS: usize = 48;

/// Reads from `stream` until the bytes hold a whole request head (an empty line), hold
/// `max` bytes, or the client stops sending. What was read then goes where its first
/// bytes say: to a shortcut, or to hyper, which answers what they hold as it always has.
pub async fn read_first<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(FIRST_READ);
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(max - buf.len()));
        }
        // The empty line may begin in the bytes already read.
        let scanned = buf.len().saturating_sub(2);
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 || buf.len() >= max || ends_head(&buf[scanned..]) {
            return Ok(buf);
        }
    }
}

/// Whether `bytes` hold an empty line (CRLF, or a bare LF as hyper also accepts).
fn ends_head(bytes: &[u8]) -> bool {
    // Most heads end the bytes read; the searches are for one with a body behind it.
    bytes.ends_with(b"\r\n\r\n")
        || memchr::memmem::find(bytes, b"\n\r\n").is_some()
        || memchr::memmem::find(bytes, b"\n\n").is_some()
}

/// A bodiless `GET` of HTTP/1.1, parsed from a connection's first bytes.
pub struct RequestHead {
    /// The request target: the path and any query, checked as hyper checks it.
    target: PathAndQuery,
    /// Its headers, each value a slice of the bytes read.
    pub headers: HeaderMap,
    /// Whether the client sent bytes after the head, before any answer.
    pub early: bool,
}

impl RequestHead {
    /// The head in `bytes` when it is a `GET` of `path` (with or without a query) that
    /// carries no body; anything else is handed back whole, for hyper to answer.
    pub fn get(bytes: Vec<u8>, path: &str) -> Result<Self, Vec<u8>> {
        if !targets(&bytes, path) {
            return Err(bytes);
        }
        let bytes = Bytes::from(bytes);
        match parse(&bytes) {
            Some(head) => Ok(head),
            None => Err(bytes.into()),
        }
    }

    /// The path of the request target.
    pub fn path(&self) -> &str {
        self.target.path()
    }

    /// The query of the request target, when it has one.
    pub fn query(&self) -> Option<&str> {
        self.target.query()
    }
}

/// Whether `bytes` start with `GET <path>` followed by a space or a query.
fn targets(bytes: &[u8], path: &str) -> bool {
    bytes
        .strip_prefix(b"GET ")
        .and_then(|rest| rest.strip_prefix(path.as_bytes()))
        .and_then(|rest| rest.first())
        .is_some_and(|next| matches!(next, b' ' | b'?'))
}

/// The head in `bytes`, when it is complete, HTTP/1.1, and announces no body.
fn parse(bytes: &Bytes) -> Option<RequestHead> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    let httparse::Status::Complete(length) = request.parse(bytes).ok()? else {
        return None;
    };
    if request.version != Some(1) {
        return None;
    }
    // The target as hyper reads it: characters it refuses send the request to it, and a
    // fragment is no part of the query.
    let target = PathAndQuery::from_maybe_shared(bytes.slice_ref(request.path?.as_bytes())).ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        // A body, of any length, is hyper's to read.
        let bodiless = match name {
            header::TRANSFER_ENCODING => false,
            header::CONTENT_LENGTH => line.value == b"0",
            _ => true,
        };
        if !bodiless {
            return None;
        }
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(line.value)).ok()?;
        headers.append(name, value);
    }
    Some(RequestHead {
        target,
        headers,
        early: length < bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws/signal?token=abc HTTP/1.1\r\nHost: x\r\n\
        Upgrade: websocket\r\nX-Twice: 1\r\nX-Twice: 2\r\n\r\n";

    #[test]
    fn a_get_of_the_path_is_parsed_with_its_query_and_every_header() {
        let head = RequestHead::get(UPGRADE.to_vec(), "/ws/signal")
            .ok()
            .unwrap();
        assert_eq!(head.path(), "/ws/signal");
        assert_eq!(head.query(), Some("token=abc"));
        assert_eq!(head.headers[header::HOST], "x");
        let twice: Vec<_> = head.headers.get_all("x-twice").iter().collect();
        assert_eq!(twice, ["1", "2"]);
        assert!(!head.early);

        let mut early = UPGRADE.to_vec();
        early.push(0x81);
        assert!(RequestHead::get(early, "/ws/signal").ok().unwrap().early);
    }

    #[test]
    fn the_target_is_read_as_hyper_reads_it() {
        let head = |target: &str| {
            let bytes = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
            RequestHead::get(bytes, "/ws/signal").ok()
        };
        let fragment = head("/ws/signal?token=abc#frag").unwrap();
        assert_eq!(fragment.query(), Some("token=abc"));
        assert!(head("/ws/signal?token=<abc>").is_none());
        assert!(head("/ws/signal?token=a\"b").is_none());
    }

    #[test]
    fn anything_else_is_handed_back_whole() {
        let others: [&[u8]; 8] = [
            b"GET /ws/signal/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /ws/signals HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /ws/signal HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /ws/signal HTTP/1.0\r\nHost: x\r\n\r\n",
            b"GET /ws/signal HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /ws/signal HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /ws/signal HTTP/1.1\r\nHost: x\r\n",
            b"GET /ws/signal HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ];
        for bytes in others {
            let back = RequestHead::get(bytes.to_vec(), "/ws/signal").err();
            assert_eq!(
                back.as_deref(),
                Some(bytes),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let bodiless = b"GET /ws/signal HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert!(RequestHead::get(bodiless, "/ws/signal").is_ok());
    }

    #[test]
    fn a_head_ends_at_an_empty_line_of_either_kind() {
        assert!(ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(ends_head(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r"));
    }

    #[tokio::test]
    async fn reading_stops_at_the_end_of_the_head_or_the_limit_or_the_close() {
        use tokio::io::AsyncWriteExt;

        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        // The head in pieces, the empty line split between two of them.
        let reader = tokio::spawn(async move { read_first(&mut server, 1024).await });
        for piece in [&b"GET / HTTP/1.1\r\n"[..], b"Host: x\r\n\r", b"\nbody"] {
            client.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        let bytes = reader.await.unwrap().unwrap();
        assert!(bytes.starts_with(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));

        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(&[b'a'; 300]).await.unwrap();
        let bytes = read_first(&mut server, 100).await.unwrap();
        assert!(bytes.len() >= 100);

        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(b"GET / HT").await.unwrap();
        drop(client);
        let bytes = read_first(&mut server, 100).await.unwrap();
        assert_eq!(bytes, b"GET / HT");
    }
}
