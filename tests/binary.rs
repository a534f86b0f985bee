//! The `switchboard` binary as an operator runs it: refusals at start-up, offline token
//! minting, `--help`, and a whole run whose captured logs must contain no token.

mod common;

use std::time::Duration;

use common::process::{Running, output_of, switchboard};
use common::{Client, SECRET};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn refusal(args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = switchboard(args, vars).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a refusal for {vars:?}"
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn production_mode_refuses_unsafe_settings_naming_them() {
    let strong = "k".repeat(48);
    let base = [
        ("SWITCHBOARD_ENV", "production"),
        ("AUTH_SECRET", strong.as_str()),
        ("TOKEN_ISSUANCE", "api-key"),
        ("AUTH_API_KEYS", "backend-key-0123456789"),
        ("ALLOWED_ORIGINS", "https://app.example.com"),
    ];
    let with = |key: &str, value: Option<&str>| -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(v) = value {
            vars.push((key.to_string(), v.to_string()));
        }
        vars
    };
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (with("AUTH_SECRET", None), "AUTH_SECRET"),
        (with("AUTH_SECRET", Some("too-short")), "at least 32"),
        (
            with(
                "AUTH_SECRET",
                Some("carrier-grade-webrtc-secret-change-in-production"),
            ),
            "well-known",
        ),
        (with("TOKEN_ISSUANCE", Some("open")), "ALLOW_OPEN_ISSUANCE"),
        (with("TOKEN_TTL", Some("25h")), "TOKEN_TTL"),
        (with("ALLOWED_ORIGINS", None), "ALLOWED_ORIGINS"),
    ];
    for (vars, needle) in cases {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let stderr = refusal(&["serve"], &vars);
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        assert!(!stderr.contains(&strong), "the secret leaked: {stderr}");
    }
}

#[test]
fn signal_role_and_token_command_need_a_secret() {
    assert!(refusal(&["signal"], &[]).contains("AUTH_SECRET"));
    assert!(refusal(&["token", "--user", "alice"], &[]).contains("AUTH_SECRET"));
}

#[test]
fn token_command_mints_a_verifiable_token() {
    let token = output_of(
        &["token", "--user", "alice", "--room", "r1", "--ttl", "10m"],
        &[("AUTH_SECRET", SECRET)],
    );
    let verifier = switchboard::auth::TokenVerifier::new(
        &switchboard::auth::SigningSecret::new(SECRET.as_bytes().to_vec()),
        "switchboard",
        "switchboard",
        switchboard::config::MAX_TOKEN_TTL,
    );
    let claims = verifier.verify(token.trim()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.room.as_deref(), Some("r1"));
    assert_eq!(claims.exp - claims.iat, 600);

    let out = switchboard(
        &["token", "--user", "alice", "--ttl", "25h"],
        &[("AUTH_SECRET", SECRET)],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));

    // The servers' longest lifetime, when raised, is the token command's too.
    let longer = output_of(
        &["token", "--user", "alice", "--ttl", "30h"],
        &[("AUTH_SECRET", SECRET), ("TOKEN_MAX_LIFETIME", "48h")],
    );
    let verifier = switchboard::auth::TokenVerifier::new(
        &switchboard::auth::SigningSecret::new(SECRET.as_bytes().to_vec()),
        "switchboard",
        "switchboard",
        std::time::Duration::from_secs(48 * 3600),
    );
    let claims = verifier.verify(longer.trim()).unwrap();
    assert_eq!(claims.exp - claims.iat, 30 * 3600);
}

#[test]
fn help_documents_every_environment_name_and_hides_secret_values() {
    let out = switchboard(
        &["--help"],
        &[
            ("AUTH_SECRET", "visible-if-leaked-0123456789abcdef"),
            ("AUTH_API_KEYS", "leaky-api-key-0123456789"),
        ],
    )
    .output()
    .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "SWITCHBOARD_ENV",
        "BIND_ADDR",
        "SIGNALING_PORT",
        "AUTH_PORT",
        "AUTH_SECRET",
        "AUTH_SECRET_FILE",
        "TOKEN_ISSUANCE",
        "ALLOW_OPEN_ISSUANCE",
        "AUTH_API_KEYS",
        "AUTH_API_KEYS_FILE",
        "TOKEN_TTL",
        "TOKEN_ISSUER",
        "TOKEN_AUDIENCE",
        "TOKEN_REFRESH_BEFORE",
        "ALLOWED_ORIGINS",
        "MAX_ROOM_PEERS",
        "MAX_MESSAGE_BYTES",
        "OUTBOUND_QUEUE",
        "PING_INTERVAL",
        "IDLE_TIMEOUT",
        "METRICS_ADDR",
        "LOG_FORMAT",
        "LOG_LEVEL",
    ] {
        assert!(help.contains(name), "--help does not mention {name}");
    }
    assert!(!help.contains("visible-if-leaked"));
    assert!(!help.contains("leaky-api-key"));
}

#[tokio::test]
async fn logs_of_a_whole_run_contain_no_token() {
    let (mut server, address) = Running::start(&[
        ("DRAIN_TIMEOUT", "2s"),
        ("AUTH_SECRET", SECRET),
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "debug"),
    ]);
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();

    let issued: Value = http
        .post(format!("http://{address}/auth/token"))
        .json(&json!({"userId": "alice", "roomId": "r1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_token = issued["token"].as_str().unwrap().to_string();
    tokens.push(alice_token.clone());
    let bob_token = common::issuer(Duration::from_secs(600))
        .issue("bob", None, None)
        .token;
    tokens.push(bob_token.clone());

    // Validate by query and by header.
    http.get(format!(
        "http://{address}/auth/validate?token={alice_token}"
    ))
    .send()
    .await
    .unwrap();
    http.get(format!("http://{address}/auth/validate"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();

    // A refused upgrade with a token-shaped value that must not be logged either.
    let bogus = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bogus-signature-value";
    tokens.push(bogus.to_string());
    common::refused(format!("ws://{address}/ws/signal?token={bogus}")).await;

    // alice by query, bob by subprotocol; relay; then alice's socket is closed.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{address}/ws/signal?token={alice_token}"))
            .await
            .unwrap();
    let mut alice = Client {
        ws,
        peer_id: issued["peerId"].as_str().unwrap().into(),
    };
    let mut request = format!("ws://{address}/ws/signal")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("switchboard.v1, bearer.{bob_token}")).unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut bob = Client {
        ws,
        peer_id: String::new(),
    };
    alice.join("r1").await;
    bob.send(json!({"type": "join", "roomId": "r1"})).await;
    let joined = bob.expect("joined").await;
    bob.peer_id = joined["peerId"].as_str().unwrap().into();
    alice.expect("peer_joined").await;
    alice.offer(&bob.peer_id, "v=0").await;
    bob.expect("offer").await;
    alice.ws.close(None).await.unwrap();
    bob.expect("peer_left").await;
    server.wait_for(|l| l.contains("websocket closed"));

    let lines = server.terminate();
    let all = lines.join("\n");
    for token in &tokens {
        assert!(!all.contains(token.as_str()), "a token reached the logs");
        // Not even its signature part alone.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !all.contains(signature),
            "a token signature reached the logs"
        );
    }
    assert!(!all.contains(SECRET));
    // The lines operators rely on are there: redacted access lines, connect and close.
    assert!(all.contains("token=REDACTED"));
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("\"http request\""))
            .count()
            >= 5
    );
    let closed = lines
        .iter()
        .find(|l| l.contains("websocket closed"))
        .unwrap();
    for field in ["close_code", "duration_ms", "remote", "peer", "room"] {
        assert!(closed.contains(field), "close line lacks {field}: {closed}");
    }
    assert!(lines.iter().any(|l| l.contains("websocket connected")));
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

#[tokio::test]
async fn access_log_keeps_no_credential_wherever_a_client_puts_it() {
    let (mut server, address) = Running::start(&[("AUTH_SECRET", SECRET)]);
    let jwt = common::issuer(Duration::from_secs(600))
        .issue("mallory", None, None)
        .token;
    let key = "sk_live_0123456789abcdefGHIJKLMN";
    let http = reqwest::Client::new();
    let mut paths = Vec::new();
    for name in ["jwt", "auth", "t", "token[]", "api_key", "access_token"] {
        for value in [jwt.as_str(), key] {
            paths.push(format!("/auth/validate?room=r1&{name}={value}"));
        }
    }
    paths.push(format!("/auth/validate/{jwt}"));
    paths.push(format!("/{key}/health"));
    paths.push("/health/live?last=1".into());
    for path in &paths {
        http.get(format!("http://{address}{path}"))
            .send()
            .await
            .unwrap();
    }
    // The upgrade is answered before the router, and logged the same way.
    let client = common::connect_at(&address, &jwt).await;
    server.wait_for(|l| l.contains("\"http request\"") && l.contains("last=REDACTED"));
    server.wait_for(|l| {
        l.contains("\"http request\"") && l.contains("/ws/signal") && l.contains("token=REDACTED")
    });
    // Gone before the server stops, so its drain has no one to wait for.
    client.close().await;

    let lines = server.terminate();
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"http request\""))
        .collect();
    assert!(access.len() >= paths.len(), "{access:?}");
    let all = lines.join("\n");
    for secret in jwt.split('.').chain([key]) {
        assert!(!all.contains(secret), "{secret} reached the logs:\n{all}");
    }
    // What an operator needs stays: the route and the names of the parameters.
    assert!(all.contains("room=REDACTED&api_key=REDACTED"));
    assert!(all.contains("/auth/validate/[masked]"));
    assert!(
        access
            .iter()
            .any(|l| l.contains("/ws/signal") && l.contains("\"status\":101")),
        "{access:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_with_goaway_and_a_second_signal_exits_at_once() {
    let (mut server, address) = Running::start(&[("AUTH_SECRET", SECRET), ("DRAIN_TIMEOUT", "2s")]);
    let token = common::issuer(Duration::from_secs(600))
        .issue("a", None, None)
        .token;
    let mut a = common::connect_at(&address, &token).await;
    server.signal("-TERM");
    let goaway = a.expect("goaway").await;
    assert_eq!(goaway["reason"], "shutdown");
    assert!(goaway["reconnectInMs"].as_u64().unwrap() <= 1000);
    // Readiness fails at once while the listener still answers.
    let ready = reqwest::get(format!("http://{address}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(a.expect_close().await, Some(1012));
    assert!(
        server.wait_exit().success(),
        "a drain ends with a clean exit"
    );

    // A drain that would take a minute is cut short by a second signal.
    let (mut server, address) =
        Running::start(&[("AUTH_SECRET", SECRET), ("DRAIN_TIMEOUT", "60s")]);
    let mut b = common::connect_at(&address, &token).await;
    server.signal("-TERM");
    b.expect("goaway").await;
    server.signal("-TERM");
    assert_eq!(server.wait_exit().code(), Some(130));
}

/// The soft and hard open-file limits in a `/proc/<pid>/limits` text.
fn open_files(limits: &str) -> (u64, u64) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("a finite open-file limit"));
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// Started with a low soft open-file limit (a shell's default is often 1,024), a node
/// raises it to the hard limit, says so when it starts, and warns with what to change
/// when even that cannot hold MAX_CONNECTIONS.
#[test]
fn serve_raises_its_open_file_limit_and_warns_when_it_cannot_hold_the_cap() {
    let (_, hard) = open_files(&std::fs::read_to_string("/proc/self/limits").unwrap());
    assert!(
        hard >= 64,
        "the hard open-file limit ({hard}) is too low to test"
    );
    let soft = hard / 2;
    let mut command = std::process::Command::new("/bin/sh");
    command
        .env_clear()
        .env("AUTH_SECRET", SECRET)
        .env("MAX_CONNECTIONS", hard.to_string())
        .args([
            "-c",
            &format!("ulimit -Sn {soft} && exec \"$0\" serve --bind 127.0.0.1 --port 0"),
            common::process::BIN,
        ]);
    let (mut server, _) = Running::spawn(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    assert_eq!(
        open_files(&limits),
        (hard, hard),
        "soft limit raised to the hard one"
    );
    let listening = server.wait_for(|l| l.contains("\"listening\""));
    let record: Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(record["open_files"], hard);
    let warning = server.wait_for(|l| l.contains("open files"));
    assert!(warning.contains("LimitNOFILE"), "{warning}");
}

#[test]
fn version_names_the_crate_version_and_the_git_revision() {
    let version = output_of(&["--version"], &[]);
    let expected = format!("switchboard {}", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    // Built from a git checkout (as tests are), the short revision follows in brackets.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string());
    if let Some(head) = head {
        assert_eq!(version.trim(), format!("{expected} ({head})"));
    }
}

#[test]
fn token_help_lists_only_what_minting_reads() {
    let help = output_of(&["token", "--help"], &[]);
    for own in [
        "--user",
        "--room",
        "--ttl",
        "AUTH_SECRET",
        "AUTH_SECRET_FILE",
        "TOKEN_ISSUER",
    ] {
        assert!(help.contains(own), "token --help lacks {own}:\n{help}");
    }
    for server in [
        "REDIS_URL",
        "SIGNALING_PORT",
        "MAX_CONNECTIONS",
        "TLS_CERT_FILE",
        "LOG_FORMAT",
    ] {
        assert!(
            !help.contains(server),
            "token --help lists {server}:\n{help}"
        );
    }
    // The server's roles keep every setting, given after the role or before it.
    let help = output_of(&["serve", "--help"], &[]);
    assert!(
        help.contains("REDIS_URL") && help.contains("TLS_CERT_FILE"),
        "{help}"
    );
    output_of(
        &["--bind", "127.0.0.1", "--port", "1", "serve", "--help"],
        &[],
    );
}

/// Settings written before the role still reach it, as when they were global flags.
#[test]
fn settings_before_the_role_still_apply() {
    let (server, address) = Running::spawn(switchboard(
        &[
            "--bind",
            "127.0.0.1",
            "--port=0",
            "--node-id",
            "before-role",
            "serve",
        ],
        &[("AUTH_SECRET", SECRET)],
    ));
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let lines = server.terminate();
    assert!(lines.iter().any(|l| l.contains("before-role")), "{lines:?}");
}
