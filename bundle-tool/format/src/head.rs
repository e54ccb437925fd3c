//! The head of a bundle fetched by byte range: a client asks for the first [`FIRST_FETCH`] bytes, learns from
//! [`parse_head`] whether the three leading entries (format marker, manifest, signatures) are all there or how
//! many bytes it needs, then authenticates the manifest with [`UnverifiedHead::verify`]. Both steps go through the
//! stream reader's own code, so a head is accepted by range exactly when the stream reader would accept it.

use ota_keys::{KeyId, Signature, SignedTrustRoot, TrustRoot};

use crate::chunked::{BundleLayout, ChunkIndex};
use crate::error::BundleError;
use crate::framing::{padding_len, parse_header, BLOCK};
use crate::manifest::{manifest_digest, Manifest};
use crate::reader::{authenticate, verify_index, UnverifiedBundle};

/// What a client fetches first: a manifest of a few images and its signatures fit easily.
pub const FIRST_FETCH: u64 = 64 << 10;

/// The outcome of [`parse_head`].
#[derive(Debug)]
pub enum HeadParse {
    /// The head is longer than the bytes given: fetch the file's first `n` bytes (a total, not a remainder).
    NeedMore(u64),
    /// The three leading entries are complete and well formed (not yet authenticated).
    Complete(UnverifiedHead),
}

/// The leading entries of a bundle, read and checked for form but not yet authenticated.
#[derive(Debug)]
pub struct UnverifiedHead {
    manifest_bytes: Vec<u8>,
    signatures: Vec<Signature>,
    trust_chain: Vec<SignedTrustRoot>,
    signatures_len: u64,
    head_len: u64,
}

/// An authenticated head: the manifest, and where every entry of the bundle lies.
#[derive(Debug, Clone)]
pub struct VerifiedHead {
    /// The verified manifest.
    pub manifest: Manifest,
    /// Its exact signed bytes.
    pub manifest_bytes: Vec<u8>,
    /// The bundle id (SHA-256 of the manifest bytes, hex).
    pub bundle_id: String,
    /// The trusted keys whose signatures verified.
    pub signed_by: Vec<KeyId>,
    /// Every entry's byte range in the bundle file.
    pub layout: BundleLayout,
}

/// Parses the start of a bundle file (`bytes` = its first bytes, any length). Errors are the stream reader's.
pub fn parse_head(bytes: &[u8]) -> Result<HeadParse, BundleError> {
    if (bytes.len() as u64) < BLOCK as u64 {
        return Ok(HeadParse::NeedMore(BLOCK as u64));
    }
    match UnverifiedBundle::read(bytes) {
        Ok(head) => Ok(HeadParse::Complete(UnverifiedHead {
            head_len: head.position(),
            manifest_bytes: head.manifest_bytes().to_vec(),
            signatures: head.signatures().to_vec(),
            trust_chain: head.trust_chain().to_vec(),
            signatures_len: head.signatures_len(),
        })),
        Err(BundleError::Truncated { .. }) => Ok(HeadParse::NeedMore(needed_len(bytes)?)),
        Err(e) => Err(e),
    }
}

/// How long the head is, from the entry headers `bytes` holds. Called only after the stream reader stopped for
/// want of bytes, so the headers it walks have passed its checks (sizes within the limits).
fn needed_len(bytes: &[u8]) -> Result<u64, BundleError> {
    let mut at = 0u64;
    for entry in 0..3 {
        let Some(block) = bytes.get(at as usize..at as usize + BLOCK) else {
            return Ok(at + BLOCK as u64);
        };
        let block: &[u8; BLOCK] = block.try_into().expect("one block");
        let header = parse_header(block, at)?
            .ok_or_else(|| BundleError::NotABundle("the archive ends inside its head".into()))?;
        at += BLOCK as u64 + header.size + padding_len(header.size) as u64;
        if at > bytes.len() as u64 {
            // The next entry's header is needed as well: ask for it in the same fetch.
            return Ok(if entry < 2 { at + BLOCK as u64 } else { at });
        }
    }
    Err(BundleError::Usage(
        "the head is complete, yet the reader wanted more bytes".into(),
    ))
}

impl UnverifiedHead {
    /// Length of the head: the payload entries start here.
    pub fn len(&self) -> u64 {
        self.head_len
    }

    /// Always false: a head holds three entries.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The manifest bytes (unauthenticated).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The trust chain the bundle carries, not yet walked (see [`crate::trust_chain::resolve`]).
    pub fn trust_chain(&self) -> &[SignedTrustRoot] {
        &self.trust_chain
    }

    /// Checks the signatures against `trust` exactly as the stream reader does, then lays out the bundle.
    pub fn verify(self, trust: &TrustRoot) -> Result<VerifiedHead, BundleError> {
        let (manifest, signed_by) = authenticate(&self.manifest_bytes, &self.signatures, trust)?;
        let layout = BundleLayout::new(
            self.manifest_bytes.len() as u64,
            self.signatures_len,
            &manifest,
        );
        if layout.head_len() != self.head_len {
            return Err(BundleError::Usage(format!(
                "the head is {} bytes, but its layout says {}",
                self.head_len,
                layout.head_len()
            )));
        }
        Ok(VerifiedHead {
            bundle_id: manifest_digest(&self.manifest_bytes),
            manifest,
            manifest_bytes: self.manifest_bytes,
            signed_by,
            layout,
        })
    }
}

impl VerifiedHead {
    /// Checks the fetched bytes of image `name`'s index (size, digest, strict decode) as the stream reader does.
    pub fn index(&self, name: &str, bytes: &[u8]) -> Result<ChunkIndex, BundleError> {
        let image = self
            .manifest
            .images
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| BundleError::Usage(format!("the bundle has no image '{name}'")))?;
        verify_index(image, bytes)
    }
}

#[cfg(test)]
mod tests;
