//! `switchboard` as a child process, for tests that need a real process to kill or signal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The binary with an empty environment plus `vars`.
pub fn switchboard(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().args(args);
    for (k, v) in vars {
        command.env(k, v);
    }
    command
}

/// Runs the binary with `args` (an empty environment plus `vars`) to completion and
/// returns its standard output; fails showing its standard error when it fails.
pub fn output_of(args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = switchboard(args, vars).output().unwrap();
    assert!(
        out.status.success(),
        "switchboard {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `switchboard keys generate` with `args` (`--alg`, `--kid`): the private key's PEM and
/// its public JWK.
pub fn generated_key(args: &[&str]) -> (String, Value) {
    let mut all = vec!["keys", "generate"];
    all.extend_from_slice(args);
    let text = output_of(&all, &[]);
    let end = "-----END PRIVATE KEY-----\n";
    let split = text.find(end).expect("a private key PEM") + end.len();
    let jwk = serde_json::from_str(text[split..].trim()).expect("a public JWK after the PEM");
    (text[..split].to_string(), jwk)
}

/// A `switchboard serve` child process whose stderr (the logs) is collected line by line.
pub struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `serve` on 127.0.0.1 and a free port with JSON logs; returns its address.
    pub fn start(vars: &[(&str, &str)]) -> (Running, String) {
        Self::start_on(0, vars)
    }

    /// Starts `serve` on 127.0.0.1:`port` (0: any free port); returns its address.
    pub fn start_on(port: u16, vars: &[(&str, &str)]) -> (Running, String) {
        let port = port.to_string();
        Self::spawn(switchboard(
            &["serve", "--bind", "127.0.0.1", "--port", &port],
            vars,
        ))
    }

    /// Starts `command`, a `serve` that logs JSON to stderr (set here); returns the
    /// address it listens on.
    pub fn spawn(mut command: Command) -> (Running, String) {
        let mut child = command
            .env("LOG_FORMAT", "json")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running {
            child,
            lines,
            seen: Vec::new(),
        };
        let listening = running.wait_for(|l| l.contains("\"listening\""));
        let record: Value = serde_json::from_str(&listening).unwrap();
        let address = record["address"].as_str().unwrap().to_string();
        (running, address)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a log line matching `pred`.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + super::patient(super::DEADLINE);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("log line before the deadline");
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    /// Sends SIGTERM, waits for exit, and returns every log line.
    pub fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        super::eventually_blocking("the server to exit after SIGTERM", super::DEADLINE, || {
            self.child.try_wait().unwrap().is_some()
        });
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }

    /// Sends a signal (`-TERM`, `-STOP`, …).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        super::eventually_blocking("the server to exit", super::DEADLINE, || {
            self.child.try_wait().unwrap()
        })
    }

    /// Every log line, once the process has exited.
    pub fn logs(mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }

    /// SIGKILL: the node dies without cleaning up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    /// Kills the process; with `TEST_LOG_DIR` set, keeps its logs there as `<pid>.log`
    /// (what a failed scenario needs to be explained).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = std::env::var_os("TEST_LOG_DIR") {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
            let path = std::path::Path::new(&dir).join(format!("{}.log", self.child.id()));
            let _ = std::fs::write(path, self.seen.join("\n"));
        }
    }
}
