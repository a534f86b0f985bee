//! Native TLS: the certificate chain and private key the listener serves `https://` and
//! `wss://` with, and how often their files are checked for a renewal.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use crate::net::TlsFiles;

use super::{ConfigError, refuse};

/// Flags of the listener's certificate.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsSettings {
    /// PEM file with the certificate chain (leaf first); with TLS_KEY_FILE the port serves
    /// https:// and wss:// only [default: plain HTTP].
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// How often the two files are checked for a renewed certificate.
    #[arg(long, env = "TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub tls_reload_interval: Duration,
}

impl TlsSettings {
    /// The certificate files when TLS is on; one file without the other is an error.
    pub fn resolve(&self) -> Result<Option<TlsFiles>, ConfigError> {
        if self.tls_reload_interval.is_zero() {
            return Err(refuse("TLS_RELOAD_INTERVAL must be above zero, e.g. 5s."));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                reload_interval: self.tls_reload_interval,
            })),
            (Some(_), None) => Err(refuse(
                "TLS_CERT_FILE is set without TLS_KEY_FILE; set both (certificate chain and its \
                 private key) to serve https, or neither to serve plain HTTP behind a proxy.",
            )),
            (None, Some(_)) => Err(refuse(
                "TLS_KEY_FILE is set without TLS_CERT_FILE; set both (certificate chain and its \
                 private key) to serve https, or neither to serve plain HTTP behind a proxy.",
            )),
        }
    }
}
