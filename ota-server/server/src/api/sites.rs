//! The map's handlers: sites (plan image upload, list, image, delete) and the robots on a site. The upload is
//! the image itself as the body (like a bundle upload), its name, scale and origin in the query, so the page
//! and `curl -T plan.png` send it the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ota_protocol::sites::MAX_IMAGE_BYTES;

use crate::api::error::ApiError;
use crate::api::extract::{Operator, Viewer};
use crate::services::sites::{too_large, SiteUpload};
use crate::state::AppState;

type AppResult = Result<Response, ApiError>;
type St = State<Arc<AppState>>;

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A query parameter; `default` when absent (`None`: required).
fn param<T: std::str::FromStr>(
    query: &BTreeMap<String, String>,
    name: &str,
    default: Option<T>,
    example: &str,
) -> Result<T, ApiError> {
    match query.get(name) {
        Some(text) => text
            .parse()
            .map_err(|_| bad(format!("{name} must be a number, e.g. {name}={example} (got {text:?})"))),
        None => default.ok_or_else(|| {
            bad(format!(
                "name the site's {name}: POST /api/sites?name=hall-a&scale=0.05&origin_x=0&origin_y=0 with the image as the body"
            ))
        }),
    }
}

/// `POST /api/sites?name=&scale=&origin_x=&origin_y=`: the body is the PNG or JPEG plan; 201 new, 200 replaced.
pub async fn upload(
    State(state): St,
    _: Operator,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Body,
) -> AppResult {
    let upload = SiteUpload {
        name: param(&query, "name", None::<String>, "hall-a")?,
        scale: param(&query, "scale", None, "0.05")?,
        origin_x: param(&query, "origin_x", Some(0.0), "120")?,
        origin_y: param(&query, "origin_y", Some(0.0), "480")?,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_IMAGE_BYTES as u64) {
        return Err(too_large().into());
    }
    let image = axum::body::to_bytes(body, MAX_IMAGE_BYTES)
        .await
        .map_err(|_| ApiError::from(too_large()))?;
    let (created, site) = state.sites.put(upload, image.to_vec()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(site)).into_response())
}

/// `GET /api/sites`.
pub async fn list(State(state): St, _: Viewer) -> AppResult {
    Ok(Json(state.sites.list().await?).into_response())
}

/// `GET /api/sites/{name}/image`: the plan as uploaded; its digest is the ETag.
pub async fn image(State(state): St, _: Viewer, Path(name): Path<String>) -> AppResult {
    let (site, bytes) = state.sites.image(&name).await?;
    Ok((
        [
            (header::CONTENT_TYPE, site.format.media_type().to_string()),
            (header::ETAG, format!("\"{}\"", site.digest)),
            (header::CACHE_CONTROL, "private, no-cache".to_string()),
        ],
        bytes,
    )
        .into_response())
}

/// `DELETE /api/sites/{name}`.
pub async fn delete(State(state): St, _: Operator, Path(name): Path<String>) -> AppResult {
    state.sites.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/sites/{name}/robots`.
pub async fn robots(State(state): St, _: Viewer, Path(name): Path<String>) -> AppResult {
    Ok(Json(state.sites.robots(&name).await?).into_response())
}
