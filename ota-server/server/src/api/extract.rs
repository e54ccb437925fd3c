//! Request extractors: the JSON body with `{"error": ...}` rejections, and the callers (bearer token checked by
//! the device service; the role checked here).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;
use crate::state::AppState;
use crate::tokens::{hash_token, hashes_equal, Caller, Role, User};

/// JSON body extractor whose rejections are `{"error": ...}` with the right status (400 malformed, 413 too
/// large, 415 wrong content type, 422 wrong shape).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(_) => format!(
            "request body has the wrong shape: {}",
            rejection.body_text()
        ),
        JsonRejection::JsonSyntaxError(_) => {
            format!("request body is not valid JSON: {}", rejection.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => {
            "send the body with 'Content-Type: application/json'".into()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body too large".into(),
        _ => rejection.body_text(),
    };
    ApiError::new(status, message)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// Reads the bearer token of a request.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    bearer_token(&parts.headers)
}

/// Reads the bearer token of a request's headers.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing 'Authorization: Bearer <token>' header"))?;
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("the Authorization header must be 'Bearer <token>'"))?;
    Ok(token.trim())
}

/// The client's address as the audit trail and the sign-in limit see it: the peer, or what a trusted proxy
/// says in `X-Forwarded-For` ([`crate::accounts::client_address`]); `-` when unknown.
pub struct ClientAddress(pub String);

/// The client address of a request (see [`ClientAddress`]).
pub fn client_address(parts: &Parts, state: &AppState) -> String {
    // Set on every request, HTTP or HTTPS, by `crate::connections`.
    let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return "-".into();
    };
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    crate::accounts::client_address(
        peer.0.ip(),
        forwarded,
        &state.config().accounts.trusted_proxies,
    )
    .to_string()
}

impl FromRequestParts<Arc<AppState>> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        Ok(ClientAddress(client_address(parts, state)))
    }
}

/// Any authenticated caller.
pub struct AnyCaller(pub Caller);

/// A user whose role is at least `Role::ALL[MIN]` (403 for devices and for lower roles): THE role check of every
/// route people call. Use the aliases [`Viewer`], [`Operator`] and [`Admin`].
pub struct Allowed<const MIN: usize>(pub User);

/// A user with the viewer role or higher (reads).
pub type Viewer = Allowed<0>;
/// A user with the operator role or higher (rollouts, robots, bundles, groups, sites).
pub type Operator = Allowed<1>;
/// A user with the admin role (users, keys, trust, admission, settings).
pub type Admin = Allowed<2>;

/// Whether `caller` may call a route that needs `needed`; the refusal is one line naming the role needed.
pub fn check_role(caller: Caller, needed: Role) -> Result<User, ApiError> {
    match caller {
        Caller::User(user) if user.role.allows(needed) => Ok(user),
        Caller::User(user) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {needed} role; user '{}' is {} {}",
                user.name,
                if user.role == Role::Admin { "an" } else { "a" },
                user.role
            ),
        )),
        Caller::Device(id) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("device '{id}' may not call this endpoint; use a user's token (role {needed})"),
        )),
    }
}

/// A device caller (403 for admins: devices endpoints act on the calling device only).
pub struct DeviceCaller(pub String);

impl FromRequestParts<Arc<AppState>> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match state.authenticate(token) {
            Ok(caller) => Ok(AnyCaller(caller)),
            Err(_) if is_scrape_token(state, token) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the metrics token reads GET /metrics only; use an admin token",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `token` is the read-only scrape token (`--metrics-token`), compared in constant time.
fn is_scrape_token(state: &AppState, token: &str) -> bool {
    state
        .config()
        .metrics_token_hash
        .is_some_and(|hash| hashes_equal(&hash, &hash_token(token)))
}

/// A caller that may read `GET /metrics`: the scrape token or an admin (403 for devices).
pub struct Scraper;

impl FromRequestParts<Arc<AppState>> for Scraper {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if is_scrape_token(state, bearer(parts)?) {
            return Ok(Scraper);
        }
        match AnyCaller::from_request_parts(parts, state).await?.0 {
            Caller::User(user) => check_role(Caller::User(user), Role::Viewer).map(|_| Scraper),
            Caller::Device(id) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("device '{id}' may not read the metrics; use the metrics token or a user's token"),
            )),
        }
    }
}

impl<const MIN: usize> FromRequestParts<Arc<AppState>> for Allowed<MIN> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let caller = AnyCaller::from_request_parts(parts, state).await?.0;
        check_role(caller, Role::ALL[MIN]).map(Allowed)
    }
}

impl FromRequestParts<Arc<AppState>> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        match AnyCaller::from_request_parts(parts, state).await?.0 {
            Caller::Device(id) => Ok(DeviceCaller(id)),
            Caller::User(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this endpoint is for devices; call it with the device's own token",
            )),
        }
    }
}
