//! Micro-benchmarks of the relay's hot path, to catch regressions: parsing a client's offer
//! or candidate (borrowed, payload kept as raw JSON) and writing the relayed frame.
//!
//! Run: `cargo bench --bench hot_path`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
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

criterion_group!(benches, hot_path);
criterion_main!(benches);
