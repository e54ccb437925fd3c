//! The account routes: sign-in, sign-out, the caller, users (admin), the caller's API tokens, the audit trail
//! (admin). Each route is a `const` [`Route`] listed in [`super::routes::ROUTES`] like every other.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use axum::Json;
use ota_protocol::accounts::{
    ChangePasswordRequest, CreateTokenRequest, CreateUserRequest, LoginRequest, Me,
    SetPasswordRequest, SetRoleRequest,
};

use crate::api::error::ApiError;
use crate::api::extract::{bearer_token, Admin, Allowed, ApiJson, ClientAddress, Viewer};
use crate::api::routes::{doc, route, with_body, Route};
use crate::openapi::Auth;
use crate::openapi::Verb::{Delete, Get, Post, Put};
use crate::state::AppState;

type AppResult = Result<Response, ApiError>;
type St = State<Arc<AppState>>;

/// The user name a response's request is audited under when its token names no user (a sign-in): set by the
/// handler, read by `audit_log`.
#[derive(Clone, Debug)]
pub struct AuditAs(pub String);

/// Default audit page.
const AUDIT_PAGE: usize = 100;

/// `POST /api/login`.
pub const LOGIN: Route = with_body(
    route(
        doc(
            Post,
            "/api/login",
            Auth::None,
            "Sign in: a session token for the console",
        ),
        (200, "LoginResponse"),
        |m| on(m, login),
    ),
    "LoginRequest",
);
/// `POST /api/logout`.
pub const LOGOUT: Route = route(
    doc(
        Post,
        "/api/logout",
        Auth::Viewer,
        "Sign out: the caller's session token stops working",
    ),
    (204, "#none"),
    |m| on(m, logout),
);
/// `GET /api/me`.
pub const ME: Route = route(
    doc(
        Get,
        "/api/me",
        Auth::Viewer,
        "The caller: user name and role",
    ),
    (200, "Me"),
    |m| on(m, me),
);
/// `PUT /api/me/password`.
pub const CHANGE_OWN_PASSWORD: Route = with_body(
    route(
        doc(
            Put,
            "/api/me/password",
            Auth::Viewer,
            "Change the caller's password: every session of theirs ends, the answer is a new one",
        ),
        (200, "LoginResponse"),
        |m| on(m, change_own_password),
    ),
    "ChangePasswordRequest",
);
/// `GET /api/users`.
pub const LIST_USERS: Route = route(
    doc(Get, "/api/users", Auth::Admin, "Users and their roles"),
    (200, "UserList"),
    |m| on(m, list_users),
);
/// `POST /api/users`.
pub const ADD_USER: Route = with_body(
    route(
        doc(Post, "/api/users", Auth::Admin, "Add a user"),
        (201, "UserInfo"),
        |m| on(m, add_user),
    ),
    "CreateUserRequest",
);
/// `DELETE /api/users/{name}`.
pub const REMOVE_USER: Route = route(
    doc(
        Delete,
        "/api/users/{name}",
        Auth::Admin,
        "Remove a user with their sessions and API tokens",
    ),
    (204, "#none"),
    |m| on(m, remove_user),
);
/// `PUT /api/users/{name}/role`.
pub const SET_ROLE: Route = with_body(
    route(
        doc(
            Put,
            "/api/users/{name}/role",
            Auth::Admin,
            "Change a user's role",
        ),
        (200, "UserInfo"),
        |m| on(m, set_role),
    ),
    "SetRoleRequest",
);
/// `PUT /api/users/{name}/password`.
pub const SET_PASSWORD: Route = with_body(
    route(
        doc(
            Put,
            "/api/users/{name}/password",
            Auth::Admin,
            "Set a user's password; their sessions end",
        ),
        (204, "#none"),
        |m| on(m, set_password),
    ),
    "SetPasswordRequest",
);
/// `GET /api/tokens`.
pub const LIST_TOKENS: Route = route(
    doc(
        Get,
        "/api/tokens",
        Auth::Viewer,
        "The caller's API tokens (never the secrets)",
    ),
    (200, "ApiTokenList"),
    |m| on(m, list_tokens),
);
/// `POST /api/tokens`.
pub const CREATE_TOKEN: Route = with_body(
    route(
        doc(
            Post,
            "/api/tokens",
            Auth::Viewer,
            "Create an API token for the caller; the secret is shown this once",
        ),
        (201, "CreatedToken"),
        |m| on(m, create_token),
    ),
    "CreateTokenRequest",
);
/// `DELETE /api/tokens/{token_id}`.
pub const REVOKE_TOKEN: Route = route(
    doc(
        Delete,
        "/api/tokens/{token_id}",
        Auth::Viewer,
        "Revoke one of the caller's API tokens",
    ),
    (204, "#none"),
    |m| on(m, revoke_token),
);
/// `GET /api/audit`.
pub const AUDIT: Route = Route {
    doc: crate::openapi::RouteDoc {
        response: (200, "AuditPage"),
        query: &[
            (
                "before",
                false,
                "an entry id: only older entries (the previous page's next_before)",
            ),
            (
                "limit",
                false,
                "entries per page (default 100, at most 1000)",
            ),
        ],
        ..doc(
            Get,
            "/api/audit",
            Auth::Admin,
            "The audit trail: who changed what, when, from where; newest first",
        )
    },
    handler: |m| on(m, audit),
};

async fn login(
    State(state): St,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Response {
    let outcome = state.accounts.login(req, address).await;
    let mut response = match outcome.result {
        Ok(session) => Json(session).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    };
    if let Some(name) = outcome.audit_as {
        response.extensions_mut().insert(AuditAs(name));
    }
    response
}

async fn logout(State(state): St, _: Viewer, headers: axum::http::HeaderMap) -> AppResult {
    state.accounts.logout(bearer_token(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn me(Allowed(user): Viewer) -> Response {
    Json(Me {
        name: user.name,
        role: user.role,
    })
    .into_response()
}

async fn change_own_password(
    State(state): St,
    Allowed(user): Viewer,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> AppResult {
    let session = state
        .accounts
        .change_own_password(&user, req, address)
        .await?;
    Ok(Json(session).into_response())
}

async fn list_users(State(state): St, _: Admin) -> AppResult {
    Ok(Json(state.accounts.users().await?).into_response())
}

async fn add_user(
    State(state): St,
    _: Admin,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> AppResult {
    let user = state.accounts.add_user(req).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn remove_user(State(state): St, _: Admin, Path(name): Path<String>) -> AppResult {
    state.accounts.remove_user(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_role(
    State(state): St,
    _: Admin,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> AppResult {
    Ok(Json(state.accounts.set_role(&name, req.role).await?).into_response())
}

async fn set_password(
    State(state): St,
    _: Admin,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetPasswordRequest>,
) -> AppResult {
    state.accounts.set_password(&name, req.password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_tokens(State(state): St, Allowed(user): Viewer) -> AppResult {
    Ok(Json(state.accounts.tokens(&user).await?).into_response())
}

async fn create_token(
    State(state): St,
    Allowed(user): Viewer,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> AppResult {
    let created = state.accounts.create_token(&user, req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn revoke_token(
    State(state): St,
    Allowed(user): Viewer,
    Path(id): Path<String>,
) -> AppResult {
    state.accounts.revoke_token(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn audit(
    State(state): St,
    _: Admin,
    Query(query): Query<BTreeMap<String, String>>,
) -> AppResult {
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("?{key}= takes a whole number"),
                    )
                })
            })
            .transpose()
    };
    let before = number("before")?;
    let limit = number("limit")?.map_or(AUDIT_PAGE, |l| l.min(usize::MAX as u64) as usize);
    Ok(Json(state.accounts.audit(before, limit).await?).into_response())
}
