//! deploy/prometheus and deploy/grafana against the real thing: the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), a real node's
//! `/metrics` passes `promtool check metrics`, and every metric the alerts and the dashboard
//! query exists on that node, so a renamed metric cannot leave a silent alert behind.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use common::SECRET;
use common::edge::template;
use common::process::Running;
use common::tools::{available, run};
use serde_json::Value;

/// Runs promtool in deploy/prometheus (the unit tests name alerts.yml relative to it).
fn promtool(args: &[&str]) -> (bool, String) {
    run(Command::new("promtool")
        .args(args)
        .current_dir(template("prometheus")))
}

#[test]
fn alert_rules_pass_promtool_checks_and_their_unit_tests() {
    if !available("promtool", "prometheus") {
        return;
    }
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
}

/// The `switchboard_*` metric names in `query`, with the histogram suffixes removed.
fn metric_names(query: &str, into: &mut BTreeSet<String>) {
    let mut rest = query;
    while let Some(at) = rest.find("switchboard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        into.insert(base.to_string());
        rest = &tail[end..];
    }
}

/// Every query of the alert rules and the dashboard.
fn queries() -> Vec<String> {
    let rules = std::fs::read_to_string(template("prometheus/alerts.yml")).unwrap();
    let mut queries: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect();
    let alerts = queries.len();
    assert!(alerts >= 6, "alerts.yml has only {alerts} expressions");

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(template("grafana/switchboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(q)) => out.push(q.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut queries);
    assert!(
        queries.len() - alerts >= 10,
        "the dashboard has only {} queries",
        queries.len() - alerts
    );
    queries
}

/// The metric names a scrape exposes: each family (a counter also as `<name>_total`) and
/// each sample's name.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_string());
            if kind == "counter" {
                names.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The scrape in the classic text format that `promtool check metrics` parses: the node
/// serves OpenMetrics, where a counter family is declared without the `_total` its samples
/// carry (`# TYPE x counter`, `x_total 1`); the classic format declares `x_total`. Without
/// this, promtool sees samples of undeclared families and reports "no help text" for each.
fn classic_text(open_metrics: &str) -> String {
    let counters: BTreeSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let declared = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(declared.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn a_real_node_exposes_every_metric_the_alerts_and_dashboard_use() {
    if !available("promtool", "prometheus") || !available("redis-server", "redis-server") {
        return;
    }
    // On Redis, as deployed: the breaker series exist only with a Redis master to guard.
    let redis = common::redis::RedisServer::start().await;
    let url = redis.url();
    let prefix = common::unique_prefix();
    let (_node, addr) = Running::start(&[
        ("AUTH_SECRET", SECRET),
        ("REDIS_URL", &url),
        ("KEY_PREFIX", &prefix),
    ]);
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(classic_text(&text).as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics on a node's /metrics:\n{complaints}\n--- scraped:\n{text}"
    );

    let exposed = exposed(&text);
    let mut used = BTreeSet::new();
    for query in queries() {
        metric_names(&query, &mut used);
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/prometheus/alerts.yml or deploy/grafana/switchboard.json but not on \
         /metrics: {missing:?}\n--- scraped:\n{text}"
    );
}
