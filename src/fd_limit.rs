//! The process's open-file limit: every connection holds one descriptor.

/// Descriptors a node needs besides its client connections: listener, Redis connections,
/// log file, epoll, and token requests in flight.
pub const RESERVED: u64 = 256;

/// Raises this process's soft open-file limit to its hard limit (many systems start
/// processes at a soft 1,024, which would cap a node near a thousand connections);
/// returns the limit now in force.
pub fn raise() -> u64 {
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

/// A warning when `limit` descriptors cannot hold `max_connections` WebSockets and
/// `max_pending` connections not yet upgraded.
pub fn shortfall(limit: u64, max_connections: usize, max_pending: usize) -> Option<String> {
    let needed = (max_connections as u64)
        .saturating_add(max_pending as u64)
        .saturating_add(RESERVED);
    (limit < needed).then(|| {
        format!(
            "this process may hold {limit} open files, fewer than MAX_CONNECTIONS \
             ({max_connections}) plus MAX_PENDING_CONNECTIONS ({max_pending}) plus {RESERVED} \
             need: connections beyond about {} will fail (the oldest pending ones are then \
             closed to make room); raise the hard limit (LimitNOFILE= in a systemd unit, \
             ulimit -Hn, or the container's nofile ulimit) or lower MAX_CONNECTIONS",
            limit.saturating_sub(RESERVED)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_the_connection_cap_is_named_with_what_to_change() {
        assert_eq!(shortfall(11_256, 10_000, 1_000), None);
        assert!(
            shortfall(10_256, 10_000, 1_000).is_some(),
            "pending count too"
        );
        let warning = shortfall(1024, 10_000, 1_000).expect("1,024 cannot hold 10,000");
        assert!(warning.contains("1024 open files"), "{warning}");
        assert!(warning.contains("about 768"), "{warning}");
        assert!(warning.contains("LimitNOFILE"), "{warning}");
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let raised = raise();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(limit.current, Some(raised));
        assert_eq!(limit.maximum, limit.current);
    }
}
