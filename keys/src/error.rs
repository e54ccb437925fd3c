//! Error types, one enum per concern, with messages meant for the operator who has
//! to fix the problem (they name the file and/or key involved).
//!
//! Every `Display` message is self-contained (wrapped errors are included in the
//! text) so a plain `{}` or anyhow's `{:#}` shows the whole story exactly once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::KeyId;

/// Prefix "PATH: " when the error came from a file, nothing when it came from a string.
fn at(path: &Option<PathBuf>) -> String {
    path.as_deref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// Comma-separated key ids for messages.
fn ids(ids: &[KeyId]) -> String {
    let mut out = String::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{id}");
    }
    out
}

/// Problems with a single key, key id or signature, or with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("key file {}: {error}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// [`crate::write_keypair`] never replaces existing keys: losing a signing key is
    /// unrecoverable, so the operator has to move the old one out of the way.
    #[error("refusing to overwrite existing key file {}", path.display())]
    AlreadyExists {
        /// The file that already exists.
        path: PathBuf,
    },
    /// The input is not PEM at all (no `-----BEGIN ...-----` line).
    #[error(
        "{}not a PEM file: expected a \"-----BEGIN {expected}-----\" block",
        at(path)
    )]
    NotPem {
        /// The file, if the PEM came from one.
        path: Option<PathBuf>,
        /// The PEM label that was expected, e.g. `PUBLIC KEY`.
        expected: &'static str,
    },
    /// The input looks like PEM but is malformed or holds the wrong kind of object.
    #[error("{}invalid PEM key: {detail}", at(path))]
    BadPem {
        /// The file, if the PEM came from one.
        path: Option<PathBuf>,
        /// What exactly is wrong.
        detail: String,
    },
    /// A well-formed key of some other algorithm (RSA, ECDSA, ed448, ...).
    #[error(
        "{}not an ed25519 key (algorithm OID {oid}, expected 1.3.101.112); \
         generate one with `openssl genpkey -algorithm ed25519`",
        at(path)
    )]
    NotEd25519 {
        /// The file, if the key came from one.
        path: Option<PathBuf>,
        /// The algorithm OID found in the key.
        oid: String,
    },
    /// A key id that is not exactly 16 lowercase hex characters.
    #[error("invalid key id '{0}': expected 16 lowercase hex characters")]
    BadKeyId(String),
    /// A signature did not verify under the key it names.
    #[error(
        "signature by key {key_id} does not verify: \
         the signed data was modified or signed with a different key"
    )]
    BadSignature {
        /// The key the signature was checked against.
        key_id: KeyId,
    },
    /// A small-order public key: such a key "verifies" forged signatures, so it is
    /// never accepted.
    #[error("weak ed25519 public key (small-order point) rejected")]
    WeakKey,
    /// 32 bytes that are not a canonical encoding of a curve point.
    #[error("invalid ed25519 public key: {reason}")]
    InvalidPublicKey {
        /// Why the bytes were rejected.
        reason: &'static str,
    },
}

impl KeyError {
    /// Attach the file a PEM-parsing error came from.
    pub(crate) fn with_path(self, file: &Path) -> Self {
        match self {
            Self::NotPem { expected, .. } => Self::NotPem {
                path: Some(file.to_path_buf()),
                expected,
            },
            Self::BadPem { detail, .. } => Self::BadPem {
                path: Some(file.to_path_buf()),
                detail,
            },
            Self::NotEd25519 { oid, .. } => Self::NotEd25519 {
                path: Some(file.to_path_buf()),
                oid,
            },
            other => other,
        }
    }
}

/// Why a set of signatures does not satisfy a trust root's threshold.
///
/// Reported in priority order: [`NoSignatures`](Self::NoSignatures), then
/// [`BadSignature`](Self::BadSignature) (a trusted key's signature failed, i.e.
/// tampering or a mix-up), then [`UnknownKeys`](Self::UnknownKeys) (only
/// untrusted signers), else [`BelowThreshold`](Self::BelowThreshold).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// Nothing was signed at all.
    #[error("no signatures present: it must be signed by trusted keys")]
    NoSignatures,
    /// At least one signature that names a trusted key does not verify.
    #[error(
        "signature by key {} does not verify: the signed data was modified or signed \
         with a different key ({valid} of the required {required} signatures from \
         trusted keys are valid)",
        ids(key_ids)
    )]
    BadSignature {
        /// Trusted keys whose signature failed.
        key_ids: Vec<KeyId>,
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// The trust root's threshold.
        required: u32,
    },
    /// No valid signature, and some signatures name keys outside the trust root.
    #[error(
        "signed only by keys the trust root does not contain: {} \
         ({valid} of the required {required} signatures from trusted keys)",
        ids(key_ids)
    )]
    UnknownKeys {
        /// Key ids of the untrusted signers.
        key_ids: Vec<KeyId>,
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// The trust root's threshold.
        required: u32,
    },
    /// Every trusted signature verified, there just are not enough of them.
    #[error(
        "{valid} of the required {required} signatures from trusted keys (signed by: {})",
        if signers.is_empty() { "none".to_owned() } else { ids(signers) }
    )]
    BelowThreshold {
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// The trust root's threshold.
        required: u32,
        /// Key ids of those trusted keys.
        signers: Vec<KeyId>,
    },
}

/// Problems loading or validating a trust root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustRootError {
    /// The trust root file could not be read or written.
    #[error("trust root {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The content is neither a valid trust root JSON document nor a public key.
    #[error("{}cannot parse trust root: {detail}", at(path))]
    Parse {
        /// The file, if the trust root came from one.
        path: Option<PathBuf>,
        /// What exactly is wrong.
        detail: String,
    },
    /// Valid JSON, but not a trust root (e.g. a bundle manifest passed by mistake).
    #[error(
        "{}not a trust root: \"type\" is {found}, expected \"{}\"",
        at(path),
        crate::TRUST_ROOT_TYPE
    )]
    WrongType {
        /// The file, if the trust root came from one.
        path: Option<PathBuf>,
        /// The `type` value found (JSON-quoted), or `missing`.
        found: String,
    },
    /// A trust root must contain at least one key.
    #[error("trust root contains no keys")]
    NoKeys,
    /// A threshold of 0 would accept unsigned data.
    #[error("trust root threshold is 0: at least one signature must be required")]
    ThresholdZero,
    /// A threshold that can never be met.
    #[error(
        "trust root threshold {threshold} exceeds its {keys} keys: nothing could ever be signed"
    )]
    ThresholdAboveKeyCount {
        /// The threshold.
        threshold: u32,
        /// Number of keys in the root.
        keys: usize,
    },
    /// The same key listed twice would let one signer count twice.
    #[error("trust root lists key {0} more than once")]
    DuplicateKey(KeyId),
    /// The `timestamp` role's key set is invalid (same rules as the root's own keys).
    #[error("trust root's timestamp role: {0}")]
    TimestampRole(Box<TrustRootError>),
    /// The online timestamp key must never be able to sign releases.
    #[error(
        "trust root's timestamp role lists key {0}, which is also a release key: \
         the timestamp key lives online on the server, so give it a key of its own"
    )]
    TimestampKeyIsReleaseKey(KeyId),
}

/// Why a new trust root was not installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// Roots only move forward, so an old (possibly compromised) root cannot be replayed.
    #[error("trust root version {candidate} is not newer than the installed version {current}")]
    VersionNotIncreasing {
        /// Installed version.
        current: u64,
        /// Offered version.
        candidate: u64,
    },
    /// The new root must be authorised by the keys the device already trusts.
    #[error("new trust root is not signed by enough keys of the current trust root: {0}")]
    NotSignedByCurrent(ThresholdError),
    /// The new root itself is malformed.
    #[error("new trust root is invalid: {0}")]
    Invalid(TrustRootError),
    /// A chain moves one version at a time, so every robot walks the same roots whatever it missed.
    #[error(
        "trust root version {candidate} does not follow the installed version {current}: \
         each new root must be exactly one version newer"
    )]
    NotNextVersion {
        /// Installed version.
        current: u64,
        /// Offered version.
        candidate: u64,
    },
    /// The new keys must prove they exist and work before the old ones hand over to them.
    #[error(
        "new trust root is not signed by enough of its own keys: {0}; \
         sign it with the new keys too (`ota-bundle trust sign --key NEW.key ROOT.json`)"
    )]
    NotSignedByItself(ThresholdError),
    /// Roots after the next one are present but the next one is not.
    #[error(
        "the trust chain has no version {missing} but continues at version {next}: \
         a chain with a gap cannot be walked; publish the missing root"
    )]
    Gap {
        /// The version that is missing.
        missing: u64,
        /// The lowest version present above it.
        next: u64,
    },
    /// Two different roots for one version, each properly signed: the key holders disagree.
    #[error(
        "the trust chain holds two different signed roots for version {version}: refusing both"
    )]
    Fork {
        /// The version offered twice.
        version: u64,
    },
    /// A link of a chain was refused.
    #[error("trust root version {version} refused: {error}")]
    Link {
        /// The refused root's version.
        version: u64,
        /// Why.
        error: Box<RotationError>,
    },
}
