//! Settings: every flag has an environment fallback; `Config` is the validated result.
//!
//! Each owner's flags form one group (`AuthSettings`, `RedisSettings`, ...) that resolves
//! into that owner's config; the clap attributes are the only place a default is written,
//! and `Settings::default()` is read back from them.

mod auth;
mod events;
mod ice;
mod limits;
mod logging;
mod node;
mod oidc;
mod redis;
mod timing;
mod tls;
mod token;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use clap::{Args, FromArgMatches, ValueEnum};

use crate::auth::IceServers;

pub use auth::{AuthConfig, AuthSettings, ClaimSettings, MAX_TOKEN_TTL, SigningKeySettings};
pub use events::{EventConfig, EventSettings};
pub use ice::IceSettings;
pub use limits::{LimitsConfig, LimitsSettings};
pub use logging::{LogConfig, LogSettings};
pub use node::{NodeConfig, NodeSettings, PRODUCTION_METRICS_ADDR};
pub use oidc::{OidcConfig, OidcSettings};
pub use redis::{RedisConfig, RedisSettings};
pub use timing::{TimingConfig, TimingSettings};
pub use tls::{TlsFiles, TlsSettings};
pub use token::TokenSettings;

/// Deployment mode; production turns unsafe defaults into start-up errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local development: generated secret, open token issuance allowed.
    Development,
    /// Production: strict checks on secrets, issuance, TTL and origins.
    Production,
}

impl Environment {
    fn is_production(self) -> bool {
        self == Environment::Production
    }
}

/// Which services a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Auth and signaling (and the web client) on one port.
    Serve,
    /// Auth service alone.
    Auth,
    /// Signaling service (and the web client) alone.
    Signal,
    /// Offline token minting.
    Token,
}

impl Role {
    /// Whether this role runs the Auth service.
    pub fn issues_tokens(self) -> bool {
        matches!(self, Role::Serve | Role::Auth)
    }
    /// Whether this role runs the Signaling service.
    pub fn signals(self) -> bool {
        matches!(self, Role::Serve | Role::Signal)
    }
}

/// Every setting, as flags with environment fallbacks (see `switchboard --help`), grouped
/// by the part of the server that owns them.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct Settings {
    /// Deployment mode; `production` refuses unsafe settings at start-up.
    #[arg(
        long = "env",
        env = "SWITCHBOARD_ENV",
        value_enum,
        default_value = "development"
    )]
    pub environment: Environment,

    /// Listener and node identity.
    #[command(flatten)]
    pub node: NodeSettings,

    /// Signing secret, token issuance and browser origins.
    #[command(flatten)]
    pub auth: AuthSettings,

    /// Overload protections and sizes.
    #[command(flatten)]
    pub limits: LimitsSettings,

    /// Timers of connections, heartbeats and drains.
    #[command(flatten)]
    pub timing: TimingSettings,

    /// Redis, when several nodes share state.
    #[command(flatten)]
    pub redis: RedisSettings,

    /// STUN and TURN servers handed to clients.
    #[command(flatten)]
    pub ice: IceSettings,

    /// Log format and filter.
    #[command(flatten)]
    pub logging: LogSettings,

    /// The listener's certificate, when it serves https itself.
    #[command(flatten)]
    pub tls: TlsSettings,

    #[command(flatten)]
    pub events: EventSettings,
}

impl Default for Settings {
    /// The defaults clap declares, with no flag given and no environment variable read.
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("switchboard"))
            .mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command
            .try_get_matches_from(["switchboard"])
            .expect("every setting has a default or is optional");
        Self::from_arg_matches(&matches).expect("clap's defaults parse into Settings")
    }
}

/// A setting that cannot be used, with a sentence naming it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn refuse(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The non-empty, trimmed entries of a comma-separated setting.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// Validated, resolved configuration shared by every service, one part per owner.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deployment mode.
    pub environment: Environment,
    /// This node's id and listening address.
    pub node: NodeConfig,
    /// Signing secret, token issuance and browser origins.
    pub auth: AuthConfig,
    /// Overload protections and sizes.
    pub limits: LimitsConfig,
    /// Connection, heartbeat and drain timers.
    pub timing: TimingConfig,
    /// Redis, when several nodes share state; `None` runs on the embedded store.
    pub redis: Option<RedisConfig>,
    /// STUN and TURN servers handed to clients.
    pub ice_servers: Arc<IceServers>,
    /// Log format and filter.
    pub logging: LogConfig,
    /// The listener's certificate files; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Room events and their webhooks; `None` when events are off.
    pub events: Option<EventConfig>,
    /// Said at start-up when `ROOM_EVENTS=auto` left events off on a node sharing Redis.
    pub events_off_warning: Option<String>,
}

impl Config {
    /// Resolves and checks settings for `role`; in production unsafe values are errors.
    pub fn from_settings(s: &Settings, role: Role) -> Result<Config, ConfigError> {
        let environment = s.environment;
        let api_keys = s.auth.api_keys.is_some() || s.auth.api_keys_file.is_some();
        let mut config = Config {
            environment,
            auth: s.auth.resolve(role, environment)?,
            limits: s.limits.resolve()?,
            timing: s.timing.resolve()?,
            redis: s.redis.resolve()?,
            node: s.node.resolve(role, environment)?,
            ice_servers: Arc::new(s.ice.resolve()?),
            logging: s.logging.resolve(),
            tls: s.tls.resolve()?,
            events: s.events.resolve(api_keys)?,
            events_off_warning: None,
        };
        config.events_off_warning = s.events.auto_off_warning(api_keys, config.redis.is_some());
        Ok(config)
    }

    /// Warnings worth printing at start-up (weak but tolerated outside production).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.auth.warnings(self.environment);
        out.extend(self.events_off_warning.clone());
        // Without https a browser grants no camera or microphone, so a production node
        // needs TLS here or at a proxy in front.
        if self.environment.is_production()
            && self.tls.is_none()
            && self.limits.trusted_proxies.is_empty()
        {
            out.push(
                "neither TLS_CERT_FILE/TLS_KEY_FILE nor TRUSTED_PROXIES is set: browsers grant \
                 camera and microphone only to pages served over https, so set TLS_CERT_FILE and \
                 TLS_KEY_FILE to serve https here, or terminate TLS at a proxy and set \
                 TRUSTED_PROXIES to its address"
                    .to_string(),
            );
        }
        out
    }
}
