//! A webhook receiver as an app's backend runs one: an HTTP server on a free port that
//! checks each delivery's Standard Webhooks signature, can be told to fail a share of
//! deliveries (500, or an answer slower than the sender waits), and keeps what it
//! accepted; and the checks of the event guarantees over what it got.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The secret test nodes sign with (Standard Webhooks form).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver treats deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Flakiness {
    /// Out of every 30 deliveries, how many get 500.
    pub fail_in_30: u64,
    /// Out of every 30, how many are answered (200) only after this long.
    pub hang_in_30: u64,
    /// How long a hanging answer takes.
    pub hang_for: Duration,
}

impl Flakiness {
    /// Every delivery accepted at once.
    pub const NONE: Flakiness = Flakiness {
        fail_in_30: 0,
        hang_in_30: 0,
        hang_for: Duration::ZERO,
    };
}

#[derive(Default)]
struct Seen {
    /// Accepted deliveries, in arrival order (repeats included).
    accepted: Vec<Value>,
    /// Deliveries refused with 500.
    refused: usize,
    /// Deliveries whose signature, id or timestamp did not check out.
    forged: usize,
    /// Every delivery that arrived.
    arrived: usize,
}

struct Receiver {
    seen: Mutex<Seen>,
    flakiness: Mutex<Flakiness>,
    key: Vec<u8>,
}

/// A running receiver; stops with the test.
#[derive(Clone)]
pub struct WebhookReceiver {
    /// Its URL, for WEBHOOK_URLS.
    pub url: String,
    inner: Arc<Receiver>,
}

impl WebhookReceiver {
    /// Starts a receiver with `flakiness`.
    pub async fn start(flakiness: Flakiness) -> WebhookReceiver {
        let key = STANDARD
            .decode(WEBHOOK_SECRET.trim_start_matches("whsec_"))
            .unwrap();
        let inner = Arc::new(Receiver {
            seen: Mutex::default(),
            flakiness: Mutex::new(flakiness),
            key,
        });
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebhookReceiver {
            url: format!("http://{addr}/hooks"),
            inner,
        }
    }

    /// From now on, treats deliveries with `flakiness`.
    pub fn set_flakiness(&self, flakiness: Flakiness) {
        *self.inner.flakiness.lock().unwrap() = flakiness;
    }

    /// Accepted events, in arrival order, repeats included.
    pub fn accepted(&self) -> Vec<Value> {
        self.inner.seen.lock().unwrap().accepted.clone()
    }

    /// (arrived, refused with 500, forged).
    pub fn counts(&self) -> (usize, usize, usize) {
        let seen = self.inner.seen.lock().unwrap();
        (seen.arrived, seen.refused, seen.forged)
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&receiver.key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let event: Option<Value> = serde_json::from_slice(&body).ok();
    let fresh = timestamp
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(switchboard::clock::unix_now()) < 300);
    let genuine =
        signature == expected && fresh && event.as_ref().is_some_and(|e| e["id"] == id.as_str());
    let flakiness = *receiver.flakiness.lock().unwrap();
    let roll;
    {
        let mut seen = receiver.seen.lock().unwrap();
        seen.arrived += 1;
        // Spread over the arrivals rather than drawn at random: every 30 in a row hold
        // exactly the stated share (11 is prime to 30), so a test relying on some refusals
        // always gets them (a random draw accepted all of a dozen once in a hundred runs).
        roll = (seen.arrived as u64 * 11) % 30;
        if !genuine {
            seen.forged += 1;
            return StatusCode::UNAUTHORIZED;
        }
        if roll < flakiness.fail_in_30 {
            seen.refused += 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        // Accepted (a slow answer too: the backend processed it, the sender may resend).
        seen.accepted.push(event.unwrap());
    }
    if roll < flakiness.fail_in_30 + flakiness.hang_in_30 {
        tokio::time::sleep(flakiness.hang_for).await;
    }
    StatusCode::NO_CONTENT
}

/// Rooms' events as a consumer keeps them: repeats dropped by `id`, in arrival order.
pub fn by_room(accepted: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut ids = HashSet::new();
    let mut rooms: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in accepted {
        if ids.insert(event["id"].as_str().unwrap().to_string()) {
            rooms
                .entry(event["roomId"].as_str().unwrap().to_string())
                .or_default()
                .push(event.clone());
        }
    }
    rooms
}

/// Every promise of room events over what a consumer got (repeats dropped by id), or the
/// list of what broke. With `finished`, every room must have ended (every join left).
pub fn broken_promises(accepted: &[Value], finished: bool) -> Vec<String> {
    let mut broken = Vec::new();
    for (room, events) in by_room(accepted) {
        // Arrival order is seq order, from 1, with no gap.
        for (i, event) in events.iter().enumerate() {
            if event["seq"] != i as u64 + 1 {
                broken.push(format!(
                    "{room}: event {} arrived with seq {} ({})",
                    i + 1,
                    event["seq"],
                    event["type"]
                ));
                break;
            }
        }
        // Lifetimes: started .. participants .. finished, and every left after its joined.
        let mut open = false;
        let mut present: HashMap<String, usize> = HashMap::new();
        for event in &events {
            let kind = event["type"].as_str().unwrap();
            let peer = event["peer"]["peerId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match kind {
                "room_started" => {
                    if open {
                        broken.push(format!("{room}: room_started while started ({event})"));
                    }
                    open = true;
                }
                "room_finished" => {
                    if !open || !present.is_empty() {
                        broken.push(format!(
                            "{room}: room_finished with {} present, open {open}",
                            present.len()
                        ));
                    }
                    open = false;
                }
                "participant_joined" => {
                    if !open {
                        broken.push(format!("{room}: participant_joined before room_started"));
                    }
                    *present.entry(peer.clone()).or_default() += 1;
                }
                "participant_left" | "participant_updated" => {
                    if !open || !present.contains_key(&peer) {
                        broken.push(format!("{room}: {kind} of {peer}, who had not joined"));
                    }
                    if kind == "participant_left" {
                        let count = present.get_mut(&peer).map(|c| {
                            *c -= 1;
                            *c
                        });
                        if count == Some(0) {
                            present.remove(&peer);
                        }
                        if event["reason"].as_str().is_none() {
                            broken.push(format!("{room}: participant_left without a reason"));
                        }
                    }
                }
                other => broken.push(format!("{room}: unknown event type {other}")),
            }
            if present.values().any(|c| *c > 1) {
                broken.push(format!("{room}: {peer} joined twice without leaving"));
            }
        }
        if finished && (open || !present.is_empty()) {
            broken.push(format!(
                "{room}: never finished: {} still present ({:?})",
                present.len(),
                present.keys().collect::<Vec<_>>()
            ));
        }
    }
    broken
}
