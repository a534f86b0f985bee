//! The settings of `switchboard token`: only what minting a token offline reads (the
//! signing keys and the claims), so its `--help` is not the server's forty-odd flags.

use std::time::Duration;

use clap::Args;

use super::{ClaimSettings, Environment, Settings, SigningKeySettings};

/// Flags of offline token minting, with the server's environment names.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct TokenSettings {
    /// Deployment mode; `production` refuses a short or well-known secret [default: development].
    #[arg(long = "env", env = "SWITCHBOARD_ENV", value_enum)]
    pub environment: Option<Environment>,

    /// The keys that sign, the server's.
    #[command(flatten)]
    pub signing: SigningKeySettings,

    /// Default lifetime when `--ttl` is not given [default: the server's, 1h].
    #[arg(long, env = "TOKEN_TTL", value_parser = humantime::parse_duration)]
    pub token_ttl: Option<Duration>,

    /// Longest `--ttl` allowed: the servers' TOKEN_MAX_LIFETIME, beyond which they refuse
    /// the token [default: 24h].
    #[arg(long, env = "TOKEN_MAX_LIFETIME", value_parser = humantime::parse_duration)]
    pub token_max_lifetime: Option<Duration>,

    /// Who issues the token, and for whom: must match the server's.
    #[command(flatten)]
    pub claims: ClaimSettings,
}

impl TokenSettings {
    /// The server's settings with these in place and every other one at its default.
    pub fn into_settings(self) -> Settings {
        let mut s = Settings::default();
        if let Some(environment) = self.environment {
            s.environment = environment;
        }
        s.auth.signing = self.signing;
        if let Some(ttl) = self.token_ttl {
            s.auth.token_ttl = ttl;
        }
        if let Some(longest) = self.token_max_lifetime {
            s.auth.token_max_lifetime = longest;
        }
        s.auth.claims = self.claims;
        s
    }
}
