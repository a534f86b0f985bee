//! deploy/systemd/switchboard.service: systemd itself finds nothing wrong with it, its
//! sandbox rates as well exposed as systemd's own audit allows, and it gives a drain the
//! time it needs before SIGKILL.

mod common;

use std::process::Command;
use std::time::Duration;

use common::edge::template;
use common::process::BIN;
use common::tools::{Scratch, available, run};

/// The unit with its `ExecStart` pointing at the binary under test (verify checks that the
/// program exists and is executable).
fn rendered_unit() -> (Scratch, std::path::PathBuf, String) {
    let unit = std::fs::read_to_string(template("systemd/switchboard.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/switchboard serve"),
        "{unit}"
    );
    let dir = Scratch::new("systemd");
    let path = dir.join("switchboard.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/switchboard", BIN)).unwrap();
    (dir, path, unit)
}

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

#[test]
fn systemd_verifies_the_unit_without_a_warning() {
    if !available("systemd-analyze", "systemd") {
        return;
    }
    let (_dir, path, _) = rendered_unit();
    // Unknown keys and bad values are only warnings to systemd (exit status 0): any output
    // at all fails the test.
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );

    // Exposure 0 (locked down) to 10 (wide open); the threshold is in tenths. A sandboxing
    // line lost in an edit shows up here.
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=25", "--no-pager"])
        .arg(&path));
    assert!(
        ok,
        "systemd-analyze security rates the unit above 2.5:\n{out}"
    );
}

#[test]
fn the_unit_outlasts_a_drain_and_holds_enough_descriptors() {
    let (_dir, _, unit) = rendered_unit();
    let stop = setting(&unit, "TimeoutStopSec").expect("TimeoutStopSec is set");
    let stop: Duration = humantime::parse_duration(stop).unwrap();
    let drain = switchboard::config::Settings::default()
        .timing
        .drain_timeout;
    assert!(
        stop >= drain + Duration::from_secs(5),
        "TimeoutStopSec={stop:?} leaves a {drain:?} drain no margin before SIGKILL"
    );
    assert_eq!(setting(&unit, "KillSignal"), Some("SIGTERM"));
    let files: usize = setting(&unit, "LimitNOFILE").unwrap().parse().unwrap();
    let connections = switchboard::config::Settings::default()
        .limits
        .max_connections;
    assert!(
        files > connections + 256,
        "LimitNOFILE={files} below MAX_CONNECTIONS"
    );
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "DynamicUser",
        "EnvironmentFile",
    ] {
        assert!(setting(&unit, key).is_some(), "{key} is missing");
    }
}
