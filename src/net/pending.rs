//! Connections accepted and not yet upgraded to a WebSocket, counted per node
//! (`MAX_PENDING_CONNECTIONS`) and per client IP (`MAX_PENDING_PER_IP`), apart from the
//! WebSockets `MAX_CONNECTIONS` counts, so a flood of half-open connections cannot crowd
//! out real clients.
//!
//! Over a cap the *oldest* pending connection (of that IP, or of the node) is shed and the
//! new one admitted: an honest client finishes its upgrade within a round trip or two, so
//! the oldest pending connections are those an attacker holds open, and a newcomer always
//! gets its chance. When the process runs out of file descriptors the accept loop sheds the
//! oldest pending connections the same way to free some.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::resilience::TrustedNet;
use crate::telemetry::Metrics;

/// Why a pending connection was closed before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Its client IP reached `MAX_PENDING_PER_IP` with a newer connection.
    PerIp,
    /// The node reached `MAX_PENDING_CONNECTIONS` with a newer connection.
    Node,
    /// The process ran out of file descriptors.
    OutOfFiles,
}

impl Shed {
    /// The `reason` label of `switchboard_deadline_closes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::PerIp => "pending_per_ip",
            Shed::Node => "pending_node",
            Shed::OutOfFiles => "out_of_files",
        }
    }
}

/// The node's pending connections, oldest first.
pub struct Pending {
    /// A `std` mutex: held for a few map operations, never across an `.await`.
    registry: Mutex<Registry>,
    max: usize,
    /// 0: no per-IP cap.
    max_per_ip: usize,
    /// Proxies, whose many clients share one address: no per-IP cap for them.
    exempt: Arc<[TrustedNet]>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    /// By admission order: the first entry is the oldest.
    by_age: BTreeMap<u64, Entry>,
    by_ip: HashMap<IpAddr, BTreeSet<u64>>,
}

struct Entry {
    ip: IpAddr,
    shed: oneshot::Sender<Shed>,
}

/// One pending connection's place; dropping it (the connection upgraded or closed) frees it.
pub struct Ticket {
    pending: Arc<Pending>,
    id: u64,
    /// Fires when the connection is shed: close it at once.
    pub shed: oneshot::Receiver<Shed>,
}

impl Pending {
    /// Caps of `max` pending connections per node and `max_per_ip` per client IP (0: none),
    /// `exempt` proxies aside.
    pub fn new(
        max: usize,
        max_per_ip: usize,
        exempt: Arc<[TrustedNet]>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::default(),
            max: max.max(1),
            max_per_ip,
            exempt,
            metrics,
        })
    }

    /// Admits a connection from `ip`, shedding the oldest pending one of that IP or of the
    /// node when a cap is exceeded.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let mut registry = self.lock();
        let id = registry.next;
        registry.next += 1;
        registry.by_age.insert(id, Entry { ip, shed: tx });
        let of_ip = registry.by_ip.entry(ip).or_default();
        of_ip.insert(id);
        let over_ip = self.max_per_ip > 0
            && of_ip.len() > self.max_per_ip
            && !self.exempt.iter().any(|net| net.contains(ip));
        if over_ip && let Some(&oldest) = of_ip.first() {
            self.shed(&mut registry, oldest, Shed::PerIp);
        }
        while registry.by_age.len() > self.max {
            let Some((&oldest, _)) = registry.by_age.first_key_value() else {
                break;
            };
            self.shed(&mut registry, oldest, Shed::Node);
        }
        self.metrics.pending.set(registry.by_age.len() as i64);
        drop(registry);
        Ticket {
            pending: self.clone(),
            id,
            shed: rx,
        }
    }

    /// Sheds up to `n` of the oldest pending connections; returns how many it shed.
    pub fn shed_oldest(&self, n: usize, why: Shed) -> usize {
        let mut registry = self.lock();
        let oldest: Vec<u64> = registry.by_age.keys().take(n).copied().collect();
        for &id in &oldest {
            self.shed(&mut registry, id, why);
        }
        self.metrics.pending.set(registry.by_age.len() as i64);
        oldest.len()
    }

    /// Connections pending now.
    pub fn len(&self) -> usize {
        self.lock().by_age.len()
    }

    /// True when no connection is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shed(&self, registry: &mut Registry, id: u64, why: Shed) {
        if let Some(entry) = registry.remove(id) {
            self.metrics.cut(why.as_str());
            // The connection may have ended meanwhile; then there is nothing to close.
            let _ = entry.shed.send(why);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding it leaves the maps consistent (each step is one insert
        // or remove), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registry {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.by_age.remove(&id)?;
        if let Some(of_ip) = self.by_ip.get_mut(&entry.ip) {
            of_ip.remove(&id);
            if of_ip.is_empty() {
                self.by_ip.remove(&entry.ip);
            }
        }
        Some(entry)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut registry = self.pending.lock();
        registry.remove(self.id);
        self.pending
            .metrics
            .pending
            .set(registry.by_age.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn pending(max: usize, per_ip: usize) -> Arc<Pending> {
        Pending::new(max, per_ip, Arc::from([]), Metrics::new())
    }

    #[test]
    fn over_the_per_ip_cap_that_ips_oldest_is_shed_and_others_are_untouched() {
        let p = pending(100, 2);
        let mut other = p.admit(ip(2));
        let mut first = p.admit(ip(1));
        let mut second = p.admit(ip(1));
        let mut third = p.admit(ip(1));
        assert_eq!(first.shed.try_recv(), Ok(Shed::PerIp));
        assert!(second.shed.try_recv().is_err());
        assert!(third.shed.try_recv().is_err());
        assert!(other.shed.try_recv().is_err());
        assert_eq!(p.len(), 3);
        drop((first, second, third, other));
        assert!(p.is_empty());
    }

    #[test]
    fn over_the_node_cap_the_oldest_anywhere_is_shed() {
        let p = pending(2, 0);
        let mut a = p.admit(ip(1));
        let mut b = p.admit(ip(2));
        let mut c = p.admit(ip(3));
        assert_eq!(a.shed.try_recv(), Ok(Shed::Node));
        assert!(b.shed.try_recv().is_err() && c.shed.try_recv().is_err());
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn trusted_proxies_have_no_per_ip_cap() {
        let proxy: TrustedNet = "10.0.0.1".parse().unwrap();
        let p = Pending::new(100, 1, Arc::from([proxy]), Metrics::new());
        let mut tickets: Vec<Ticket> = (0..5).map(|_| p.admit(ip(1))).collect();
        assert!(tickets.iter_mut().all(|t| t.shed.try_recv().is_err()));
    }

    #[test]
    fn running_out_of_files_sheds_the_oldest_first() {
        let p = pending(100, 0);
        let mut tickets: Vec<Ticket> = (0..5).map(|i| p.admit(ip(i))).collect();
        assert_eq!(p.shed_oldest(2, Shed::OutOfFiles), 2);
        let shed: Vec<bool> = tickets
            .iter_mut()
            .map(|t| t.shed.try_recv().is_ok())
            .collect();
        assert_eq!(shed, [true, true, false, false, false]);
        let text = p.metrics.encode();
        assert!(
            text.contains(r#"switchboard_deadline_closes_total{reason="out_of_files"} 2"#),
            "{text}"
        );
        assert!(text.contains("switchboard_pending_connections 3"), "{text}");
    }
}
