//! A whole response written straight to a client's stream, for a request answered before
//! hyper (see [`super::head`]); the connection closes after it.

use std::io;
use std::time::SystemTime;

use axum::http::header;
use axum::response::Response;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Largest body written this way: the JSON of an error.
const MAX_BODY: usize = 64 * 1024;

/// Writes `response` (status, headers, body, a `Date` and `Connection: close`) to
/// `stream` and flushes it.
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, response: Response) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::CONNECTION | header::DATE
        ) {
            continue;
        }
        line(&mut out, name.as_str(), value.as_bytes());
    }
    line(
        &mut out,
        "content-length",
        body.len().to_string().as_bytes(),
    );
    line(&mut out, "connection", b"close");
    let date = httpdate::fmt_http_date(SystemTime::now());
    line(&mut out, "date", date.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Appends the header line `name: value`.
fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    #[tokio::test]
    async fn status_headers_length_date_and_body_are_written() {
        let mut response = Response::new(axum::body::Body::from("{\"error\":\"x\"}"));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let mut out = Vec::new();
        write(&mut out, response).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "{\"error\":\"x\"}");
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let lines: Vec<_> = lines.collect();
        assert!(lines.contains(&"retry-after: 5"), "{lines:?}");
        assert!(lines.contains(&"content-length: 13"), "{lines:?}");
        assert!(lines.contains(&"connection: close"), "{lines:?}");
        assert!(!lines.contains(&"connection: keep-alive"), "{lines:?}");
        let date = lines.iter().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }
}
