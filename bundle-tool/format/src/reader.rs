//! The verifying stream reader. It reads a bundle front to back exactly once, from any `Read` (a file, an HTTP
//! body), authenticates the manifest before it reads a byte of payload, and checks every payload against the
//! manifest while it streams. Nothing is buffered beyond small fixed chunks (a few frames of at most 8 MiB for a
//! chunked image), so memory does not grow with images.
//!
//! A `full` payload's bytes reach the caller *before* its digest can be checked (that is what streaming means):
//! the caller must treat what it wrote as untrusted until the image stream has returned end-of-file successfully
//! and [`BundleReader::finish`] has passed. The client marks the target slot unbootable before the first byte for
//! exactly this reason. A `chunked` payload ([`crate::chunked`]) hands out only frames whose digest has been checked.

use std::io::{self, BufReader, Read, Take, Write};
use std::sync::mpsc;

use ota_keys::{KeyId, Signature, SignedTrustRoot, TrustRoot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::framing::{
    check_format_marker, FORMAT_ENTRY, MANIFEST_ENTRY, MAX_FORMAT_ENTRY_LEN, MAX_MANIFEST_LEN,
    MAX_SIGNATURES_LEN, SIGNATURES_ENTRY,
};
use crate::hash_thread::{self, HashFeed};
use crate::manifest::{manifest_digest, ImageEntry, Manifest};

mod chunked;
mod source;

use chunked::ChunkedPayload;
pub use chunked::{index_limits, verify_index};
use source::{finish_archive, Source};

/// Chunk size of the decode/hash/write pipeline: 1 MiB chunks take a quarter of the thread hand-offs of 256 KiB
/// ones (5-10 % less CPU for verify and extract of a 1 GiB image); the pipeline then holds up to ~12 MiB.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between pipeline stages.
const PIPELINE_DEPTH: usize = 4;
/// Decoded chunks start at this alignment, so a writer using direct I/O (`O_DIRECT` needs 4 KiB-aligned buffers)
/// can hand them to the device without copying them first.
const CHUNK_ALIGN: usize = 4096;

/// A decoded chunk of an image: `len` bytes at an aligned offset of an over-allocated buffer.
struct Chunk {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let storage = vec![0u8; CHUNK + CHUNK_ALIGN];
        let start = storage.as_ptr().align_offset(CHUNK_ALIGN);
        Chunk {
            storage,
            start,
            len: 0,
        }
    }

    /// The whole aligned space, for the decoder to fill.
    fn space(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + CHUNK]
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}
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
        let expected_payload_sha256 = image.payload_sha256_bytes()?;
        let expected_content_sha256 = image.sha256_bytes()?;
        if image.chunked().is_some() {
            let payload = ChunkedPayload::open(&mut self.src, &image, seen)?;
            self.next_image += 1;
            self.image_pending = true;
            return Ok(Some(ImageReader {
                decoder: None,
                chunked: Some(payload),
                image,
                expected_payload_sha256,
                payload_digest: None,
                expected_content_sha256,
                content_hasher: None,
                produced: 0,
                pending_flag: &mut self.image_pending,
                done: false,
            }));
        }
        let header = self.src.expect_entry(&image.entry_path(), &seen)?;
        check_payload_size(&image, header.size)?;
        self.next_image += 1;
        self.image_pending = true;
        let tap = PayloadTap {
            inner: (&mut self.src).take(header.size),
            hash: TapHash::Inline(Sha256::new()),
        };
        let mut decoder = zstd::stream::read::Decoder::new(tap)
            .map_err(|e| BundleError::io("starting the zstd decoder", e))?;
        decoder
            .window_log_max(MAX_WINDOW_LOG)
            .map_err(|e| BundleError::io("configuring the zstd decoder", e))?;
        Ok(Some(ImageReader {
            decoder: Some(decoder),
            chunked: None,
            image,
            expected_payload_sha256,
            payload_digest: None,
            expected_content_sha256,
            content_hasher: None,
            produced: 0,
            pending_flag: &mut self.image_pending,
            done: false,
        }))
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

type Decoder<'a, R> =
    zstd::stream::read::Decoder<'static, BufReader<PayloadTap<Take<&'a mut Source<R>>>>>;

/// Sees every compressed byte of a payload on its way to the decoder, to hash it.
struct PayloadTap<T> {
    inner: T,
    hash: TapHash,
}

/// Where a payload's compressed bytes are hashed.
enum TapHash {
    /// Here, on the reading thread.
    Inline(Sha256),
    /// On another thread, which gets a copy of each piece (compressed data is a fraction of the image, so the
    /// copies are cheap and the decoding thread keeps its core for decoding) and sends the buffer back.
    Forward(HashFeed),
}

impl<T: Read> Read for PayloadTap<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hash {
            TapHash::Inline(hasher) => hasher.update(&buf[..n]),
            // A hasher that stopped has failed the copy already; its absence is reported there.
            TapHash::Forward(feed) if n > 0 => {
                let mut piece = feed.recycled.try_recv().unwrap_or_default();
                piece.clear();
                piece.extend_from_slice(&buf[..n]);
                let _ = feed.to_hasher.send(piece);
            }
            TapHash::Forward(_) => {}
        }
        Ok(n)
    }
}

/// One image's payload as a stream of verified-on-completion uncompressed bytes.
///
/// Its `Read` implementation returns end-of-file only after the exact size and the SHA-256 have been checked; a
/// mismatch is returned as an error instead of end-of-file (the `io::Error` carries a [`BundleError`], see
/// [`BundleError::from_io`]). [`ImageReader::copy_to`] does the same with decoding, hashing and writing on three
/// threads.
pub struct ImageReader<'a, R> {
    decoder: Option<Decoder<'a, R>>,
    /// A chunked image's frames (then `decoder` is `None`).
    chunked: Option<ChunkedPayload<'a, R>>,
    image: ImageEntry,
    expected_payload_sha256: [u8; 32],
    /// The payload digest, once hashed inline to the end.
    payload_digest: Option<[u8; 32]>,
    expected_content_sha256: [u8; 32],
    /// Hashes the uncompressed content when asked to ([`ImageReader::check_content_digest`]).
    content_hasher: Option<Sha256>,
    produced: u64,
    pending_flag: &'a mut bool,
    done: bool,
}

impl<R: Read> ImageReader<'_, R> {
    /// The manifest entry of this image.
    pub fn entry(&self) -> &ImageEntry {
        &self.image
    }

    /// Also checks the SHA-256 of the uncompressed content, not only the payload's.
    ///
    /// The payload digest alone authenticates the image: zstd decoding is a pure function of the compressed
    /// bytes, and the exact size is enforced. Hashing the uncompressed image as well proves that the producer's
    /// manifest describes it truthfully; it is what `verify` and the server's upload check do. Writing a slot
    /// skips it, because a sequential SHA-256 of the whole image would cost as much time as decoding it.
    pub fn check_content_digest(mut self) -> Self {
        self.content_hasher = Some(Sha256::new());
        if let Some(payload) = self.chunked.as_mut() {
            payload.check_chunks = true;
        }
        self
    }

    /// Decodes into `buf` without hashing, enforcing the exact size. Returns 0 at the checked end of the payload.
    fn decode(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        if let Some(payload) = self.chunked.as_mut() {
            let n = payload.read(buf)?;
            self.produced += n as u64;
            if n == 0 && !buf.is_empty() {
                self.payload_digest = Some(payload.finish()?);
                self.chunked = None;
            }
            return Ok(n);
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(0);
        };
        let n = loop {
            match decoder.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.classify(e)),
            }
        };
        self.produced += n as u64;
        if self.produced > self.image.size {
            return Err(BundleError::ImageSizeMismatch {
                image: self.image.name.clone(),
                expected: self.image.size,
                found: format!("more than {}", self.image.size),
            });
        }
        if n == 0 && !buf.is_empty() {
            self.end_of_payload()?;
        }
        Ok(n)
    }

    /// Maps a decoder error to what really happened: a broken source, a truncated bundle, or bad compressed data.
    fn classify(&mut self, e: io::Error) -> BundleError {
        let src = self
            .decoder
            .as_ref()
            .map(|d| &**d.get_ref().get_ref().inner.get_ref());
        match src {
            Some(src) if src.io_error => BundleError::io("reading the bundle", e),
            Some(src) if src.hit_eof => BundleError::Truncated {
                offset: src.offset,
                inside: format!("the payload of image '{}'", self.image.name),
            },
            _ => BundleError::CorruptPayload {
                image: self.image.name.clone(),
                detail: e.to_string(),
            },
        }
    }

    /// The decoder reported the end of its frames: the payload entry must be fully consumed, the size exact.
    fn end_of_payload(&mut self) -> Result<(), BundleError> {
        let decoder = self.decoder.take().expect("called once");
        let mut rest = decoder.finish();
        let tap = rest.get_mut();
        if let TapHash::Inline(hasher) = &mut tap.hash {
            self.payload_digest = Some(hasher.finalize_reset().into());
        }
        let leftover = rest.buffer().len() as u64 + rest.get_ref().inner.limit();
        if leftover != 0 {
            return Err(BundleError::CorruptPayload {
                image: self.image.name.clone(),
                detail: format!("{leftover} bytes follow the compressed data"),
            });
        }
        if self.produced != self.image.size {
            return Err(BundleError::ImageSizeMismatch {
                image: self.image.name.clone(),
                expected: self.image.size,
                found: self.produced.to_string(),
            });
        }
        let src = rest.get_mut().inner.get_mut();
        src.skip_padding(self.image.compressed_size, &self.image.entry_path())
    }

    /// Checks the digests after the payload ended: the payload's, then the content's if it was hashed.
    fn check_digests(
        &mut self,
        payload: [u8; 32],
        content: Option<[u8; 32]>,
    ) -> Result<(), BundleError> {
        if payload != self.expected_payload_sha256 {
            return Err(BundleError::DigestMismatch {
                image: self.image.name.clone(),
                what: "compressed payload",
                field: "payload_sha256",
                expected: self.image.payload_sha256.clone(),
                actual: hex::encode(payload),
            });
        }
        if let Some(content) = content.filter(|c| *c != self.expected_content_sha256) {
            return Err(BundleError::DigestMismatch {
                image: self.image.name.clone(),
                what: "uncompressed content",
                field: "sha256",
                expected: self.image.sha256.clone(),
                actual: hex::encode(content),
            });
        }
        self.done = true;
        *self.pending_flag = false;
        Ok(())
    }

    /// Decodes this image into `writer`, decoding on this thread while two scoped threads hash the compressed
    /// payload and write the output (the writer also hashes the content when [`Self::check_content_digest`] asked
    /// for it). Returns the number of bytes written once the size and digests have been verified.
    pub fn copy_to<W: Write + Send>(mut self, writer: &mut W) -> Result<u64, BundleError> {
        if let Some(payload) = self.chunked.take() {
            let content_hasher = self.content_hasher.take();
            let (written, payload_digest, content_digest) =
                payload.copy_to(writer, content_hasher)?;
            self.check_digests(payload_digest, content_digest)?;
            return Ok(written);
        }
        let (write_tx, write_rx) = mpsc::sync_channel::<Chunk>(PIPELINE_DEPTH);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Chunk>();
        let content_hasher = self.content_hasher.take();

        let (decoded, payload_digest, written) = std::thread::scope(|scope| {
            let (feed, payload_hasher) = hash_thread::spawn(scope, PIPELINE_DEPTH * 8);
            if let Some(decoder) = self.decoder.as_mut() {
                decoder.get_mut().get_mut().hash = TapHash::Forward(feed);
            }
            let writer_thread = scope.spawn(move || -> io::Result<(u64, Option<[u8; 32]>)> {
                let mut content_hasher = content_hasher;
                let mut written = 0u64;
                for chunk in write_rx {
                    if let Some(hasher) = content_hasher.as_mut() {
                        hasher.update(chunk.bytes());
                    }
                    writer.write_all(chunk.bytes())?;
                    written += chunk.len as u64;
                    // The decoder may have stopped; then nobody takes the buffer back.
                    let _ = recycle_tx.send(chunk);
                }
                writer.flush()?;
                Ok((written, content_hasher.map(|h| h.finalize().into())))
            });

            let decoded = (|| -> Result<(), BundleError> {
                loop {
                    let mut chunk = recycle_rx.try_recv().unwrap_or_else(|_| Chunk::new());
                    let space = chunk.space();
                    let mut filled = 0;
                    while filled < CHUNK {
                        let n = self.decode(&mut space[filled..])?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                    }
                    if filled == 0 {
                        return Ok(());
                    }
                    chunk.len = filled;
                    if write_tx.send(chunk).is_err() {
                        // The writer failed; its error is reported below.
                        return Ok(());
                    }
                }
            })();
            drop(write_tx);
            // Ends the payload hasher's input (the decoder holds the sender until the payload ends).
            self.decoder = None;
            let payload_digest = payload_hasher.join().expect("hash thread does not panic");
            let written = writer_thread.join().expect("writer thread does not panic");
            (decoded, payload_digest, written)
        });
        decoded?;
        let write_failed = |error| BundleError::WriteFailed {
            image: self.image.name.clone(),
            error,
        };
        let (written, content_digest) = written.map_err(write_failed)?;
        if written != self.image.size {
            return Err(write_failed(io::Error::other("the writer stopped early")));
        }
        self.check_digests(payload_digest, content_digest)?;
        Ok(written)
    }
}

impl<R: Read> Read for ImageReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.decode(buf).map_err(BundleError::into_io)?;
        if n == 0 {
            let payload = self
                .payload_digest
                .expect("the payload was hashed inline to its end");
            let content = self.content_hasher.take().map(|h| h.finalize().into());
            self.check_digests(payload, content)
                .map_err(BundleError::into_io)?;
            return Ok(0);
        }
        if let Some(hasher) = self.content_hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}
