//! Room events: whether they are recorded, the webhooks they go to, how long deliveries
//! are retried and how long the pull API keeps them.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, items, refuse};
use crate::events::{DispatchConfig, WebhookSecret};

/// Flags of room events and their webhooks.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Room events and webhooks")]
pub struct EventSettings {
    /// Record room events (for webhooks and `GET /api/v1/events`): `on`, `off`, or `auto`
    /// (on when WEBHOOK_URLS or API keys are set: someone can receive or read them).
    #[arg(long, env = "ROOM_EVENTS", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub room_events: String,

    /// Comma-separated URLs each room event is POSTed to (http or https).
    #[arg(long, env = "WEBHOOK_URLS")]
    pub webhook_urls: Option<String>,

    /// Secret that signs webhooks (Standard Webhooks: `whsec_<base64>`, or any text of 16+ characters).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// How long after it happened an event is retried at a failing endpoint before it is dropped (logged and counted).
    #[arg(long, env = "WEBHOOK_RETRY_FOR", value_parser = humantime::parse_duration, default_value = "1h")]
    pub webhook_retry_for: Duration,

    /// Longest wait between two attempts at one event (retries start at 1s and double up to this).
    #[arg(long, env = "WEBHOOK_MAX_BACKOFF", value_parser = humantime::parse_duration, default_value = "5m")]
    pub webhook_max_backoff: Duration,

    /// Longest one webhook delivery may take; slower counts as failed and is retried.
    #[arg(long, env = "WEBHOOK_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub webhook_timeout: Duration,

    /// Most events the log of `GET /api/v1/events` keeps (the oldest go first).
    #[arg(long, env = "EVENT_LOG_MAX", default_value_t = 100_000)]
    pub event_log_max: usize,

    /// How long delivered events stay readable through `GET /api/v1/events` (and undelivered ones and room sequences last); at least WEBHOOK_RETRY_FOR + WEBHOOK_MAX_BACKOFF + 2 × WEBHOOK_TIMEOUT + 1m.
    #[arg(long, env = "EVENT_RETENTION", value_parser = humantime::parse_duration, default_value = "24h")]
    pub event_retention: Duration,
}

/// Resolved room event settings; `None` when events are off.
#[derive(Debug, Clone)]
pub struct EventConfig {
    /// What the dispatcher needs.
    pub dispatch: DispatchConfig,
}

impl EventSettings {
    /// Resolves and checks the event settings; `api_keys` says whether the server API (and
    /// so the pull API) has keys, which `auto` turns events on for.
    pub fn resolve(&self, api_keys: bool) -> Result<Option<EventConfig>, ConfigError> {
        let webhooks: Vec<String> = items(self.webhook_urls.as_deref().unwrap_or_default())
            .map(str::to_string)
            .collect();
        // Recording costs every join and leave a little (measured in docs/BENCHMARKS.md):
        // by default, only when somebody can receive or read the events.
        if self.room_events == "auto" && webhooks.is_empty() && !api_keys {
            return Ok(None);
        }
        if self.room_events == "off" {
            if !webhooks.is_empty() {
                return Err(refuse(
                    "WEBHOOK_URLS needs room events: leave ROOM_EVENTS on (the default).",
                ));
            }
            return Ok(None);
        }
        for url in &webhooks {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<hyper::Uri>().is_err()
            {
                return Err(refuse(
                    "WEBHOOK_URLS: every entry must be an http:// or https:// URL.",
                ));
            }
        }
        let secret = match (&self.webhook_secret, webhooks.is_empty()) {
            (Some(secret), _) if secret.len() < 16 => {
                return Err(refuse(
                    "WEBHOOK_SECRET must be at least 16 characters (e.g. whsec_ and 24 random bytes in base64).",
                ));
            }
            (Some(secret), _) => {
                crate::telemetry::hold_secret(secret.as_bytes());
                Some(WebhookSecret::new(secret))
            }
            (None, false) => {
                return Err(refuse(
                    "WEBHOOK_URLS needs WEBHOOK_SECRET: receivers check each webhook's signature with it.",
                ));
            }
            (None, true) => None,
        };
        if self.webhook_timeout.is_zero() || self.webhook_retry_for.is_zero() {
            return Err(refuse(
                "WEBHOOK_TIMEOUT and WEBHOOK_RETRY_FOR must be above zero.",
            ));
        }
        if self.webhook_max_backoff < Duration::from_secs(1) {
            return Err(refuse("WEBHOOK_MAX_BACKOFF must be at least 1s."));
        }
        if self.event_log_max == 0 {
            return Err(refuse("EVENT_LOG_MAX must be at least 1."));
        }
        if self.event_retention < Duration::from_secs(60)
            || self.event_retention > crate::store::MAX_TTL
        {
            return Err(refuse("EVENT_RETENTION must be between 1m and 24h."));
        }
        let needed = self.retention_needed();
        if self.event_retention < needed {
            return Err(refuse(format!(
                "EVENT_RETENTION ({}) must be at least WEBHOOK_RETRY_FOR + WEBHOOK_MAX_BACKOFF + \
                 2 × WEBHOOK_TIMEOUT + 1m = {}: a room's undelivered events expire \
                 EVENT_RETENTION after its last change, and an event may wait that long for its \
                 last attempt. Raise EVENT_RETENTION (at most 24h) or lower WEBHOOK_RETRY_FOR.",
                humantime::format_duration(self.event_retention),
                humantime::format_duration(needed),
            )));
        }
        Ok(Some(EventConfig {
            dispatch: DispatchConfig {
                webhooks,
                secret,
                retry_for: self.webhook_retry_for,
                max_backoff: self.webhook_max_backoff,
                timeout: self.webhook_timeout,
                retention: self.event_retention,
                log_max: self.event_log_max,
            },
        }))
    }
}

impl EventSettings {
    /// The shortest retention that outlives every event's delivery: an event is retried
    /// for WEBHOOK_RETRY_FOR after it happened, its last attempt may come a backoff later
    /// and take a timeout, and a node that dies holding its room delays it by another
    /// timeout (its lease) and under a minute (its heartbeat lapsing, the room's takeover).
    fn retention_needed(&self) -> Duration {
        self.webhook_retry_for
            .saturating_add(self.webhook_max_backoff)
            .saturating_add(self.webhook_timeout.saturating_mul(2))
            .saturating_add(RETENTION_SLACK)
    }

    /// The start-up warning of a node sharing Redis on which `auto` left events off: its
    /// changes would write no events while other nodes' do, and the rooms' sequences would
    /// miss every join and leave it handles.
    pub fn auto_off_warning(&self, api_keys: bool, on_redis: bool) -> Option<String> {
        let webhooks = items(self.webhook_urls.as_deref().unwrap_or_default()).next();
        (on_redis && self.room_events == "auto" && webhooks.is_none() && !api_keys).then(|| {
            "room events are off on this node (ROOM_EVENTS=auto, and neither WEBHOOK_URLS nor \
             API keys are set here): if any node of this cluster records events, the joins and \
             leaves on this one are missing from them; set ROOM_EVENTS=on on every node of a \
             cluster that uses webhooks or GET /api/v1/events, or ROOM_EVENTS=off to say it \
             uses neither"
                .to_string()
        })
    }
}

/// What [`EventSettings::retention_needed`] allows for a node's death to be noticed.
const RETENTION_SLACK: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(room_events: &str, webhooks: Option<&str>) -> EventSettings {
        let mut s = crate::config::Settings::default().events;
        s.room_events = room_events.to_string();
        s.webhook_urls = webhooks.map(str::to_string);
        s.webhook_secret = webhooks.map(|_| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
        s
    }

    #[test]
    fn auto_records_events_only_when_someone_can_receive_or_read_them() {
        assert!(settings("auto", None).resolve(false).unwrap().is_none());
        assert!(settings("auto", None).resolve(true).unwrap().is_some());
        assert!(
            settings("auto", Some("http://hooks.example/"))
                .resolve(false)
                .unwrap()
                .is_some()
        );
        assert!(settings("on", None).resolve(false).unwrap().is_some());
        assert!(settings("off", None).resolve(true).unwrap().is_none());
        let refused = settings("off", Some("http://hooks.example/")).resolve(true);
        assert!(refused.unwrap_err().0.contains("ROOM_EVENTS"));
    }

    #[test]
    fn retention_must_outlive_the_retries_of_every_event() {
        let mut s = settings("on", Some("http://hooks.example/"));
        s.webhook_retry_for = Duration::from_secs(3600);
        s.webhook_max_backoff = Duration::from_secs(300);
        s.webhook_timeout = Duration::from_secs(10);
        // 1h + 5m + 2 × 10s + 1m.
        s.event_retention = Duration::from_secs(3600 + 300 + 20 + 60);
        assert!(s.resolve(false).is_ok());
        s.event_retention -= Duration::from_secs(1);
        let refused = s.resolve(false).unwrap_err().0;
        for named in [
            "EVENT_RETENTION (1h 6m 19s)",
            "WEBHOOK_RETRY_FOR",
            "= 1h 6m 20s",
        ] {
            assert!(refused.contains(named), "{named} not in: {refused}");
        }
        // The defaults fit.
        assert!(settings("on", None).resolve(false).is_ok());
    }

    #[test]
    fn a_node_on_redis_left_without_events_by_auto_says_so() {
        let warning = settings("auto", None)
            .auto_off_warning(false, true)
            .unwrap();
        assert!(
            warning.contains("ROOM_EVENTS=on on every node"),
            "{warning}"
        );
        // Not alone on the embedded store, nor when events are on or explicitly off.
        assert!(
            settings("auto", None)
                .auto_off_warning(false, false)
                .is_none()
        );
        assert!(
            settings("auto", None)
                .auto_off_warning(true, true)
                .is_none()
        );
        assert!(
            settings("auto", Some("http://hooks.example/"))
                .auto_off_warning(false, true)
                .is_none()
        );
        assert!(settings("on", None).auto_off_warning(false, true).is_none());
        assert!(
            settings("off", None)
                .auto_off_warning(false, true)
                .is_none()
        );
    }
}
