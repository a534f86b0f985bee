//! The process's real load, from the kernel: CPU time from `/proc/self/stat`, resident
//! memory from `/proc/self/statm`, and the memory limit of its cgroup (or of the machine).
//! Where `/proc` is missing (not Linux) every figure is zero and nothing is ever shed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Kernel clock ticks per second for CPU times; 100 on every Linux platform in use.
const TICKS_PER_SECOND: f64 = 100.0;
/// Page size for `statm`; 4 KiB on the platforms this runs on.
const PAGE_BYTES: u64 = 4096;

/// One reading of the process's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSample {
    /// CPU used since the previous reading, as a fraction of the cores available.
    pub cpu: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Resident memory as a fraction of the cgroup limit (or of the machine's memory).
    pub memory: f64,
}

/// The latest reading, refreshed by a background task.
#[derive(Debug, Default)]
pub struct LoadGuard {
    latest: Mutex<LoadSample>,
}

impl LoadGuard {
    /// Starts sampling every `every`.
    pub fn spawn(every: Duration) -> Arc<LoadGuard> {
        let guard = Arc::new(LoadGuard::default());
        let weak = Arc::downgrade(&guard);
        tokio::spawn(async move {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let limit = memory_limit();
            let mut previous = (Instant::now(), cpu_seconds());
            // The first reading covers a whole interval: a CPU share measured over a few
            // microseconds would be noise (and could shed a node that just started).
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                let Some(guard) = weak.upgrade() else { return };
                let now = (Instant::now(), cpu_seconds());
                let wall = now.0.saturating_duration_since(previous.0).as_secs_f64();
                let cpu = if wall > 0.0 {
                    (now.1 - previous.1).max(0.0) / wall / cores
                } else {
                    0.0
                };
                previous = now;
                let rss_bytes = rss_bytes();
                let memory = limit.map_or(0.0, |l| rss_bytes as f64 / l as f64);
                *guard.latest.lock().unwrap_or_else(|p| p.into_inner()) = LoadSample {
                    cpu,
                    rss_bytes,
                    memory,
                };
            }
        });
        guard
    }

    /// The latest reading.
    pub fn sample(&self) -> LoadSample {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource above its threshold in the latest reading, if any (fractions; 0 or
    /// above 1 disables that check).
    pub fn overloaded(&self, max_cpu: f64, max_memory: f64) -> Option<Overload> {
        let s = self.sample();
        if max_cpu > 0.0 && max_cpu <= 1.0 && s.cpu > max_cpu {
            return Some(Overload::Cpu);
        }
        if max_memory > 0.0 && max_memory <= 1.0 && s.memory > max_memory {
            return Some(Overload::Memory);
        }
        None
    }
}

/// The resource a node is short of when it sheds load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// CPU use above `SHED_CPU_PERCENT`.
    Cpu,
    /// Memory use above `SHED_MEMORY_PERCENT`.
    Memory,
}

impl Overload {
    /// The name in metrics labels and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Overload::Cpu => "cpu",
            Overload::Memory => "memory",
        }
    }
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// User plus system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
        .map_or(0.0, |ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime from a `/proc/<pid>/stat` line; fields are counted after the last `)`
/// because the process name may itself contain spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the full line, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE_BYTES)
}

/// The cgroup v2 memory limit, else the machine's memory.
fn memory_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        parse_mem_total(&meminfo)
    })
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_process_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(
            parse_mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_process_shows_cpu_and_memory() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let guard = LoadGuard::spawn(Duration::from_millis(100));
        let spin = std::thread::spawn(|| {
            let end = std::time::Instant::now() + Duration::from_millis(600);
            let mut x = 0u64;
            while std::time::Instant::now() < end {
                x = x.wrapping_mul(31).wrapping_add(1);
            }
            x
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while guard.sample().cpu <= 0.0 {
            assert!(Instant::now() < deadline, "no CPU use was measured");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        spin.join().unwrap();
        let s = guard.sample();
        assert!(s.rss_bytes > 0 && s.memory > 0.0 && s.memory < 1.0, "{s:?}");
        assert_eq!(guard.overloaded(0.0, 0.0), None, "zero disables the checks");
        // The CPU check off: the test threads beside this one can take the process over
        // a whole core's worth between two samples, which would make it answer `Cpu`.
        assert_eq!(guard.overloaded(0.0, 1e-12), Some(Overload::Memory));
    }
}
