//! Producing bundles: compress an image (hashing it on the way), then frame the manifest, signatures and payloads.
//! Chunked images are written by [`crate::write`]; this module frames them like full ones.
//! Everything writes to caller-supplied `Write`s; choosing files, temp names and renames is the caller's job.

use std::io::{self, Read, Seek, SeekFrom, Write};

use ota_keys::{SecretKey, Signature, SignedTrustRoot, Signer};
use sha2::{Digest, Sha256};

use crate::chunked::{BundleLayout, ChunkParams, MAX_INDEX};
use crate::error::BundleError;
use crate::framing::{
    entry_header, format_marker, padding_len, BLOCK, FORMAT_ENTRY, MANIFEST_ENTRY, SIGNATURES_ENTRY,
};
use crate::hash_thread;
use crate::manifest::{
    ChunkedInfo, DeltaBase, ImageEntry, Manifest, COMPRESSION_ZSTD, PAYLOAD_CHUNKED, PAYLOAD_FULL,
};
use crate::reader::SignatureBlock;
use crate::write::{write_chunked_image, BaseBundle, ChunkedSettings};

/// What compressing an image measured: the values its manifest entry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedImage {
    /// Uncompressed size.
    pub size: u64,
    /// Compressed size.
    pub compressed_size: u64,
    /// SHA-256 of the compressed bytes, lowercase hex.
    pub payload_sha256: String,
    /// SHA-256 of the uncompressed bytes, lowercase hex.
    pub sha256: String,
}

/// Counts and hashes what zstd hands out.
struct MeasuringWriter<W> {
    inner: W,
    count: u64,
    hasher: Sha256,
}

impl<W: Write> Write for MeasuringWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Input buffers handed to the hashing thread ahead of it.
const HASH_QUEUE: usize = 8;

/// Compresses `input` into `output` with multi-threaded zstd at `level`, hashing the input on a thread of its own
/// and the (four times smaller) output on this one. Hashing the input on the thread that feeds zstd would starve
/// zstd's workers while it runs, leaving a core idle; on its own thread it fills the gaps. `workers` is clamped to
/// at least 1: zstd's multi-threaded output does not depend on the worker count, while its single-threaded mode
/// would produce other bytes, so always using it keeps bundles reproducible across build machines.
pub fn compress_image<R: Read, W: Write>(
    mut input: R,
    output: W,
    level: i32,
    workers: u32,
    mut progress: impl FnMut(u64),
) -> io::Result<CompressedImage> {
    let mut encoder = zstd::stream::write::Encoder::new(
        MeasuringWriter {
            inner: output,
            count: 0,
            hasher: Sha256::new(),
        },
        level,
    )?;
    encoder.multithread(workers.max(1))?;
    encoder.include_checksum(false)?;
    let (size, encoder, digest) = std::thread::scope(|scope| {
        let (feed, hasher) = hash_thread::spawn(scope, HASH_QUEUE);
        let fed = (|| -> io::Result<u64> {
            let mut size = 0u64;
            loop {
                let mut buf = feed.recycled.try_recv().unwrap_or_default();
                buf.resize(1 << 20, 0);
                let n = match input.read(&mut buf) {
                    Ok(0) => return Ok(size),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                buf.truncate(n);
                encoder.write_all(&buf)?;
                if feed.to_hasher.send(buf).is_err() {
                    return Err(io::Error::other("the hashing thread stopped"));
                }
                size += n as u64;
                progress(n as u64);
            }
        })();
        drop(feed);
        let digest = hasher.join().expect("the hashing thread does not panic");
        (fed, encoder, digest)
    });
    let size = size?;
    let mut measured = encoder.finish()?;
    measured.flush()?;
    Ok(CompressedImage {
        size,
        compressed_size: measured.count,
        payload_sha256: hex::encode(measured.hasher.finalize()),
        sha256: hex::encode(digest),
    })
}

/// Signs the exact manifest bytes with each key, ordered by key id so the output is deterministic.
pub fn sign_manifest(manifest_bytes: &[u8], keys: &[SecretKey]) -> Vec<Signature> {
    sign_manifest_with(manifest_bytes, keys).expect("a key in memory always signs")
}

/// [`sign_manifest`] with any [`Signer`] (a key on a PKCS#11 token can fail to sign).
pub fn sign_manifest_with(
    manifest_bytes: &[u8],
    keys: &[impl Signer],
) -> Result<Vec<Signature>, BundleError> {
    let signatures = keys
        .iter()
        .map(|k| k.sign(manifest_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(in_signature_order(signatures))
}

/// Sorted by key id, one per key.
fn in_signature_order(mut signatures: Vec<Signature>) -> Vec<Signature> {
    signatures.sort_by_key(|s| s.key_id);
    signatures.dedup_by_key(|s| s.key_id);
    signatures
}

/// The bytes of `signatures.json` for a bundle that carries no trust chain.
pub fn encode_signatures(signatures: &[Signature]) -> Vec<u8> {
    encode_signature_block(signatures, &[])
}

/// The bytes of `signatures.json`: the signatures sorted by key id, then the carried trust chain as given (the
/// writers check it with [`crate::trust_chain::check_chain`]), left out when empty.
pub fn encode_signature_block(
    signatures: &[Signature],
    trust_chain: &[SignedTrustRoot],
) -> Vec<u8> {
    let mut sorted = signatures.to_vec();
    sorted.sort_by_key(|s| s.key_id);
    let block = SignatureBlock {
        signatures: sorted,
        trust_chain: trust_chain.to_vec(),
    };
    let mut bytes = serde_json::to_vec_pretty(&block).expect("signatures serialise");
    bytes.push(b'\n');
    bytes
}

/// Frames a bundle into `out`: header entries first, then each image's entries (a full image's payload; a chunked
/// image's index, payload and deltas) in manifest order, as [`BundleLayout`] lists them.
pub struct BundleWriter<W: Write> {
    out: W,
    /// The entries after the head, (path, size), in file order.
    entries: Vec<(String, u64)>,
    next: usize,
    mtime: u64,
}

impl<W: Write> BundleWriter<W> {
    /// Writes the format marker, `manifest_bytes` (which must be the bytes of `manifest`) and the signatures.
    pub fn new(
        out: W,
        manifest_bytes: &[u8],
        signatures: &[Signature],
    ) -> Result<Self, BundleError> {
        Self::with_chain(out, manifest_bytes, signatures, &[])
    }

    /// [`BundleWriter::new`] with a carried trust chain ([`crate::trust_chain`]) beside the signatures.
    pub fn with_chain(
        mut out: W,
        manifest_bytes: &[u8],
        signatures: &[Signature],
        trust_chain: &[SignedTrustRoot],
    ) -> Result<Self, BundleError> {
        let manifest = Manifest::from_bytes(manifest_bytes)?;
        let mtime = manifest.created;
        let signature_bytes = signature_block(signatures, trust_chain)?;
        write_entry(&mut out, FORMAT_ENTRY, &format_marker(), mtime)?;
        write_entry(&mut out, MANIFEST_ENTRY, manifest_bytes, mtime)?;
        write_entry(&mut out, SIGNATURES_ENTRY, &signature_bytes, mtime)?;
        let layout = BundleLayout::new(
            manifest_bytes.len() as u64,
            signature_bytes.len() as u64,
            &manifest,
        );
        let entries = layout.entries()[3..]
            .iter()
            .map(|(path, span)| (path.clone(), span.len))
            .collect();
        Ok(BundleWriter {
            out,
            entries,
            next: 0,
            mtime,
        })
    }

    /// Appends the next image's compressed payload (a full image's only entry); it must be exactly
    /// `compressed_size` bytes long.
    pub fn add_payload(&mut self, payload: impl Read) -> Result<(), BundleError> {
        let path = self
            .entries
            .get(self.next)
            .map(|(path, _)| path.clone())
            .ok_or_else(|| BundleError::Usage("more payloads than manifest images".into()))?;
        self.add_entry(&path, payload)
    }

    /// Appends the next entry, which must be `path` and exactly as long as the manifest says.
    pub fn add_entry(&mut self, path: &str, mut content: impl Read) -> Result<(), BundleError> {
        let (expected, size) = self
            .entries
            .get(self.next)
            .cloned()
            .ok_or_else(|| BundleError::Usage(format!("'{path}' is past the last entry")))?;
        if path != expected {
            return Err(BundleError::UnexpectedEntry {
                found: path.to_string(),
                expected: format!("'{expected}'"),
            });
        }
        let header = entry_header(path, size, self.mtime)?;
        self.out
            .write_all(&header)
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        let copied = io::copy(&mut (&mut content).take(size), &mut self.out)
            .map_err(|e| BundleError::io(format!("copying '{path}'"), e))?;
        let mut probe = [0u8; 1];
        let longer = content
            .read(&mut probe)
            .map_err(|e| BundleError::io(format!("reading '{path}'"), e))?;
        if copied != size || longer != 0 {
            return Err(BundleError::PayloadSizeMismatch {
                image: path
                    .split_once('/')
                    .map_or(path, |(_, name)| name)
                    .to_string(),
                expected: size,
                found: copied + longer as u64,
            });
        }
        self.out
            .write_all(&[0u8; BLOCK][..padding_len(size)])
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        self.next += 1;
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output.
    pub fn finish(mut self) -> Result<W, BundleError> {
        if self.next != self.entries.len() {
            return Err(BundleError::Usage(format!(
                "{} of {} payload entries written",
                self.next,
                self.entries.len()
            )));
        }
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .and_then(|()| self.out.flush())
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        Ok(self.out)
    }
}

/// The signature block's bytes, refused when the chain is out of form or the block over its limit.
fn signature_block(
    signatures: &[Signature],
    trust_chain: &[SignedTrustRoot],
) -> Result<Vec<u8>, BundleError> {
    crate::trust_chain::check_chain(trust_chain)?;
    let bytes = encode_signature_block(signatures, trust_chain);
    if bytes.len() as u64 > crate::framing::MAX_SIGNATURES_LEN {
        return Err(BundleError::TooLarge {
            what: "signature block",
            size: bytes.len() as u64,
            limit: crate::framing::MAX_SIGNATURES_LEN,
        });
    }
    Ok(bytes)
}

/// Writes `head`'s bundle again into `out` with other `signatures` and `trust_chain` (co-signing, attaching or
/// replacing a chain): the manifest and every entry after the head are copied byte for byte (names and sizes
/// checked against the manifest), so the bundle id stays and nothing is recompressed.
pub fn rewrite_head<R: Read, W: Write>(
    head: crate::reader::UnverifiedBundle<R>,
    out: W,
    signatures: &[Signature],
    trust_chain: &[SignedTrustRoot],
) -> Result<W, BundleError> {
    let manifest_bytes = head.manifest_bytes().to_vec();
    let mut writer = BundleWriter::with_chain(out, &manifest_bytes, signatures, trust_chain)?;
    head.for_each_raw_entry(|_, path, content| writer.add_entry(path, content))?;
    writer.finish()
}

fn write_entry<W: Write>(
    out: &mut W,
    path: &str,
    content: &[u8],
    mtime: u64,
) -> Result<(), BundleError> {
    let header = entry_header(path, content.len() as u64, mtime)?;
    out.write_all(&header)
        .and_then(|()| out.write_all(content))
        .and_then(|()| out.write_all(&[0u8; BLOCK][..padding_len(content.len() as u64)]))
        .map_err(|e| BundleError::io("writing the bundle", e))
}

/// One image to put in a bundle.
pub struct ImageInput<'a> {
    /// Image name (file name inside the bundle).
    pub name: String,
    /// Slot class it installs into.
    pub slot_class: String,
    /// The uncompressed image.
    pub reader: Box<dyn Read + 'a>,
}

/// Everything about a bundle except its images and keys.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// Release version.
    pub version: semver::Version,
    /// Product / hardware string.
    pub compatible: String,
    /// Creation time (seconds since the epoch); `SOURCE_DATE_EPOCH` for reproducible builds.
    pub created: u64,
    /// Release notes.
    pub description: String,
    /// The lowest version a robot may ever run once it committed this bundle (`None`: no floor).
    pub security_floor: Option<semver::Version>,
    /// zstd level.
    pub level: i32,
    /// zstd worker threads (at least 1).
    pub workers: u32,
}

/// Write buffer in front of the output while compressing: zstd hands out its output in small pieces.
const OUTPUT_BUFFER: usize = 1 << 20;

/// What fills `signatures.json`: the keys that sign the manifest and the trust chain carried beside their
/// signatures ([`crate::trust_chain`]; empty for most bundles).
pub struct Signing<'a, S> {
    /// The release keys.
    pub keys: &'a [S],
    /// The carried trust chain, oldest first.
    pub trust_chain: &'a [SignedTrustRoot],
}

/// Builds and signs a complete bundle of `full` payloads into `out`, compressing each image once, straight into
/// its final place (see [`build_with`] for how).
pub fn build_bundle<W: Write + Seek>(
    out: W,
    spec: &BundleSpec,
    images: Vec<ImageInput<'_>>,
    keys: &[impl Signer],
    progress: impl FnMut(u64),
) -> Result<(Manifest, W), BundleError> {
    let signing = Signing {
        keys,
        trust_chain: &[],
    };
    build_bundle_signed(out, spec, images, &signing, progress)
}

/// [`build_bundle`] that may carry a trust chain.
pub fn build_bundle_signed<W: Write + Seek, S: Signer>(
    out: W,
    spec: &BundleSpec,
    images: Vec<ImageInput<'_>>,
    signing: &Signing<'_, S>,
    mut progress: impl FnMut(u64),
) -> Result<(Manifest, W), BundleError> {
    let entries = images
        .iter()
        .map(|input| placeholder(&input.name, &input.slot_class))
        .collect();
    let mut readers: Vec<_> = images.into_iter().map(|i| Some(i.reader)).collect();
    build_with(out, spec, entries, signing, |out, i, entry| {
        let io_err = |e| BundleError::io("writing the bundle", e);
        let reader = readers[i].take().expect("each image is written once");
        let header_at = out.stream_position().map_err(io_err)?;
        out.write_all(&[0u8; BLOCK]).map_err(io_err)?;
        let mut buffered = io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut *out);
        let measured = compress_image(
            reader,
            &mut buffered,
            spec.level,
            spec.workers,
            &mut progress,
        )
        .and_then(|measured| buffered.flush().map(|()| measured))
        .map_err(|e| BundleError::io(format!("compressing image '{}'", entry.name), e))?;
        drop(buffered);
        out.write_all(&[0u8; BLOCK][..padding_len(measured.compressed_size)])
            .map_err(io_err)?;
        entry.size = measured.size;
        entry.compressed_size = measured.compressed_size;
        entry.payload_sha256 = measured.payload_sha256;
        entry.sha256 = measured.sha256;
        let end = out.stream_position().map_err(io_err)?;
        out.seek(SeekFrom::Start(header_at)).map_err(io_err)?;
        out.write_all(&entry_header(
            &entry.entry_path(),
            entry.compressed_size,
            spec.created,
        )?)
        .map_err(io_err)?;
        out.seek(SeekFrom::Start(end)).map_err(io_err)?;
        Ok(())
    })
}

/// An image of a chunked bundle: read twice (once to cut it, once to compress it), so it must seek.
pub struct SeekableImage<'a> {
    /// Image name (file name inside the bundle).
    pub name: String,
    /// Slot class it installs into.
    pub slot_class: String,
    /// The uncompressed image.
    pub reader: Box<dyn ReadSeek + 'a>,
}

/// `Read + Seek` as one trait, for boxing.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek + ?Sized> ReadSeek for T {}

/// Builds and signs a bundle of `chunked` payloads into `out` (see [`crate::write`]); with `base`, each image also
/// gets deltas against the base bundle's image of the same name, which must be chunked and of the same slot class.
pub fn build_chunked_bundle<W: Write + Seek, B: Read + Seek>(
    out: W,
    spec: &BundleSpec,
    params: ChunkParams,
    images: Vec<SeekableImage<'_>>,
    base: Option<&mut BaseBundle<B>>,
    keys: &[impl Signer],
    progress: impl FnMut(u64),
) -> Result<(Manifest, W), BundleError> {
    let signing = Signing {
        keys,
        trust_chain: &[],
    };
    build_chunked_bundle_signed(out, spec, params, images, base, &signing, progress)
}

/// [`build_chunked_bundle`] that may carry a trust chain.
pub fn build_chunked_bundle_signed<W: Write + Seek, B: Read + Seek, S: Signer>(
    out: W,
    spec: &BundleSpec,
    params: ChunkParams,
    images: Vec<SeekableImage<'_>>,
    mut base: Option<&mut BaseBundle<B>>,
    signing: &Signing<'_, S>,
    mut progress: impl FnMut(u64),
) -> Result<(Manifest, W), BundleError> {
    let mut entries = Vec::with_capacity(images.len());
    for input in &images {
        let mut entry = placeholder(&input.name, &input.slot_class);
        let delta_base = match base.as_deref() {
            Some(b) => {
                let old = b.entry_for(&input.name, &input.slot_class)?;
                Some(DeltaBase {
                    bundle: b.bundle_id().to_string(),
                    version: b.manifest().version.clone(),
                    size: old.size,
                    sha256: old.sha256.clone(),
                })
            }
            None => None,
        };
        entry.payload = PAYLOAD_CHUNKED.into();
        // The longest spelling each number can take, as for the sizes.
        entry.chunks = Some(ChunkedInfo {
            index_size: MAX_INDEX,
            index_sha256: "0".repeat(64),
            delta_size: delta_base.as_ref().map(|_| u64::MAX),
            delta_sha256: delta_base.as_ref().map(|_| "0".repeat(64)),
            base: delta_base,
        });
        entries.push(entry);
    }
    let settings = ChunkedSettings {
        params,
        level: spec.level,
        workers: spec.workers.max(1) as usize,
    };
    let mut readers: Vec<_> = images.into_iter().map(|i| Some(i.reader)).collect();
    build_with(out, spec, entries, signing, |out, i, entry| {
        let reader = readers[i].take().expect("each image is written once");
        let base_image = match base.as_deref_mut() {
            Some(b) => Some(b.image(&entry.name, &entry.slot_class)?),
            None => None,
        };
        write_chunked_image(
            out,
            spec.created,
            entry,
            reader,
            base_image,
            &settings,
            &mut progress,
        )
    })
}

/// A manifest entry whose every field has its final length or longer: the sizes are at their longest spelling
/// (20 digits), the digests are zeros.
fn placeholder(name: &str, slot_class: &str) -> ImageEntry {
    ImageEntry {
        name: name.to_string(),
        slot_class: slot_class.to_string(),
        payload: PAYLOAD_FULL.into(),
        compression: COMPRESSION_ZSTD.into(),
        size: u64::MAX,
        compressed_size: u64::MAX,
        payload_sha256: "0".repeat(64),
        sha256: "0".repeat(64),
        chunks: None,
    }
}

/// Builds and signs a complete bundle into `out`, `write_image(out, i, entry)` writing the entries of image `i`
/// at the current position of `out` and filling in `entry`.
///
/// The manifest comes first in a bundle but needs the compressed sizes and digests, which are known only after
/// compressing. So the room for the header entries is reserved first: every manifest field is known up front
/// except the numbers and digests of each image, whose longest spelling the `entries` hold, and the signature
/// block's length depends only on the number of keys. The payloads are written behind that room, and the header is
/// written last, the manifest padded with spaces to the reserved length (JSON allows them; the padding is signed
/// like every other manifest byte). Nothing is staged or copied, so building needs no temporary disk space.
fn build_with<W: Write + Seek, S: Signer>(
    mut out: W,
    spec: &BundleSpec,
    entries: Vec<ImageEntry>,
    signing: &Signing<'_, S>,
    mut write_image: impl FnMut(&mut W, usize, &mut ImageEntry) -> Result<(), BundleError>,
) -> Result<(Manifest, W), BundleError> {
    let Signing { keys, trust_chain } = *signing;
    if keys.is_empty() {
        return Err(BundleError::Usage(
            "at least one signing key is required".into(),
        ));
    }
    let io_err = |e| BundleError::io("writing the bundle", e);
    let mut manifest = Manifest {
        format_version: crate::FORMAT_VERSION,
        version: spec.version.clone(),
        compatible: spec.compatible.clone(),
        created: spec.created,
        description: spec.description.clone(),
        security_floor: spec.security_floor.clone(),
        images: entries,
    };
    manifest.validate()?;
    let manifest_len = manifest.to_bytes().len();
    if manifest_len as u64 > crate::framing::MAX_MANIFEST_LEN {
        return Err(BundleError::TooLarge {
            what: "manifest",
            size: manifest_len as u64,
            limit: crate::framing::MAX_MANIFEST_LEN,
        });
    }
    // Every signature takes the same room, so placeholders size the block without asking a token to sign.
    let placeholders = keys
        .iter()
        .map(|k| Signature {
            key_id: k.key_id(),
            sig: [0; 64],
        })
        .collect();
    let signatures_len = signature_block(&in_signature_order(placeholders), trust_chain)?.len();
    let header_len =
        entry_len(format_marker().len()) + entry_len(manifest_len) + entry_len(signatures_len);
    out.seek(SeekFrom::Start(header_len)).map_err(io_err)?;
    for (i, entry) in manifest.images.iter_mut().enumerate() {
        write_image(&mut out, i, entry)?;
    }
    out.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
    manifest.validate()?;

    let mut manifest_bytes = manifest.to_bytes();
    debug_assert!(manifest_bytes.len() <= manifest_len);
    let newline = manifest_bytes.pop();
    manifest_bytes.resize(manifest_len - 1, b' ');
    manifest_bytes.extend(newline);
    let signatures = sign_manifest_with(&manifest_bytes, keys)?;
    let end = out.stream_position().map_err(io_err)?;
    out.seek(SeekFrom::Start(0)).map_err(io_err)?;
    BundleWriter::with_chain(&mut out, &manifest_bytes, &signatures, trust_chain)?;
    debug_assert_eq!(out.stream_position().ok(), Some(header_len));
    out.seek(SeekFrom::Start(end)).map_err(io_err)?;
    out.flush().map_err(io_err)?;
    Ok((manifest, out))
}

/// [`build_bundle`] into memory (tests, simulations, small tools).
pub fn build_bundle_to_vec(
    spec: &BundleSpec,
    images: Vec<ImageInput<'_>>,
    keys: &[impl Signer],
) -> Result<(Manifest, Vec<u8>), BundleError> {
    let (manifest, cursor) = build_bundle(io::Cursor::new(Vec::new()), spec, images, keys, |_| {})?;
    Ok((manifest, cursor.into_inner()))
}

/// Bytes an entry of `content_len` bytes takes: its header, its content, its padding.
fn entry_len(content_len: usize) -> u64 {
    (BLOCK + content_len + padding_len(content_len as u64)) as u64
}
