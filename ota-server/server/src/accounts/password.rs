//! Password hashes: argon2id (the `argon2` crate, RustCrypto) with a random 16-byte salt per hash, stored as a
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so the parameters travel with each hash and raising
//! them later keeps older hashes verifying. Parameters: 19 MiB of memory, 2 passes, 1 lane — OWASP's
//! recommended minimum for argon2id, about 30-60 ms per hash on one server core.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;

/// Least length of a password.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Longest password accepted (hashing is bounded work).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Memory cost in KiB.
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
pub const PASSES: u32 = 2;
/// Lanes.
pub const LANES: u32 = 1;

/// Why a password cannot be set.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short.
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters long")]
    TooShort,
    /// Too long.
    #[error("the password must be at most {MAX_PASSWORD_LEN} bytes long")]
    TooLong,
    /// The hasher failed (it does not, for valid parameters).
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .unwrap_or_else(|e| unreachable!("fixed valid argon2 parameters: {e}"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Whether `password` may be set.
pub fn acceptable(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt (checks [`acceptable`] first).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    acceptable(password)?;
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string (false for a malformed one, or an over-long password).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification for a user that does not exist, so the answer's timing does not tell
/// which user names exist.
pub fn verify_nobody(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY
        .get_or_init(|| hash("no user has this password").unwrap_or_else(|e| unreachable!("{e}")));
    let _ = verify(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_salted_and_carry_their_parameters() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            a.starts_with(&format!(
                "$argon2id$v=19$m={MEMORY_KIB},t={PASSES},p={LANES}$"
            )),
            "{a}"
        );
        assert!(verify("correct horse battery", &a));
        assert!(verify("correct horse battery", &b));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_eq!(hash("short"), Err(PasswordError::TooShort));
        assert_eq!(hash(&"x".repeat(2000)), Err(PasswordError::TooLong));
        verify_nobody("anything at all");
    }

    #[test]
    fn hashes_with_other_parameters_still_verify() {
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"an older password", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify("an older password", &old));
    }
}
