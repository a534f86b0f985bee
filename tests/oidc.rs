//! Tokens from the app's own identity provider (OIDC_ISSUER) on real `serve` and `signal`
//! processes. The provider is a tiny HTTP server inside the test serving a discovery
//! document and a JWKS of an RSA key (made with `openssl genpkey`) and a P-256 key (made
//! with `switchboard keys generate`); tokens are minted here with jsonwebtoken.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{Running, generated_key, switchboard};
use common::tools::{Scratch, run};
use common::{connect_at, refused};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The audience the provider writes for this app.
const AUDIENCE: &str = "switchboard-app";

/// A signing key of the provider: its algorithm, key id and private half.
struct ProviderKey {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
}

impl ProviderKey {
    /// Signs `claims` with this key under its own `kid`.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// A 2048-bit RSA key from `openssl genpkey` (PKCS#8 PEM) and its public JWK.
fn rsa_key(scratch: &Scratch) -> (ProviderKey, Jwk, String) {
    let path = scratch.join("rsa.pem");
    let (ok, out) = run(std::process::Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path.to_str().unwrap(),
    ]));
    assert!(ok, "openssl genpkey: {out}");
    let pem = std::fs::read(&path).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("rsa-1".into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let public_json = serde_json::to_string(&jwk).unwrap();
    let key = ProviderKey {
        alg: Algorithm::RS256,
        kid: "rsa-1".into(),
        key,
    };
    (key, jwk, public_json)
}

/// A P-256 key from `switchboard keys generate` and its public JWK.
fn ec_key() -> (ProviderKey, Jwk) {
    let (pem, jwk) = generated_key(&["--alg", "es256", "--kid", "ec-1"]);
    let jwk: Jwk = serde_json::from_value(jwk).unwrap();
    let key = ProviderKey {
        alg: Algorithm::ES256,
        kid: "ec-1".into(),
        key: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    };
    (key, jwk)
}

/// The provider: `GET <issuer>/.well-known/openid-configuration` and the JWKS it names.
struct Provider {
    issuer: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Provider {
    /// Serves `keys` on `listener` under the issuer path `/realms/app` (Keycloak's form).
    fn serve(listener: TcpListener, keys: Vec<Jwk>) -> Provider {
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}/realms/app");
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })
        .to_string();
        let jwks = json!({ "keys": keys }).to_string();
        let pages = Arc::new([
            ("/realms/app/.well-known/openid-configuration", discovery),
            ("/realms/app/protocol/openid-connect/certs", jwks),
        ]);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let pages = pages.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let response = match pages.iter().find(|(p, _)| *p == path) {
                        Some((_, body)) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\
                                 connection: close\r\n\r\n"
                            .to_string(),
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Provider { issuer, task }
    }
}

/// Claims as the provider writes them for `user` (an access token for this app).
fn claims(issuer: &str, user: &str) -> Value {
    let now = switchboard::auth::unix_now();
    json!({
        "iss": issuer, "aud": [AUDIENCE, "account"], "sub": user, "azp": AUDIENCE,
        "iat": now, "exp": now + 300, "jti": "idp-1", "email": format!("{user}@example.com"),
    })
}

/// `base` with `changes` applied.
fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// Connects with `token` and joins `room`; returns the peer id the node gave.
async fn connect_and_join(addr: &str, token: &str, room: &str) -> (common::Client, String) {
    let mut client = connect_at(addr, token).await;
    client.send(json!({"type": "join", "roomId": room})).await;
    let joined = client.expect("joined").await;
    assert_eq!(joined["roomId"], room);
    let peer = joined["peerId"].as_str().unwrap().to_string();
    (client, peer)
}

/// Asserts `token` is refused at the upgrade with a 401 whose message contains `why`
/// and never the token; returns how long the refusal took.
async fn assert_refused(addr: &str, token: &str, why: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = refused(format!("ws://{addr}/ws/signal?token={token}")).await;
    let took = started.elapsed();
    assert_eq!(status, 401, "{why}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "expected \"{why}\" in: {body}");
    assert!(
        !body.to_string().contains(token),
        "the token is echoed: {body}"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_open_connections_beside_our_own_and_bad_ones_are_refused() {
    if !common::tools::available("openssl", "openssl") {
        return;
    }
    let scratch = Scratch::new("oidc");
    let (rsa, rsa_jwk, rsa_public) = rsa_key(&scratch);
    let (ec, ec_jwk) = ec_key();
    let provider = Provider::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        vec![rsa_jwk, ec_jwk],
    );
    let issuer = provider.issuer.as_str();
    // A serve node with its own secret: it accepts its own tokens and the provider's.
    let (_node, addr) = Running::start(&[
        ("AUTH_SECRET", common::SECRET),
        ("OIDC_ISSUER", issuer),
        ("OIDC_AUDIENCE", AUDIENCE),
    ]);

    // RS256 and ES256 tokens of the provider: connected, joined, named by `sub`, each
    // with a session of its own.
    let (mut alice, alice_peer) =
        connect_and_join(&addr, &rsa.sign(&claims(issuer, "alice")), "standup").await;
    assert!(alice_peer.starts_with("alice-"), "{alice_peer}");
    let (_bob, bob_peer) =
        connect_and_join(&addr, &ec.sign(&claims(issuer, "bob")), "standup").await;
    assert!(bob_peer.starts_with("bob-"), "{bob_peer}");
    let joined = alice.expect("peer_joined").await;
    assert_eq!(joined["peerId"], bob_peer.as_str());
    // Our own tokens still work on the same node.
    let (_carol, _) = common::client_at(&addr, "carol").await;

    let good = claims(issuer, "mallory");
    let refusals = [
        (
            "wrong issuer",
            rsa.sign(&with(good.clone(), json!({"iss": format!("{issuer}-other")}))),
            // Not the provider's: checked as one of ours, whose only key is AUTH_SECRET.
            "not signed with the algorithm of its key",
        ),
        (
            "wrong audience",
            rsa.sign(&with(good.clone(), json!({"aud": "another-app"}))),
            "another audience",
        ),
        (
            "expired",
            ec.sign(&with(
                good.clone(),
                json!({"iat": switchboard::auth::unix_now() - 900, "exp": switchboard::auth::unix_now() - 600}),
            )),
            "expired",
        ),
        (
            "user id breaking the identifier rules",
            rsa.sign(&with(good.clone(), json!({"sub": "admin\u{202E}txt.exe"}))),
            "sub claim is not a usable user id",
        ),
        (
            "HS256 with the public key as the secret",
            {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("rsa-1".into());
                jsonwebtoken::encode(
                    &header,
                    &good,
                    &EncodingKey::from_secret(rsa_public.as_bytes()),
                )
                .unwrap()
            },
            "not signed with the algorithm of its key",
        ),
        ("alg none", unsigned(&good), "not signed with the algorithm of its key"),
    ];
    for (case, token, why) in &refusals {
        eprintln!("refusal: {case}");
        assert_refused(&addr, token, why).await;
    }

    // An unknown kid: one bounded refetch of the provider's keys at most, then a 401.
    let stranger = ProviderKey {
        kid: "not-published".into(),
        ..ec_key().0
    };
    let took = assert_refused(
        &addr,
        &stranger.sign(&good),
        "signing key (kid) is not known",
    )
    .await;
    assert!(
        took < common::patient(Duration::from_secs(4)),
        "an unknown kid waited {took:?}"
    );

    // The connections opened before stay up.
    alice.send(json!({"type": "ping"})).await;
    alice.expect("pong").await;
}

/// `claims` under `{"alg": "none", "kid": "rsa-1"}` with an empty signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.",
        b64(r#"{"alg":"none","kid":"rsa-1"}"#),
        b64(&claims.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_unreachable_at_start_costs_a_quick_401_until_it_answers() {
    // A port nobody listens on yet: the provider comes up there later.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let issuer = format!("http://127.0.0.1:{port}/realms/app");
    let (ec, ec_jwk) = ec_key();
    let (mut node, addr) = Running::spawn(switchboard(
        &["signal", "--bind", "127.0.0.1", "--port", "0"],
        &[
            ("OIDC_ISSUER", issuer.as_str()),
            ("OIDC_AUDIENCE", AUDIENCE),
        ],
    ));
    // The node started and said why the provider's tokens cannot be checked yet.
    let warning =
        tokio::task::block_in_place(|| node.wait_for(|l| l.contains("public keys not fetched")));
    assert!(warning.contains("OIDC_ISSUER"), "{warning}");

    let token = ec.sign(&claims(&issuer, "alice"));
    let took = assert_refused(&addr, &token, "signing key (kid) is not known").await;
    assert!(
        took < common::patient(Duration::from_secs(4)),
        "a token waited {took:?} for an unreachable provider"
    );

    // The provider comes up: the node's retries find it, and the same token connects.
    let _provider = Provider::serve(
        TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        vec![ec_jwk],
    );
    tokio::task::block_in_place(|| node.wait_for(|l| l.contains("public keys fetched")));
    let (_alice, peer) = connect_and_join(&addr, &token, "standup").await;
    assert!(peer.starts_with("alice-"), "{peer}");
}
