//! Trust roots: which keys a device trusts, how many must sign, and how the set
//! is rotated.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::timestamp::TimestampRole;
use crate::{
    KeyError, KeyId, PublicKey, RotationError, SecretKey, SignError, Signature, Signer,
    ThresholdError, TrustRootError,
};

/// Value of the `"type"` field of a trust root file; lets tools reject a bundle
/// manifest or other JSON passed where a trust root is expected.
pub const TRUST_ROOT_TYPE: &str = "ota-trust-root";

/// The set of keys a device trusts and how many of them must sign.
///
/// Deserializing does not validate (the fields are public anyway); every loader in
/// this crate calls [`validate`](Self::validate), and
/// [`verify_threshold`](Self::verify_threshold) never accepts zero signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRoot {
    /// Monotonic version; a device only moves to a higher one.
    pub version: u64,
    /// How many distinct keys of `keys` must sign.
    pub threshold: u32,
    /// The trusted keys.
    pub keys: Vec<PublicKey>,
    /// The online keys that sign freshness timestamps ([`crate::timestamp`]); absent (and then not serialized,
    /// so roots without it keep their bytes and signatures): robots do no freeze detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampRole>,
}

impl TrustRoot {
    /// A validated trust root.
    pub fn new(version: u64, threshold: u32, keys: Vec<PublicKey>) -> Result<Self, TrustRootError> {
        let root = Self {
            version,
            threshold,
            keys,
            timestamp: None,
        };
        root.validate()?;
        Ok(root)
    }

    /// Version 0, threshold 1: what a bare `.pub` file means when used as a trust root.
    pub fn single_key(key: PublicKey) -> Self {
        Self {
            version: 0,
            threshold: 1,
            keys: vec![key],
            timestamp: None,
        }
    }

    /// At least one key, `1 <= threshold <= keys.len()`, no key listed twice; a timestamp role valid by
    /// [`TimestampRole::validate`].
    pub fn validate(&self) -> Result<(), TrustRootError> {
        if self.keys.is_empty() {
            return Err(TrustRootError::NoKeys);
        }
        if self.threshold == 0 {
            return Err(TrustRootError::ThresholdZero);
        }
        if usize::try_from(self.threshold).map_or(true, |t| t > self.keys.len()) {
            return Err(TrustRootError::ThresholdAboveKeyCount {
                threshold: self.threshold,
                keys: self.keys.len(),
            });
        }
        let mut seen = BTreeSet::new();
        for id in self.key_ids() {
            if !seen.insert(id) {
                return Err(TrustRootError::DuplicateKey(id));
            }
        }
        if let Some(role) = &self.timestamp {
            role.validate(&self.key_ids())?;
        }
        Ok(())
    }

    /// Ids of the keys, in the root's order.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(PublicKey::key_id).collect()
    }

    /// Passes only when signatures from at least `threshold` DISTINCT keys of this
    /// root verify over exactly `message`; `Ok` holds the ids of the keys whose
    /// signatures verified (sorted).
    ///
    /// Extra invalid or unknown signatures are ignored once the threshold is met,
    /// so adding a signature can never turn a valid bundle invalid. A key that
    /// signs twice counts once. A threshold of 0 (only possible on an unvalidated
    /// root) is treated as 1.
    pub fn verify_threshold(
        &self,
        message: &[u8],
        signatures: &[Signature],
    ) -> Result<Vec<KeyId>, ThresholdError> {
        if signatures.is_empty() {
            return Err(ThresholdError::NoSignatures);
        }
        let required = self.threshold.max(1);
        let ids = self.key_ids();
        let mut valid = BTreeSet::new();
        let mut bad = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        for signature in signatures {
            // Compare against every key with that id, so even an unvalidated root
            // with a duplicate id cannot be fooled.
            let mut named_trusted = false;
            let mut verified = false;
            for (id, key) in ids.iter().zip(&self.keys) {
                if *id == signature.key_id {
                    named_trusted = true;
                    verified |= key.verify(message, signature).is_ok();
                }
            }
            match (named_trusted, verified) {
                (true, true) => valid.insert(signature.key_id),
                (true, false) => bad.insert(signature.key_id),
                (false, _) => unknown.insert(signature.key_id),
            };
        }
        // A key that also made a valid signature is not reported as bad.
        let bad: Vec<KeyId> = bad.difference(&valid).copied().collect();
        let signers: Vec<KeyId> = valid.into_iter().collect();
        let count = signers.len();
        if u32::try_from(count).map_or(true, |c| c >= required) {
            Ok(signers)
        } else if !bad.is_empty() {
            Err(ThresholdError::BadSignature {
                key_ids: bad,
                valid: count,
                required,
            })
        } else if count == 0 && !unknown.is_empty() {
            Err(ThresholdError::UnknownKeys {
                key_ids: unknown.into_iter().collect(),
                valid: count,
                required,
            })
        } else {
            Err(ThresholdError::BelowThreshold {
                valid: count,
                required,
                signers,
            })
        }
    }

    /// Canonical bytes that root signatures cover: compact serde_json of this
    /// struct (field order fixed by the struct, keys as lowercase hex).
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializing a TrustRoot to JSON cannot fail")
    }
}

/// The on-disk trust root file:
/// `{"type":"ota-trust-root","signed":{"version":..,"threshold":..,"keys":[..]},"signatures":[..]}`.
///
/// The signatures matter only for [`accept_rotation`]: an installed root is
/// trusted because of how it got onto the device, not because of its signatures.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "TrustRootFile", try_from = "TrustRootFile")]
pub struct SignedTrustRoot {
    /// The root itself; signatures cover [`TrustRoot::signed_bytes`].
    pub signed: TrustRoot,
    /// Signatures over `signed`, sorted by key id.
    pub signatures: Vec<Signature>,
}

/// Wire form of [`SignedTrustRoot`] with the `type` tag.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustRootFile {
    #[serde(rename = "type")]
    kind: String,
    signed: TrustRoot,
    signatures: Vec<Signature>,
}

impl From<SignedTrustRoot> for TrustRootFile {
    fn from(root: SignedTrustRoot) -> Self {
        Self {
            kind: TRUST_ROOT_TYPE.to_owned(),
            signed: root.signed,
            signatures: root.signatures,
        }
    }
}

impl TryFrom<TrustRootFile> for SignedTrustRoot {
    type Error = TrustRootError;

    fn try_from(file: TrustRootFile) -> Result<Self, TrustRootError> {
        if file.kind != TRUST_ROOT_TYPE {
            return Err(TrustRootError::WrongType {
                path: None,
                found: serde_json::Value::from(file.kind).to_string(),
            });
        }
        file.signed.validate()?;
        Ok(Self {
            signed: file.signed,
            signatures: file.signatures,
        })
    }
}

impl SignedTrustRoot {
    /// A root with no signatures yet.
    pub fn new(root: TrustRoot) -> Self {
        Self {
            signed: root,
            signatures: Vec::new(),
        }
    }

    /// Add `key`'s signature over the root, replacing an earlier one by the same
    /// key; signatures stay sorted by key id so the file is deterministic.
    pub fn sign(&mut self, key: &SecretKey) {
        self.sign_with(key).expect("a key in memory always signs");
    }

    /// [`sign`](Self::sign) with any [`Signer`] (a key on a PKCS#11 token can fail); returns the signer's key id.
    pub fn sign_with(&mut self, key: &(impl Signer + ?Sized)) -> Result<KeyId, SignError> {
        let signature = key.sign(&self.signed.signed_bytes())?;
        let key_id = signature.key_id;
        self.signatures.retain(|s| s.key_id != key_id);
        self.signatures.push(signature);
        self.signatures.sort_by_key(|s| s.key_id);
        Ok(key_id)
    }

    /// Pretty JSON for the file on disk (with a trailing newline).
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .expect("serializing a SignedTrustRoot to JSON cannot fail");
        text.push('\n');
        text
    }

    /// Parse a trust root file and validate the root it contains. The `type` tag is
    /// checked first so that other JSON gets a clear [`TrustRootError::WrongType`].
    pub fn from_json(text: &str) -> Result<Self, TrustRootError> {
        let parse = |e: serde_json::Error| TrustRootError::Parse {
            path: None,
            detail: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(parse)?;
        match value.get("type") {
            Some(serde_json::Value::String(t)) if t == TRUST_ROOT_TYPE => {}
            other => {
                return Err(TrustRootError::WrongType {
                    path: None,
                    found: other.map_or_else(|| "missing".to_owned(), ToString::to_string),
                })
            }
        }
        let file: TrustRootFile = serde_json::from_value(value).map_err(parse)?;
        Self::try_from(file)
    }
}

/// A device accepts `candidate` only if its version is greater than
/// `current.version` AND it is signed by a threshold of `current`'s keys (over
/// `candidate.signed.signed_bytes()`). Revocation = leaving a key out of the new
/// root: from then on that key counts for nothing, not even for the next rotation.
///
/// To catch up several versions, apply the intermediate roots in order.
pub fn accept_rotation(
    current: &TrustRoot,
    candidate: &SignedTrustRoot,
) -> Result<TrustRoot, RotationError> {
    candidate
        .signed
        .validate()
        .map_err(RotationError::Invalid)?;
    if candidate.signed.version <= current.version {
        return Err(RotationError::VersionNotIncreasing {
            current: current.version,
            candidate: candidate.signed.version,
        });
    }
    current
        .verify_threshold(&candidate.signed.signed_bytes(), &candidate.signatures)
        .map_err(RotationError::NotSignedByCurrent)?;
    Ok(candidate.signed.clone())
}

/// Load the trust root a device or tool should use from `path`.
///
/// Wherever a trust root is expected a single `.pub` also works: content starting
/// with `-----BEGIN PUBLIC KEY-----` becomes [`TrustRoot::single_key`], anything
/// else is parsed as a [`SignedTrustRoot`] file and its validated `signed` part is
/// returned (signatures are not checked here; see [`accept_rotation`]).
pub fn load_trust_root(path: &Path) -> Result<TrustRoot, TrustRootError> {
    let text = fs::read_to_string(path).map_err(|source| TrustRootError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let in_file = |detail: String| TrustRootError::Parse {
        path: Some(path.to_path_buf()),
        detail,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN PUBLIC KEY-----") {
        let key = PublicKey::from_pem(trimmed).map_err(|e: KeyError| in_file(e.to_string()))?;
        return Ok(TrustRoot::single_key(key));
    }
    if !trimmed.starts_with('{') {
        return Err(in_file(
            "expected a PEM public key (-----BEGIN PUBLIC KEY-----) or a JSON trust root file"
                .to_owned(),
        ));
    }
    match SignedTrustRoot::from_json(trimmed) {
        Ok(root) => Ok(root.signed),
        Err(TrustRootError::Parse { detail, .. }) => Err(in_file(detail)),
        Err(TrustRootError::WrongType { found, .. }) => Err(TrustRootError::WrongType {
            path: Some(path.to_path_buf()),
            found,
        }),
        Err(other) => Err(other),
    }
}
