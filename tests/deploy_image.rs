//! deploy/Dockerfile, read as a builder would: a multi-stage build from the official Rust
//! and slim Debian images of one Debian release (build arguments, so local stand-ins can
//! replace them), whose runtime stage runs as a non-root user, exposes 8080, stops with
//! SIGTERM and checks `/health/live` with a tool the runtime stage installs. No builder runs
//! in the test suite (a release build takes minutes); deploy/build-image.sh builds and runs
//! the image where podman, buildah or docker can.

mod common;

use std::process::Command;

use common::edge::template;
use common::tools::run;

/// One instruction: its keyword (upper case) and arguments, continuation lines joined.
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (keyword, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
            Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
            }
        })
        .collect()
}

/// The build arguments declared before the first `FROM` (the only ones a `FROM` can use),
/// with their defaults.
fn global_args(all: &[Instruction]) -> Vec<(String, String)> {
    all.iter()
        .take_while(|i| i.keyword != "FROM")
        .filter(|i| i.keyword == "ARG")
        .map(|i| {
            let (name, default) = i.args.split_once('=').expect("ARG NAME=default");
            (name.to_string(), default.to_string())
        })
        .collect()
}

/// `FROM` arguments with `${NAME}` or `$NAME` replaced by the argument's default.
fn resolve(from: &str, args: &[(String, String)]) -> String {
    let mut out = from.to_string();
    for (name, default) in args {
        out = out
            .replace(&format!("${{{name}}}"), default)
            .replace(&format!("${name}"), default);
    }
    assert!(
        !out.contains('$'),
        "FROM {from} uses an undeclared argument"
    );
    out
}

/// The Debian release an official image tag is built on: `rust:1-slim-bookworm` and
/// `debian:bookworm-slim` are both bookworm.
fn release(image: &str) -> &str {
    let tag = image.rsplit_once(':').map_or("", |(_, tag)| tag);
    tag.split('-')
        .find(|part| {
            *part != "slim" && !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase())
        })
        .unwrap_or("")
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_health_check() {
    let text = std::fs::read_to_string(template("Dockerfile")).unwrap();
    let all = instructions(&text);
    let args = global_args(&all);
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(stages.len(), 2, "a builder stage and a runtime stage");
    // By default, the official images: an operator's build pulls what it always did.
    let builder = resolve(&all[stages[0]].args, &args);
    let (builder_image, alias) = builder.split_once(' ').expect("FROM <image> AS builder");
    assert_eq!(alias, "AS builder");
    assert!(
        builder_image.starts_with("docker.io/library/rust:"),
        "{builder}"
    );
    let runtime = &all[stages[1]..];
    let runtime_image = resolve(&runtime[0].args, &args);
    assert!(
        runtime_image.starts_with("docker.io/library/debian:") && runtime_image.ends_with("-slim"),
        "{runtime_image}"
    );
    // The binary links against the builder's glibc: the runtime must be the same release.
    assert_eq!(release(builder_image), "bookworm", "{builder_image}");
    assert_eq!(release(&runtime_image), release(builder_image));

    let only = |keyword: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    };
    assert!(
        only("COPY").iter().any(|c| c.starts_with("--from=builder")),
        "the runtime stage copies the binary from the builder"
    );
    let user = only("USER");
    let user = user.last().expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as {user}");
    assert_eq!(only("EXPOSE"), ["8080"]);
    assert_eq!(only("STOPSIGNAL"), ["SIGTERM"]);
    assert_eq!(only("ENTRYPOINT"), [r#"["/usr/local/bin/switchboard"]"#]);

    let health = only("HEALTHCHECK");
    let health = health.first().expect("a HEALTHCHECK");
    assert!(health.contains("/health/live"), "{health}");
    // The health check's program must be in the runtime image: it is slim, so installed.
    let tool = health
        .split_once("CMD ")
        .map(|(_, cmd)| cmd.split_whitespace().next().unwrap())
        .expect("HEALTHCHECK ... CMD <program>");
    let installs = only("RUN").join(" ");
    assert!(
        installs.contains(&format!("install -y --no-install-recommends {tool}"))
            || installs.contains(&format!("{tool}-static")),
        "the runtime stage does not install {tool}, which HEALTHCHECK runs"
    );
}

#[test]
fn the_build_context_leaves_out_build_output() {
    let ignore = std::fs::read_to_string(template("../.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
}

#[test]
fn the_image_script_is_valid_bash_and_names_every_builder() {
    let script = template("build-image.sh");
    let (ok, out) = run(Command::new("bash").arg("-n").arg(&script));
    assert!(ok, "bash -n deploy/build-image.sh: {out}");
    let text = std::fs::read_to_string(&script).unwrap();
    for builder in ["podman", "buildah", "docker"] {
        assert!(
            text.contains(builder),
            "build-image.sh never tries {builder}"
        );
    }
    // Whatever base images it settles on (pulled, or local stand-ins), it passes them in.
    let dockerfile = std::fs::read_to_string(template("Dockerfile")).unwrap();
    for (name, _) in global_args(&instructions(&dockerfile)) {
        assert!(
            text.contains(&format!("--build-arg \"{name}=")),
            "build-image.sh never sets the build argument {name}"
        );
    }
    // HEALTHCHECK is Docker's, not OCI's: podman and buildah keep it only in that format.
    assert!(
        text.contains("--format docker"),
        "podman would drop HEALTHCHECK"
    );
}
