//! Asymmetric keys across roles: an `auth` node signs with an Ed25519 or P-256 key made by
//! `switchboard keys generate`; a `signal` node holding no secret at all verifies with the
//! keys it fetched from AUTH_JWKS_URL, keeps doing so once Auth is gone, and refuses an
//! unknown `kid` quickly, refetching at most once per few seconds.

mod common;

use std::time::{Duration, Instant};

use common::process::{Running, generated_key, switchboard};
use common::tools::Scratch;
use common::{claims, connect_at, issued_token, metric_sum, refused};
use serde_json::{Value, json};

/// `switchboard keys generate --alg <alg>`: the private PEM and the public JWK.
fn generate(alg: &str) -> (String, Value) {
    generated_key(&["--alg", alg])
}

/// The sum of `switchboard_jwks_fetches_total` over results.
async fn fetches(http: &reqwest::Client, addr: &str) -> u64 {
    metric_sum(
        http,
        &format!("http://{addr}"),
        "switchboard_jwks_fetches_total{",
    )
    .await
}

async fn scenario(alg: &str, jws_alg: &str) {
    let scratch = Scratch::new("jwks");
    let (pem, public) = generate(alg);
    assert!(
        public.get("d").is_none(),
        "the public JWK holds the private key"
    );
    let key_file = scratch.join("signing.pem");
    std::fs::write(&key_file, &pem).unwrap();
    let (mut auth, auth_addr) = Running::spawn(switchboard(
        &["auth", "--bind", "127.0.0.1", "--auth-port", "0"],
        &[("AUTH_SIGNING_KEY_FILE", key_file.to_str().unwrap())],
    ));
    let http = reqwest::Client::new();

    // Auth publishes its public key, and nothing secret.
    let jwks: Value = http
        .get(format!("http://{auth_addr}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published = jwks["keys"].as_array().unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["kid"], public["kid"]);
    assert!(published[0].get("d").is_none() && published[0].get("k").is_none());

    let jwks_url = format!("http://{auth_addr}/auth/jwks.json");
    let (_signal, signal_addr) = Running::spawn(switchboard(
        &["signal", "--bind", "127.0.0.1", "--port", "0"],
        &[("AUTH_JWKS_URL", jwks_url.as_str())],
    ));
    let auth_base = format!("http://{auth_addr}");
    let mint = async |user: &str| issued_token(&http, &auth_base, user).await;
    let token = mint("alice").await;
    let later = mint("bob").await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(format!("{:?}", header.alg), jws_alg);
    assert_eq!(header.kid.as_deref(), public["kid"].as_str());
    let mut alice = connect_at(&signal_addr, &token).await;

    // Auth goes away: the cached key keeps verifying new upgrades.
    auth.kill();
    let _bob = connect_at(&signal_addr, &later).await;

    // An unknown kid is refused quickly (one bounded refetch at most), and a burst of
    // them does not become a burst of fetches.
    let stranger = generate(alg).0;
    let key = match alg {
        "ed25519" => jsonwebtoken::EncodingKey::from_ed_pem(stranger.as_bytes()).unwrap(),
        _ => jsonwebtoken::EncodingKey::from_ec_pem(stranger.as_bytes()).unwrap(),
    };
    let mut forged_header = jsonwebtoken::Header::new(header.alg);
    forged_header.kid = Some("not-published".into());
    let forged = jsonwebtoken::encode(&forged_header, &claims("mallory"), &key).unwrap();
    let before = fetches(&http, &signal_addr).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = refused(format!("ws://{signal_addr}/ws/signal?token={forged}")).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            started.elapsed() < common::patient(Duration::from_secs(4)),
            "an unknown kid waited {:?}",
            started.elapsed()
        );
    }
    let after = fetches(&http, &signal_addr).await;
    assert!(
        after - before <= 1,
        "{} fetches for 5 unknown kids",
        after - before
    );
    // The connections opened before stay up.
    alice.send(json!({"type": "ping"})).await;
    alice.expect("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_verify_on_a_signal_node_with_only_a_jwks_url() {
    scenario("ed25519", "EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_on_a_signal_node_with_only_a_jwks_url() {
    scenario("es256", "ES256").await;
}
