//! ICE: the STUN and TURN servers handed to clients, with TURN credentials.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, items, refuse};
use crate::auth::IceServers;

/// Flags of the STUN and TURN servers handed to clients.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "ICE servers")]
pub struct IceSettings {
    /// Comma-separated STUN URLs handed to clients, e.g. `stun:stun.example.net:3478`.
    #[arg(long, env = "STUN_URLS")]
    pub stun_urls: Option<String>,

    /// Comma-separated TURN URLs handed to clients with credentials (needs TURN_SECRET).
    #[arg(long, env = "TURN_URLS")]
    pub turn_urls: Option<String>,

    /// Shared secret of the TURN server (coturn `static-auth-secret`).
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// Lifetime of TURN credentials (never beyond the token's expiry).
    #[arg(long, env = "TURN_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub turn_ttl: Duration,
}

impl IceSettings {
    /// Resolves and checks the ICE servers; TURN URLs and secret come together or not at all.
    pub fn resolve(&self) -> Result<IceServers, ConfigError> {
        let list = |value: &Option<String>, name: &str, schemes: &[&str]| {
            let urls: Vec<String> = items(value.as_deref().unwrap_or_default())
                .map(str::to_string)
                .collect();
            match urls
                .iter()
                .find(|u| !schemes.iter().any(|s| u.starts_with(s)))
            {
                Some(bad) => Err(refuse(format!(
                    "{name} has {bad:?}; each URL must start with {}.",
                    schemes.join(" or ")
                ))),
                None => Ok(urls),
            }
        };
        let stun = list(&self.stun_urls, "STUN_URLS", &["stun:", "stuns:"])?;
        let turn = list(&self.turn_urls, "TURN_URLS", &["turn:", "turns:"])?;
        let secret = self.turn_secret.clone().unwrap_or_default();
        crate::telemetry::hold_secret(secret.as_bytes());
        if !turn.is_empty() && secret.is_empty() {
            return Err(refuse(
                "TURN_URLS is set without TURN_SECRET: set the TURN server's static-auth-secret, \
                 so clients get credentials it accepts.",
            ));
        }
        if turn.is_empty() && !secret.is_empty() {
            return Err(refuse(
                "TURN_SECRET is set without TURN_URLS: list the TURN server's URLs, e.g. \
                 TURN_URLS=turn:turn.example.net:3478.",
            ));
        }
        if self.turn_ttl < Duration::from_secs(60) {
            return Err(refuse("TURN_TTL must be at least 60s."));
        }
        Ok(IceServers::new(
            stun,
            turn,
            secret.into_bytes(),
            self.turn_ttl,
        ))
    }
}
