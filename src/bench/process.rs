//! Figures about processes from /proc: CPU time and resident memory, and this process's
//! file-descriptor limit.

use std::time::Duration;

use super::BenchError;

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| BenchError::new(format!("cannot read /proc/{pid}/stat: {e}")))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15: 12th and 13th after the state (field 3).
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(BenchError::new(format!(
            "/proc/{pid}/stat has an unexpected shape"
        )));
    };
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_micros(
        (user + system) * 1_000_000 / per_second,
    ))
}

/// Resident memory of a process in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::new(format!("cannot read /proc/{pid}/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::new(format!("/proc/{pid}/status has no VmRSS")))
}

/// CPU time of every measured server process together.
pub fn servers_cpu(pids: &[u32]) -> Result<Duration, BenchError> {
    pids.iter().map(|&p| cpu_time(p)).sum()
}

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    match limit.maximum {
        Some(max) if max > current => {
            let raised = Rlimit {
                current: Some(max),
                maximum: Some(max),
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                max
            } else {
                current
            }
        }
        _ => current,
    }
}
