//! Prometheus metrics, with the official `prometheus-client` crate.
//!
//! Everything recorded per message is created up front (one counter per message type and
//! direction), so the hot path only bumps atomics and never allocates or hashes labels.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Client message types, in the order of [`Metrics::inbound`].
pub const INBOUND: [&str; 9] = [
    "join",
    "leave",
    "offer",
    "answer",
    "ice-candidate",
    "update",
    "message",
    "ping",
    "invalid",
];
/// Server message types, in the order of [`Metrics::outbound`].
pub const OUTBOUND: [&str; 15] = [
    "joined",
    "peer_joined",
    "peer_left",
    "peer_updated",
    "offer",
    "answer",
    "ice-candidate",
    "message",
    "room_closed",
    "removed",
    "pong",
    "error",
    "token",
    "goaway",
    "resumed",
];

/// Endpoints of `switchboard_api_requests_total` (the server API).
pub const API_ENDPOINTS: [&str; 7] = [
    "list_rooms",
    "get_room",
    "close_room",
    "remove_peer",
    "update_peer",
    "send_message",
    "list_events",
];

/// Reasons of `switchboard_deadline_closes_total`, one per deadline and cap.
pub const DEADLINE_REASONS: [&str; 7] = [
    "head_timeout",
    "body_timeout",
    "upgrade_timeout",
    "join_timeout",
    "pending_per_ip",
    "pending_node",
    "out_of_files",
];

/// Reasons of `switchboard_refused_upgrades_total` (docs/OPERATIONS.md lists each).
pub const REFUSAL_REASONS: [&str; 11] = [
    "max_connections",
    "cpu",
    "memory",
    "ip_rate",
    "ip_connections",
    "origin",
    "token",
    "revoked",
    "draining",
    "not_websocket",
    "bad_handshake",
];

/// Close codes of `switchboard_closes_total` that docs/OPERATIONS.md explains.
pub const CLOSE_CODES: [u16; 11] = [
    1000, 1001, 1002, 1006, 1007, 1008, 1009, 1012, 4001, 4003, 4004,
];

/// Outcomes of `switchboard_resumes_total`.
pub const RESUME_OUTCOMES: [&str; 2] = ["succeeded", "expired"];

/// Reasons of `switchboard_bus_undelivered_total`.
pub const UNDELIVERED_REASONS: [&str; 3] = ["expired", "node_lost", "full"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    r#type: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    endpoint: &'static str,
    status: u16,
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Connections accepted and not yet upgraded to a WebSocket.
    pub pending: Gauge,
    cut: Family<ReasonLabels, Counter>,
    /// Rooms with at least one peer on this node.
    pub rooms: Gauge,
    /// Peers connected to this node.
    pub peers: Gauge,
    /// Live signaling nodes (multi-node mode).
    pub nodes: Gauge,
    inbound: Vec<Counter>,
    outbound: Vec<Counter>,
    /// Seconds from receiving a relayed message to writing it to the target's socket.
    pub relay_latency: Histogram,
    /// Seconds a join takes, store included.
    pub join_latency: Histogram,
    refused: Family<ReasonLabels, Counter>,
    /// Messages refused by the per-connection rate limit.
    pub rate_limited: Counter,
    closes: Family<CodeLabels, Counter>,
    resumes: Family<OutcomeLabels, Counter>,
    /// Seconds per Redis call.
    pub redis_latency: Histogram,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Redis circuit breaker per Redis master: 0 closed, 1 open, 2 half-open.
    breaker_state: Family<NodeLabels, Gauge>,
    /// Messages held for other nodes (waiting for Redis or not yet read).
    pub bus_held_messages: Gauge,
    /// Bytes held for other nodes.
    pub bus_held_bytes: Gauge,
    /// Appends to another node's inbox that failed and were retried.
    pub bus_retries: Counter,
    /// Messages appended again because an inbox was lost before its node read them.
    pub bus_resent: Counter,
    undelivered: Family<ReasonLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    key_reloads: Family<ResultLabels, Counter>,
    jwks_fetches: Family<ResultLabels, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    /// Room events recorded, counted once, by the node that puts each in the event log.
    pub events_emitted: Counter,
    events_delivered: Family<EndpointLabels, Counter>,
    events_retried: Family<EndpointLabels, Counter>,
    events_dropped: Family<EndpointLabels, Counter>,
    /// Rooms that may have events not yet delivered everywhere.
    pub event_rooms_pending: Gauge,
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("switchboard");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "pending_connections",
            "Connections accepted and not yet upgraded to a WebSocket",
            pending.clone(),
        );
        let cut = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "deadline_closes",
            "Connections closed by a phase deadline or a pending-connection cap, by reason",
            cut.clone(),
        );
        // Shown at zero from the start, so an alert on their rate has a series to watch.
        for reason in DEADLINE_REASONS {
            let _ = cut.get_or_create(&ReasonLabels { reason });
        }
        let rooms = Gauge::default();
        registry.register("rooms", "Rooms with a peer on this node", rooms.clone());
        let peers = Gauge::default();
        registry.register("peers", "Peers connected to this node", peers.clone());
        let nodes = Gauge::default();
        registry.register(
            "nodes",
            "Live signaling nodes sharing the store",
            nodes.clone(),
        );

        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Signaling messages by type and direction",
            messages.clone(),
        );
        let inbound = INBOUND
            .iter()
            .map(|t| {
                messages
                    .get_or_create(&MessageLabels {
                        r#type: t,
                        direction: "in",
                    })
                    .clone()
            })
            .collect();
        let outbound = OUTBOUND
            .iter()
            .map(|t| {
                messages
                    .get_or_create(&MessageLabels {
                        r#type: t,
                        direction: "out",
                    })
                    .clone()
            })
            .collect();

        // 50 µs to ~1.6 s.
        let relay_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "relay_latency_seconds",
            "Time from receiving a relayed message to writing it to the target",
            relay_latency.clone(),
        );
        let join_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "join_latency_seconds",
            "Time to process a join",
            join_latency.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused_upgrades",
            "Refused WebSocket upgrades by reason",
            refused.clone(),
        );
        // Like the deadline reasons, every series the alerts watch (deploy/prometheus) exists
        // at zero from the start: a series born at 1 has no earlier sample, so `rate` misses
        // its first increase.
        for reason in REFUSAL_REASONS {
            let _ = refused.get_or_create(&ReasonLabels { reason });
        }
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_messages",
            "Messages refused by the rate limit",
            rate_limited.clone(),
        );
        let closes = Family::<CodeLabels, Counter>::default();
        registry.register("closes", "WebSocket closes by close code", closes.clone());
        for code in CLOSE_CODES {
            let _ = closes.get_or_create(&CodeLabels { code });
        }
        let resumes = Family::<OutcomeLabels, Counter>::default();
        registry.register("resumes", "Session resumes by outcome", resumes.clone());
        for outcome in RESUME_OUTCOMES {
            let _ = resumes.get_or_create(&OutcomeLabels { outcome });
        }
        let redis_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "redis_latency_seconds",
            "Redis call latency",
            redis_latency.clone(),
        );
        let redis_errors = Counter::default();
        registry.register(
            "redis_errors",
            "Redis calls that failed or timed out",
            redis_errors.clone(),
        );
        let breaker_state = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "redis_breaker_state",
            "Circuit breaker per Redis master (node label): 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let bus_held_messages = Gauge::default();
        registry.register(
            "bus_held_messages",
            "Messages held for other nodes: waiting for Redis or not yet read",
            bus_held_messages.clone(),
        );
        let bus_held_bytes = Gauge::default();
        registry.register(
            "bus_held_bytes",
            "Bytes held for other nodes",
            bus_held_bytes.clone(),
        );
        let bus_retries = Counter::default();
        registry.register(
            "bus_retries",
            "Failed appends to another node's inbox, retried",
            bus_retries.clone(),
        );
        let bus_resent = Counter::default();
        registry.register(
            "bus_resent",
            "Messages appended again after an inbox was lost unread",
            bus_resent.clone(),
        );
        let undelivered = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "bus_undelivered",
            "Messages for other nodes given up on (their senders were told), by reason",
            undelivered.clone(),
        );
        for reason in UNDELIVERED_REASONS {
            let _ = undelivered.get_or_create(&ReasonLabels { reason });
        }
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Reloads of the TLS certificate after its files changed, by result",
            tls_reloads.clone(),
        );
        let key_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "key_reloads",
            "Reloads of signing keys and API keys (SIGHUP or a changed file), by result",
            key_reloads.clone(),
        );
        let jwks_fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Fetches of the Auth service's public keys (AUTH_JWKS_URL), by result",
            jwks_fetches.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Server API requests, by endpoint and HTTP status",
            api_requests.clone(),
        );
        for endpoint in API_ENDPOINTS {
            let _ = api_requests.get_or_create(&ApiLabels {
                endpoint,
                status: 200,
            });
        }
        let events_emitted = Counter::default();
        registry.register(
            "events_emitted",
            "Room events recorded (counted once, by the node that puts each in the event log)",
            events_emitted.clone(),
        );
        let events_delivered = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "events_delivered",
            "Room events acknowledged, by endpoint (log, webhook-1, …)",
            events_delivered.clone(),
        );
        let events_retried = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "events_retried",
            "Webhook deliveries that failed and will be retried, by endpoint",
            events_retried.clone(),
        );
        let events_dropped = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "events_dropped",
            "Room events given up on after WEBHOOK_RETRY_FOR of failures, by endpoint",
            events_dropped.clone(),
        );
        let event_rooms_pending = Gauge::default();
        registry.register(
            "event_rooms_pending",
            "Rooms (not events) with events still to deliver to some endpoint, or delivered in \
             the last 30 s, as this node's dispatcher last looked",
            event_rooms_pending.clone(),
        );
        Arc::new(Self {
            registry,
            connections,
            pending,
            cut,
            rooms,
            peers,
            nodes,
            inbound,
            outbound,
            relay_latency,
            join_latency,
            refused,
            rate_limited,
            closes,
            resumes,
            redis_latency,
            redis_errors,
            breaker_state,
            bus_held_messages,
            bus_held_bytes,
            bus_retries,
            bus_resent,
            undelivered,
            tls_reloads,
            key_reloads,
            jwks_fetches,
            api_requests,
            events_emitted,
            events_delivered,
            events_retried,
            events_dropped,
            event_rooms_pending,
        })
    }

    /// Counts an event acknowledged by `endpoint`.
    pub fn event_delivered(&self, endpoint: &str) {
        self.events_delivered
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// Counts a failed delivery to `endpoint` that will be retried.
    pub fn event_retried(&self, endpoint: &str) {
        self.events_retried
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// Counts an event `endpoint` never acknowledged within the retry time.
    pub fn event_dropped(&self, endpoint: &str) {
        self.events_dropped
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// Counts a server API request to `endpoint` (an entry of [`API_ENDPOINTS`]) answered
    /// with `status`.
    pub fn api_request(&self, endpoint: &'static str, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels { endpoint, status })
            .inc();
    }

    /// Counts a client message of `kind` (an entry of [`INBOUND`]).
    pub fn inbound(&self, kind: &str) {
        let i = INBOUND
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(INBOUND.len() - 1);
        self.inbound[i].inc();
    }

    /// Counts a server frame written to a socket; the type is read from the frame's first
    /// bytes (serde writes the `type` tag first), so nothing is parsed or allocated.
    pub fn outbound(&self, frame: &str) {
        let kind = frame
            .strip_prefix("{\"type\":\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        if let Some(i) = OUTBOUND.iter().position(|k| *k == kind) {
            self.outbound[i].inc();
        }
    }

    /// Counts a refused upgrade.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection closed by a deadline or a cap (see [`DEADLINE_REASONS`]).
    pub fn cut(&self, reason: &'static str) {
        self.cut.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a close by code.
    pub fn closed(&self, code: u16) {
        self.closes.get_or_create(&CodeLabels { code }).inc();
    }

    /// Counts a resume attempt's outcome (`succeeded` or `expired`).
    pub fn resumed(&self, outcome: &'static str) {
        self.resumes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a message for another node given up on, by reason.
    pub fn undelivered(&self, reason: &'static str) {
        self.undelivered
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a reload of the TLS certificate (`success` or `failure`).
    pub fn tls_reloaded(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a reload of the keys (`success` or `failure`).
    pub fn keys_reloaded(&self, result: &'static str) {
        self.key_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a fetch of a remote key set (`success` or `failure`).
    pub fn jwks_fetched(&self, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records the state (0 closed, 1 open, 2 half-open) of the breaker in front of the
    /// Redis master at `node`.
    pub fn breaker(&self, node: &str, state: i64) {
        self.breaker_state
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .set(state);
    }

    /// Records one Redis call.
    pub fn redis_call(&self, took: Duration, ok: bool) {
        self.redis_latency.observe(took.as_secs_f64());
        if !ok {
            self.redis_errors.inc();
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_by_type_and_direction() {
        let m = Metrics::new();
        m.inbound("offer");
        m.inbound("offer");
        m.inbound("nonsense");
        m.outbound(r#"{"type":"peer_joined","peerId":"a"}"#);
        m.refused("max_connections");
        m.closed(4003);
        let text = m.encode();
        assert!(
            text.contains(r#"switchboard_messages_total{type="offer",direction="in"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"switchboard_messages_total{type="invalid",direction="in"} 1"#));
        assert!(
            text.contains(r#"switchboard_messages_total{type="peer_joined",direction="out"} 1"#)
        );
        assert!(text.contains(r#"switchboard_refused_upgrades_total{reason="max_connections"} 1"#));
        assert!(text.contains(r#"switchboard_closes_total{code="4003"} 1"#));
    }

    #[test]
    fn alerted_series_exist_at_zero_before_anything_happens() {
        let text = Metrics::new().encode();
        for line in [
            r#"switchboard_refused_upgrades_total{reason="cpu"} 0"#,
            r#"switchboard_closes_total{code="4003"} 0"#,
            r#"switchboard_resumes_total{outcome="succeeded"} 0"#,
            r#"switchboard_bus_undelivered_total{reason="node_lost"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
