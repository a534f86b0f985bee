//! One webhook endpoint: an event POSTed as JSON and signed the Standard Webhooks way, so
//! a receiver can check it came from us and is not a replay.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hyper::body::Bytes;
use sha2::Sha256;

use crate::net::fetch;

/// The secret that signs webhooks: `whsec_<base64>` as Standard Webhooks libraries write
/// it (the bytes after the prefix are the key), or any other text, used as it is.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Reads a configured secret.
    pub fn new(text: &str) -> Self {
        match text
            .strip_prefix("whsec_")
            .and_then(|b64| STANDARD.decode(b64).ok())
        {
            Some(key) => Self(key),
            None => Self(text.as_bytes().to_vec()),
        }
    }

    /// `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// Why a delivery did not count as acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The endpoint answered, but not 2xx.
    #[error("answered {0}")]
    Status(u16),
    /// No answer: unreachable, or slower than the timeout.
    #[error("{0}")]
    Unreachable(String),
}

/// POSTs one event (`id`, its JSON `body`) to `url`, signed with `secret`; Ok once the
/// endpoint answered 2xx within `timeout`.
pub async fn deliver(
    url: &str,
    secret: &WebhookSecret,
    id: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), Refused> {
    let timestamp = crate::clock::unix_now();
    let signature = secret.sign(id, timestamp, body);
    let timestamp = timestamp.to_string();
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let status = fetch::post(url, &headers, Bytes::from(body.to_string()), timeout)
        .await
        .map_err(|e| Refused::Unreachable(e.to_string()))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(Refused::Status(status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_without_the_prefix_is_used_as_it_is() {
        let plain = WebhookSecret::new("hunter2");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"hunter2").unwrap();
        mac.update(b"e1.5.{}");
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(plain.sign("e1", 5, "{}"), expected);
        assert_eq!(format!("{plain:?}"), "WebhookSecret(…)");
    }
}
