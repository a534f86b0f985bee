//! The JavaScript client package (`clients/js`) against the real binary: starts a node and
//! runs the package's own tests with Node's test runner (`node --test clients/js/test/`),
//! which fetch tokens, join two clients to a room and relay an offer and an answer.
//!
//! Needs `node` (20 or later) on PATH. Without it the test fails under CI (`CI=true`) and
//! is skipped with a notice elsewhere.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::SECRET;
use common::process::Running;

/// Longest the whole Node run may take (every step inside it has its own 10 s deadline).
const NODE_DEADLINE: Duration = Duration::from_secs(60);

/// Node's version, or `None` when there is no `node` on PATH.
fn node_version() -> Option<String> {
    let output = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The flag Node needs for a global `WebSocket`: none from Node 22 on, or
/// `--experimental-websocket` on Node 20 and 21.
fn websocket_flag() -> Option<&'static str> {
    let has_global = std::process::Command::new("node")
        .args([
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    (!has_global).then_some("--experimental-websocket")
}

#[tokio::test]
async fn the_js_package_tests_pass_against_a_real_node() {
    let Some(version) = node_version() else {
        let hint = "node is not on PATH: install Node.js 20 or later (apt-get install nodejs) \
                    to run the JavaScript client's tests";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{hint}");
        }
        eprintln!("SKIPPED the_js_package_tests_pass_against_a_real_node: {hint}");
        return;
    };
    let (_node, address) = Running::start(&[("AUTH_SECRET", SECRET)]);
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    let mut command = tokio::process::Command::new("node");
    command.args(websocket_flag());
    command
        // TAP whatever the version's default reporter, so the counts below can be read.
        .args(["--test-reporter=tap", "--test", "test/"])
        .current_dir(&package)
        .env("SWITCHBOARD_URL", format!("http://{address}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(common::patient(NODE_DEADLINE), command.output())
        .await
        .unwrap_or_else(|_| panic!("node --test did not finish within {NODE_DEADLINE:?}"))
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {version} --test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The server tests skip without SWITCHBOARD_URL; here every one of them must have run.
    let count = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {name} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no '# {name}' count in node's output:\n{stdout}"))
    };
    assert_eq!(count("skipped"), 0, "{stdout}");
    assert!(count("pass") >= 4, "{stdout}");
    assert!(
        stdout.contains("ok 3 - two clients join a room and relay"),
        "the relay test ran and passed:\n{stdout}"
    );
}

/// The package's TypeScript declarations (`index.d.ts`) type-check an app's use of the
/// client with `tsc --strict` (clients/js/typecheck/consumer.ts), and still refuse the
/// misuses that file marks `@ts-expect-error`.
#[test]
fn the_type_declarations_check_with_tsc() {
    let found = std::process::Command::new("tsc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let hint = "tsc is not on PATH: install TypeScript (npm install -g typescript) to check \
                    the JavaScript client's declarations";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{hint}");
        }
        eprintln!("SKIPPED the_type_declarations_check_with_tsc: {hint}");
        return;
    }
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js/typecheck");
    let output = std::process::Command::new("tsc")
        .arg("-p")
        .arg(project.join("tsconfig.json"))
        .output()
        .expect("tsc runs");
    assert!(
        output.status.success(),
        "tsc found errors in the declarations or their use:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
