//! External programs a test needs (nginx, caddy, promtool, …): present, or the test fails
//! in CI and is skipped with a notice elsewhere.
//!
//! scripts/test.sh installs every one of them; CI runs it with `CI=true`, so a missing tool
//! there is a broken setup that must not pass silently. A developer running one test file
//! without the tool gets a notice naming the package instead of a failure.

use std::process::{Command, Stdio};

/// True when `command` can be run. Without it: fails the test when `CI=true`, otherwise
/// prints a notice naming `package` and returns false (the caller returns early).
pub fn available(command: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let what = format!(
        "`{command}` is not installed (install {package}; scripts/test.sh installs it when missing)"
    );
    if in_ci() {
        panic!("{what}: required in CI");
    }
    eprintln!("SKIPPED outside CI: {what}");
    false
}

/// True on CI (`CI=true`), where every tool must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A fresh, empty directory whose name starts with `label`.
    pub fn new(label: &str) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sb-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Kept with TEST_LOG_DIR set, like the servers' logs, to explain a failure.
        if std::env::var_os("TEST_LOG_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `command`, returning (success, stdout + stderr).
pub fn run(command: &mut Command) -> (bool, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} does not run: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
