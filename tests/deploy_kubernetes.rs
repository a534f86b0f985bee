//! deploy/kubernetes: every manifest validates against the Kubernetes schemas (strictly: an
//! unknown or misspelt field fails), and the pieces agree with each other and with the
//! server: probes on the health endpoints, a grace period that outlasts the drain, a
//! non-root read-only container, selectors that select the pods, the Secret's keys.

mod common;

use std::process::Command;
use std::time::Duration;

use common::edge::template;
use common::tools::{available, run};
use serde_json::Value;

const MANIFESTS: [&str; 5] = [
    "configmap.yaml",
    "deployment.yaml",
    "pdb.yaml",
    "secret.example.yaml",
    "service.yaml",
];

/// A manifest as JSON (PyYAML comes with kubernetes-validate).
fn manifest(name: &str) -> Value {
    let path = template("kubernetes").join(name);
    let (ok, out) = run(Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path));
    assert!(ok, "{name} does not parse as YAML: {out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    if !available(
        "kubernetes-validate",
        "the PyPI package kubernetes-validate",
    ) {
        return;
    }
    let dir = template("kubernetes");
    let listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    for name in &listed {
        assert!(
            MANIFESTS.contains(&name.as_str()),
            "{name} is not checked here"
        );
    }
    let (ok, out) = run(Command::new("kubernetes-validate")
        .arg("--strict")
        .args(MANIFESTS)
        .current_dir(&dir));
    assert!(ok && !out.contains("ERROR"), "kubernetes-validate:\n{out}");
}

#[test]
fn the_deployment_drains_probes_and_runs_unprivileged() {
    if !available("python3", "python3 with PyYAML") {
        return;
    }
    let deployment = manifest("deployment.yaml");
    let config = manifest("configmap.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        "/health/ready"
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        "/health/live"
    );

    let drain = config["data"]["DRAIN_TIMEOUT"]
        .as_str()
        .map(|d| humantime::parse_duration(d).unwrap())
        .unwrap_or(
            switchboard::config::Settings::default()
                .timing
                .drain_timeout,
        );
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop pause before SIGTERM");
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace >= Duration::from_secs(pause) + drain + Duration::from_secs(5),
        "grace {grace:?} leaves no margin after preStop {pause}s and drain {drain:?}"
    );

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());

    // Production mode: the server refuses to start without these, so they must be set.
    assert_eq!(config["data"]["SWITCHBOARD_ENV"], "production");
    assert!(config["data"]["ALLOWED_ORIGINS"].is_string());
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in [
        "AUTH_SECRET_FILE",
        "AUTH_API_KEYS_FILE",
        "REDIS_URL",
        "NODE_ID",
    ] {
        assert!(env.contains(&name), "{name} is not set: {env:?}");
    }
}

#[test]
fn selectors_and_secret_keys_match() {
    if !available("python3", "python3 with PyYAML") {
        return;
    }
    let deployment = manifest("deployment.yaml");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        &manifest("pdb.yaml")["spec"]["selector"]["matchLabels"],
        labels
    );
    let service = manifest("service.yaml");
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");

    let secret = manifest("secret.example.yaml");
    let keys = secret["stringData"].as_object().unwrap();
    let text = serde_json::to_string(&deployment).unwrap();
    for key in ["auth-secret", "api-keys", "redis-url"] {
        assert!(keys.contains_key(key), "the Secret lacks {key}");
        assert!(
            text.contains(&format!("\"{key}\"")),
            "the Deployment never uses {key}"
        );
    }
}
