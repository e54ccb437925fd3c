//! The audit trail, in one place. Every change a person makes (each non-GET request whose token names a user,
//! whatever its answer, and each sign-in of an existing user) becomes a row in the store (who, when, action,
//! target, client address, status; `GET /api/audit`), and a log line (target `ota_server::audit`), as does each
//! 401 or 403 on any route, with the reason the caller was given. Device traffic that is not refused is not
//! recorded, so polls cost one prefix check here. New mutating routes need nothing: this layer sees them all.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::accounts::AuditAs;
use crate::api::extract::{bearer, client_address};
use crate::state::AppState;
use crate::store::accounts::AuditRecord;
use crate::tokens::{self, Caller, BOOTSTRAP_USER};

/// Largest error body read for the reason (error bodies are one short JSON object).
const MAX_REASON_BODY: usize = 16 * 1024;

/// Who made a request, as far as its token tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// No `Authorization` header (or not a bearer token).
    NoToken,
    /// The bootstrap admin token.
    Admin,
    /// A user's session or API token.
    User(String),
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
            Who::User(name) => write!(f, "user {name}"),
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

/// Who a token names (`None`: no token).
fn who(state: &AppState, token: Option<&str>) -> Who {
    match token {
        None => Who::NoToken,
        Some(t) => match tokens::device_token_id(t) {
            Some(id) => Who::Device(id.to_string()),
            None => match state.authenticate(t) {
                Ok(Caller::User(u)) if u.name == BOOTSTRAP_USER => Who::Admin,
                Ok(Caller::User(u)) => Who::User(u.name),
                Ok(Caller::Device(_)) | Err(_) => Who::Unknown,
            },
        },
    }
}

/// The route's parameters as `name=value` pairs (`/api/rollouts/{rollout_id}/pause` against
/// `/api/rollouts/3/pause`: `rollout_id=3`).
pub fn target(template: &str, path: &str) -> String {
    template
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(t, p)| {
            let name = t.strip_prefix('{')?.strip_suffix('}')?;
            Some(format!("{}={p}", name.trim_start_matches('*')))
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    // A change is attributed before it runs (a sign-out ends the very session that names its author).
    let before = (changes && token.is_some()).then(|| who(&state, token.as_deref()));
    let address = client_address(&parts, &state);
    let target_text = target(&route, parts.uri.path());
    // Set on every request, HTTP or HTTPS, by `crate::connections`.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string());
    let response = next.run(Request::from_parts(parts, body)).await;
    let status = response.status();
    let signed_in_as = response.extensions().get::<AuditAs>().map(|a| a.0.clone());
    let author = match (&before, signed_in_as) {
        (_, Some(name)) => Some(name),
        (Some(Who::Admin), None) => Some(BOOTSTRAP_USER.to_string()),
        (Some(Who::User(name)), None) => Some(name.clone()),
        _ => None,
    };
    if let Some(user) = author.filter(|_| changes) {
        let (action, target_text) = match response.extensions().get::<AuditAs>() {
            Some(AuditAs(name)) => (format!("{method} {route}"), name.clone()),
            None => (format!("{method} {route}"), target_text),
        };
        state
            .accounts
            .record(AuditRecord {
                id: 0,
                at: crate::fleet::unix_now(),
                user,
                action,
                target: target_text,
                address,
                status: status.as_u16(),
            })
            .await;
    }
    // Reads that were not refused are never logged: skip the token check for them (most requests).
    if !is_audited(&method, true, status) {
        return response;
    }
    let who = match before {
        Some(w) => w,
        None => who(&state, token.as_deref()),
    };
    if !is_audited(&method, matches!(who, Who::Admin | Who::User(_)), status) {
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

    #[test]
    fn targets_name_the_route_parameters() {
        assert_eq!(
            target("/api/rollouts/{rollout_id}/pause", "/api/rollouts/3/pause"),
            "rollout_id=3"
        );
        assert_eq!(
            target("/api/users/{name}/role", "/api/users/ana/role"),
            "name=ana"
        );
        assert_eq!(target("/api/rollouts", "/api/rollouts"), "");
        assert_eq!(target("/static/{*path}", "/static/js"), "path=js");
    }

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
