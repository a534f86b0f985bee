//! Native TLS: the listener's certificate, loaded from PEM files at start and reloaded
//! when they change (a certbot or cert-manager renewal), without a restart.
//!
//! New connections take whatever certificate is in service when they arrive; connections
//! already open keep the one they shook hands with. A reload that fails (a half-written
//! file, a key that does not match) leaves the certificate in service and says why.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::elastic::Transport;
use crate::telemetry::Metrics;

/// Where the listener's certificate and key live; read at start and again when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// How often both are checked for a change.
    pub reload_interval: std::time::Duration,
}

/// Browsers speak HTTP/1.1 to us (WebSockets included): offered by ALPN so a client that
/// prefers h2 does not assume it.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A certificate or key that cannot be served, with a sentence naming the file to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Hands each new connection the certificate in service now.
#[derive(Clone)]
pub struct TlsAcceptor {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Loads the certificate and key of `files`; the [`Reloader`] keeps them current.
    pub fn load(files: &TlsFiles) -> Result<(TlsAcceptor, Reloader), TlsError> {
        let contents = Contents::read(files)?;
        let config = contents.server_config(files)?;
        let (sender, current) = watch::channel(Arc::new(config));
        let reloader = Reloader {
            files: files.clone(),
            seen: contents.fingerprint(),
            sender,
        };
        Ok((TlsAcceptor { current }, reloader))
    }

    /// Runs the TLS handshake of an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let config = self.current.borrow().clone();
        tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
    }
}

/// Watches the certificate files and puts a renewed certificate in service.
pub struct Reloader {
    files: TlsFiles,
    /// The files' contents last tried, loaded or not: a broken file is reported once.
    seen: u64,
    sender: watch::Sender<Arc<ServerConfig>>,
}

impl Reloader {
    /// Checks the files every `TLS_RELOAD_INTERVAL` until every acceptor is gone.
    pub async fn run(mut self, metrics: Arc<Metrics>) {
        let mut every = tokio::time::interval(self.files.reload_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = self.sender.closed() => return,
            }
            // File reads and key parsing block: off the runtime's worker threads.
            let files = self.files.clone();
            let seen = self.seen;
            let Ok(outcome) = tokio::task::spawn_blocking(move || check(&files, seen)).await else {
                continue;
            };
            match outcome {
                Check::Unchanged => {}
                Check::Loaded(fingerprint, config) => {
                    self.seen = fingerprint;
                    // Counted first, so whoever sees the new certificate sees the count.
                    metrics.tls_reloaded("success");
                    self.sender.send_replace(config);
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        "TLS certificate reloaded: new connections use it, open ones keep theirs"
                    );
                }
                Check::Failed(fingerprint, e) => {
                    if let Some(fingerprint) = fingerprint {
                        self.seen = fingerprint;
                    }
                    metrics.tls_reloaded("failure");
                    tracing::warn!("TLS certificate not reloaded, the one in service stays: {e}");
                }
            }
        }
    }
}

/// What one look at the files found.
enum Check {
    Unchanged,
    Loaded(u64, Arc<ServerConfig>),
    /// With the fingerprint of what was read, when both files could be read.
    Failed(Option<u64>, TlsError),
}

fn check(files: &TlsFiles, seen: u64) -> Check {
    let contents = match Contents::read(files) {
        Ok(c) => c,
        // Mid-rename or briefly absent: reported, and tried again next time.
        Err(e) => return Check::Failed(None, e),
    };
    let fingerprint = contents.fingerprint();
    if fingerprint == seen {
        return Check::Unchanged;
    }
    match contents.server_config(files) {
        Ok(config) => Check::Loaded(fingerprint, Arc::new(config)),
        Err(e) => Check::Failed(Some(fingerprint), e),
    }
}

/// The bytes of both files, read together.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Contents, TlsError> {
        let read = |name: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                TlsError(format!(
                    "{name} {} cannot be read: {e}; check the path and that this process may read it.",
                    path.display()
                ))
            })
        };
        Ok(Contents {
            cert: read("TLS_CERT_FILE", &files.cert)?,
            key: read("TLS_KEY_FILE", &files.key)?,
        })
    }

    /// Tells one content from another; never logged, so a hash of the key does not leak.
    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.cert.hash(&mut hasher);
        self.key.hash(&mut hasher);
        hasher.finish()
    }

    /// A server configuration with rustls' defaults: TLS 1.3 and 1.2 with their strong
    /// suites only, no client certificates, HTTP/1.1 by ALPN.
    fn server_config(&self, files: &TlsFiles) -> Result<ServerConfig, TlsError> {
        let cert_file = files.cert.display();
        let key_file = files.key.display();
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                TlsError(format!(
                    "TLS_CERT_FILE {cert_file} is not a valid PEM certificate chain (a block is \
                     cut short or corrupted); point it at the full chain, e.g. certbot's \
                     fullchain.pem."
                ))
            })?;
        if chain.is_empty() {
            return Err(TlsError(format!(
                "TLS_CERT_FILE {cert_file} holds no certificate (no BEGIN CERTIFICATE block); \
                 point it at the full chain, e.g. certbot's fullchain.pem."
            )));
        }
        // The parser's own error is left out: nothing read from a key file reaches a log.
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|_| {
            TlsError(format!(
                "TLS_KEY_FILE {key_file} holds no usable PEM private key (PKCS#8, PKCS#1 or \
                 SEC1); point it at the certificate's key, e.g. certbot's privkey.pem."
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS cannot be set up: {e}.")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsError(format!(
                    "TLS_KEY_FILE {key_file} cannot serve TLS_CERT_FILE {cert_file} ({e}); \
                     check that the key is the certificate's own."
                ))
            })?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(config)
    }
}

/// A close reply gathered when the socket is dropped is encrypted and handed to the kernel
/// at once, like a plain one.
impl Transport for TlsStream<TcpStream> {
    fn write_now(&mut self, buf: &[u8]) {
        let (tcp, session) = self.get_mut();
        if session.writer().write_all(buf).is_err() {
            return;
        }
        let mut now = WriteNow(tcp);
        while session.wants_write() {
            if session.write_tls(&mut now).is_err() {
                return;
            }
        }
    }
}

/// Writes to a socket without waiting: `WouldBlock` once the kernel's buffer is full.
struct WriteNow<'a>(&'a TcpStream);

impl Write for WriteNow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
