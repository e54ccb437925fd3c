//! The verifying stream reader. It reads a bundle front to back exactly once, from any `Read` (a file, an HTTP
//! body), authenticates the manifest before it reads a byte of payload, and checks every payload against the
//! manifest while it streams. Nothing is buffered beyond small fixed chunks (a few frames of at most 8 MiB for a
//! chunked image), so memory does not grow with images.
//!
//! A `full` payload's bytes reach the caller *before* its digest can be checked (that is what streaming means):
//! the caller must treat what it wrote as untrusted until the image stream has returned end-of-file successfully
//! and [`BundleReader::finish`] has passed. The client marks the target slot unbootable before the first byte for
//! exactly this reason. A `chunked` payload ([`crate::chunked`]) hands out only frames whose digest has been checked.

use std::io::{self, Read};

use ota_keys::{KeyId, Signature, SignedTrustRoot, TrustRoot};
use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::framing::{
    check_format_marker, FORMAT_ENTRY, MANIFEST_ENTRY, MAX_FORMAT_ENTRY_LEN, MAX_MANIFEST_LEN,
    MAX_SIGNATURES_LEN, SIGNATURES_ENTRY,
};
use crate::manifest::{manifest_digest, ImageEntry, Manifest};

mod chunked;
mod image;
mod source;

use chunked::ChunkedPayload;
pub use chunked::{index_limits, verify_index};
use image::Expected;
pub use image::ImageReader;
use source::{finish_archive, Source};

/// Largest zstd window accepted (16 MiB): bounds decoder memory whatever a bundle asks for.
const MAX_WINDOW_LOG: u32 = 24;

/// The signature block as stored in `signatures.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBlock {
    /// Signatures over the exact manifest bytes.
    pub signatures: Vec<Signature>,
    /// The trust chain the bundle carries ([`crate::trust_chain`]); left out when empty, so bundles without one
    /// keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_chain: Vec<SignedTrustRoot>,
}

/// A bundle whose manifest and signatures have been read but not yet checked. Use [`UnverifiedBundle::verify`]
/// to go on; only `info`-style tools look at the manifest without verifying it.
pub struct UnverifiedBundle<R> {
    src: Source<R>,
    manifest_bytes: Vec<u8>,
    signatures: Vec<Signature>,
    trust_chain: Vec<SignedTrustRoot>,
    signatures_len: u64,
}

impl<R: Read> UnverifiedBundle<R> {
    /// Reads the format marker, the manifest bytes and the signature block.
    pub fn read(reader: R) -> Result<Self, BundleError> {
        let mut src = Source::new(reader);
        let first = match src.read_header(&format!("'{FORMAT_ENTRY}'")) {
            Err(BundleError::Truncated { offset: 0, .. }) => {
                return Err(BundleError::NotABundle("the file is empty".into()))
            }
            Err(BundleError::CorruptHeader { .. }) | Err(BundleError::Truncated { .. }) => {
                return Err(BundleError::NotABundle(
                    "it does not start with an ota-bundle tar header".into(),
                ))
            }
            other => other?,
        };
        let first = match first {
            Some(h) if h.path == FORMAT_ENTRY => h,
            Some(h) => {
                return Err(BundleError::NotABundle(format!(
                    "its first entry is '{}', not '{FORMAT_ENTRY}'",
                    h.path
                )))
            }
            None => return Err(BundleError::NotABundle("the archive is empty".into())),
        };
        let marker = src.read_small_entry(&first, "format entry", MAX_FORMAT_ENTRY_LEN)?;
        check_format_marker(&marker)?;
        let mut seen = vec![FORMAT_ENTRY.to_string()];

        let header = src.expect_entry(MANIFEST_ENTRY, &seen)?;
        let manifest_bytes = src.read_small_entry(&header, "manifest", MAX_MANIFEST_LEN)?;
        seen.push(MANIFEST_ENTRY.into());

        let header = src.expect_entry(SIGNATURES_ENTRY, &seen)?;
        let sig_bytes = src.read_small_entry(&header, "signature block", MAX_SIGNATURES_LEN)?;
        let block = decode_signature_block(&sig_bytes)?;
        Ok(UnverifiedBundle {
            src,
            manifest_bytes,
            signatures: block.signatures,
            trust_chain: block.trust_chain,
            signatures_len: sig_bytes.len() as u64,
        })
    }

    /// The exact manifest bytes the signatures cover.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The signatures as stored (unchecked).
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// The trust chain the bundle carries (oldest first; empty for most bundles), not yet walked: see
    /// [`crate::trust_chain::resolve`].
    pub fn trust_chain(&self) -> &[SignedTrustRoot] {
        &self.trust_chain
    }

    /// Length of `signatures.json` (signatures and carried chain): what [`crate::chunked::BundleLayout`] needs.
    pub fn signatures_len(&self) -> u64 {
        self.signatures_len
    }

    /// Parses the manifest WITHOUT checking signatures: for display only, never for installing.
    pub fn manifest_unverified(&self) -> Result<Manifest, BundleError> {
        Manifest::from_bytes(&self.manifest_bytes)
    }

    /// Bytes read so far: after [`UnverifiedBundle::read`], the length of the head (the three leading entries).
    pub fn position(&self) -> u64 {
        self.src.offset
    }

    /// Checks the signatures against `trust`, then parses and validates the manifest.
    pub fn verify(self, trust: &TrustRoot) -> Result<BundleReader<R>, BundleError> {
        let (manifest, signed_by) = authenticate(&self.manifest_bytes, &self.signatures, trust)?;
        Ok(BundleReader {
            src: self.src,
            manifest,
            manifest_bytes: self.manifest_bytes,
            signed_by,
            next_image: 0,
            image_pending: false,
        })
    }

    /// Streams the raw compressed payloads to `sink(image, payload_reader)` in order, checking entry names and
    /// sizes against the (unverified) manifest, then checks the end of the archive. The index and delta entries
    /// of chunked images are read past (a chunked payload is itself one zstd stream of the whole image).
    pub fn for_each_raw_payload(
        self,
        mut sink: impl FnMut(&ImageEntry, &mut dyn Read) -> Result<(), BundleError>,
    ) -> Result<(), BundleError> {
        self.for_each_raw_entry(|image, path, content| {
            if path == image.entry_path() {
                sink(image, content)
            } else {
                io::copy(content, &mut io::sink())
                    .map(drop)
                    .map_err(|e| BundleError::io(format!("reading '{path}'"), e))
            }
        })
    }

    /// Streams every entry after the head to `sink(image, entry_path, content)` in order (a chunked image's
    /// index, payload and delta entries), checking names and sizes against the (unverified) manifest, then checks
    /// the end of the archive. Used to re-sign a bundle without recompressing it.
    pub fn for_each_raw_entry(
        mut self,
        mut sink: impl FnMut(&ImageEntry, &str, &mut dyn Read) -> Result<(), BundleError>,
    ) -> Result<(), BundleError> {
        let manifest = self.manifest_unverified()?;
        let mut seen = entries_before(&[]);
        for image in &manifest.images {
            for (path, size) in image_entries(image) {
                let header = self.src.expect_entry(&path, &seen)?;
                check_entry_size(image, &path, size, header.size)?;
                let mut take = (&mut self.src).take(header.size);
                sink(image, &path, &mut take)?;
                if take.limit() != 0 {
                    return Err(BundleError::Usage(format!(
                        "'{path}' was not read to its end"
                    )));
                }
                self.src.skip_padding(header.size, &path)?;
                seen.push(path);
            }
        }
        finish_archive(&mut self.src)
    }
}

/// Parses `signatures.json`: the signatures and the optional trust chain, each within its bounds, and only in the
/// canonical encoding, so no byte of the file can change without the bundle being refused.
pub fn decode_signature_block(bytes: &[u8]) -> Result<SignatureBlock, BundleError> {
    let block: SignatureBlock =
        serde_json::from_slice(bytes).map_err(|e| BundleError::BadSignatureBlock(e.to_string()))?;
    crate::trust_chain::check_chain(&block.trust_chain)?;
    if crate::writer::encode_signature_block(&block.signatures, &block.trust_chain) != bytes {
        return Err(BundleError::BadSignatureBlock(
            "not in canonical form (sorted by key id, as ota-bundle writes it)".into(),
        ));
    }
    Ok(block)
}

/// The entries of one image in file order, with the sizes the manifest gives them.
fn image_entries(image: &ImageEntry) -> Vec<(String, u64)> {
    let Some(info) = image.chunked() else {
        return vec![(image.entry_path(), image.compressed_size)];
    };
    let mut entries = vec![
        (image.index_path(), info.index_size),
        (image.entry_path(), image.compressed_size),
    ];
    entries.extend(info.delta_size.map(|size| (image.delta_path(), size)));
    entries
}

/// An entry of `image` must have exactly the size the manifest gives it.
fn check_entry_size(
    image: &ImageEntry,
    path: &str,
    expected: u64,
    found: u64,
) -> Result<(), BundleError> {
    if path == image.entry_path() {
        return check_payload_size(image, found);
    }
    if found != expected {
        let field = if path == image.index_path() {
            "chunks.index_size"
        } else {
            "chunks.delta_size"
        };
        return Err(BundleError::CorruptPayload {
            image: image.name.clone(),
            detail: format!(
                "the entry '{path}' is {found} bytes, but the manifest says {expected} ({field})"
            ),
        });
    }
    Ok(())
}

/// The one check that makes a manifest trusted: signatures over its exact bytes meet `trust`'s threshold, then
/// it parses and validates. The streaming reader and [`crate::head`] both go through it.
pub(crate) fn authenticate(
    manifest_bytes: &[u8],
    signatures: &[Signature],
    trust: &TrustRoot,
) -> Result<(Manifest, Vec<KeyId>), BundleError> {
    let signed_by = trust.verify_threshold(manifest_bytes, signatures)?;
    let manifest = Manifest::from_bytes(manifest_bytes)?;
    Ok((manifest, signed_by))
}

/// The entry paths that precede the entries of the image after `images`: meeting one of them again is a
/// duplicate entry.
fn entries_before(images: &[ImageEntry]) -> Vec<String> {
    [FORMAT_ENTRY, MANIFEST_ENTRY, SIGNATURES_ENTRY]
        .into_iter()
        .map(String::from)
        .chain(images.iter().flat_map(image_entries).map(|(path, _)| path))
        .collect()
}

fn check_payload_size(image: &ImageEntry, found: u64) -> Result<(), BundleError> {
    if found != image.compressed_size {
        return Err(BundleError::PayloadSizeMismatch {
            image: image.name.clone(),
            expected: image.compressed_size,
            found,
        });
    }
    Ok(())
}

/// A bundle whose manifest is authenticated. Read its images in manifest order with [`BundleReader::next_image`],
/// each to its end, then call [`BundleReader::finish`].
pub struct BundleReader<R> {
    src: Source<R>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signed_by: Vec<KeyId>,
    next_image: usize,
    image_pending: bool,
}

impl<R: Read> BundleReader<R> {
    /// Reads the bundle's head from `reader` and authenticates the manifest against `trust`.
    pub fn open(reader: R, trust: &TrustRoot) -> Result<Self, BundleError> {
        UnverifiedBundle::read(reader)?.verify(trust)
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact signed manifest bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// SHA-256 of the manifest bytes: the bundle's identity.
    pub fn manifest_digest(&self) -> String {
        manifest_digest(&self.manifest_bytes)
    }

    /// The trusted keys whose signatures verified.
    pub fn signed_by(&self) -> &[KeyId] {
        &self.signed_by
    }

    /// Bytes consumed from the underlying reader so far.
    pub fn position(&self) -> u64 {
        self.src.offset
    }

    /// Opens the next image's payload as a decompressing, verifying stream. The previous image must have been
    /// read to its end.
    pub fn next_image(&mut self) -> Result<Option<ImageReader<'_, R>>, BundleError> {
        if self.image_pending {
            return Err(BundleError::Usage(
                "the previous image was not read to its end".into(),
            ));
        }
        let Some(image) = self.manifest.images.get(self.next_image).cloned() else {
            return Ok(None);
        };
        let seen = entries_before(&self.manifest.images[..self.next_image]);
        let expected = Expected {
            payload: image.payload_sha256_bytes()?,
            content: image.sha256_bytes()?,
        };
        if image.chunked().is_some() {
            let payload = ChunkedPayload::open(&mut self.src, &image, seen)?;
            self.next_image += 1;
            self.image_pending = true;
            return Ok(Some(ImageReader::chunked(
                payload,
                image,
                expected,
                &mut self.image_pending,
            )));
        }
        let header = self.src.expect_entry(&image.entry_path(), &seen)?;
        check_payload_size(&image, header.size)?;
        self.next_image += 1;
        self.image_pending = true;
        ImageReader::full(
            (&mut self.src).take(header.size),
            image,
            expected,
            &mut self.image_pending,
        )
        .map(Some)
    }

    /// Reads every remaining image, checking each completely: its payload digest and also the digest of its
    /// uncompressed content (for `verify`, and for the server before it publishes).
    pub fn verify_remaining_images(&mut self) -> Result<(), BundleError> {
        while let Some(image) = self.next_image()? {
            image.check_content_digest().copy_to(&mut io::sink())?;
        }
        Ok(())
    }

    /// Checks that every image was read and verified, and that the archive ends cleanly with nothing after it.
    pub fn finish(mut self) -> Result<Manifest, BundleError> {
        if self.image_pending || self.next_image != self.manifest.images.len() {
            return Err(BundleError::Usage(
                "finish() called before every image was read".into(),
            ));
        }
        finish_archive(&mut self.src)?;
        Ok(self.manifest)
    }
}
