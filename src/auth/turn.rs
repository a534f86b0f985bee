//! ICE servers handed to clients: STUN URLs, and TURN URLs with short-lived credentials in
//! the "TURN REST API" scheme that coturn accepts with `use-auth-secret`.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

use super::unix_now;

type HmacSha1 = Hmac<Sha1>;

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username: `<expiry unix seconds>:<id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password: base64(HMAC-SHA1(secret, username)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The configured STUN and TURN servers.
#[derive(Clone, Default)]
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for IceServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServers")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl IceServers {
    /// STUN URLs, and TURN URLs whose credentials are signed with `secret` and live `ttl`.
    pub fn new(stun: Vec<String>, turn: Vec<String>, secret: Vec<u8>, ttl: Duration) -> Self {
        Self {
            stun,
            turn,
            secret,
            ttl,
        }
    }

    /// True when no server is configured.
    pub fn is_empty(&self) -> bool {
        self.stun.is_empty() && self.turn.is_empty()
    }

    /// The servers for one session, TURN credentials expiring after `ttl` but never after
    /// `not_after` (the token's expiry, unix seconds).
    pub fn for_session(&self, session_id: &str, not_after: u64) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            let expiry = (unix_now() + self.ttl.as_secs()).min(not_after);
            let username = format!("{expiry}:{}", self.turn_id(session_id));
            let credential = base64::engine::general_purpose::STANDARD
                .encode(sign(&self.secret, username.as_bytes()));
            servers.push(IceServer {
                urls: self.turn.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }

    /// A stable id for the session that reveals neither it nor the user: TURN usernames
    /// show up in the TURN server's logs.
    fn turn_id(&self, session_id: &str) -> String {
        let digest = sign(&self.secret, format!("turn-id:{session_id}").as_bytes());
        hex::encode(&digest[..12])
    }
}

fn sign(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> IceServers {
        IceServers::new(
            vec!["stun:stun.example.net:3478".into()],
            vec!["turn:turn.example.net:3478?transport=udp".into()],
            b"north".to_vec(),
            Duration::from_secs(600),
        )
    }

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let list = servers().for_session("s-1", u64::MAX);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].urls, ["stun:stun.example.net:3478"]);
        assert!(list[0].username.is_none() && list[0].credential.is_none());
        let turn = &list[1];
        let username = turn.username.as_deref().unwrap();
        let (expiry, id) = username.split_once(':').unwrap();
        let expiry: u64 = expiry.parse().unwrap();
        assert!(expiry.abs_diff(unix_now() + 600) <= 2);
        assert_eq!(id.len(), 24);
        assert!(!id.contains("s-1"));
        // coturn checks base64(HMAC-SHA1(static-auth-secret, username)).
        let mut mac = HmacSha1::new_from_slice(b"north").unwrap();
        mac.update(username.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(turn.credential.as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn credentials_never_outlive_the_token_and_ids_are_per_session() {
        let s = servers();
        let soon = unix_now() + 30;
        let a = s.for_session("s-1", soon);
        let b = s.for_session("s-2", soon);
        let user = |l: &[IceServer]| l[1].username.clone().unwrap();
        assert!(user(&a).starts_with(&format!("{soon}:")));
        assert_ne!(user(&a), user(&b));
        assert_eq!(user(&a), user(&s.for_session("s-1", soon)));
    }

    #[test]
    fn nothing_configured_gives_no_servers() {
        let none = IceServers::default();
        assert!(none.is_empty());
        assert!(none.for_session("s", u64::MAX).is_empty());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert!(!format!("{:?}", servers()).contains("north"));
    }
}
