//! ed25519 keys, key ids, signatures and trust roots for the OTA update system.
//!
//! Everything that decides whether a robot installs an update funnels through this
//! crate, so it is deliberately small and strict:
//!
//! * [`SecretKey`] / [`PublicKey`] wrap `ed25519-dalek` and speak the same PEM
//!   formats as `openssl` (PKCS#8 and SubjectPublicKeyInfo), so operators can
//!   inspect and generate keys with standard tools.
//! * [`KeyId`] is a short, stable name for a public key, used to match a
//!   [`Signature`] to the key that is supposed to have made it.
//! * [`TrustRoot`] is the set of keys a device trusts plus the number of them that
//!   must sign ([`TrustRoot::verify_threshold`]); new roots are installed with
//!   [`accept_rotation`], which is also how keys are revoked; [`chain`] walks a
//!   chain of rotations (each link signed by the old keys and by its own).
//! * [`timestamp`]: signed timestamps from the root's online `timestamp` role, how a
//!   robot without a trusted clock tells fresh metadata from replayed or withheld.
//! * [`Signer`] is what signs: a [`SecretKey`] from a PEM file or, with the
//!   `pkcs11` feature, a key that stays on a token ([`pkcs11`]).
//!
//! Verification is always `verify_strict` over the exact bytes given: there is
//! no pre-hashing, no context string and no malleable signatures.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chain;
mod error;
mod files;
mod key;
pub mod pkcs11;
mod signer;
pub mod timestamp;
mod trust;

pub use error::{KeyError, RotationError, ThresholdError, TrustRootError};
pub use files::{load_public_key, load_secret_key, write_keypair};
pub use key::{KeyId, PublicKey, SecretKey, Signature};
pub use signer::{SignError, Signer};
pub use trust::{accept_rotation, load_trust_root, SignedTrustRoot, TrustRoot, TRUST_ROOT_TYPE};

#[cfg(test)]
mod tests;
