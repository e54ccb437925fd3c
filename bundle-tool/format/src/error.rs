//! Why a bundle was refused. Every variant names the part of the bundle at fault so that an operator (or a
//! robot's status report) can tell a truncated download from a forged signature without a debugger.

use ota_keys::{RotationError, ThresholdError};

/// A bundle could not be read, verified or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A signing key (one on a PKCS#11 token) failed to sign the manifest.
    #[error("cannot sign the manifest: {0}")]
    Sign(#[from] ota_keys::SignError),
    /// Reading or writing the underlying stream failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error (part of the message, so not also exposed as `source()`).
        error: std::io::Error,
    },
    /// Writing a decoded image to its destination failed: the destination's fault, not the bundle's.
    #[error("writing image '{image}': {error}")]
    WriteFailed {
        /// Image name.
        image: String,
        /// The writer's error.
        error: std::io::Error,
    },
    /// The stream ended before the bundle did.
    #[error("bundle is truncated: the data ends at byte {offset} inside {inside}")]
    Truncated {
        /// Byte offset where the data ended.
        offset: u64,
        /// What was being read.
        inside: String,
    },
    /// The data is not an OTA bundle at all.
    #[error("not an OTA bundle: {0}")]
    NotABundle(String),
    /// The bundle was written in a format this reader does not understand.
    #[error("unsupported bundle format version {found} (this tool reads version {supported}); update the tool")]
    UnsupportedFormatVersion {
        /// Version named by the bundle.
        found: String,
        /// Version this reader implements.
        supported: u32,
    },
    /// A tar header failed its checksum or could not be parsed.
    #[error("corrupt entry header at byte {offset}: {detail}")]
    CorruptHeader {
        /// Byte offset of the header block.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// An entry is a link, directory or other non-regular file.
    #[error("entry '{path}' is a {kind}; bundles contain only regular files")]
    NotARegularFile {
        /// Entry path.
        path: String,
        /// Kind of entry found.
        kind: String,
    },
    /// An entry path is absolute or climbs out with `..`.
    #[error("entry path '{path}' is absolute or contains '..': refusing a path that could escape the target")]
    PathTraversal {
        /// Entry path.
        path: String,
    },
    /// The same entry appears twice.
    #[error("duplicate entry '{path}'")]
    DuplicateEntry {
        /// Entry path.
        path: String,
    },
    /// An entry appears where another was expected.
    #[error("unexpected entry '{found}' (expected {expected})")]
    UnexpectedEntry {
        /// Entry found.
        found: String,
        /// What the format requires at this point.
        expected: String,
    },
    /// The manifest or signature block is larger than this reader accepts.
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Which block.
        what: &'static str,
        /// Its declared size.
        size: u64,
        /// The fixed limit.
        limit: u64,
    },
    /// The signature block is malformed.
    #[error("signature block is malformed: {0}")]
    BadSignatureBlock(String),
    /// The trust chain the bundle carries does not walk from the verifier's root: the bundle is refused and the
    /// root does not move.
    #[error(
        "the bundle's trust chain does not verify: {error}; the trust root stays at version {kept}"
    )]
    TrustChain {
        /// Why the walk stopped.
        error: Box<RotationError>,
        /// The root the walk started from, which stays.
        kept: u64,
    },
    /// Signatures do not meet the trust root's threshold.
    #[error("signature check failed: {0}")]
    Signature(ThresholdError),
    /// The (signed) manifest is malformed or violates a format rule.
    #[error("manifest is invalid: {0}")]
    BadManifest(String),
    /// A chunked image's index disagrees with itself or with the manifest.
    #[error("chunk index is invalid: {0}")]
    BadIndex(String),
    /// A payload entry's length differs from the manifest.
    #[error("payload of image '{image}' is {found} bytes but the manifest says {expected}")]
    PayloadSizeMismatch {
        /// Image name.
        image: String,
        /// Size in the manifest.
        expected: u64,
        /// Size in the bundle.
        found: u64,
    },
    /// A payload decompresses to more or fewer bytes than the manifest says.
    #[error("image '{image}' decompresses to {found} bytes but the manifest says {expected}")]
    ImageSizeMismatch {
        /// Image name.
        image: String,
        /// Size in the manifest.
        expected: u64,
        /// Bytes produced (a lower bound when the limit was crossed).
        found: String,
    },
    /// A payload could not be decompressed.
    #[error("image '{image}' payload is corrupt: {detail}")]
    CorruptPayload {
        /// Image name.
        image: String,
        /// Decoder message.
        detail: String,
    },
    /// A payload, or its uncompressed content, does not match its SHA-256 in the manifest.
    #[error("the {what} of image '{image}' does not match its SHA-256 in the manifest ({field} {expected}, got {actual}): the payload was modified")]
    DigestMismatch {
        /// Image name.
        image: String,
        /// Which bytes: "compressed payload" or "uncompressed content".
        what: &'static str,
        /// The manifest field holding the expected digest.
        field: &'static str,
        /// Hex digest in the manifest.
        expected: String,
        /// Hex digest of the data.
        actual: String,
    },
    /// Bytes follow the end of the bundle.
    #[error("trailing data after the end of the bundle at byte {offset}")]
    TrailingData {
        /// Offset where the unexpected data starts.
        offset: u64,
    },
    /// The caller used the reader out of order (e.g. finished before reading every image).
    #[error("{0}")]
    Usage(String),
}

impl From<ThresholdError> for BundleError {
    fn from(err: ThresholdError) -> Self {
        BundleError::Signature(err)
    }
}

impl BundleError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BundleError::Io {
            context: context.into(),
            error: source,
        }
    }

    /// Recovers a `BundleError` that travelled through an `io::Error` (as the `Read` impl of an image stream
    /// must report it), or wraps a genuine I/O error.
    pub fn from_io(context: &str, err: std::io::Error) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<BundleError>()) {
            let inner = err.into_inner().expect("checked above");
            return *inner.downcast::<BundleError>().expect("checked above");
        }
        BundleError::io(context, err)
    }

    /// Packs this error into an `io::Error` so it survives a `Read`/`Write` boundary.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}
