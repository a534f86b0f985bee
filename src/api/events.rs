//! `GET /api/v1/events`: room events in delivery order, for a backend catching up after
//! downtime or reading them without webhooks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ApiState, admit, counted, unavailable};
use crate::error::ApiError;

/// Events per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
pub(super) struct Page {
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
struct Events {
    events: Vec<Box<RawValue>>,
    /// Pass as `after` for the next page; the same as given when nothing new came.
    cursor: Option<String>,
}

/// A cursor as the log writes them: digits, optionally `-` and digits.
fn valid_cursor(cursor: &str) -> bool {
    let mut parts = cursor.splitn(2, '-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let first = parts.next();
    digits(first) && parts.next().is_none_or(|p| digits(Some(p)))
}

/// `GET /api/v1/events?after=<cursor>&limit=<n>`.
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = async {
        admit(&state, remote, &headers)?;
        let events = state.events.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "events_off",
                "Room events are off on this node: set ROOM_EVENTS=on.",
            )
        })?;
        let Query(page) = page.map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                "The query could not be read; use ?after=<cursor>&limit=<n>.",
            )
        })?;
        let limit = match page.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("limit must be a number from 1 to {MAX_LIMIT}."),
                    )
                })?,
        };
        let after = page.after.filter(|a| !a.is_empty());
        if after.as_deref().is_some_and(|a| !valid_cursor(a)) {
            return Err(ApiError::bad_request(
                "invalid_request",
                "after must be a cursor this API returned.",
            ));
        }
        let read = events
            .log_read(after.as_deref(), limit)
            .await
            .map_err(unavailable)?;
        let cursor = read.last().map(|e| e.position.clone()).or(after);
        let events = read
            .into_iter()
            .filter_map(|e| RawValue::from_string(e.json).ok())
            .collect();
        Ok(Json(Events { events, cursor }).into_response())
    };
    counted(&state.metrics, "list_events", answer.await)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_are_the_log_positions() {
        for ok in ["1767225600123-0", "42", "0-7"] {
            assert!(super::valid_cursor(ok), "{ok}");
        }
        for bad in ["", "-", "1-", "-1", "1-2-3", "abc", "1 2", "+"] {
            assert!(!super::valid_cursor(bad), "{bad}");
        }
    }
}
