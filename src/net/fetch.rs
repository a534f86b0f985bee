//! One bounded HTTP(S) exchange at a time, for the few calls a node makes elsewhere: GET a
//! document (a JWKS, an OpenID discovery document) or POST a webhook. A deadline covers
//! the whole exchange and the body read is capped, so an unreachable or slow server costs
//! a bounded wait and never a hang. Hand-written over hyper's client connection because
//! a full HTTP client (pools, redirects, proxies) would be a large dependency for one
//! request at a time.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why a fetch failed, as a sentence naming the URL (which holds no secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(String);

/// GETs `url` (http or https, public roots) within `timeout`; the body is at most
/// `max_bytes`, and anything but 200 is an error.
pub async fn get(url: &str, timeout: Duration, max_bytes: usize) -> Result<Bytes, FetchError> {
    let headers = [(hyper::header::ACCEPT, "application/json")];
    let (status, body) = bounded(
        url,
        timeout,
        send(url, hyper::Method::GET, &headers, Bytes::new(), max_bytes),
    )
    .await?;
    if status != StatusCode::OK {
        return Err(FetchError(format!("GET {url}: answered {status}")));
    }
    Ok(body)
}

/// POSTs `body` (JSON) to `url` with `headers` within `timeout`; returns the status. The
/// answer's body is read up to 4 KiB and dropped.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<StatusCode, FetchError> {
    let mut all = vec![(hyper::header::CONTENT_TYPE, "application/json")];
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FetchError(format!("POST {url}: bad header name {name}")))?;
        all.push((name, value));
    }
    let sent = send(url, hyper::Method::POST, &all, body, 4096);
    Ok(bounded(url, timeout, sent).await?.0)
}

async fn bounded<T>(
    url: &str,
    timeout: Duration,
    exchange: impl Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(FetchError(format!(
            "{url} did not answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

async fn send(
    url: &str,
    method: hyper::Method,
    headers: &[(hyper::header::HeaderName, &str)],
    body: Bytes,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), FetchError> {
    let fail = |why: String| FetchError(format!("{method} {url}: {why}"));
    let uri: Uri = url.parse().map_err(|_| fail("not a valid URL".into()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(fail("the URL must start with http:// or https://".into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| fail("the URL names no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host.clone());
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "switchboard");
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| fail(e.to_string()))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|_| fail("the host is not a valid TLS server name".into()))?;
        let tls = tokio_rustls::TlsConnector::from(client_config())
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
        exchange(tls, request, max_bytes).await.map_err(fail)
    } else {
        exchange(tcp, request, max_bytes).await.map_err(fail)
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection's task ends with the exchange (or with the caller's deadline).
    let driver = tokio::spawn(connection);
    let outcome = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map(|b| (status, b.to_bytes()))
            .map_err(|_| format!("the body is unreadable or larger than {max_bytes} bytes"))
    }
    .await;
    driver.abort();
    outcome
}

/// Public roots (webpki-roots) over the ring provider the rest of the node uses.
fn client_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
