//! The settings of `switchboard token`: only what minting a token offline reads (the
//! signing keys and the claims), so its `--help` is not the server's forty-odd flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{ClaimSettings, Environment, Settings};

/// Flags of offline token minting, with the server's environment names.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct TokenSettings {
    /// Deployment mode; `production` refuses a short or well-known secret [default: development].
    #[arg(long = "env", env = "SWITCHBOARD_ENV", value_enum)]
    pub environment: Option<Environment>,

    /// JWT signing secret, the server's. Prefer AUTH_SECRET_FILE.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the JWT signing secret (trailing newline ignored).
    #[arg(long, env = "AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    pub auth_secret_file: Option<PathBuf>,

    /// HS256 keys with ids, `kid=secret` separated by commas, the server's.
    #[arg(long, env = "AUTH_KEYS", hide_env_values = true, conflicts_with_all = ["auth_secret", "auth_secret_file"])]
    pub auth_keys: Option<String>,

    /// File of `kid=secret` lines, the server's.
    #[arg(long, env = "AUTH_KEYS_FILE", conflicts_with_all = ["auth_keys", "auth_secret", "auth_secret_file"])]
    pub auth_keys_file: Option<PathBuf>,

    /// Id of the key that signs [default: the first of AUTH_KEYS, or the thumbprint of
    /// AUTH_SIGNING_KEY_FILE's key].
    #[arg(long, env = "AUTH_SIGNING_KID")]
    pub auth_signing_kid: Option<String>,

    /// Ed25519 or P-256 private key (PKCS#8 PEM) that signs, the server's.
    #[arg(long, env = "AUTH_SIGNING_KEY_FILE")]
    pub auth_signing_key_file: Option<PathBuf>,

    /// Default lifetime when `--ttl` is not given [default: the server's, 1h].
    #[arg(long, env = "TOKEN_TTL", value_parser = humantime::parse_duration)]
    pub token_ttl: Option<Duration>,

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
        s.auth.auth_secret = self.auth_secret;
        s.auth.auth_secret_file = self.auth_secret_file;
        s.auth.auth_keys = self.auth_keys;
        s.auth.auth_keys_file = self.auth_keys_file;
        s.auth.auth_signing_kid = self.auth_signing_kid;
        s.auth.auth_signing_key_file = self.auth_signing_key_file;
        if let Some(ttl) = self.token_ttl {
            s.auth.token_ttl = ttl;
        }
        s.auth.claims = self.claims;
        s
    }
}
