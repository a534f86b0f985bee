//! The node: the address it listens on and the id other nodes know it by.

use std::net::{IpAddr, SocketAddr};

use clap::Args;

use super::{ConfigError, Role, refuse};

/// Flags of the listener and the node's identity.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Node")]
pub struct NodeSettings {
    /// Address to bind the HTTP/WebSocket listener to.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0", global = true)]
    pub bind: IpAddr,

    /// Port of the `serve` and `signal` roles.
    #[arg(long, env = "SIGNALING_PORT", default_value_t = 8080, global = true)]
    pub port: u16,

    /// Port of the `auth` role.
    #[arg(long, env = "AUTH_PORT", default_value_t = 8081, global = true)]
    pub auth_port: u16,

    /// This node's id (letters, digits, `.`, `_`, `-`) [default: generated at start].
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,
}

/// The node's resolved identity and listening address.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub id: String,
    /// Where the role's HTTP server listens: AUTH_PORT for `auth`, SIGNALING_PORT otherwise.
    pub listen: SocketAddr,
}

impl NodeSettings {
    /// Resolves the node's id (generating one when unset) and the listening address of `role`.
    pub fn resolve(&self, role: Role) -> Result<NodeConfig, ConfigError> {
        let port = if role == Role::Auth {
            self.auth_port
        } else {
            self.port
        };
        Ok(NodeConfig {
            id: self.resolve_id()?,
            listen: SocketAddr::new(self.bind, port),
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
