//! Timers: the deadlines of a connection's phases (request head and body, upgrade, first
//! join), server pings and idle closes, node heartbeats, drains and session resumes.

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
    #[arg(long, env = "PING_INTERVAL", value_parser = humantime::parse_duration, default_value = "20s")]
    pub ping_interval: Duration,

    /// A connection silent for this long is closed (peers see `peer_left` reason `timeout`).
    #[arg(long, env = "IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,

    /// Interval of node heartbeats; a node silent for two intervals is declared dead.
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s")]
    pub heartbeat_interval: Duration,

    /// How long a dropped connection's session waits for a reconnect (0s: no resume).
    #[arg(long, env = "RESUME_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub resume_grace: Duration,

    /// Longest a drain (SIGTERM/SIGINT) may take before the process exits.
    #[arg(long, env = "DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// An HTTP request head (request line and headers) must arrive within this, counted
    /// from its first byte or, on a fresh or kept-alive connection, from when one is awaited.
    #[arg(long, env = "HEAD_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub head_timeout: Duration,

    /// A request body must arrive in full within this after its head; else 408 and close.
    #[arg(long, env = "BODY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub body_timeout: Duration,

    /// Longest a connection may stay short of a WebSocket (from accept to a completed
    /// upgrade); a plain HTTP connection is closed after its response in flight.
    #[arg(long, env = "UPGRADE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "20s")]
    pub upgrade_timeout: Duration,

    /// A WebSocket that is in no room this long after connecting (no `join`) is closed with 1008.
    #[arg(long, env = "JOIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub join_timeout: Duration,
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
    /// Longest wait for an HTTP request head.
    pub head_timeout: Duration,
    /// Longest wait for a request body.
    pub body_timeout: Duration,
    /// Longest a connection may stay short of a WebSocket.
    pub upgrade_timeout: Duration,
    /// Longest a WebSocket may stay out of any room after connecting.
    pub join_timeout: Duration,
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
        for (name, value) in [
            ("HEAD_TIMEOUT", self.head_timeout),
            ("BODY_TIMEOUT", self.body_timeout),
            ("UPGRADE_TIMEOUT", self.upgrade_timeout),
            ("JOIN_TIMEOUT", self.join_timeout),
        ] {
            // Zero would close every connection at once; there is no "off".
            if value < Duration::from_millis(100) {
                return Err(refuse(format!(
                    "{name} must be at least 100ms (it bounds how long a client may take)."
                )));
            }
        }
        Ok(TimingConfig {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            heartbeat: self.heartbeat_interval,
            resume_grace: self.resume_grace.min(MAX_RESUME_GRACE),
            drain_timeout: self.drain_timeout,
            head_timeout: self.head_timeout,
            body_timeout: self.body_timeout,
            upgrade_timeout: self.upgrade_timeout,
            join_timeout: self.join_timeout,
        })
    }
}
