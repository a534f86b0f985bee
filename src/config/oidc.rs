//! The settings of tokens from the app's own identity provider (OIDC): its issuer, the
//! audience its tokens carry for this app, and the claim naming the user.

use clap::Args;

use super::{ConfigError, Environment, refuse};
use crate::auth::oidc::DEFAULT_USER_CLAIM;

/// Flags of an OpenID Connect identity provider whose tokens open signaling connections.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Identity provider (OIDC)")]
pub struct OidcSettings {
    /// Issuer URL of an OpenID Connect provider whose tokens are accepted too (e.g.
    /// https://sso.example.com/realms/app); its keys are found through discovery.
    #[arg(long, env = "OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The `aud` value the provider writes in tokens for this app (required with OIDC_ISSUER).
    #[arg(long, env = "OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// The claim of the provider's tokens that holds the user id.
    #[arg(long, env = "OIDC_USER_CLAIM", default_value = DEFAULT_USER_CLAIM)]
    pub oidc_user_claim: String,
}

/// The identity provider, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// `iss` of its tokens, exactly.
    pub issuer: String,
    /// The `aud` its tokens must hold.
    pub audience: String,
    /// The claim holding the user id.
    pub user_claim: String,
}

impl OidcSettings {
    /// The provider, if one is configured; `own_issuer` is TOKEN_ISSUER, which it must
    /// not share (the `iss` of a token says whose rules check it).
    pub fn resolve(
        &self,
        environment: Environment,
        own_issuer: &str,
    ) -> Result<Option<OidcConfig>, ConfigError> {
        let (issuer, audience) = match (&self.oidc_issuer, &self.oidc_audience) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(refuse(
                    "OIDC_AUDIENCE is set without OIDC_ISSUER; set OIDC_ISSUER to the identity \
                     provider's issuer URL, or remove OIDC_AUDIENCE.",
                ));
            }
            (Some(_), None) => {
                return Err(refuse(
                    "OIDC_ISSUER needs OIDC_AUDIENCE: set it to the audience (aud) the identity \
                     provider writes in tokens for this app, e.g. its client id.",
                ));
            }
            (Some(i), Some(a)) => (i.trim(), a.trim()),
        };
        let https = issuer.starts_with("https://");
        if !(https || issuer.starts_with("http://")) || issuer.len() <= "https://".len() {
            return Err(refuse(
                "OIDC_ISSUER must be the provider's issuer URL, e.g. \
                 https://sso.example.com/realms/app (Keycloak) or https://tenant.auth0.com/.",
            ));
        }
        // OpenID Connect Discovery requires https issuers; plain http is for local tests.
        if environment.is_production() && !https {
            return Err(refuse(
                "OIDC_ISSUER must be an https:// URL in production: keys fetched over plain \
                 http could be swapped on the way.",
            ));
        }
        if issuer == own_issuer {
            return Err(refuse(
                "OIDC_ISSUER equals TOKEN_ISSUER; give this service's own tokens another \
                 TOKEN_ISSUER so each token's iss says whose keys check it.",
            ));
        }
        if audience.is_empty() {
            return Err(refuse(
                "OIDC_AUDIENCE is empty; set the aud the provider writes for this app.",
            ));
        }
        let user_claim = self.oidc_user_claim.trim();
        if user_claim.is_empty() {
            return Err(refuse(
                "OIDC_USER_CLAIM is empty; name the claim holding the user id, e.g. sub.",
            ));
        }
        Ok(Some(OidcConfig {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            user_claim: user_claim.to_string(),
        }))
    }
}
