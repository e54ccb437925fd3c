//! Key ids, public/secret keys and signatures.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::{
    spki::SubjectPublicKeyInfoRef, EncodePrivateKey, EncodePublicKey, KeypairBytes,
    ObjectIdentifier, PrivateKeyInfo, ALGORITHM_OID,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::OsRng;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::KeyError;

const PUBLIC_LABEL: &str = "PUBLIC KEY";
const PRIVATE_LABEL: &str = "PRIVATE KEY";

/// Refuses a key of another algorithm (an RSA or P-256 PEM, say), naming its OID.
fn require_ed25519(oid: ObjectIdentifier) -> Result<(), KeyError> {
    if oid == ALGORITHM_OID {
        Ok(())
    } else {
        Err(KeyError::NotEd25519 {
            path: None,
            oid: oid.to_string(),
        })
    }
}

/// Short stable key id: first 8 bytes of SHA-256 of the raw 32-byte ed25519 public
/// key, shown as 16 lowercase hex chars.
///
/// Signatures carry the id so a verifier can pick the right key without trying
/// them all, and operators can tell keys apart in logs. It is a label, not a
/// security boundary: verification always checks the signature against the full
/// public key, and trust roots reject duplicate ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of a raw 32-byte public key.
    pub fn of_raw_public_key(raw: &[u8; 32]) -> Self {
        let digest = Sha256::digest(raw);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    /// Only the canonical form (16 lowercase hex chars) is accepted, so a key id
    /// has exactly one spelling in files and logs.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let canonical = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical {
            return Err(KeyError::BadKeyId(s.to_owned()));
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| KeyError::BadKeyId(s.to_owned()))?;
        Ok(Self(id))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Decode exactly `N` bytes of hex (either case) for serde.
fn hex_array<const N: usize, E: de::Error>(s: &str, what: &str) -> Result<[u8; N], E> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| {
        E::custom(format!(
            "invalid {what}: expected {} hex characters ({e})",
            2 * N
        ))
    })?;
    Ok(out)
}

/// serde adapter: `[u8; 64]` as a 128-char hex string.
mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::hex_array(&s, "signature")
    }
}

/// Decode a single PEM block, checking its label; the error says what was expected.
fn decode_pem(pem: &str, expected: &'static str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let pem = pem.trim();
    if !pem.starts_with("-----BEGIN ") {
        return Err(KeyError::NotPem {
            path: None,
            expected,
        });
    }
    let bad = |detail: String| KeyError::BadPem { path: None, detail };
    // PEM tolerates CRLF files written on other systems, the strict decoder does not.
    let normalized;
    let pem = if pem.contains('\r') {
        normalized = pem.replace("\r\n", "\n");
        normalized.as_str()
    } else {
        pem
    };
    let (label, der) = pem::decode_vec(pem.as_bytes()).map_err(|e| bad(format!("{e}")))?;
    let der = Zeroizing::new(der);
    if label != expected {
        let hint = match label {
            "ENCRYPTED PRIVATE KEY" => " (encrypted keys are not supported)",
            PRIVATE_LABEL => " (this is a secret key, not a public key)",
            PUBLIC_LABEL => " (this is a public key, not a secret key)",
            _ => "",
        };
        return Err(bad(format!(
            "found a \"{label}\" block, expected \"{expected}\"{hint}"
        )));
    }
    Ok(der)
}

/// An ed25519 public key (a verifying key).
///
/// Only canonical encodings of points that are not of small order can be
/// constructed, so two different `PublicKey`s are always two different keys and
/// a key can never "verify" forged signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// The key's [`KeyId`].
    pub fn key_id(&self) -> KeyId {
        KeyId::of_raw_public_key(self.0.as_bytes())
    }

    /// Parse a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), as written by
    /// `openssl pkey -pubout` and [`to_pem`](Self::to_pem).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = decode_pem(pem, PUBLIC_LABEL)?;
        let bad = |detail: String| KeyError::BadPem { path: None, detail };
        let spki = SubjectPublicKeyInfoRef::try_from(der.as_slice())
            .map_err(|e| bad(format!("not a SubjectPublicKeyInfo structure: {e}")))?;
        require_ed25519(spki.algorithm.oid)?;
        if spki.algorithm.parameters.is_some() {
            return Err(bad(
                "ed25519 algorithm identifier must not have parameters".into()
            ));
        }
        let raw: &[u8; 32] = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("ed25519 public key must be exactly 32 bytes".into()))?;
        Self::from_bytes(raw)
    }

    /// SubjectPublicKeyInfo PEM with LF line endings, readable by `openssl pkey -pubin`.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding a 32-byte ed25519 public key cannot fail")
    }

    /// From the raw 32-byte encoding. Rejects bytes that are not a point, non-canonical
    /// encodings (which would give one key two ids) and weak small-order points.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(raw).map_err(|_| KeyError::InvalidPublicKey {
            reason: "not a point on the curve",
        })?;
        if key.to_edwards().compress().as_bytes() != raw {
            return Err(KeyError::InvalidPublicKey {
                reason: "non-canonical point encoding",
            });
        }
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(key))
    }

    /// The raw 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `verify_strict` over exactly `message`.
    ///
    /// Also fails if `signature.key_id` names a different key: a signature is only
    /// accepted as what it claims to be.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        let key_id = self.key_id();
        let sig = ed25519_dalek::Signature::from_bytes(&signature.sig);
        if signature.key_id != key_id || self.0.verify_strict(message, &sig).is_err() {
            return Err(KeyError::BadSignature { key_id });
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0.as_bytes()))
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let raw = hex_array::<32, D::Error>(&s, "public key")?;
        Self::from_bytes(&raw).map_err(de::Error::custom)
    }
}

/// An ed25519 secret (signing) key.
///
/// Deliberately not `Clone` and without `Display`; `Debug` shows only the key id,
/// and the key material is zeroed when dropped.
pub struct SecretKey(pub(crate) SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    /// Parse a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): both v1 (what
    /// `openssl genpkey -algorithm ed25519` writes) and v2 with an embedded public
    /// key, which must then match the secret key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = decode_pem(pem, PRIVATE_LABEL)?;
        let bad = |detail: String| KeyError::BadPem { path: None, detail };
        let info = PrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| bad(format!("not a PKCS#8 private key: {e}")))?;
        require_ed25519(info.algorithm.oid)?;
        let mut keypair = KeypairBytes::try_from(info)
            .map_err(|e| bad(format!("malformed ed25519 private key: {e}")))?;
        let signing = SigningKey::try_from(&keypair);
        // KeypairBytes only wipes itself when ed25519's `zeroize` feature is on.
        keypair.secret_key.zeroize();
        let signing = signing
            .map_err(|_| bad("the embedded public key does not belong to the secret key".into()))?;
        Ok(Self(signing))
    }

    /// PKCS#8 v1 PEM without the embedded public key: the same layout as
    /// `openssl genpkey` writes, which every openssl version reads.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut keypair = KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        let pem = keypair
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding a 32-byte ed25519 secret key cannot fail");
        keypair.secret_key.zeroize();
        pem
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The [`KeyId`] of the matching public key.
    pub fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }

    /// Pure ed25519 (deterministic, no pre-hash) signature over exactly `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature {
            key_id: self.key_id(),
            sig: self.0.sign(message).to_bytes(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.key_id())
    }
}

/// A signature together with the id of the key that made it.
///
/// JSON: `{"key_id":"<16 hex>","sig":"<128 hex>"}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Id of the key that made the signature.
    pub key_id: KeyId,
    /// The 64-byte ed25519 signature (R || s).
    #[serde(with = "hex64")]
    pub sig: [u8; 64],
}
