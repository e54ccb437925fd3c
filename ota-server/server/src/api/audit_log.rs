//! One log line (target `ota_server::audit`) for every admin action and every refused token: each non-GET
//! request made with the admin token, and each 401 or 403 on any route, with method, route template, caller,
//! peer address, status and, for a refusal, the reason the caller was given. Device traffic that is not
//! refused is not logged, so polls cost one prefix check here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::extract::bearer;
use crate::state::AppState;
use crate::tokens::{self, Caller};

/// Largest error body read for the reason (error bodies are one short JSON object).
const MAX_REASON_BODY: usize = 16 * 1024;

/// Who made a request, as far as its token tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// No `Authorization` header (or not a bearer token).
    NoToken,
    /// The admin token.
    Admin,
    /// A device token, by its public token id.
    Device(String),
    /// A token the server does not know.
    Unknown,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::NoToken => f.write_str("no token"),
            Who::Admin => f.write_str("admin token"),
            Who::Device(id) => write!(f, "device token {id}"),
            Who::Unknown => f.write_str("unknown token"),
        }
    }
}

/// Whether a request gets an audit line: a refused token anywhere, or an admin's change.
pub fn is_audited(method: &Method, admin: bool, status: StatusCode) -> bool {
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    refused || (admin && !reads)
}

/// The middleware (layered over the whole router in `routes::app`).
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let token = bearer(&parts).ok().map(str::to_owned);
    let method = parts.method.clone();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| parts.uri.path().to_string(), |m| m.as_str().to_string());
    // Set on every request, HTTP or HTTPS, by `crate::connections`.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string());
    let response = next.run(Request::from_parts(parts, body)).await;
    // Reads that were not refused are never audited: skip the token check for them (most requests).
    if !is_audited(&method, true, response.status()) {
        return response;
    }
    let who = match token.as_deref() {
        None => Who::NoToken,
        Some(t) => match tokens::device_token_id(t) {
            Some(id) => Who::Device(id.to_string()),
            None => match state.authenticate(t) {
                Ok(Caller::User(_)) => Who::Admin,
                Ok(Caller::Device(_)) | Err(_) => Who::Unknown,
            },
        },
    };
    let status = response.status();
    if !is_audited(&method, who == Who::Admin, status) {
        return response;
    }
    if status.is_client_error() || status.is_server_error() {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_REASON_BODY)
            .await
            .unwrap_or_default();
        let reason = serde_json::from_slice::<ota_protocol::ErrorBody>(&bytes).map_or_else(
            |_| String::from_utf8_lossy(&bytes).into_owned(),
            |b| b.error,
        );
        tracing::warn!(
            target: "ota_server::audit",
            "refused {method} {route} by {who} from {peer}: {} {reason}",
            status.as_u16()
        );
        return Response::from_parts(parts, Body::from(bytes));
    }
    tracing::info!(
        target: "ota_server::audit",
        "{method} {route} by {who} from {peer}: {}",
        status.as_u16()
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Refusals are always logged; otherwise exactly the admin's non-read requests.
        #[test]
        fn what_is_audited(
            m in proptest::sample::select(vec![Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::PATCH]),
            admin in any::<bool>(),
            code in 100u16..600,
        ) {
            let status = StatusCode::from_u16(code).unwrap();
            let audited = is_audited(&m, admin, status);
            if code == 401 || code == 403 {
                prop_assert!(audited);
            } else {
                let change = !matches!(m, Method::GET | Method::HEAD);
                prop_assert_eq!(audited, admin && change);
            }
        }
    }
}
