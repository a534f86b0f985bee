//! Logging: the line format and the filter.

use clap::Args;

use crate::telemetry::LogFormat;

/// Flags of the log format and filter.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogSettings {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `switchboard=debug,info`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Resolved log format and filter; the filter is checked when logging starts.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Filter directives, e.g. `info`.
    pub level: String,
}

impl LogSettings {
    /// The log settings as given: the filter's syntax is the log subscriber's to judge.
    pub fn resolve(&self) -> LogConfig {
        LogConfig {
            format: self.log_format,
            level: self.log_level.clone(),
        }
    }
}
