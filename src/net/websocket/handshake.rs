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

/// A request that asked to become a WebSocket, as an extractor.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    /// The client's `Sec-WebSocket-Protocol`, if it sent one.
    protocols: Option<HeaderValue>,
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
        let headers = &parts.headers;
        let upgrading = parts.method == Method::GET
            && lists(headers, header::CONNECTION, "upgrade")
            && is(headers, header::UPGRADE, "websocket")
            && is(headers, header::SEC_WEBSOCKET_VERSION, "13");
        if !upgrading {
            return Err(NotWebSocket);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotWebSocket)?
            .clone();
        let protocols = headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
        // Present only on a connection served with upgrades (HTTP/1.1 here).
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(NotWebSocket)?;
        Ok(Self {
            key,
            on_upgrade,
            protocols,
            protocol: None,
        })
    }
}

impl Upgrade {
    /// Names `protocol` in the answer when the client offered it.
    pub fn protocol(mut self, protocol: &'static str) -> Self {
        let offered = self.protocols.as_ref().and_then(|v| v.to_str().ok());
        if offered.is_some_and(|list| list.split(',').any(|p| p.trim() == protocol)) {
            self.protocol = Some(protocol);
        }
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
            accept_key(self.key.as_bytes()),
        );
        if let Some(protocol) = self.protocol {
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

/// `name` lists `token` among its comma-separated values, in any case.
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
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
    fn connection_lists_upgrade_among_other_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(lists(&headers, header::CONNECTION, "upgrade"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrades"),
        );
        assert!(!lists(&headers, header::CONNECTION, "upgrade"));
    }
}
