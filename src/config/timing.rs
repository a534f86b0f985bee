//! Timers: server pings and idle closes, node heartbeats, drains and session resumes.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, refuse};

/// Longest a dropped session may wait for its reconnect, whatever RESUME_GRACE says.
const MAX_RESUME_GRACE: Duration = Duration::from_secs(3600);

/// Flags of the connection, heartbeat and drain timers.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Timing")]
pub struct TimingSettings {
    /// Interval of server WebSocket pings.
    #[arg(long, env = "PING_INTERVAL", value_parser = humantime::parse_duration, default_value = "20s", global = true)]
    pub ping_interval: Duration,

    /// A connection silent for this long is closed (peers see `peer_left` reason `timeout`).
    #[arg(long, env = "IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s", global = true)]
    pub idle_timeout: Duration,

    /// Interval of node heartbeats; a node silent for two intervals is declared dead.
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s", global = true)]
    pub heartbeat_interval: Duration,

    /// How long a dropped connection's session waits for a reconnect (0s: no resume).
    #[arg(long, env = "RESUME_GRACE", value_parser = humantime::parse_duration, default_value = "30s", global = true)]
    pub resume_grace: Duration,

    /// Longest a drain (SIGTERM/SIGINT) may take before the process exits.
    #[arg(long, env = "DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s", global = true)]
    pub drain_timeout: Duration,
}

/// Resolved connection, heartbeat and drain timers.
#[derive(Debug, Clone)]
pub struct TimingConfig {
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// How long a dropped session waits for a resume.
    pub resume_grace: Duration,
    /// Longest a drain may take.
    pub drain_timeout: Duration,
}

impl TimingSettings {
    /// Resolves and checks the timers.
    pub fn resolve(&self) -> Result<TimingConfig, ConfigError> {
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(refuse("HEARTBEAT_INTERVAL must be at least 100ms."));
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return Err(refuse(
                "IDLE_TIMEOUT must be longer than PING_INTERVAL, and PING_INTERVAL above zero.",
            ));
        }
        Ok(TimingConfig {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            heartbeat: self.heartbeat_interval,
            resume_grace: self.resume_grace.min(MAX_RESUME_GRACE),
            drain_timeout: self.drain_timeout,
        })
    }
}
