//! The JSON wire protocol: client commands parsed from borrowed frames, server messages
//! serialised once. SDP and candidates are kept as raw JSON so they pass byte-exact.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::auth::IceServer;

mod scan;

/// Re-exported: the protocol tells it to clients in `peer_left`; the bus carries it too.
pub use crate::room::LeaveReason;

/// WebSocket close codes used by the server.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The connection was idle past the timeout.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke the WebSocket protocol (RFC 6455).
    pub const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (revoked, abuse).
    pub const POLICY: u16 = 1008;
    /// The reason text of the close that ends a revoked session.
    pub const REVOKED_TEXT: &str = "session revoked";
    /// A message larger than the limit, or in too many fragments.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// The server is restarting; reconnect.
    pub const RESTART: u16 = 1012;
    /// The token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The client missed messages (it read too slowly, or the room's shared state was
    /// lost); it reconnects and resyncs.
    pub const RESYNC: u16 = 4003;
    /// A newer connection of the same session took over.
    pub const REPLACED: u16 = 4004;
}

/// Codes carried by `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or a field of the wrong type.
    InvalidMessage,
    /// A `type` the server does not know.
    UnknownType,
    /// The operation needs the sender to be in a room (or in the named room).
    NotInRoom,
    /// The target peer is not in the sender's room.
    PeerNotFound,
    /// The room is at capacity.
    RoomFull,
    /// The token does not allow this room.
    ForbiddenRoom,
    /// Too many messages.
    RateLimited,
    /// The message exceeds the size limit.
    MessageTooLarge,
    /// A dependency is down; retry later.
    Unavailable,
    /// A server bug.
    Internal,
}

/// The three relayed message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// SDP offer.
    Offer,
    /// SDP answer.
    Answer,
    /// Trickled ICE candidate.
    IceCandidate,
}

/// A parsed client command, borrowing from the frame.
#[derive(Debug)]
pub enum Command<'a> {
    /// Join (or switch to) a room.
    Join {
        /// Room id.
        room: Cow<'a, str>,
    },
    /// Leave the current room (optionally naming it).
    Leave {
        /// Room id the client thinks it is in.
        room: Option<Cow<'a, str>>,
    },
    /// Relay to one peer of the room.
    Relay {
        /// Offer, answer or candidate.
        kind: RelayKind,
        /// Target peer id.
        to: Cow<'a, str>,
        /// The `sdp` or `candidate` value, verbatim.
        payload: Payload<'a>,
    },
    /// Sets the sender's participant metadata.
    Update {
        /// A JSON object, verbatim.
        metadata: &'a RawValue,
    },
    /// An application message to one room member, or to all of them.
    Message {
        /// The member, or everyone else in the room when absent.
        to: Option<Cow<'a, str>>,
        /// Any JSON value, verbatim.
        data: &'a RawValue,
    },
    /// Application heartbeat.
    Ping,
}

impl Command<'_> {
    /// The message type, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Relay {
                kind: RelayKind::Offer,
                ..
            } => "offer",
            Command::Relay {
                kind: RelayKind::Answer,
                ..
            } => "answer",
            Command::Relay {
                kind: RelayKind::IceCandidate,
                ..
            } => "ice-candidate",
            Command::Update { .. } => "update",
            Command::Message { .. } => "message",
            Command::Ping => "ping",
        }
    }
}

/// A frame the server could not accept, with the client's `id` to echo as `ref`.
#[derive(Debug)]
pub struct Rejected<'a> {
    /// Error code.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
    /// The client's `id`, verbatim, if it sent one.
    pub reference: Option<&'a RawValue>,
}

/// A relayed `sdp` or `candidate` value: JSON text the parser has checked, passed on
/// verbatim. Not a `RawValue`, which only serde's reader can borrow from a frame: the
/// frame's own reader (`scan`) checks SDP faster.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a>(&'a str);

impl<'a> Payload<'a> {
    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Payload<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|raw| Payload(raw.get()))
    }
}

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Only frames serde writes come here (a sender id that needs escaping): rare
        // enough for a copy.
        RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[derive(Deserialize, Default)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(rename = "roomId", borrow)]
    room_id: Option<Cow<'a, str>>,
    #[serde(rename = "peerId", borrow)]
    peer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    sdp: Option<Payload<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    candidate: Option<Payload<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as the raw value `null` (serde's `Option` would read it as
/// absent): a `null` candidate means "end of candidates" and is relayed.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// Longest client `id` echoed back; longer ones are not echoed.
const MAX_REF_BYTES: usize = 128;

/// Largest `candidate` object relayed, as JSON text. A browser's candidate (the
/// `candidate` line, `sdpMid`, `sdpMLineIndex`, `usernameFragment`) is a few hundred
/// bytes; the cap keeps a client from passing bulk data through the trickle channel at
/// the candidate rate. SDP needs no cap of its own: a session description with many
/// media sections runs to tens of kilobytes, and the frame limit (`MAX_MESSAGE_BYTES`)
/// already bounds it.
pub const MAX_CANDIDATE_BYTES: usize = 4096;

/// Parses one text frame into a command, the client's `id` (for replies) and any rejection.
pub fn parse(text: &str) -> (Option<&RawValue>, Result<Command<'_>, Rejected<'_>>) {
    let read = match scan::frame(text) {
        Some(frame) => Ok(frame),
        None => serde_json::from_str(text),
    };
    let frame: Frame<'_> = match read {
        Ok(f) => f,
        Err(e) => {
            let reference = serde_json::from_str::<IdOnly<'_>>(text)
                .ok()
                .and_then(|f| f.id)
                .filter(|r| r.get().len() <= MAX_REF_BYTES);
            let message = if e.is_data() {
                format!("A field has the wrong type: {e}.")
            } else {
                "The message is not a JSON object; send {\"type\": ..., ...}.".to_string()
            };
            return (
                reference,
                Err(reject(ErrorCode::InvalidMessage, message, reference)),
            );
        }
    };
    let reference = frame.id.filter(|r| r.get().len() <= MAX_REF_BYTES);
    (reference, command(frame, reference))
}

fn reject<'a>(
    code: ErrorCode,
    message: impl Into<String>,
    reference: Option<&'a RawValue>,
) -> Rejected<'a> {
    Rejected {
        code,
        message: message.into(),
        reference,
    }
}

fn command<'a>(f: Frame<'a>, reference: Option<&'a RawValue>) -> Result<Command<'a>, Rejected<'a>> {
    let missing = |field: &str, kind: &str| {
        reject(
            ErrorCode::InvalidMessage,
            format!("The {kind} message needs a \"{field}\" field."),
            reference,
        )
    };
    let Some(kind) = f.kind else {
        return Err(reject(
            ErrorCode::InvalidMessage,
            "The message has no type field.",
            reference,
        ));
    };
    let relay = |kind: RelayKind, name: &str, payload: Option<Payload<'a>>| {
        let to = f.peer_id.clone().ok_or_else(|| missing("peerId", name))?;
        let payload = checked_payload(kind, name, payload)
            .map_err(|message| reject(ErrorCode::InvalidMessage, message, reference))?;
        Ok(Command::Relay { kind, to, payload })
    };
    match kind.as_ref() {
        "join" => Ok(Command::Join {
            room: f.room_id.clone().ok_or_else(|| missing("roomId", "join"))?,
        }),
        "leave" => Ok(Command::Leave {
            room: f.room_id.clone(),
        }),
        "offer" => relay(RelayKind::Offer, "offer", f.sdp),
        "answer" => relay(RelayKind::Answer, "answer", f.sdp),
        "ice-candidate" => relay(RelayKind::IceCandidate, "ice-candidate", f.candidate),
        "update" => match f.metadata.map(|m| json_kind(m.get())) {
            Some(JsonKind::Object) => Ok(Command::Update {
                metadata: f.metadata.expect("checked above"),
            }),
            None => Err(missing("metadata", "update")),
            Some(_) => Err(reject(
                ErrorCode::InvalidMessage,
                "The update message's \"metadata\" must be a JSON object.",
                reference,
            )),
        },
        "message" => Ok(Command::Message {
            to: f.peer_id.clone(),
            data: f.data.ok_or_else(|| missing("data", "message"))?,
        }),
        "ping" => Ok(Command::Ping),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(reject(
                ErrorCode::UnknownType,
                format!("Unknown message type {shown:?}."),
                reference,
            ))
        }
    }
}

/// The kind of JSON value `raw` holds, read from its first byte: the relay passes the
/// value on verbatim, so its type is checked without parsing it a second time.
fn json_kind(raw: &str) -> JsonKind {
    // A raw value starts at its first significant byte; trimming costs nothing if so.
    match raw.trim_start().as_bytes().first() {
        Some(b'"') => JsonKind::String,
        Some(b'{') => JsonKind::Object,
        Some(b'n') => JsonKind::Null,
        _ => JsonKind::Other,
    }
}

/// What [`json_kind`] tells apart.
#[derive(Debug, PartialEq, Eq)]
enum JsonKind {
    String,
    Object,
    Null,
    Other,
}

/// The relayed value if it has the type its message requires (`sdp` a string;
/// `candidate` an object of at most [`MAX_CANDIDATE_BYTES`], or `null` for the end of
/// candidates), else the sentence telling the client what to send.
fn checked_payload<'a>(
    kind: RelayKind,
    name: &str,
    payload: Option<Payload<'a>>,
) -> Result<Payload<'a>, String> {
    match kind {
        RelayKind::Offer | RelayKind::Answer => match payload.map(|p| json_kind(p.get())) {
            Some(JsonKind::String) => Ok(payload.expect("checked above")),
            None | Some(JsonKind::Null) => {
                Err(format!("The {name} message needs a \"sdp\" field."))
            }
            Some(_) => Err(format!(
                "The {name} message's \"sdp\" must be a JSON string (the session description text)."
            )),
        },
        RelayKind::IceCandidate => {
            let Some(raw) = payload else {
                return Err(format!(
                    "The {name} message needs a \"candidate\" field (an object, or null for the end of candidates)."
                ));
            };
            match json_kind(raw.get()) {
                JsonKind::Object if raw.get().len() > MAX_CANDIDATE_BYTES => Err(format!(
                    "The \"candidate\" object is {} bytes; the limit is {MAX_CANDIDATE_BYTES}.",
                    raw.get().len()
                )),
                JsonKind::Object | JsonKind::Null => Ok(raw),
                _ => Err(
                    "The \"candidate\" must be a JSON object (RTCIceCandidateInit), or null for the end of candidates."
                        .to_string(),
                ),
            }
        }
    }
}

/// A server message; serialised once and shared by every recipient.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outgoing<'a> {
    /// Reply to `join`.
    Joined {
        /// Room joined.
        #[serde(rename = "roomId")]
        room_id: &'a str,
        /// The joiner's own peer id.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Everyone else already in the room.
        #[serde(serialize_with = "peer_ids")]
        peers: &'a [Participant],
        /// The metadata of each member that has some, the joiner's own included, by peer id.
        #[serde(serialize_with = "metadata_by_peer")]
        metadata: (&'a str, Option<&'a RawValue>, &'a [Participant]),
        /// STUN/TURN servers for this session, when configured.
        #[serde(rename = "iceServers", skip_serializing_if = "<[_]>::is_empty")]
        ice_servers: &'a [IceServer],
    },
    /// Someone joined the room.
    PeerJoined {
        /// Who.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Its metadata, if it has any.
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a RawValue>,
    },
    /// A member's metadata changed.
    PeerUpdated {
        /// Who.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Its metadata now.
        metadata: &'a RawValue,
    },
    /// An application message from a member, or from the app's backend (`"server"`).
    Message {
        /// The sender's peer id, set by the server, or `"server"`.
        from: &'a str,
        /// What it sent, verbatim.
        data: &'a RawValue,
    },
    /// The app's backend closed the room: this client is no longer in it.
    RoomClosed {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: &'a str,
    },
    /// The app's backend removed this client from the room.
    Removed {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: &'a str,
    },
    /// Someone left the room.
    PeerLeft {
        /// Who.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Why.
        reason: LeaveReason,
    },
    /// Relayed offer.
    Offer {
        /// Sender, set by the server.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// SDP, verbatim.
        sdp: Payload<'a>,
    },
    /// Relayed answer.
    Answer {
        /// Sender, set by the server.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// SDP, verbatim.
        sdp: Payload<'a>,
    },
    /// Relayed ICE candidate.
    #[serde(rename = "ice-candidate")]
    IceCandidate {
        /// Sender, set by the server.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Candidate, verbatim.
        candidate: Payload<'a>,
    },
    /// Reply to `ping`.
    Pong,
    /// A request failed.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Explanation.
        message: &'a str,
        /// The client's `id`, echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
    },
    /// A reconnect within the grace period took the session back.
    Resumed {
        /// The room the session is in, if any.
        #[serde(rename = "roomId")]
        room_id: Option<&'a str>,
        /// The session's peer id.
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Everyone else in the room now.
        #[serde(serialize_with = "peer_ids")]
        peers: &'a [Participant],
        /// The metadata of each member that has some, the session's own included.
        #[serde(serialize_with = "metadata_by_peer")]
        metadata: (&'a str, Option<&'a RawValue>, &'a [Participant]),
        /// STUN/TURN servers for this session, when configured.
        #[serde(rename = "iceServers", skip_serializing_if = "<[_]>::is_empty")]
        ice_servers: &'a [IceServer],
    },
    /// The node is going away: reconnect (to any node) after the hint.
    Goaway {
        /// Why (`shutdown`).
        reason: &'static str,
        /// Suggested delay before reconnecting, jittered per client.
        #[serde(rename = "reconnectInMs")]
        reconnect_in_ms: u64,
    },
    /// A fresh token for this session.
    Token {
        /// The JWT.
        token: &'a str,
        /// Its expiry (unix seconds).
        #[serde(rename = "expiresAt")]
        expires_at: u64,
    },
}

/// A room member as a client is told of it: its peer id and metadata.
#[derive(Debug, Clone)]
pub struct Participant {
    /// Peer id.
    pub peer_id: String,
    /// Its metadata, a JSON object, if it has any.
    pub metadata: Option<Metadata>,
}

/// Participant metadata: a JSON object, verbatim, shared by everyone who holds it.
pub type Metadata = std::sync::Arc<RawValue>;

/// Metadata from its stored text; `None` for text that is not JSON (never written so).
pub fn metadata_from(text: &str) -> Option<Metadata> {
    RawValue::from_string(text.to_string())
        .ok()
        .map(Metadata::from)
}

fn peer_ids<S: serde::Serializer>(peers: &&[Participant], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(peers.iter().map(|p| p.peer_id.as_str()))
}

fn metadata_by_peer<S: serde::Serializer>(
    (me, mine, peers): &(&str, Option<&RawValue>, &[Participant]),
    s: S,
) -> Result<S::Ok, S::Error> {
    let own = mine.map(|m| (*me, m));
    let others = peers
        .iter()
        .filter_map(|p| Some((p.peer_id.as_str(), &**p.metadata.as_ref()?)));
    s.collect_map(own.into_iter().chain(others))
}

impl Outgoing<'_> {
    /// A relayed message from `from` carrying `payload`.
    pub fn relay<'a>(kind: RelayKind, from: &'a str, payload: Payload<'a>) -> Outgoing<'a> {
        match kind {
            RelayKind::Offer => Outgoing::Offer {
                peer_id: from,
                sdp: payload,
            },
            RelayKind::Answer => Outgoing::Answer {
                peer_id: from,
                sdp: payload,
            },
            RelayKind::IceCandidate => Outgoing::IceCandidate {
                peer_id: from,
                candidate: payload,
            },
        }
    }

    /// The JSON text frame.
    pub fn to_frame(&self) -> crate::net::websocket::Utf8Bytes {
        if let Some(frame) = self.relay_frame() {
            return frame.into();
        }
        serde_json::to_string(self)
            .expect("server messages always serialise")
            .into()
    }

    /// A relayed message written straight into a buffer of its final size: the hot path
    /// of the server, where serde's growing buffer cost a dozen copies of a 2 KB SDP.
    /// The same bytes serde writes (the tests compare them).
    fn relay_frame(&self) -> Option<String> {
        let (head, from, field, payload) = match self {
            Outgoing::Offer { peer_id, sdp } => ("offer", peer_id, "sdp", sdp),
            Outgoing::Answer { peer_id, sdp } => ("answer", peer_id, "sdp", sdp),
            Outgoing::IceCandidate { peer_id, candidate } => {
                ("ice-candidate", peer_id, "candidate", candidate)
            }
            _ => return None,
        };
        // Identifiers hold no control characters; only quotes and backslashes need escapes.
        if from.contains(['"', '\\']) {
            return None;
        }
        let payload = payload.get();
        let mut out = String::with_capacity(48 + head.len() + from.len() + payload.len());
        for part in [
            "{\"type\":\"",
            head,
            "\",\"peerId\":\"",
            from,
            "\",\"",
            field,
            "\":",
            payload,
            "}",
        ] {
            out.push_str(part);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_keeps_payload_verbatim_and_ignores_forged_sender() {
        let text = r#"{"type":"offer","peerId":"bob","from":"mallory","sdp":"v=0\r\nö \u00e9"}"#;
        let (_, cmd) = parse(text);
        let Ok(Command::Relay { kind, to, payload }) = cmd else {
            panic!("not a relay")
        };
        assert_eq!(kind, RelayKind::Offer);
        assert_eq!(to, "bob");
        let out = Outgoing::relay(kind, "alice", payload).to_frame();
        assert_eq!(
            out.as_str(),
            r#"{"type":"offer","peerId":"alice","sdp":"v=0\r\nö \u00e9"}"#
        );
    }

    #[test]
    fn relay_frames_are_what_serde_writes() {
        let payload = Payload(r#"{"candidate":"c \"q\"","sdpMid":"0"}"#);
        for from in ["alice-0123", "o\"brien\\x"] {
            for kind in [RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate] {
                let message = Outgoing::relay(kind, from, payload);
                let by_serde = serde_json::to_string(&message).unwrap();
                assert_eq!(message.to_frame().as_str(), by_serde);
                let value: serde_json::Value = serde_json::from_str(&by_serde).unwrap();
                assert_eq!(value["peerId"], from);
            }
        }
    }

    #[test]
    fn rejections_carry_code_and_ref() {
        let (_, r) = parse(r#"{"type":"warp","id":7}"#);
        let r = r.unwrap_err();
        assert_eq!(r.code, ErrorCode::UnknownType);
        assert_eq!(r.reference.unwrap().get(), "7");
        let (_, r) = parse(r#"{"type":"join","id":"a","roomId":5}"#);
        let r = r.unwrap_err();
        assert_eq!(r.code, ErrorCode::InvalidMessage);
        assert_eq!(r.reference.unwrap().get(), "\"a\"");
        let (_, r) = parse("not json");
        assert_eq!(r.unwrap_err().code, ErrorCode::InvalidMessage);
        let (_, r) = parse(r#"{"type":"ice-candidate","peerId":"x"}"#);
        assert!(r.unwrap_err().message.contains("candidate"));
    }

    /// The relayed payload of `text`, or the rejection's code, message and `ref`.
    fn relayed(text: &str) -> Result<String, (ErrorCode, String, Option<String>)> {
        match parse(text).1 {
            Ok(Command::Relay { payload, .. }) => Ok(payload.get().to_string()),
            Ok(other) => panic!("not a relay: {}", other.kind()),
            Err(r) => Err((r.code, r.message, r.reference.map(|r| r.get().to_string()))),
        }
    }

    #[test]
    fn sdp_must_be_a_string() {
        assert_eq!(
            relayed(r#"{"type":"offer","peerId":"b","sdp": "v=0"}"#).unwrap(),
            r#""v=0""#
        );
        assert_eq!(
            relayed(r#"{"type":"answer","peerId":"b","sdp":"v=0"}"#).unwrap(),
            r#""v=0""#
        );
        for sdp in [r#"{"v":0}"#, "7", "[\"v=0\"]", "true", "false", "-1.5e3"] {
            for kind in ["offer", "answer"] {
                let text = format!(r#"{{"type":"{kind}","peerId":"b","id":"q","sdp":{sdp}}}"#);
                let (code, message, reference) = relayed(&text).unwrap_err();
                assert_eq!(code, ErrorCode::InvalidMessage, "{text}");
                assert!(message.contains("must be a JSON string"), "{message}");
                assert_eq!(reference.as_deref(), Some("\"q\""));
            }
        }
        // Absent and null are both "missing".
        for text in [
            r#"{"type":"offer","peerId":"b","id":1}"#,
            r#"{"type":"offer","peerId":"b","id":1,"sdp":null}"#,
        ] {
            let (code, message, reference) = relayed(text).unwrap_err();
            assert_eq!(code, ErrorCode::InvalidMessage);
            assert!(message.contains("needs a \"sdp\" field"), "{message}");
            assert_eq!(reference.as_deref(), Some("1"));
        }
    }

    #[test]
    fn candidate_must_be_a_bounded_object_or_null() {
        let ok = r#"{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0"}"#;
        let text = format!(r#"{{"type":"ice-candidate","peerId":"b","candidate": {ok}}}"#);
        assert_eq!(relayed(&text).unwrap(), ok);
        // null is the end of candidates, relayed as such.
        assert_eq!(
            relayed(r#"{"type":"ice-candidate","peerId":"b","candidate":null}"#).unwrap(),
            "null"
        );
        for candidate in [r#""candidate:1 1 udp""#, "0", "[]", "true"] {
            let text = format!(
                r#"{{"type":"ice-candidate","peerId":"b","id":3,"candidate":{candidate}}}"#
            );
            let (code, message, reference) = relayed(&text).unwrap_err();
            assert_eq!(code, ErrorCode::InvalidMessage, "{text}");
            assert!(message.contains("must be a JSON object"), "{message}");
            assert_eq!(reference.as_deref(), Some("3"));
        }
        // Exactly at the cap passes; one byte over does not.
        let padded = |len: usize| format!(r#"{{"x":"{}"}}"#, "a".repeat(len - 8));
        assert_eq!(padded(MAX_CANDIDATE_BYTES).len(), MAX_CANDIDATE_BYTES);
        for (len, passes) in [
            (MAX_CANDIDATE_BYTES, true),
            (MAX_CANDIDATE_BYTES + 1, false),
        ] {
            let text = format!(
                r#"{{"type":"ice-candidate","peerId":"b","id":4,"candidate":{}}}"#,
                padded(len)
            );
            match relayed(&text) {
                Ok(payload) => assert!(passes && payload.len() == len),
                Err((code, message, reference)) => {
                    assert!(!passes, "{message}");
                    assert_eq!(code, ErrorCode::InvalidMessage);
                    assert!(message.contains("limit is 4096"), "{message}");
                    assert_eq!(reference.as_deref(), Some("4"));
                }
            }
        }
    }

    #[test]
    fn json_kind_reads_the_first_byte() {
        for (raw, kind) in [
            ("\"x\"", JsonKind::String),
            ("{}", JsonKind::Object),
            ("null", JsonKind::Null),
            ("[]", JsonKind::Other),
            ("12", JsonKind::Other),
            ("false", JsonKind::Other),
        ] {
            assert_eq!(json_kind(raw), kind);
        }
    }

    #[test]
    fn error_frame_shape() {
        let raw = RawValue::from_string("\"q1\"".into()).unwrap();
        let out = Outgoing::Error {
            code: ErrorCode::PeerNotFound,
            message: "No such peer.",
            reference: Some(&raw),
        }
        .to_frame();
        assert_eq!(
            out.as_str(),
            r#"{"type":"error","code":"peer_not_found","message":"No such peer.","ref":"q1"}"#
        );
    }
}
