//! Figures about processes from /proc: CPU time and resident memory.

use std::time::{Duration, Instant};

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

/// Resident memory of every measured process together (`None` without processes).
pub fn servers_rss(pids: &[u32]) -> Result<Option<u64>, BenchError> {
    if pids.is_empty() {
        return Ok(None);
    }
    pids.iter()
        .map(|&p| rss_bytes(p))
        .sum::<Result<u64, _>>()
        .map(Some)
}

/// CPU the measured servers and this generator used over a run.
pub struct Used {
    /// Server CPU time (with --server-pid).
    pub server_cpu: Option<Duration>,
    /// Share of one core the servers used.
    pub server_share: Option<f64>,
    /// Share of one core this generator used.
    pub own_share: f64,
}

/// Resource figures around a run: started before it, read after it.
pub struct Meter {
    start: Instant,
    server_cpu: Option<Duration>,
    own_cpu: Duration,
    pids: Vec<u32>,
}

impl Meter {
    /// Reads the starting figures of `pids` (may be empty) and of this process.
    pub fn start(pids: &[u32]) -> Result<Self, BenchError> {
        Ok(Meter {
            start: Instant::now(),
            server_cpu: (!pids.is_empty()).then(|| servers_cpu(pids)).transpose()?,
            own_cpu: cpu_time(std::process::id())?,
            pids: pids.to_vec(),
        })
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// What was used since `start`.
    pub fn stop(&self) -> Result<Used, BenchError> {
        let wall = self.start.elapsed().as_secs_f64();
        let server_cpu = match self.server_cpu {
            Some(before) => Some(servers_cpu(&self.pids)?.saturating_sub(before)),
            None => None,
        };
        let own = cpu_time(std::process::id())?.saturating_sub(self.own_cpu);
        Ok(Used {
            server_cpu,
            server_share: server_cpu.map(|s| s.as_secs_f64() / wall),
            own_share: own.as_secs_f64() / wall,
        })
    }
}
