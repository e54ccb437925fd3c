//! The alerts' and retention's handlers: the open alerts, acknowledging one (who and when, from the caller),
//! and pruning unused bundles. Changes go through the audit middleware like every other change.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ota_protocol::alerts::PruneRequest;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Operator, Viewer};
use crate::fleet::unix_now;
use crate::state::AppState;

type AppResult = Result<Response, ApiError>;
type St = State<Arc<AppState>>;

/// `GET /api/alerts`.
pub async fn list(State(state): St, _: Viewer) -> AppResult {
    Ok(Json(state.alerts.list()).into_response())
}

/// `POST /api/alerts/{id}/ack`.
pub async fn ack(State(state): St, caller: Operator, Path(id): Path<String>) -> AppResult {
    let user = caller.0;
    Ok(Json(state.alerts.ack(&id, &user.name, unix_now()).await?).into_response())
}

/// `POST /api/bundles/prune`.
pub async fn prune(
    State(state): St,
    _: Operator,
    ApiJson(req): ApiJson<PruneRequest>,
) -> AppResult {
    Ok(Json(state.retention.prune_bundles(&req, unix_now()).await?).into_response())
}
