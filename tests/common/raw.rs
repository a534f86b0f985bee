//! Raw HTTP over TCP, for requests a well-behaved client library will not send
//! (malformed handshakes, bodies declared but never sent).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` on a fresh socket, sending nothing more, and reads the answer within
/// `within`: its status line and headers, and its JSON body (`Null` for a 101 upgrade).
pub async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> (String, Value) {
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before all of it is written.
        let _ = socket.write_all(request).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).into_owned();
                if status(&head) == 101 {
                    return (head, Value::Null);
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .expect("a content length");
                if answer.len() >= end + 4 + length {
                    let body = serde_json::from_slice(&answer[end + 4..end + 4 + length])
                        .expect("a JSON body");
                    return (head, body);
                }
            }
            assert!(
                n > 0,
                "connection closed before a full answer: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
}

/// The status code of a response head.
pub fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}
