//! Tokens, pure: derivation, hashing and constant-time comparison. No I/O, no state; the device service keeps
//! the token map and the HTTP layer reads the `Authorization` header.
//!
//! * Admin tokens are compared by SHA-256 in constant time against every configured admin token hash.
//! * Device tokens are `ota1.` + 64 hex digits; the first 16 digits are a public token id that keys the
//!   in-memory token map, the whole token's SHA-256 is compared in constant time. A device token is
//!   HMAC-SHA256(server token key, device id + enrollment request id), so a retried enrollment yields the same
//!   token while the server stores only its hash.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "ota1.";

/// Least length of a token or secret an operator chooses (admin token, enrollment secret, scrape token).
pub const MIN_SECRET_LEN: usize = 16;

pub use ota_protocol::accounts::Role;

/// The user name the bootstrap admin token acts as (in the audit trail and `GET /api/me`).
pub const BOOTSTRAP_USER: &str = "admin-token";

/// A person (or their CLI / CI job) behind a session or API token, or the bootstrap admin token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Who a token identifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A person: a user's session or API token, or the bootstrap admin token.
    User(User),
    /// An enrolled device.
    Device(String),
}

impl Caller {
    /// The bootstrap admin token's caller.
    pub fn bootstrap() -> Caller {
        Caller::User(User {
            name: BOOTSTRAP_USER.into(),
            role: Role::Admin,
        })
    }
}

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

/// Whether `hash` is one of the admin token hashes; every hash is compared (no early exit), each in constant
/// time.
pub fn is_admin(admin_hashes: &[[u8; 32]], hash: &[u8; 32]) -> bool {
    admin_hashes
        .iter()
        .fold(false, |ok, admin| ok | hashes_equal(admin, hash))
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

/// How long an enrollment challenge is accepted.
pub const CHALLENGE_TTL_MS: u64 = 5 * 60 * 1000;

/// How far in the future a challenge's issue time may be (replicas' clocks differ a little).
const CHALLENGE_SKEW_MS: u64 = 30 * 1000;

/// A stateless enrollment challenge for `device_id`: `c1.<issued ms>.<nonce>.<mac>`, the MAC keyed with the
/// server's token key, so any replica checks it without storing it. It is used once: the store keeps, per
/// device, the issue time of the last challenge used and accepts only a later one
/// (`Store::claim_challenge`), so a captured enrollment cannot be replayed, not even within the five minutes.
pub fn challenge(key: &[u8], device_id: &str, issued_ms: u64, nonce: u64) -> String {
    let body = format!("c1.{issued_ms:016x}.{nonce:016x}");
    format!("{body}.{}", challenge_mac(key, device_id, &body))
}

fn challenge_mac(key: &[u8], device_id: &str, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(b"ota-enroll-challenge\0");
    mac.update(device_id.as_bytes());
    mac.update(b"\0");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why a challenge is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not one this server issued for this device.
    #[error("the enrollment challenge was not issued by this server for this device id")]
    Forged,
    /// Older than [`CHALLENGE_TTL_MS`] (or from a clock far ahead).
    #[error("the enrollment challenge expired; ask for a new one")]
    Expired,
}

/// Checks a challenge for `device_id` at `now_ms`; gives its issue time (for the once-only claim).
pub fn check_challenge(
    key: &[u8],
    device_id: &str,
    text: &str,
    now_ms: u64,
) -> Result<u64, ChallengeError> {
    let (body, mac) = text.rsplit_once('.').ok_or(ChallengeError::Forged)?;
    let expected = challenge_mac(key, device_id, body);
    if !secrets_equal(mac, &expected) {
        return Err(ChallengeError::Forged);
    }
    let issued = body
        .strip_prefix("c1.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or(ChallengeError::Forged)?;
    if issued > now_ms + CHALLENGE_SKEW_MS || now_ms.saturating_sub(issued) > CHALLENGE_TTL_MS {
        return Err(ChallengeError::Expired);
    }
    Ok(issued)
}

/// The public token id of a device token, if it has the device token shape.
pub fn device_token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(DEVICE_TOKEN_PREFIX)?;
    (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| &rest[..16])
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

    proptest::proptest! {
        #[test]
        fn challenges_bind_key_device_and_time(
            issued in 0u64..1 << 50,
            nonce in proptest::prelude::any::<u64>(),
            age in 0u64..2 * CHALLENGE_TTL_MS,
        ) {
            let c = challenge(b"key", "r1", issued, nonce);
            let now = issued + age;
            let fresh = age <= CHALLENGE_TTL_MS;
            proptest::prop_assert_eq!(
                check_challenge(b"key", "r1", &c, now),
                if fresh { Ok(issued) } else { Err(ChallengeError::Expired) }
            );
            proptest::prop_assert_eq!(check_challenge(b"other", "r1", &c, now), Err(ChallengeError::Forged));
            proptest::prop_assert_eq!(check_challenge(b"key", "r2", &c, now), Err(ChallengeError::Forged));
            let moved = c.replacen("c1.", "c1.0", 1);
            proptest::prop_assert_eq!(check_challenge(b"key", "r1", &moved, now), Err(ChallengeError::Forged));
        }
    }

    #[test]
    fn roles_are_ordered_and_named() {
        for (i, a) in Role::ALL.into_iter().enumerate() {
            assert_eq!(Role::parse(a.as_str()), Some(a));
            for (j, b) in Role::ALL.into_iter().enumerate() {
                assert_eq!(a.allows(b), i >= j, "{a} {b}");
            }
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn comparisons() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }

    #[test]
    fn admin_tokens_match_any_configured_hash() {
        let hashes = [
            hash_token("first-admin-token"),
            hash_token("second-admin-token"),
        ];
        assert!(is_admin(&hashes, &hash_token("first-admin-token")));
        assert!(is_admin(&hashes, &hash_token("second-admin-token")));
        assert!(!is_admin(&hashes, &hash_token("third-admin-token")));
        assert!(!is_admin(&[], &hash_token("first-admin-token")));
    }

    #[test]
    fn hashes_are_sha256() {
        assert_eq!(
            hex::encode(hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
