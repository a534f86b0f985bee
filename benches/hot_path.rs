//! Micro-benchmarks of the relay's hot path, to catch regressions: parsing a client's offer
//! or candidate (borrowed, payload kept as raw JSON) and writing the relayed frame; and
//! what a join spends on its token (signing one at `POST /auth/token`, verifying it at the
//! upgrade), which a relay without tokens does not pay.
//!
//! Run: `cargo bench --bench hot_path`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use switchboard::auth::{SigningSecret, TokenIssuer, TokenVerifier};
use switchboard::signaling::protocol::{Command, Outgoing, parse};

/// An offer of about 2 KB with the escapes a real SDP has.
fn offer() -> String {
    let line = "a=candidate:842163049 1 udp 1677729535 203.0.113.7 61234 typ srflx raddr 10.0.0.2 rport 61234 generation 0\\r\\n";
    let sdp = format!("v=0\\r\\n{}", line.repeat(2048 / line.len()));
    format!(r#"{{"type":"offer","peerId":"bob-5f2c0e8a9d3b4c1e8f7a6b5c4d3e2f10","sdp":"{sdp}"}}"#)
}

fn candidate() -> String {
    r#"{"type":"ice-candidate","peerId":"bob-5f2c0e8a9d3b4c1e8f7a6b5c4d3e2f10","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61234 typ srflx raddr 10.0.0.2 rport 61234 generation 0 ufrag f9Qe network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"f9Qe"}}"#.to_string()
}

fn hot_path(c: &mut Criterion) {
    let from = "alice-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    for (name, text) in [("offer 2 KB", offer()), ("candidate", candidate())] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function("parse", |b| {
            b.iter(|| black_box(parse(black_box(&text))).1.is_ok())
        });
        let (_, parsed) = parse(&text);
        let Ok(Command::Relay { kind, payload, .. }) = parsed else {
            panic!("the sample is a relay message")
        };
        group.bench_function("relayed frame", |b| {
            b.iter(|| Outgoing::relay(kind, black_box(from), payload).to_frame())
        });
        group.bench_function("parse + relayed frame", |b| {
            b.iter(|| {
                let (_, parsed) = parse(black_box(&text));
                match parsed {
                    Ok(Command::Relay { kind, payload, .. }) => {
                        Some(Outgoing::relay(kind, from, payload).to_frame())
                    }
                    _ => None,
                }
            })
        });
        group.finish();
    }
}

/// HS256, the default: a token as `POST /auth/token` issues it, for a user and a room.
fn token(c: &mut Criterion) {
    let secret = SigningSecret::new(b"bench-only-secret-not-for-production-0123456789".to_vec());
    let ttl = Duration::from_secs(3600);
    let issuer = TokenIssuer::new(&secret, "switchboard", "switchboard", ttl);
    let verifier = TokenVerifier::new(&secret, "switchboard", "switchboard", ttl);
    let token = issuer.issue("alice", Some("standup"), None).token;
    let mut group = c.benchmark_group("token");
    group.bench_function("sign", |b| {
        b.iter(|| issuer.issue(black_box("alice"), Some("standup"), None))
    });
    group.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&token)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, hot_path, token);
criterion_main!(benches);
