//! The Auth service's settings: signing secret, token issuance and lifetime, API keys, and
//! the browser origins allowed to open a signaling socket.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{ConfigError, Environment, Role, refuse};
use crate::auth::{ApiKeys, Issuance, MIN_SECRET_BYTES, SigningSecret, Weakness};

/// Longest token lifetime the policy allows.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The claims naming who issued a token and for whom: written and required by the
/// server, and used by the load generator (`switchboard-bench`) to mint tokens it accepts.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ClaimSettings {
    /// `iss` claim written and required in tokens.
    #[arg(
        long,
        env = "TOKEN_ISSUER",
        default_value = "switchboard",
        global = true
    )]
    pub token_issuer: String,

    /// `aud` claim written and required in tokens.
    #[arg(
        long,
        env = "TOKEN_AUDIENCE",
        default_value = "switchboard",
        global = true
    )]
    pub token_audience: String,
}

/// Flags of the signing secret, token issuance and allowed origins.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Auth")]
pub struct AuthSettings {
    /// JWT signing secret (at least 32 bytes). Prefer AUTH_SECRET_FILE in production.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the JWT signing secret (trailing newline ignored).
    #[arg(long, env = "AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    pub auth_secret_file: Option<PathBuf>,

    /// Who may call POST /auth/token [default: open in development, api-key in production].
    #[arg(long, env = "TOKEN_ISSUANCE", value_enum)]
    pub token_issuance: Option<Issuance>,

    /// Explicit opt-in to open token issuance in production.
    #[arg(long, env = "ALLOW_OPEN_ISSUANCE")]
    pub allow_open_issuance: bool,

    /// Comma-separated API keys accepted by POST /auth/token in api-key mode.
    #[arg(long, env = "AUTH_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// File with one API key per line (blank lines and `#` comments ignored).
    #[arg(long, env = "AUTH_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Lifetime of issued tokens (at most 24h), e.g. `1h`, `15m`.
    #[arg(long, env = "TOKEN_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub token_ttl: Duration,

    /// Who issues tokens, and for whom.
    #[command(flatten)]
    pub claims: ClaimSettings,

    /// How long before a token expires the server pushes a fresh one; `0s` disables refresh.
    #[arg(long, env = "TOKEN_REFRESH_BEFORE", value_parser = humantime::parse_duration, default_value = "5m")]
    pub token_refresh_before: Duration,

    /// Comma-separated browser origins allowed to open /ws/signal (required in production).
    #[arg(long, env = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
}

/// The Auth service's resolved settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Signing secret (possibly generated for development).
    pub secret: SigningSecret,
    /// True when the secret was generated at start and dies with the process.
    pub secret_generated: bool,
    /// Who may call `POST /auth/token`.
    pub issuance: Issuance,
    /// Accepted API keys (api-key issuance).
    pub api_keys: ApiKeys,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Lead time for pushing a fresh token; zero disables refresh.
    pub token_refresh_before: Duration,
    /// Allowed browser origins; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
}

impl AuthSettings {
    /// Resolves and checks the auth settings for `role`; in production unsafe values are errors.
    pub fn resolve(&self, role: Role, environment: Environment) -> Result<AuthConfig, ConfigError> {
        let production = environment.is_production();
        let (secret, secret_generated) = self.resolve_secret(role, production)?;

        if self.token_ttl > MAX_TOKEN_TTL {
            return Err(refuse(format!(
                "TOKEN_TTL is {}, above the 24h maximum; set TOKEN_TTL to 24h or less.",
                humantime::format_duration(self.token_ttl)
            )));
        }
        if self.token_ttl < Duration::from_secs(1) {
            return Err(refuse("TOKEN_TTL must be at least 1s."));
        }

        let issuance = self.token_issuance.unwrap_or(if production {
            Issuance::ApiKey
        } else {
            Issuance::Open
        });
        if production
            && role.issues_tokens()
            && issuance == Issuance::Open
            && !self.allow_open_issuance
        {
            return Err(refuse(
                "TOKEN_ISSUANCE=open lets anyone mint tokens; in production use TOKEN_ISSUANCE=api-key \
                 or opt in explicitly with ALLOW_OPEN_ISSUANCE=true.",
            ));
        }
        let api_keys = self.resolve_api_keys()?;
        if role.issues_tokens() && issuance == Issuance::ApiKey && api_keys.is_empty() {
            return Err(refuse(
                "TOKEN_ISSUANCE=api-key needs at least one key in AUTH_API_KEYS or AUTH_API_KEYS_FILE.",
            ));
        }

        let allowed_origins = self.allowed_origins.as_deref().map(|list| {
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        });
        if production
            && role.signals()
            && allowed_origins
                .as_ref()
                .is_some_and(|o| o.iter().any(|a| a == "*"))
        {
            return Err(refuse(
                "ALLOWED_ORIGINS=* allows every origin; in production list the exact origins.",
            ));
        }
        if production && role.signals() && allowed_origins.as_ref().is_none_or(|o| o.is_empty()) {
            return Err(refuse(
                "ALLOWED_ORIGINS is required in production: list the browser origins allowed to connect, \
                 e.g. ALLOWED_ORIGINS=https://app.example.com.",
            ));
        }

        Ok(AuthConfig {
            secret,
            secret_generated,
            issuance,
            api_keys,
            token_ttl: self.token_ttl,
            issuer: self.claims.token_issuer.clone(),
            audience: self.claims.token_audience.clone(),
            token_refresh_before: self.token_refresh_before,
            allowed_origins,
        })
    }

    fn resolve_secret(
        &self,
        role: Role,
        production: bool,
    ) -> Result<(SigningSecret, bool), ConfigError> {
        let given = match (&self.auth_secret, &self.auth_secret_file) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(path)) => {
                let raw = std::fs::read_to_string(path).map_err(|e| {
                    refuse(format!(
                        "AUTH_SECRET_FILE {} cannot be read: {e}.",
                        path.display()
                    ))
                })?;
                Some(raw.trim_end_matches(['\r', '\n']).to_string())
            }
            (None, None) => None,
        };
        let Some(secret) = given else {
            if production {
                return Err(refuse(
                    "AUTH_SECRET (or AUTH_SECRET_FILE) is required in production: \
                     set at least 32 random bytes, e.g. `openssl rand -base64 48`.",
                ));
            }
            if matches!(role, Role::Signal | Role::Token) {
                return Err(refuse(
                    "AUTH_SECRET (or AUTH_SECRET_FILE) is required for this role: \
                     without the auth service's secret no token can be verified or minted.",
                ));
            }
            return Ok((SigningSecret::generate(), true));
        };
        if secret.is_empty() {
            return Err(refuse(
                "AUTH_SECRET is empty; set at least 32 random bytes.",
            ));
        }
        let secret = SigningSecret::new(secret.into_bytes());
        if production {
            match secret.weakness() {
                Some(Weakness::WellKnown) => {
                    return Err(refuse(
                        "AUTH_SECRET is a published, well-known value; generate a new random secret.",
                    ));
                }
                Some(Weakness::TooShort) => {
                    return Err(refuse(format!(
                        "AUTH_SECRET is {} bytes; production requires at least {MIN_SECRET_BYTES}.",
                        secret.as_bytes().len()
                    )));
                }
                None => {}
            }
        }
        Ok((secret, false))
    }

    fn resolve_api_keys(&self) -> Result<ApiKeys, ConfigError> {
        let mut keys: Vec<String> = Vec::new();
        if let Some(list) = &self.api_keys {
            keys.extend(list.split(',').map(str::trim).map(String::from));
        }
        if let Some(path) = &self.api_keys_file {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                refuse(format!(
                    "AUTH_API_KEYS_FILE {} cannot be read: {e}.",
                    path.display()
                ))
            })?;
            keys.extend(
                raw.lines()
                    .map(str::trim)
                    .filter(|l| !l.starts_with('#'))
                    .map(String::from),
            );
        }
        keys.retain(|k| !k.is_empty());
        if let Some(short) = keys.iter().find(|k| k.len() < 16) {
            return Err(refuse(format!(
                "an API key of {} characters is too short to resist guessing; use at least 16.",
                short.len()
            )));
        }
        Ok(ApiKeys::new(keys))
    }
}

impl AuthConfig {
    /// Warnings worth printing at start-up (weak but tolerated outside production).
    pub fn warnings(&self, environment: Environment) -> Vec<String> {
        let mut out = Vec::new();
        if self.secret_generated {
            out.push(
                "no AUTH_SECRET set: using a random secret generated at start; tokens will not \
                 survive a restart and other processes cannot verify them"
                    .to_string(),
            );
        } else if self.secret.is_weak() {
            out.push(
                "AUTH_SECRET is shorter than 32 bytes or a well-known value; production would refuse it"
                    .to_string(),
            );
        }
        if self.issuance == Issuance::Open && environment.is_production() {
            out.push("open token issuance is enabled in production (ALLOW_OPEN_ISSUANCE)".into());
        }
        out
    }
}
