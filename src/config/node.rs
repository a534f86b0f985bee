//! The node: the addresses it listens on and the id other nodes know it by.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Args;

use super::{ConfigError, Environment, Role, refuse};

/// Where `/metrics` listens in production when METRICS_ADDR is unset: loopback, so
/// the client-facing port never serves it; 9464 is Prometheus' customary exporter port.
pub const PRODUCTION_METRICS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// Flags of the listener and the node's identity.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Node")]
pub struct NodeSettings {
    /// Address to bind the HTTP/WebSocket listener to.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port of the `serve` and `signal` roles.
    #[arg(long, env = "SIGNALING_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Port of the `auth` role.
    #[arg(long, env = "AUTH_PORT", default_value_t = 8081)]
    pub auth_port: u16,

    /// This node's id (letters, digits, `.`, `_`, `-`) [default: generated at start].
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Address of a separate listener for `/metrics`, which then leaves the client-facing
    /// port [default: the client-facing port in development, 127.0.0.1:9464 in production].
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// The node's resolved identity and listening address.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub id: String,
    /// Where the role's HTTP server listens: AUTH_PORT for `auth`, SIGNALING_PORT otherwise.
    pub listen: SocketAddr,
    /// Where `/metrics` has its own listener; `None` serves it on `listen` (development only).
    pub metrics: Option<SocketAddr>,
}

impl NodeSettings {
    /// Resolves the node's id (generating one when unset), the listening address of `role`
    /// and where `/metrics` is served.
    pub fn resolve(&self, role: Role, environment: Environment) -> Result<NodeConfig, ConfigError> {
        let port = if role == Role::Auth {
            self.auth_port
        } else {
            self.port
        };
        let listen = SocketAddr::new(self.bind, port);
        // Production never serves metrics to the clients' port.
        let metrics = self.metrics_addr.or(environment
            .is_production()
            .then_some(PRODUCTION_METRICS_ADDR));
        if metrics.is_some_and(|m| m.port() == port && port != 0) {
            return Err(refuse(format!(
                "METRICS_ADDR uses port {port}, the client-facing port; give /metrics a port of its own."
            )));
        }
        Ok(NodeConfig {
            id: self.resolve_id()?,
            listen,
            metrics,
        })
    }

    fn resolve_id(&self) -> Result<String, ConfigError> {
        let Some(id) = &self.node_id else {
            let mut bytes = [0u8; 6];
            getrandom::fill(&mut bytes).expect("the operating system random source is unavailable");
            return Ok(format!("node-{}", hex::encode(bytes)));
        };
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(refuse(
                "NODE_ID must be 1–64 letters, digits, '.', '_' or '-'.",
            ));
        }
        Ok(id.clone())
    }
}
