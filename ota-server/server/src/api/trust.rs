//! The trust chain's handlers. `GET /api/trust/chain` is public: trust roots are public keys and signatures,
//! every link verifies itself against the one before, and a robot that lost its token (or waits to be admitted)
//! must still be able to learn the keys its next bundle is signed with. Publishing is for admins.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::error::ApiError;
use crate::api::extract::{Admin, ApiJson};
use crate::state::AppState;

/// `GET /api/trust/chain?after=N`: the roots newer than version N (default 0: all).
pub async fn chain(
    State(state): State<Arc<AppState>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let after = match query.get("after") {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("after must be a trust root version (a whole number), not {s:?}"),
            )
        })?,
    };
    Ok(Json(state.trust.chain(after).await?).into_response())
}

/// `POST /api/trust/chain`: 201 appended, 200 already published.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    _: Admin,
    ApiJson(root): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let (appended, chain) = state.trust.publish(root).await?;
    let status = if appended {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(chain)).into_response())
}
