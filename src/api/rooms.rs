//! `/api/v1/rooms`: list rooms, show one, close it, remove or update a member, send a
//! message into it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ApiState, admit, counted, unavailable};
use crate::auth::routes::json_body;
use crate::error::ApiError;
use crate::identifier;
use crate::signaling::protocol::metadata_from;
use crate::store::Member;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomEntry {
    room_id: String,
    peers: usize,
    created_at: u64,
}

#[derive(Serialize)]
struct RoomList {
    rooms: Vec<RoomEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PeerEntry {
    peer_id: String,
    user_id: String,
    metadata: Option<Box<RawValue>>,
    joined_at: u64,
}

impl From<Member> for PeerEntry {
    fn from(m: Member) -> Self {
        Self {
            metadata: m.metadata.and_then(|text| RawValue::from_string(text).ok()),
            peer_id: m.peer_id,
            user_id: m.user,
            joined_at: m.joined_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomDetail {
    room_id: String,
    created_at: u64,
    peers: Vec<PeerEntry>,
}

#[derive(Deserialize)]
struct UpdateRequest {
    metadata: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct MessageRequest {
    data: Option<Box<RawValue>>,
    to: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Delivered {
    delivered: usize,
}

/// The room id of a path, checked like every identifier.
fn room_id(room: &str) -> Result<&str, ApiError> {
    identifier::check(room)
        .map(|()| room)
        .map_err(|why| ApiError::bad_request("invalid_request", format!("The room id {why}.")))
}

fn room_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "room_not_found",
        "No such room: it has no members.",
    )
}

fn peer_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "peer_not_found",
        "That peer is not in this room.",
    )
}

/// `GET /api/v1/rooms`.
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let rooms = state.hub.rooms().await.map_err(unavailable)?;
        let rooms = rooms
            .into_iter()
            .map(|r| RoomEntry {
                room_id: r.room,
                peers: r.peers,
                created_at: r.created_at,
            })
            .collect();
        Ok(Json(RoomList { rooms }).into_response())
    };
    counted(&state.metrics, "list_rooms", answer.await)
}

/// `GET /api/v1/rooms/{room}`.
pub(super) async fn show(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let room = room_id(&room)?;
        let info = state
            .hub
            .room(room)
            .await
            .map_err(unavailable)?
            .ok_or_else(room_not_found)?;
        let mut peers: Vec<PeerEntry> = info.members.into_iter().map(PeerEntry::from).collect();
        peers.sort_by(|a, b| (a.joined_at, &a.peer_id).cmp(&(b.joined_at, &b.peer_id)));
        Ok(Json(RoomDetail {
            room_id: room.to_string(),
            created_at: info.created_at,
            peers,
        })
        .into_response())
    };
    counted(&state.metrics, "get_room", answer.await)
}

/// `DELETE /api/v1/rooms/{room}`.
pub(super) async fn close(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let room = room_id(&room)?;
        if !state.hub.close_room(room).await.map_err(unavailable)? {
            return Err(room_not_found());
        }
        tracing::info!(room, "room closed through the server API");
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    counted(&state.metrics, "close_room", answer.await)
}

/// `DELETE /api/v1/rooms/{room}/peers/{peer}`.
pub(super) async fn remove(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((room, peer)): Path<(String, String)>,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let room = room_id(&room)?;
        if !state
            .hub
            .remove_peer(room, &peer)
            .await
            .map_err(unavailable)?
        {
            return Err(peer_not_found());
        }
        tracing::info!(room, peer, "peer removed through the server API");
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    counted(&state.metrics, "remove_peer", answer.await)
}

/// `PATCH /api/v1/rooms/{room}/peers/{peer}` with `{"metadata": {...}}`.
pub(super) async fn update(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((room, peer)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let room = room_id(&room)?;
        let request: UpdateRequest = json_body(&headers, body, r#"{"metadata": {"name": "Ann"}}"#)?;
        let metadata = compact_object(request.metadata, state.max_metadata_bytes)?;
        let member = state
            .hub
            .set_peer_metadata(room, &peer, &metadata)
            .await
            .map_err(unavailable)?
            .ok_or_else(peer_not_found)?;
        Ok(Json(PeerEntry::from(member)).into_response())
    };
    counted(&state.metrics, "update_peer", answer.await)
}

/// `POST /api/v1/rooms/{room}/messages` with `{"data": …, "to": [peer ids]?}`.
pub(super) async fn send(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let room = room_id(&room)?;
        let request: MessageRequest =
            json_body(&headers, body, r#"{"data": {"text": "recording started"}}"#)?;
        let data = request.data.ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "data is required: any JSON value, delivered as the message's data.",
            )
        })?;
        let to = recipients(request.to)?;
        let delivered = state
            .hub
            .send_from_server(room, to.as_deref(), &data)
            .await
            .map_err(unavailable)?
            .ok_or_else(room_not_found)?;
        Ok((StatusCode::ACCEPTED, Json(Delivered { delivered })).into_response())
    };
    counted(&state.metrics, "send_message", answer.await)
}

/// The `to` of a message: absent (everyone) or an array of peer ids.
fn recipients(to: Option<serde_json::Value>) -> Result<Option<Vec<String>>, ApiError> {
    let refuse = || {
        ApiError::bad_request(
            "invalid_request",
            "to must be an array of peer ids, like [\"alice-4f2a…\"], or left out to reach everyone.",
        )
    };
    match to {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(refuse()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(refuse()),
    }
}

/// Metadata from a request: a JSON object of at most `limit` bytes, made compact.
fn compact_object(
    metadata: Option<Box<RawValue>>,
    limit: usize,
) -> Result<crate::signaling::protocol::Metadata, ApiError> {
    let refuse = |message: String| ApiError::bad_request("invalid_request", message);
    let raw = metadata.ok_or_else(|| {
        refuse("metadata is required: a JSON object, like {\"name\": \"Ann\"}.".into())
    })?;
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|_| refuse("metadata is not valid JSON.".into()))?;
    if !value.is_object() {
        return Err(refuse(
            "metadata must be a JSON object, like {\"name\": \"Ann\"}.".into(),
        ));
    }
    let text = value.to_string();
    if text.len() > limit {
        return Err(refuse(format!(
            "metadata is {} bytes as JSON; the limit is {limit} (MAX_METADATA_BYTES).",
            text.len()
        )));
    }
    metadata_from(&text).ok_or_else(|| refuse("metadata is not valid JSON.".into()))
}
