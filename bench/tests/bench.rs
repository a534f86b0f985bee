//! `switchboard-bench` against real `switchboard serve` processes (and a real redis-server
//! for the multi-node scenario): each scenario runs small and bounded, and its JSON report
//! must show the traffic it generated, nothing lost, and the server figures it measured.
//! The server is the binary built beside the generator: `cargo test --workspace` (what
//! scripts/test.sh runs) builds both.

mod fixtures;

use fixtures::{Node, Redis, SECRET, bench_command, server_binary};
use serde_json::Value;

/// The arguments of `switchboard-bench`, written as on a command line.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs `switchboard-bench --json <line>`; returns the report.
fn bench(line: &str) -> Value {
    let out = bench_command(&words(&format!("--json {line}")))
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
}

/// Settings for a node under load: the per-connection message limit out of the way.
const LOAD: [(&str, &str); 3] = [
    ("AUTH_SECRET", SECRET),
    ("MESSAGE_RATE", "100000"),
    ("MESSAGE_BURST", "100000"),
];

/// A node under load: the process, its `ws://` URL and its pid.
fn server() -> (Node, String, String) {
    let (node, address) = Node::start(&LOAD);
    let pid = node.pid().to_string();
    (node, format!("ws://{address}"), pid)
}

/// A number in the report, failing the test when it is missing.
fn figure(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("expected a number, found {value}"))
}

/// Every message arrived once and in order, and the run did not fail.
fn assert_clean(run: &Value) {
    assert!(run["received"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["received"], run["sent"], "{run}");
    for field in ["lost", "duplicated", "reordered", "errors"] {
        assert_eq!(run[field], 0, "{field}: {run}");
    }
    assert!(run["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{run}");
    let latency = &run["latency_us"];
    assert!(figure(&latency["max"]) >= figure(&latency["p99"]), "{run}");
}

#[test]
fn closed_loop_relay_reports_latency_and_server_cpu() {
    let (_server, url, pid) = server();
    let report = bench(&format!(
        "--url {url} --secret {SECRET} --server-pid {pid} relay --pairs 3 --duration 1s"
    ));
    assert_eq!(report["scenario"], "relay");
    assert_eq!(report["mode"], "closed-loop");
    let run = &report["runs"][0];
    assert_clean(run);
    assert!(
        run["server_cpu_us_per_msg"].as_f64().unwrap() > 0.0,
        "{run}"
    );
}

#[test]
fn open_loop_candidates_at_a_rate_through_the_token_endpoint() {
    let (_server, url, _) = server();
    // No --secret: tokens come from POST /auth/token (open issuance in development).
    let report = bench(&format!(
        "--url {url} relay --pairs 2 --message candidate --rate 200 --duration 1s"
    ));
    assert_eq!(report["mode"], "open-loop");
    let run = &report["runs"][0];
    assert_clean(run);
    // 200/s for 1 s, give or take a tick at either end.
    let sent = run["sent"].as_u64().unwrap();
    assert!((180..=220).contains(&sent), "{run}");
}

#[test]
fn a_sweep_raises_the_rate_step_by_step_up_to_the_cap() {
    let (_server, url, _) = server();
    let report = bench(&format!(
        "--url {url} --secret {SECRET} relay --pairs 2 --sweep --rate 100 --sweep-factor 2 --max-rate 400 --duration 500ms --p99-bound 5s"
    ));
    let targets: Vec<f64> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(targets, [100.0, 200.0, 400.0]);
    report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_clean);
    assert_eq!(report["max_sustained_rate"], 400.0);
}

#[test]
fn idle_connections_are_held_and_measured() {
    let (_server, url, pid) = server();
    let report = bench(&format!(
        "--url {url} --secret {SECRET} --server-pid {pid} idle --connections 40 --hold 200ms"
    ));
    let idle = &report["idle"];
    assert_eq!(idle["held"], 40, "{idle}");
    assert_eq!(idle["errors"], 0, "{idle}");
    assert!(idle["server_rss_after"].as_u64() > Some(0), "{idle}");
    // 40 fresh connections grow a just-started node by over a megabyte (about 35 KB
    // each while its runtime warms up), so the figure is positive, not merely present.
    assert!(figure(&idle["bytes_per_connection"]) > 0.0, "{idle}");
}

#[test]
fn a_join_storm_completes_every_handshake() {
    let (_server, url, pid) = server();
    let report = bench(&format!(
        "--url {url} --server-pid {pid} join-storm --joins 60 --concurrency 8"
    ));
    let storm = &report["storm"];
    assert_eq!(storm["completed"], 60, "{report}");
    assert_eq!(storm["errors"], 0, "{report}");
    assert!(storm["rate"].as_f64().unwrap() > 0.0);
    assert!(storm["latency_us"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn multi_node_puts_the_peers_of_a_pair_on_different_nodes() {
    let redis = Redis::start();
    let url = redis.url();
    let vars = [LOAD.as_slice(), &[("REDIS_URL", url.as_str())]].concat();
    let (_one, first) = Node::start(&vars);
    let (_two, second) = Node::start(&vars);
    let (first, second) = (format!("ws://{first}"), format!("ws://{second}"));
    let report = bench(&format!(
        "--url {first} --url {second} --secret {SECRET} multi-node --pairs 2 --duration 1s"
    ));
    assert_eq!(report["scenario"], "multi-node");
    let run = &report["runs"][0];
    assert_clean(run);
    // Every relayed message crossed nodes: one XADD to the other node's inbox each.
    let stats = redis.cli(&["INFO", "commandstats"]);
    let xadds: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_xadd:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        xadds >= run["received"].as_u64().unwrap(),
        "{xadds} XADDs: {run}"
    );
}

#[test]
fn messages_the_server_refuses_are_reported_with_the_reason() {
    // The default per-connection limit (50/s, burst 200) refuses part of a closed loop.
    let (_server, address) = Node::start(&[("AUTH_SECRET", SECRET)]);
    let report = bench(&format!(
        "--url ws://{address} --secret {SECRET} relay --pairs 1 --duration 1s"
    ));
    let run = &report["runs"][0];
    assert!(run["lost"].as_u64() > Some(0), "{run}");
    assert!(run["errors"].as_u64() > Some(0), "{run}");
    let first = report["first_error"].as_str().unwrap_or_default();
    assert!(first.contains("rate_limited"), "{report}");
}

#[test]
fn a_short_soak_delivers_honest_traffic_and_accounts_for_every_hostile_client() {
    // The soak starts its own node (production settings) from the binary given.
    let server = server_binary();
    let report = bench(&format!(
        "soak --duration 4s --hostile 2 --pairs 2 --rate 40 --flood-rate 200 --server-bin {}",
        server.display()
    ));
    assert_eq!(report["scenario"], "soak");
    let honest = &report["runs"][0];
    assert!(honest["received"].as_u64() > Some(0), "{honest}");
    assert_eq!(honest["lost"], 0, "{honest}");
    let soak = &report["soak"];
    let kinds = soak["hostile"].as_array().unwrap();
    assert_eq!(kinds.len(), 15, "{soak}");
    for kind in kinds {
        // Every client connected or was refused; every connected one was ended or is
        // counted as open at the end, whatever the server did.
        let count = |field: &str| kind[field].as_u64().unwrap();
        assert_eq!(count("clients"), 2, "{kind}");
        assert_eq!(count("connected") + count("refused"), 2, "{kind}");
        let closed: u64 = kind["closed"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(closed + count("open_at_end"), count("connected"), "{kind}");
    }
    // The kinds refused at once get the answer that names their fault.
    let kind = |name: &str| kinds.iter().find(|k| k["kind"] == name).unwrap();
    for (name, answer) in [
        ("bad-token", "http 401"),
        ("bad-id", "http 400"),
        ("bad-handshake", "http 400"),
        ("log-probe", "http 401"),
        ("metrics-probe", "http 404"),
        ("sdp-object", "error: \"invalid_message\""),
    ] {
        assert_eq!(kind(name)["answers"][answer], 2, "{}", kind(name));
    }
    assert_eq!(
        kind("close-then-read")["closed"]["close 1000"],
        2,
        "{}",
        kind("close-then-read")
    );
    let memory = &soak["memory"];
    assert!(
        figure(&memory["peak"]) >= figure(&memory["baseline"]),
        "{memory}"
    );
    assert!(
        soak["server"]
            .as_str()
            .unwrap()
            .contains("SWITCHBOARD_ENV=production"),
        "{soak}"
    );
}

#[test]
fn bad_targets_get_a_clear_refusal() {
    for (line, says) in [
        (
            "--url http://127.0.0.1:1 relay".to_string(),
            "use ws://host:port",
        ),
        (
            "--url ws://127.0.0.1:1 multi-node".into(),
            "at least two --url",
        ),
        (
            format!("--url ws://127.0.0.1:1 --secret {SECRET} relay --pairs 1"),
            "cannot connect to 127.0.0.1:1",
        ),
    ] {
        let out = bench_command(&words(&line)).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{line}: {stderr}");
    }
}
