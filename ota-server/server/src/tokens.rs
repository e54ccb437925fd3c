//! Tokens: generation, hashing, constant-time comparison, and the extractors that authenticate requests.
//!
//! * Admin tokens are compared by SHA-256 in constant time against every configured admin token hash.
//! * Device tokens are `ota1.` + 64 hex digits; the first 16 digits are a public token id that keys the
//!   in-memory token map, the whole token's SHA-256 is compared in constant time. A device token is
//!   HMAC-SHA256(server token key, device id + enrollment request id), so a retried enrollment yields the same
//!   token while the server stores only its hash.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "ota1.";

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Constant-time equality of two secrets (compares their hashes, so lengths do not leak either).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    hashes_equal(&hash_token(a), &hash_token(b))
}

/// 32 random bytes as 64 hex digits.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The device token for an enrollment request.
pub fn derive_device_token(key: &[u8], device_id: &str, request_id: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(b"ota-device-token\0");
    mac.update(device_id.as_bytes());
    mac.update(b"\0");
    mac.update(request_id.as_bytes());
    format!(
        "{DEVICE_TOKEN_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The public token id of a device token, if it has the device token shape.
pub fn device_token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(DEVICE_TOKEN_PREFIX)?;
    (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| &rest[..16])
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A release engineer or operator.
    Admin,
    /// An enrolled device.
    Device(String),
}

/// Reads the bearer token of a request.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing 'Authorization: Bearer <token>' header"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
        })?;
    Ok(token.trim())
}

/// Any authenticated caller.
pub struct AnyCaller(pub Caller);

/// An admin caller (403 for devices).
pub struct Admin;

/// A device caller (403 for admins: devices endpoints act on the calling device only).
pub struct DeviceCaller(pub String);

impl FromRequestParts<Arc<AppState>> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        state.authenticate(token).map(AnyCaller)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        match AnyCaller::from_request_parts(parts, state).await?.0 {
            Caller::Admin => Ok(Admin),
            Caller::Device(id) => Err(ApiError::forbidden(format!(
                "device '{id}' may not call this admin endpoint; use an admin token"
            ))),
        }
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
            Caller::Admin => Err(ApiError::forbidden(
                "this endpoint is for devices; call it with the device's own token",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_are_deterministic_per_request_and_shaped() {
        let a = derive_device_token(b"key", "r1", "req-1");
        assert_eq!(a, derive_device_token(b"key", "r1", "req-1"));
        assert_ne!(a, derive_device_token(b"key", "r1", "req-2"));
        assert_ne!(a, derive_device_token(b"key", "r2", "req-1"));
        assert_ne!(a, derive_device_token(b"other", "r1", "req-1"));
        // The separator keeps ("r1", "0req") and ("r10", "req") apart.
        assert_ne!(
            derive_device_token(b"k", "r1", "0req"),
            derive_device_token(b"k", "r10", "req")
        );
        assert_eq!(device_token_id(&a), Some(&a[5..21]));
        assert_eq!(device_token_id("ota1.xyz"), None);
        assert_eq!(device_token_id("admin-token"), None);
    }

    #[test]
    fn comparisons() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
        assert_eq!(random_hex().len(), 64);
        assert_ne!(random_hex(), random_hex());
    }
}
