//! The embedded dashboard (see `build.rs`): `/` serves `dashboard/index.html`, `/static/{path}` the files under
//! `dashboard/static/`.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use axum::http::StatusCode;

use crate::api::error::ApiError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Content type by file extension.
pub fn content_type(path: &str) -> &'static str {
    match path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /`.
pub async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        embedded::INDEX,
    )
        .into_response()
}

/// `GET /static/{*path}`.
pub async fn static_file(Path(path): Path<String>) -> Result<Response, ApiError> {
    let (_, bytes) = embedded::STATIC_FILES
        .iter()
        .find(|(name, _)| *name == path)
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no dashboard file '{path}'"))
        })?;
    Ok(([(header::CONTENT_TYPE, content_type(&path))], *bytes).into_response())
}
