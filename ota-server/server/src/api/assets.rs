//! The embedded dashboard (see `build.rs`): `/` serves `dashboard/index.html`, `/static/{path}` the files under
//! `dashboard/static/` (the console's ES modules under `static/js/`).
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles only from this origin, no inline
//! script or style, no framing), `nosniff`, and `Cache-Control: no-cache` with an ETag: the browser revalidates
//! each load (a 304 costs a round trip, not the file), so a new server version is never mixed with stale modules.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The console's policy: its own scripts, styles, fonts and API only; images also from `data:`/`blob:` URLs
/// (charts and site plans drawn or fetched by the page itself).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

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

/// A file's ETag: a digest of its bytes (computed once per file, on first use).
fn etag(index: usize, bytes: &[u8]) -> &'static str {
    static TAGS: OnceLock<Vec<OnceLock<String>>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        (0..=embedded::STATIC_FILES.len())
            .map(|_| OnceLock::new())
            .collect()
    });
    tags[index].get_or_init(|| format!("\"{}\"", hex::encode(&Sha256::digest(bytes)[..12])))
}

/// The answer for one embedded file: 304 when the browser's copy is current.
fn serve(path: &str, index: usize, bytes: &'static [u8], request: &HeaderMap) -> Response {
    let tag = etag(index, bytes);
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type(path))], bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(tag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`.
pub async fn index(request: HeaderMap) -> Response {
    serve(
        "index.html",
        embedded::STATIC_FILES.len(),
        embedded::INDEX,
        &request,
    )
}

/// `GET /static/{*path}`.
pub async fn static_file(
    Path(path): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let (index, (_, bytes)) = embedded::STATIC_FILES
        .iter()
        .enumerate()
        .find(|(_, (name, _))| *name == path)
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no dashboard file '{path}'"))
        })?;
    Ok(serve(&path, index, bytes, &request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_modules_are_embedded_as_javascript() {
        let names: Vec<&str> = embedded::STATIC_FILES.iter().map(|(n, _)| *n).collect();
        for module in [
            "js/main.js",
            "js/ctx.js",
            "js/fleet.js",
            "js/rollouts.js",
            "js/robot.js",
        ] {
            assert!(names.contains(&module), "{module} missing from {names:?}");
            assert_eq!(content_type(module), "text/javascript; charset=utf-8");
        }
        assert!(!names.contains(&"app.js"), "the old single script is gone");
    }

    #[test]
    fn no_module_sets_html_and_the_page_has_no_inline_script() {
        for (name, bytes) in embedded::STATIC_FILES {
            if name.ends_with(".js") {
                let text = std::str::from_utf8(bytes).unwrap();
                for needle in [
                    "innerHTML",
                    "outerHTML",
                    "insertAdjacentHTML",
                    "document.write",
                    "eval(",
                ] {
                    assert!(!text.contains(needle), "{name} uses {needle}");
                }
            }
        }
        let index = std::str::from_utf8(embedded::INDEX).unwrap();
        for tag in index.split("<script").skip(1) {
            assert!(
                tag.trim_start()
                    .starts_with("type=\"module\" src=\"/static/"),
                "inline or foreign script: <script{tag}"
            );
        }
        assert!(
            !index.contains(" style="),
            "inline style attribute in index.html"
        );
    }

    #[tokio::test]
    async fn answers_carry_the_policy_and_revalidate() {
        let r = static_file(Path("js/main.js".into()), HeaderMap::new())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(CSP.contains("script-src 'self';") && !CSP.contains("unsafe"));
        let tag = r.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        let r = static_file(Path("js/main.js".into()), again).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = index(HeaderMap::new()).await;
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(static_file(Path("app.js".into()), HeaderMap::new())
            .await
            .is_err());
    }
}
