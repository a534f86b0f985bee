//! Records the git revision the binary is built from, for `switchboard --version`.
//!
//! Outside a git checkout (a source tarball, a container build without `.git`) or without
//! git installed, the version is the crate's alone.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let revision = git(&["rev-parse", "--short", "HEAD"]);
    let version = match &revision {
        Some(rev) => format!("{} ({rev})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    println!("cargo:rustc-env=SWITCHBOARD_VERSION={version}");
    if revision.is_none() {
        return;
    }
    // A new commit moves the branch's ref; a checkout moves HEAD. `--git-path` finds both
    // in a linked worktree too, where `.git` is a file pointing elsewhere.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    // Only files that exist: Cargo reruns the script on every build for a missing one.
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The trimmed output of a successful `git` call, `None` on any failure.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}
