//! The Auth service's settings: signing secret, token issuance and lifetime, API keys, and
//! the browser origins allowed to open a signaling socket.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::oidc::{OidcConfig, OidcSettings};
use super::{ConfigError, Environment, Role, refuse};
use crate::auth::key_files::{KeySources, Source};
use crate::auth::{ApiKeys, Issuance, Keyring, SigningSecret};

/// Longest token lifetime the policy allows unless `TOKEN_MAX_LIFETIME` says otherwise.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Highest `TOKEN_MAX_LIFETIME` accepted: a longer-lived bearer token is a standing key.
const LIFETIME_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// The keys this node signs with (and verifies its own tokens by).
    #[command(flatten)]
    pub signing: SigningKeySettings,

    /// JWKS file of public keys that verify tokens (signaling nodes need no secret then).
    #[arg(long, env = "AUTH_PUBLIC_KEYS_FILE")]
    pub auth_public_keys_file: Option<PathBuf>,

    /// URL of the Auth service's public keys (e.g. https://auth.example.com/auth/jwks.json):
    /// fetched at start, cached, refetched periodically and for an unknown kid.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// An OpenID Connect identity provider whose tokens are accepted too.
    #[command(flatten)]
    pub oidc: OidcSettings,

    /// How often the keys at AUTH_JWKS_URL (and OIDC_ISSUER's) are refetched.
    #[arg(long, env = "AUTH_JWKS_REFRESH", value_parser = humantime::parse_duration, default_value = "5m")]
    pub auth_jwks_refresh: Duration,

    /// How often key files and AUTH_API_KEYS_FILE are checked for changes; `0s`: only
    /// SIGHUP reloads them.
    #[arg(long, env = "KEYS_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub keys_reload_interval: Duration,

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

    /// Lifetime of issued tokens (at most TOKEN_MAX_LIFETIME), e.g. `1h`, `15m`.
    #[arg(long, env = "TOKEN_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub token_ttl: Duration,

    /// Longest lifetime (`exp - iat`) a token may have to be accepted, ours or an identity
    /// provider's (at most 7d).
    #[arg(long, env = "TOKEN_MAX_LIFETIME", value_parser = humantime::parse_duration, default_value = "24h")]
    pub token_max_lifetime: Duration,

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

/// Flags of the keys that sign tokens, shared by the server and `switchboard token`.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct SigningKeySettings {
    /// JWT signing secret (at least 32 bytes). Prefer AUTH_SECRET_FILE in production.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the JWT signing secret (trailing newline ignored; reloaded on change).
    #[arg(long, env = "AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    pub auth_secret_file: Option<PathBuf>,

    /// HS256 keys with ids, `kid=secret` separated by commas (each secret at least 32 bytes);
    /// the first signs unless AUTH_SIGNING_KID names another. Prefer AUTH_KEYS_FILE.
    #[arg(long, env = "AUTH_KEYS", hide_env_values = true, conflicts_with_all = ["auth_secret", "auth_secret_file"])]
    pub auth_keys: Option<String>,

    /// File of `kid=secret` lines (blank lines and `#` comments ignored; reloaded on change).
    #[arg(long, env = "AUTH_KEYS_FILE", conflicts_with_all = ["auth_keys", "auth_secret", "auth_secret_file"])]
    pub auth_keys_file: Option<PathBuf>,

    /// Id of the key that signs new tokens [default: the first of AUTH_KEYS, or the
    /// thumbprint of AUTH_SIGNING_KEY_FILE's key].
    #[arg(long, env = "AUTH_SIGNING_KID")]
    pub auth_signing_kid: Option<String>,

    /// Ed25519 (EdDSA) or P-256 (ES256) private key, PKCS#8 PEM, that signs new tokens;
    /// its public key is published at /auth/jwks.json (reloaded on change).
    #[arg(long, env = "AUTH_SIGNING_KEY_FILE")]
    pub auth_signing_key_file: Option<PathBuf>,
}

/// The Auth service's resolved settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where keys and API keys come from, read again on every reload.
    pub sources: KeySources,
    /// The keys as read at start (the generated secret, in development without keys).
    pub keyring: Keyring,
    /// True when the secret was generated at start and dies with the process.
    pub secret_generated: bool,
    /// True when AUTH_SECRET is short or well known (tolerated outside production).
    pub weak_secret: bool,
    /// The Auth service's published keys, fetched by signaling nodes.
    pub jwks_url: Option<String>,
    /// The identity provider whose tokens are accepted too.
    pub oidc: Option<OidcConfig>,
    /// How often remote keys (Auth's, the identity provider's) are refetched.
    pub jwks_refresh: Duration,
    /// How often key files are checked; zero: SIGHUP only.
    pub keys_reload_interval: Duration,
    /// Who may call `POST /auth/token`.
    pub issuance: Issuance,
    /// Accepted API keys (api-key issuance).
    pub api_keys: ApiKeys,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Longest lifetime a token may have to be accepted.
    pub max_lifetime: Duration,
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
        let (sources, secret_generated) = self.key_sources(role, production)?;
        let loaded = sources.load().map_err(|e| refuse(e.0))?;
        if let Some(url) = &self.auth_jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(refuse(
                "AUTH_JWKS_URL must be an http:// or https:// URL, e.g. \
                 https://auth.example.com/auth/jwks.json.",
            ));
        }

        if self.token_max_lifetime > LIFETIME_CEILING
            || self.token_max_lifetime < Duration::from_secs(1)
        {
            return Err(refuse(format!(
                "TOKEN_MAX_LIFETIME is {}; set it between 1s and 7d (the default is 24h).",
                humantime::format_duration(self.token_max_lifetime)
            )));
        }
        if self.token_ttl > self.token_max_lifetime {
            return Err(refuse(format!(
                "TOKEN_TTL is {}, above TOKEN_MAX_LIFETIME ({}); tokens this node issued would be \
                 refused. Set TOKEN_TTL to {} or less.",
                humantime::format_duration(self.token_ttl),
                humantime::format_duration(self.token_max_lifetime),
                humantime::format_duration(self.token_max_lifetime)
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
        let api_keys = loaded.api_keys;
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
            sources,
            keyring: loaded.keyring,
            weak_secret: loaded.weak_secret,
            jwks_url: self.auth_jwks_url.clone(),
            oidc: self.oidc.resolve(environment, &self.claims.token_issuer)?,
            jwks_refresh: self.auth_jwks_refresh,
            keys_reload_interval: self.keys_reload_interval,
            secret_generated,
            issuance,
            api_keys,
            token_ttl: self.token_ttl,
            max_lifetime: self.token_max_lifetime,
            issuer: self.claims.token_issuer.clone(),
            audience: self.claims.token_audience.clone(),
            token_refresh_before: self.token_refresh_before,
            allowed_origins,
        })
    }

    /// Where the keys come from, checked against what `role` needs: a development
    /// `serve` or `auth` without any key gets a generated secret.
    fn key_sources(&self, role: Role, production: bool) -> Result<(KeySources, bool), ConfigError> {
        let mut sources = KeySources {
            secret: match (&self.signing.auth_secret, &self.signing.auth_secret_file) {
                (Some(v), _) => Some(Source::Value(SigningSecret::new(v.clone().into_bytes()))),
                (None, Some(path)) => Some(Source::File(path.clone())),
                (None, None) => None,
            },
            hmac_keys: match (&self.signing.auth_keys, &self.signing.auth_keys_file) {
                (Some(v), _) => Some(Source::Value(v.clone())),
                (None, Some(path)) => Some(Source::File(path.clone())),
                (None, None) => None,
            },
            signing_kid: self.signing.auth_signing_kid.clone(),
            signing_key_file: self.signing.auth_signing_key_file.clone(),
            public_keys_file: self.auth_public_keys_file.clone(),
            api_keys: self.api_keys.clone(),
            api_keys_file: self.api_keys_file.clone(),
            production,
        };
        let signs = matches!(role, Role::Serve | Role::Auth | Role::Token);
        if signs && !sources.can_sign() {
            if production || role == Role::Token {
                return Err(refuse(
                    "AUTH_SECRET (or AUTH_SECRET_FILE) is required to sign tokens, or AUTH_KEYS / \
                     AUTH_KEYS_FILE, or AUTH_SIGNING_KEY_FILE: set at least 32 random bytes, e.g. \
                     `openssl rand -base64 48`, or create a key with `switchboard keys generate`.",
                ));
            }
            sources.secret = Some(Source::Value(SigningSecret::generate()));
            return Ok((sources, true));
        }
        if role == Role::Signal
            && !sources.any()
            && self.auth_jwks_url.is_none()
            && self.oidc.oidc_issuer.is_none()
        {
            return Err(refuse(
                "AUTH_SECRET (or AUTH_SECRET_FILE) is required for this role, or the Auth service's \
                 public keys (AUTH_JWKS_URL or AUTH_PUBLIC_KEYS_FILE), or an identity provider \
                 (OIDC_ISSUER): without them no token can be verified.",
            ));
        }
        Ok((sources, false))
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
        } else if self.weak_secret {
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
