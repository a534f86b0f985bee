//! Logs (with every JWT masked), the redacting access log, and Prometheus metrics.

mod access;
pub mod metrics;
mod redact;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

pub use access::{access_logged, logged, redact_query};
pub use metrics::Metrics;
pub use redact::{Masking, hold_secret, mask, mask_jwts};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber writing to stderr through a non-blocking writer, so a slow
/// log sink never stalls signaling, with every JWT masked on the way. Keep the guard alive
/// for the life of the process.
pub fn init(format: LogFormat, level: &str) -> Result<WorkerGuard, String> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| format!("LOG_LEVEL {level:?} is not a valid filter: {e}"))?;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Masking(writer));
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    installed.map_err(|e| format!("logging could not start: {e}"))?;
    Ok(guard)
}
