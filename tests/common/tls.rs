//! Throwaway certificates for TLS tests: a test CA, leaf certificates it signs for
//! 127.0.0.1, the PEM files a server reads, and clients that trust only that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;

use super::Client;

/// A certificate authority made for one test.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate in PEM, for clients to trust.
    pub pem: String,
    der: CertificateDer<'static>,
}

/// A leaf certificate and its key, in PEM.
pub struct Leaf {
    /// The certificate (DER), as a client sees it in the handshake.
    pub der: CertificateDer<'static>,
    /// The chain to serve: the leaf, then the CA.
    pub chain_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl Authority {
    /// A fresh CA.
    pub fn new() -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Switchboard test CA");
        let cert = params.self_signed(&key).unwrap();
        Authority {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 and localhost named `common_name`, with `serial`.
    pub fn issue(&self, common_name: &str, serial: u64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client configuration trusting this CA alone, speaking HTTP/1.1.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// An HTTPS client trusting this CA alone.
    pub fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    /// The certificate a new TLS connection to `addr` is served, with the ALPN protocol
    /// agreed; `Err` when the handshake fails.
    pub async fn served(
        &self,
        addr: &str,
    ) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or("no certificate served")?
            .clone()
            .into_owned();
        Ok((leaf, session.alpn_protocol().map(<[u8]>::to_vec)))
    }

    /// A signaling client over `wss://addr`, trusting this CA, answered a ping.
    pub async fn connect(&self, addr: &str, token: &str) -> Client {
        let url = format!("wss://{addr}/ws/signal?token={token}");
        let connector = Connector::Rustls(self.client_config());
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                .await
                .expect("wss upgrade");
        Client::registered(ws).await
    }
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// The certificate and key files of one test, removed when dropped.
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// Writes `leaf` into a fresh directory.
    pub fn new(leaf: &Leaf) -> Files {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-tls-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = Files { dir };
        files.replace(leaf);
        files
    }

    /// The certificate chain's path.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("fullchain.pem")
    }

    /// The private key's path.
    pub fn key(&self) -> PathBuf {
        self.dir.join("privkey.pem")
    }

    /// Replaces both files, each by a rename as certbot does, key first.
    pub fn replace(&self, leaf: &Leaf) {
        self.write(&self.key(), &leaf.key_pem);
        self.write(&self.cert(), &leaf.chain_pem);
    }

    /// Overwrites `path` with `text` in place (no rename), as a careless tool would.
    pub fn overwrite(&self, path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    fn write(&self, path: &Path, text: &str) {
        let staged = path.with_extension("new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(staged, path).unwrap();
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
