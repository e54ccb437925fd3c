//! The path docs of the account routes (`api::accounts`), merged into the document by [`super::document`].

#![allow(dead_code)] // the functions exist for their attributes

use ota_protocol::accounts::{
    ApiTokenInfo, AuditEntry, AuditPage, ChangePasswordRequest, CreateTokenRequest,
    CreateUserRequest, CreatedToken, LoginRequest, LoginResponse, Me, Role, SetPasswordRequest,
    SetRoleRequest, UserInfo,
};
use ota_protocol::ErrorBody;
use utoipa::OpenApi;

/// The account operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        login,
        logout,
        me,
        change_own_password,
        list_users,
        add_user,
        remove_user,
        set_role,
        set_password,
        list_tokens,
        create_token,
        revoke_token,
        audit
    ),
    components(schemas(Role, ApiTokenInfo, AuditEntry, UserInfo))
)]
pub struct AccountsDoc;

/// Sign in: a session token for the console
///
/// The session ends after `--session-idle-secs` unused or `--session-max-secs` after sign-in. Five failed
/// sign-ins per user and address, then one a minute (429 with Retry-After).
#[utoipa::path(post, path = "/api/login", tag = "accounts", request_body = LoginRequest,
    responses(
        (status = 200, description = "the session", body = LoginResponse),
        (status = "default", description = "error (401 wrong name or password, 429 too many failures)", body = ErrorBody),
    ))]
fn login() {}

/// Sign out: the caller's session token stops working
#[utoipa::path(post, path = "/api/logout", tag = "accounts",
    responses(
        (status = 204, description = "signed out"),
        (status = "default", description = "error (409 for an API or the bootstrap token)", body = ErrorBody),
    ))]
fn logout() {}

/// The caller: user name and role
#[utoipa::path(get, path = "/api/me", tag = "accounts",
    responses(
        (status = 200, description = "the caller", body = Me),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn me() {}

/// Users and their roles
#[utoipa::path(get, path = "/api/users", tag = "accounts",
    responses(
        (status = 200, description = "every user, by name", body = Vec<UserInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_users() {}

/// Add a user
#[utoipa::path(post, path = "/api/users", tag = "accounts", request_body = CreateUserRequest,
    responses(
        (status = 201, description = "added", body = UserInfo),
        (status = "default", description = "error (409 name taken, 400 bad name or short password)", body = ErrorBody),
    ))]
fn add_user() {}

/// Remove a user with their sessions and API tokens
#[utoipa::path(delete, path = "/api/users/{name}", tag = "accounts",
    params(("name" = String, Path, description = "user name")),
    responses(
        (status = 204, description = "removed"),
        (status = "default", description = "error (404 no such user, 409 the last admin)", body = ErrorBody),
    ))]
fn remove_user() {}

/// Change a user's role
#[utoipa::path(put, path = "/api/users/{name}/role", tag = "accounts", request_body = SetRoleRequest,
    params(("name" = String, Path, description = "user name")),
    responses(
        (status = 200, description = "the user", body = UserInfo),
        (status = "default", description = "error (404 no such user, 409 the last admin)", body = ErrorBody),
    ))]
fn set_role() {}

/// Change the caller's password: every session of theirs ends, the answer is a new one
#[utoipa::path(put, path = "/api/me/password", tag = "accounts", request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "a new session of the caller", body = LoginResponse),
        (status = "default", description = "error (400 the new password is too short, 403 the current one is wrong, \
            409 the bootstrap admin token, 429 too many wrong passwords)", body = ErrorBody),
    ))]
fn change_own_password() {}

/// Set a user's password; their sessions end
#[utoipa::path(put, path = "/api/users/{name}/password", tag = "accounts", request_body = SetPasswordRequest,
    params(("name" = String, Path, description = "user name")),
    responses(
        (status = 204, description = "set"),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn set_password() {}

/// The caller's API tokens (never the secrets)
#[utoipa::path(get, path = "/api/tokens", tag = "accounts",
    responses(
        (status = 200, description = "oldest first", body = Vec<ApiTokenInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_tokens() {}

/// Create an API token for the caller; the secret is shown this once
#[utoipa::path(post, path = "/api/tokens", tag = "accounts", request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "the token and its description", body = CreatedToken),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn create_token() {}

/// Revoke one of the caller's API tokens
#[utoipa::path(delete, path = "/api/tokens/{token_id}", tag = "accounts",
    params(("token_id" = String, Path, description = "the token's public id")),
    responses(
        (status = 204, description = "revoked"),
        (status = "default", description = "error (404 not one of yours)", body = ErrorBody),
    ))]
fn revoke_token() {}

/// The audit trail: who changed what, when, from where; newest first
///
/// Every change made with a user's token (any status, so refused attempts show too), and every sign-in of
/// an existing user.
#[utoipa::path(get, path = "/api/audit", tag = "accounts",
    params(
        ("before" = Option<u64>, Query, description = "an entry id: only older entries (the previous page's next_before)"),
        ("limit" = Option<u64>, Query, description = "entries per page (default 100, at most 1000)"),
    ),
    responses(
        (status = 200, description = "a page", body = AuditPage),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn audit() {}
