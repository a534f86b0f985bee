//! Checks of the resolved configuration: production refusals name the setting to change.

use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;
use crate::auth::{Issuance, PUBLISHED_DEFAULT_SECRET};
use crate::telemetry::LogFormat;

fn prod() -> Settings {
    let mut s = Settings {
        environment: Environment::Production,
        ..Settings::default()
    };
    s.auth.signing.auth_secret = Some("x".repeat(48));
    s.auth.token_issuance = Some(Issuance::ApiKey);
    s.auth.api_keys = Some("k".repeat(32));
    s.auth.allowed_origins = Some("https://app.example.com".into());
    s
}

fn err(s: &Settings, role: Role) -> String {
    Config::from_settings(s, role).unwrap_err().0
}

/// The settings as the binary's command line declares them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

#[test]
fn default_is_what_clap_parses_from_an_empty_command_line() {
    // Names this process happens to export are not read, so the comparison is with the
    // declared defaults rather than with the machine running the tests.
    let command = Cli::command().mut_args(|arg| match arg.get_env() {
        Some(name) if std::env::var_os(name).is_some() => arg.env(None::<&'static str>),
        _ => arg,
    });
    let matches = command.try_get_matches_from(["switchboard"]).unwrap();
    let parsed = Cli::from_arg_matches(&matches).unwrap().settings;
    assert_eq!(Settings::default(), parsed);
    // A few declared values, so a default that lost its attribute shows up here too.
    let d = Settings::default();
    assert_eq!(d.environment, Environment::Development);
    assert_eq!((d.node.port, d.node.auth_port), (8080, 8081));
    assert_eq!(d.auth.token_ttl, Duration::from_secs(3600));
    assert_eq!(d.limits.max_message_bytes, 64 * 1024);
    assert_eq!(d.redis.redis_timeout, Duration::from_millis(500));
    assert_eq!(d.logging.log_format, LogFormat::Pretty);
}

#[test]
fn every_setting_keeps_an_environment_name() {
    let command = Cli::command();
    let unnamed: Vec<_> = command
        .get_arguments()
        .filter(|a| a.get_id() != "help" && a.get_env().is_none())
        .map(|a| a.get_id().to_string())
        .collect();
    assert!(unnamed.is_empty(), "no environment fallback: {unnamed:?}");
}

#[test]
fn turn_needs_urls_and_secret_together_and_urls_need_their_scheme() {
    let mut s = prod();
    s.ice.turn_urls = Some("turn:127.0.0.1:3478".into());
    assert!(err(&s, Role::Serve).contains("TURN_SECRET"));
    s.ice.turn_urls = None;
    s.ice.turn_secret = Some("s3cret".into());
    assert!(err(&s, Role::Serve).contains("TURN_URLS"));
    s.ice.turn_urls = Some("turn:a:3478, http://b".into());
    let e = err(&s, Role::Serve);
    assert!(e.contains("TURN_URLS") && e.contains("http://b"), "{e}");
    assert!(!e.contains("s3cret"));
    s.ice.turn_urls = Some("turn:a:3478,turns:b:5349".into());
    s.ice.stun_urls = Some("stun:a:3478".into());
    let config = Config::from_settings(&s, Role::Serve).unwrap();
    let servers = config.ice_servers.for_session("x", u64::MAX);
    assert_eq!(servers[0].urls, ["stun:a:3478"]);
    assert_eq!(servers[1].urls, ["turn:a:3478", "turns:b:5349"]);
    s.ice.stun_urls = Some("turn:a".into());
    assert!(err(&s, Role::Serve).contains("STUN_URLS"));
}

#[test]
fn production_baseline_starts() {
    Config::from_settings(&prod(), Role::Serve).unwrap();
}

#[test]
fn production_refuses_missing_short_and_published_secret() {
    let mut s = prod();
    s.auth.signing.auth_secret = None;
    assert!(err(&s, Role::Serve).contains("AUTH_SECRET"));
    s.auth.signing.auth_secret = Some("short-secret".into());
    assert!(err(&s, Role::Serve).contains("at least 32"));
    s.auth.signing.auth_secret = Some(PUBLISHED_DEFAULT_SECRET.into());
    assert!(err(&s, Role::Serve).contains("well-known"));
}

#[test]
fn production_refuses_open_issuance_without_opt_in() {
    let mut s = prod();
    s.auth.token_issuance = Some(Issuance::Open);
    assert!(err(&s, Role::Serve).contains("ALLOW_OPEN_ISSUANCE"));
    s.auth.allow_open_issuance = true;
    Config::from_settings(&s, Role::Serve).unwrap();
    // The default issuance mode in production is api-key, which needs keys.
    let mut s = prod();
    s.auth.token_issuance = None;
    s.auth.api_keys = None;
    assert!(err(&s, Role::Auth).contains("AUTH_API_KEYS"));
}

#[test]
fn ttl_above_a_day_is_refused() {
    let mut s = prod();
    s.auth.token_ttl = Duration::from_secs(25 * 3600);
    assert!(err(&s, Role::Serve).contains("TOKEN_TTL"));
    let mut dev = Settings::default();
    dev.auth.token_ttl = Duration::from_secs(25 * 3600);
    assert!(err(&dev, Role::Serve).contains("TOKEN_TTL"));
}

#[test]
fn the_longest_token_lifetime_is_a_setting_that_bounds_token_ttl() {
    let mut s = prod();
    s.auth.token_max_lifetime = Duration::from_secs(30 * 60);
    assert!(err(&s, Role::Serve).contains("above TOKEN_MAX_LIFETIME"));
    s.auth.token_ttl = Duration::from_secs(20 * 60);
    let config = Config::from_settings(&s, Role::Serve).unwrap();
    assert_eq!(config.auth.max_lifetime, Duration::from_secs(30 * 60));

    s.auth.token_max_lifetime = Duration::from_secs(48 * 3600);
    s.auth.token_ttl = Duration::from_secs(36 * 3600);
    let config = Config::from_settings(&s, Role::Serve).unwrap();
    assert_eq!(config.auth.token_ttl, Duration::from_secs(36 * 3600));

    for refused in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        s.auth.token_max_lifetime = refused;
        assert!(err(&s, Role::Serve).contains("TOKEN_MAX_LIFETIME"));
    }
}

#[test]
fn production_requires_origin_allowlist_for_signaling() {
    let mut s = prod();
    s.auth.allowed_origins = None;
    assert!(err(&s, Role::Signal).contains("ALLOWED_ORIGINS"));
    // The auth role opens no WebSocket, so it needs no allowlist.
    Config::from_settings(&s, Role::Auth).unwrap();
    s.auth.allowed_origins = Some("https://a.example.com,*".into());
    assert!(err(&s, Role::Serve).contains("ALLOWED_ORIGINS=*"));
}

#[test]
fn development_generates_a_secret_but_signal_role_refuses() {
    let c = Config::from_settings(&Settings::default(), Role::Serve).unwrap();
    assert!(c.auth.secret_generated);
    assert!(c.warnings()[0].contains("will not survive a restart"));
    assert!(err(&Settings::default(), Role::Signal).contains("AUTH_SECRET"));
    assert!(err(&Settings::default(), Role::Token).contains("AUTH_SECRET"));
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("sb-secret-{}", std::process::id()));
    std::fs::write(&dir, format!("{}\n", "s".repeat(40))).unwrap();
    let mut s = prod();
    s.auth.signing.auth_secret_file = Some(dir.clone());
    s.auth.signing.auth_secret = None;
    let c = Config::from_settings(&s, Role::Serve).unwrap();
    assert!(!c.auth.weak_secret);
    std::fs::remove_file(dir).unwrap();
}

#[test]
fn the_auth_role_listens_on_its_own_port() {
    let s = Settings::default();
    let auth = Config::from_settings(&s, Role::Auth).unwrap();
    let serve = Config::from_settings(&s, Role::Serve).unwrap();
    assert_eq!(auth.node.listen.port(), s.node.auth_port);
    assert_eq!(serve.node.listen.port(), s.node.port);
}

#[test]
fn metrics_leave_the_client_port_in_production_and_when_given_an_address() {
    let dev = Config::from_settings(&Settings::default(), Role::Serve).unwrap();
    assert_eq!(
        dev.node.metrics, None,
        "development keeps /metrics on the main port"
    );
    let production = Config::from_settings(&prod(), Role::Serve).unwrap();
    assert_eq!(
        production.node.metrics,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    for mut s in [Settings::default(), prod()] {
        s.node.metrics_addr = Some("10.0.0.5:9100".parse().unwrap());
        let c = Config::from_settings(&s, Role::Serve).unwrap();
        assert_eq!(c.node.metrics, Some("10.0.0.5:9100".parse().unwrap()));
        s.node.metrics_addr = Some(format!("127.0.0.1:{}", s.node.port).parse().unwrap());
        assert!(err(&s, Role::Serve).contains("METRICS_ADDR"));
    }
}

#[test]
fn connection_phase_deadlines_have_defaults_and_cannot_be_zero() {
    let config = Config::from_settings(&Settings::default(), Role::Serve).unwrap();
    assert_eq!(config.timing.head_timeout, Duration::from_secs(10));
    assert_eq!(config.timing.join_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.max_pending, 1_000);
    assert_eq!(config.limits.max_pending_per_ip, 64);
    let mut s = Settings::default();
    s.timing.upgrade_timeout = Duration::ZERO;
    assert!(err(&s, Role::Serve).contains("UPGRADE_TIMEOUT must be at least 100ms"));
    let mut s = Settings::default();
    s.limits.max_pending_connections = 0;
    assert!(err(&s, Role::Serve).contains("MAX_PENDING_CONNECTIONS"));
}

#[test]
fn tls_needs_both_files_and_production_without_it_or_a_proxy_warns() {
    let mut s = prod();
    s.tls.tls_cert_file = Some("cert.pem".into());
    let e = err(&s, Role::Serve);
    assert!(
        e.contains("TLS_CERT_FILE") && e.contains("TLS_KEY_FILE"),
        "{e}"
    );
    s.tls.tls_cert_file = None;
    s.tls.tls_key_file = Some("key.pem".into());
    assert!(err(&s, Role::Serve).contains("without TLS_CERT_FILE"));

    let https = "browsers grant camera and microphone only to pages served over https";
    s.tls.tls_key_file = None;
    let warnings = Config::from_settings(&s, Role::Serve).unwrap().warnings();
    assert!(warnings.iter().any(|w| w.contains(https)), "{warnings:?}");
    s.limits.trusted_proxies = Some("10.0.0.0/8".into());
    let warnings = Config::from_settings(&s, Role::Serve).unwrap().warnings();
    assert!(!warnings.iter().any(|w| w.contains(https)), "{warnings:?}");
    s.limits.trusted_proxies = None;
    s.tls.tls_cert_file = Some("cert.pem".into());
    s.tls.tls_key_file = Some("key.pem".into());
    let config = Config::from_settings(&s, Role::Serve).unwrap();
    assert!(!config.warnings().iter().any(|w| w.contains(https)));
    assert_eq!(
        config.tls.unwrap().cert,
        std::path::PathBuf::from("cert.pem")
    );
    // Development stays quiet: a laptop serves http://localhost, which browsers trust.
    let mut dev = Settings::default();
    dev.auth.signing.auth_secret = Some("x".repeat(48));
    let config = Config::from_settings(&dev, Role::Serve).unwrap();
    assert!(!config.warnings().iter().any(|w| w.contains(https)));
}

#[test]
fn production_accepts_a_signal_node_with_only_public_keys() {
    let mut s = prod();
    s.auth.signing.auth_secret = None;
    s.auth.api_keys = None;
    s.auth.auth_jwks_url = Some("https://auth.example.com/auth/jwks.json".into());
    let c = Config::from_settings(&s, Role::Signal).unwrap();
    assert!(c.auth.keyring.signer().is_none());
    // The roles that sign still need a signing key.
    assert!(err(&s, Role::Auth).contains("AUTH_SIGNING_KEY_FILE"));
    s.auth.auth_jwks_url = Some("ftp://auth.example.com/keys".into());
    assert!(err(&s, Role::Signal).contains("AUTH_JWKS_URL"));
}

#[test]
fn auth_keys_and_auth_secret_cannot_both_be_given() {
    let parsed = Cli::try_parse_from([
        "switchboard",
        "--auth-secret",
        &"x".repeat(40),
        "--auth-keys",
        &format!("a={}", "y".repeat(40)),
    ]);
    assert!(parsed.is_err());
}

#[test]
fn an_identity_provider_needs_an_audience_and_https_in_production() {
    const KEYCLOAK: &str = "https://sso.example.com/realms/app";
    let mut s = prod();
    s.auth.signing.auth_secret = None;
    s.auth.api_keys = None;
    s.auth.oidc.oidc_issuer = Some(KEYCLOAK.into());
    assert!(err(&s, Role::Signal).contains("OIDC_AUDIENCE"));
    s.auth.oidc.oidc_audience = Some("switchboard-app".into());
    // A signal node needs nothing else to verify the provider's tokens.
    let oidc = Config::from_settings(&s, Role::Signal)
        .unwrap()
        .auth
        .oidc
        .unwrap();
    assert_eq!(oidc.issuer, KEYCLOAK);
    assert_eq!(oidc.user_claim, "sub");
    s.auth.oidc.oidc_issuer = Some("http://sso.example.com/realms/app".into());
    assert!(err(&s, Role::Signal).contains("https://"));
    s.auth.oidc.oidc_issuer = Some("sso.example.com".into());
    assert!(err(&s, Role::Signal).contains("issuer URL"));
    // The issuer says whose rules check a token: it cannot be ours as well.
    s.auth.oidc.oidc_issuer = Some(KEYCLOAK.into());
    s.auth.claims.token_issuer = KEYCLOAK.into();
    assert!(err(&s, Role::Signal).contains("TOKEN_ISSUER"));
    s.auth.oidc.oidc_issuer = None;
    s.auth.auth_jwks_url = Some("https://auth.example.com/auth/jwks.json".into());
    assert!(err(&s, Role::Signal).contains("without OIDC_ISSUER"));
    // Development accepts a plain-http provider (a local Keycloak, a test's).
    let mut dev = Settings::default();
    dev.auth.signing.auth_secret = Some("x".repeat(48));
    dev.auth.oidc.oidc_issuer = Some("http://127.0.0.1:8080/realms/app".into());
    dev.auth.oidc.oidc_audience = Some("app".into());
    dev.auth.oidc.oidc_user_claim = "email".into();
    let oidc = Config::from_settings(&dev, Role::Serve)
        .unwrap()
        .auth
        .oidc
        .unwrap();
    assert_eq!(oidc.user_claim, "email");
}
