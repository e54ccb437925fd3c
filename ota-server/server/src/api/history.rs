//! The history charts' handlers: a robot's timeline (its metrics and update events) and a rollout's guard
//! history. The points of one metric come from `GET /api/devices/{id}/history` (`api::handlers`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::error::ApiError;
use crate::api::extract::Viewer;
use crate::state::AppState;

type AppResult = Result<Response, ApiError>;
type St = State<Arc<AppState>>;

/// The optional `since` query parameter (Unix seconds).
pub fn since(query: &BTreeMap<String, String>) -> Result<Option<u64>, ApiError> {
    query
        .get("since")
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("since must be Unix seconds, not {s:?}"),
                )
            })
        })
        .transpose()
}

/// `GET /api/devices/{device_id}/timeline[?since=UNIX]`.
pub async fn device_timeline(
    State(state): St,
    _: Viewer,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> AppResult {
    let since = since(&query)?;
    Ok(Json(state.history.timeline(&id, since).await?).into_response())
}

/// `GET /api/rollouts/{rollout_id}/guards/history[?since=UNIX]`.
pub async fn guard_history(
    State(state): St,
    _: Viewer,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> AppResult {
    let id = crate::api::handlers::rollout_id(&id)?;
    let since = since(&query)?;
    Ok(Json(state.history.guard_history(id, since).await?).into_response())
}
