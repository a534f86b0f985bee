//! The client's address: the socket peer, or `X-Forwarded-For` when (and only when) the
//! peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An IP network in CIDR form (`10.0.0.0/8`, `::1`). Hand-rolled: a dozen lines, not worth
/// a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    addr: IpAddr,
    prefix: u8,
}

/// A trusted-proxy entry that is not an IP network.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not an IP network: {0}")]
pub struct BadNet(pub String);

impl FromStr for TrustedNet {
    type Err = BadNet;

    fn from_str(s: &str) -> Result<Self, BadNet> {
        let bad = || BadNet(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(TrustedNet { addr, prefix })
    }
}

impl TrustedNet {
    /// True when `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client address: with a trusted proxy as peer, the rightmost `X-Forwarded-For` entry
/// that is not itself a trusted proxy; otherwise the peer. A client cannot spoof its
/// address by sending the header directly.
pub fn client_ip(peer: SocketAddr, forwarded_for: Option<&str>, trusted: &[TrustedNet]) -> IpAddr {
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer_ip) {
        return peer_ip;
    }
    let Some(header) = forwarded_for else {
        return peer_ip;
    };
    let mut last = peer_ip;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            // Garbage in the chain: trust nothing left of it.
            return last;
        };
        if !is_trusted(ip) {
            return ip;
        }
        last = ip;
    }
    last
}

/// The client address of an HTTP request, from its socket peer and `X-Forwarded-For`
/// (believed only from `trusted` proxies).
pub fn request_ip(
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[TrustedNet],
) -> IpAddr {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    client_ip(peer, forwarded, trusted)
}

/// Whether a request from `peer` was forwarded by a proxy in `trusted` (it names its
/// client in `X-Forwarded-For`).
pub fn via_trusted_proxy(
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[TrustedNet],
) -> bool {
    let ip = peer.ip().to_canonical();
    headers.contains_key("x-forwarded-for") && trusted.iter().any(|net| net.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<TrustedNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn parses_networks_and_rejects_garbage() {
        let n: TrustedNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let v6: TrustedNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedNet>().is_err());
        assert!("proxy".parse::<TrustedNet>().is_err());
    }

    #[test]
    fn forwarded_for_is_honoured_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8", "::1"]);
        let proxy: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:1234".parse().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(stranger, Some("203.0.113.9"), &trusted),
            stranger.ip()
        );
        // Behind a trusted proxy: the client it saw.
        assert_eq!(
            client_ip(proxy, Some("203.0.113.9"), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A chain: a spoofed left-most entry is skipped, the first untrusted hop from the right wins.
        assert_eq!(
            client_ip(proxy, Some("1.1.1.1, 203.0.113.9, 10.0.0.7"), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy.ip());
        assert_eq!(client_ip(proxy, None, &trusted), proxy.ip());
        // An IPv4 proxy seen through a dual-stack listener is still the trusted proxy.
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:1234".parse().unwrap();
        assert_eq!(
            client_ip(mapped, Some("203.0.113.9"), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // IPv6 clients in the chain.
        assert_eq!(
            client_ip(proxy, Some("2001:db8::7, 10.0.0.9"), &trusted),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
    }
}
