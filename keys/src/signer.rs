//! What signs release metadata (bundle manifests, trust roots): an ed25519 key in memory, read from a PEM file, or
//! one that never leaves a PKCS#11 token. Everything that signs takes a [`Signer`], so where a key lives changes
//! nothing else: the same key signs the same bytes into the same signature either way.

use crate::pkcs11::Pkcs11Error;
use crate::{KeyId, PublicKey, SecretKey, Signature};

/// Makes ed25519 signatures over exact bytes (no pre-hash, no context), like [`SecretKey::sign`].
pub trait Signer {
    /// The public half; its [`KeyId`] is what signatures carry.
    fn public_key(&self) -> PublicKey;

    /// The id of [`public_key`](Self::public_key).
    fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }

    /// A signature over exactly `message`. A key in memory never fails; a token can (removed, session lost).
    fn sign(&self, message: &[u8]) -> Result<Signature, SignError>;
}

/// Why a signer could not sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The token refused or failed.
    #[error(transparent)]
    Pkcs11(#[from] Pkcs11Error),
}

impl Signer for SecretKey {
    fn public_key(&self) -> PublicKey {
        SecretKey::public_key(self)
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SignError> {
        Ok(SecretKey::sign(self, message))
    }
}

impl<T: Signer + ?Sized> Signer for Box<T> {
    fn public_key(&self) -> PublicKey {
        (**self).public_key()
    }

    fn key_id(&self) -> KeyId {
        (**self).key_id()
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SignError> {
        (**self).sign(message)
    }
}

impl<T: Signer + ?Sized> Signer for &T {
    fn public_key(&self) -> PublicKey {
        (**self).public_key()
    }

    fn key_id(&self) -> KeyId {
        (**self).key_id()
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SignError> {
        (**self).sign(message)
    }
}
