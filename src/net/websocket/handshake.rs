//! The server's side of the opening handshake (RFC 6455 §4.2): which requests may become
//! a WebSocket, and the `101 Switching Protocols` that makes them one.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};

use super::WebSocket;
use crate::error::ApiError;

/// Appended to the client's key before hashing it (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request that asked to become a WebSocket, as an extractor of a request hyper serves.
pub struct Upgrade {
    handshake: Handshake,
    on_upgrade: OnUpgrade,
}

/// What a request's headers ask of the opening handshake, and the answer to it.
pub struct Handshake {
    key: HeaderValue,
    /// The subprotocol the answer names, when the client offered it.
    protocol: Option<&'static str>,
}

/// The request is not a WebSocket upgrade this server can take.
#[derive(Debug)]
pub struct NotWebSocket;

impl NotWebSocket {
    /// The 426 that tells the client what to send instead.
    pub fn error(&self) -> ApiError {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "This endpoint speaks WebSocket only; send an Upgrade: websocket request.",
        )
    }
}

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        self.error().into_response()
    }
}

impl<S: Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotWebSocket> {
        if parts.method != Method::GET {
            return Err(NotWebSocket);
        }
        let handshake = Handshake::asked(&parts.headers)?;
        // Present only on a connection served with upgrades (HTTP/1.1 here).
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(NotWebSocket)?;
        Ok(Self {
            handshake,
            on_upgrade,
        })
    }
}

impl Handshake {
    /// The handshake the `headers` of a `GET` ask for, unless they ask for none.
    pub fn asked(headers: &HeaderMap) -> Result<Self, NotWebSocket> {
        let upgrading = tokens(headers, header::CONNECTION)
            .any(|t| t.eq_ignore_ascii_case(b"upgrade"))
            && is(headers, header::UPGRADE, "websocket")
            && is(headers, header::SEC_WEBSOCKET_VERSION, "13");
        if !upgrading {
            return Err(NotWebSocket);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotWebSocket)?
            .clone();
        Ok(Self {
            key,
            protocol: None,
        })
    }

    /// Names `protocol` in the answer when the request's `headers` offered it.
    pub fn protocol(mut self, headers: &HeaderMap, protocol: &'static str) -> Self {
        // Exactly as offered: a browser fails an answer that differs from its offer.
        if tokens(headers, header::SEC_WEBSOCKET_PROTOCOL).any(|t| t == protocol.as_bytes()) {
            self.protocol = Some(protocol);
        }
        self
    }

    /// The `101 Switching Protocols` head, as written to the client.
    pub fn answer(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(160);
        head.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-accept: ",
        );
        head.extend_from_slice(accept_key(self.key.as_bytes()).as_bytes());
        if let Some(protocol) = self.protocol {
            head.extend_from_slice(b"\r\nsec-websocket-protocol: ");
            head.extend_from_slice(protocol.as_bytes());
        }
        head.extend_from_slice(b"\r\n\r\n");
        head
    }
}

impl Upgrade {
    /// Names `protocol` in the answer when the request's `headers` offered it.
    pub fn protocol(mut self, headers: &HeaderMap, protocol: &'static str) -> Self {
        self.handshake = self.handshake.protocol(headers, protocol);
        self
    }

    /// Answers `101 Switching Protocols`; once the client has it, `start` gets the
    /// WebSocket (messages up to `max_message` bytes) on a task of its own.
    pub fn respond(
        self,
        max_message: usize,
        start: impl FnOnce(WebSocket) + Send + 'static,
    ) -> Response {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => start(WebSocket::upgraded(upgraded, max_message)),
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            accept_key(self.handshake.key.as_bytes()),
        );
        if let Some(protocol) = self.handshake.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        response
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> HeaderValue {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(ACCEPT_GUID)
        .finalize();
    HeaderValue::from_str(&STANDARD.encode(digest)).expect("base64 is a valid header value")
}

/// `name` is `value`, in any case.
fn is(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// The comma-separated values of every `name` header, trimmed.
fn tokens(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn the_101_head_names_the_accept_key_and_the_offered_protocol() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_VERSION, "13"),
            (header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
            (header::SEC_WEBSOCKET_PROTOCOL, "other, chat.v1"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let answer = Handshake::asked(&headers).ok().unwrap().answer();
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let answer = Handshake::asked(&headers)
            .ok()
            .unwrap()
            .protocol(&headers, "chat.v1")
            .answer();
        assert!(
            String::from_utf8(answer).unwrap().ends_with(
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nsec-websocket-protocol: chat.v1\r\n\r\n"
            )
        );
        headers.remove(header::UPGRADE);
        assert!(Handshake::asked(&headers).is_err());
    }

    #[test]
    fn connection_lists_upgrade_among_other_tokens() {
        let upgrade = |headers: &HeaderMap| {
            tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(upgrade(&headers));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrades"),
        );
        assert!(!upgrade(&headers));
    }

    /// Serves one connection of `app` over an in-memory stream, which the WebSocket cannot
    /// take back from hyper: it keeps hyper's stream instead.
    fn serve(app: axum::Router) -> tokio::io::DuplexStream {
        use tower_service::Service;
        let (server, client) = tokio::io::duplex(1 << 16);
        let service = hyper::service::service_fn(move |request| app.clone().call(request));
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service)
                .with_upgrades(),
        );
        client
    }

    #[tokio::test]
    async fn an_upgrade_answers_101_and_frames_sent_with_the_request_are_read() {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let app = axum::Router::new().route(
            "/ws",
            axum::routing::get(|headers: HeaderMap, upgrade: Upgrade| async move {
                upgrade
                    .protocol(&headers, "chat.v1")
                    .respond(1024, |mut ws| {
                        tokio::spawn(async move {
                            // Echoes the first message.
                            if let Some(Ok(message)) = ws.next().await {
                                ws.send(message).await.unwrap();
                            }
                        });
                    })
            }),
        );
        let mut client = serve(app);
        let mut request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Protocol: other, chat.v1\r\n\r\n"
            .to_vec();
        request.extend(super::super::frame::client_frame(
            super::super::frame::TEXT,
            true,
            b"hi",
        ));
        client.write_all(&request).await.unwrap();

        let mut answer = Vec::new();
        let echo = [0x81, 2, b'h', b'i'];
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !answer.ends_with(&echo) {
                let mut chunk = [0u8; 1024];
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
                answer.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("the 101 and the echo within 5 s");
        let head = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        assert!(head.contains("sec-websocket-protocol: chat.v1"), "{head}");
    }

    #[tokio::test]
    async fn a_request_that_is_not_an_upgrade_gets_426() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let app = axum::Router::new().route(
            "/ws",
            axum::routing::get(|upgrade: Upgrade| async move { upgrade.respond(1024, |_| {}) }),
        );
        let mut client = serve(app);
        client
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut answer),
        )
        .await
        .expect("an answer within 5 s")
        .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
        assert!(answer.contains("upgrade_required"), "{answer}");
    }
}
