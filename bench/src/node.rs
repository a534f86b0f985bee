//! A `switchboard serve` child process for scenarios that start their own node: on
//! 127.0.0.1 and a free port, killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BenchError;

/// How long the node gets to start listening.
const START: Duration = Duration::from_secs(15);

/// A started node.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The server binary built beside this one (`cargo build --release -p switchboard`).
pub fn default_binary() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::new(format!("cannot locate this binary: {e}")))?;
    let path = exe.with_file_name("switchboard");
    if path.exists() {
        Ok(path)
    } else {
        Err(BenchError::new(format!(
            "{} is missing: build the server beside the bench (cargo build --release -p \
             switchboard -p switchboard-bench), pass --server-bin, or --attach to a running node",
            path.display()
        )))
    }
}

impl Node {
    /// Starts `binary serve` with this process's environment, then `vars` over it; its
    /// log goes to `log` if given, else nowhere.
    pub fn start(
        binary: &Path,
        vars: &[(String, String)],
        log: Option<&Path>,
    ) -> Result<Node, BenchError> {
        let mut sink: Box<dyn Write + Send> =
            match log {
                Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                    BenchError::new(format!("cannot create {}: {e}", path.display()))
                })?),
                None => Box::new(std::io::sink()),
            };
        let mut child = Command::new(binary)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .env("LOG_FORMAT", "json")
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::new(format!("cannot run {}: {e}", binary.display())))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        // Reads the log to its end so the node never blocks on a full pipe; hands over
        // lines until `listening` was seen.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(sink, "{line}");
                let _ = tx.send(line);
            }
        });
        let mut node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + START;
        let mut last = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                return Err(BenchError::new(format!(
                    "the node did not start listening; its last words: {last}"
                )));
            };
            if line.contains("\"listening\"") {
                let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                node.addr = record["address"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| BenchError::new(format!("no address in: {line}")))?;
                return Ok(node);
            }
            last = line;
        }
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|s| s.to_string())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
