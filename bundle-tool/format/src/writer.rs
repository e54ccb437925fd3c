//! Producing bundles: compress an image (hashing it on the way), then frame the manifest, signatures and payloads.
//! Everything writes to caller-supplied `Write`s; choosing files, temp names and renames is the caller's job.

use std::io::{self, Read, Write};

use ota_keys::{SecretKey, Signature};
use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::framing::{
    entry_header, format_marker, padding_len, BLOCK, FORMAT_ENTRY, MANIFEST_ENTRY, SIGNATURES_ENTRY,
};
use crate::manifest::Manifest;
use crate::reader::SignatureBlock;

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

/// Compresses `input` into `output` with multi-threaded zstd at `level`, hashing the input and the output on this
/// thread while zstd's workers compress. `workers` is clamped to at least 1: zstd's multi-threaded output does not depend on
/// the worker count, while its single-threaded mode would produce other bytes, so always using it keeps bundles
/// reproducible across build machines.
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
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        encoder.write_all(&buf[..n])?;
        size += n as u64;
        progress(n as u64);
    }
    let mut measured = encoder.finish()?;
    measured.flush()?;
    Ok(CompressedImage {
        size,
        compressed_size: measured.count,
        payload_sha256: hex::encode(measured.hasher.finalize()),
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Signs the exact manifest bytes with each key, ordered by key id so the output is deterministic.
pub fn sign_manifest(manifest_bytes: &[u8], keys: &[SecretKey]) -> Vec<Signature> {
    let mut signatures: Vec<Signature> = keys.iter().map(|k| k.sign(manifest_bytes)).collect();
    signatures.sort_by_key(|s| s.key_id);
    signatures.dedup_by_key(|s| s.key_id);
    signatures
}

/// The bytes of `signatures.json`.
pub fn encode_signatures(signatures: &[Signature]) -> Vec<u8> {
    let mut sorted = signatures.to_vec();
    sorted.sort_by_key(|s| s.key_id);
    let mut bytes = serde_json::to_vec_pretty(&SignatureBlock { signatures: sorted })
        .expect("signatures serialise");
    bytes.push(b'\n');
    bytes
}

/// Frames a bundle into `out`: header entries first, then each image's compressed payload in manifest order.
pub struct BundleWriter<W: Write> {
    out: W,
    manifest: Manifest,
    next_image: usize,
}

impl<W: Write> BundleWriter<W> {
    /// Writes the format marker, `manifest_bytes` (which must be the bytes of `manifest`) and the signatures.
    pub fn new(
        mut out: W,
        manifest_bytes: &[u8],
        signatures: &[Signature],
    ) -> Result<Self, BundleError> {
        let manifest = Manifest::from_bytes(manifest_bytes)?;
        let mtime = manifest.created;
        write_entry(&mut out, FORMAT_ENTRY, &format_marker(), mtime)?;
        write_entry(&mut out, MANIFEST_ENTRY, manifest_bytes, mtime)?;
        write_entry(
            &mut out,
            SIGNATURES_ENTRY,
            &encode_signatures(signatures),
            mtime,
        )?;
        Ok(BundleWriter {
            out,
            manifest,
            next_image: 0,
        })
    }

    /// Appends the next image's compressed payload; it must be exactly `compressed_size` bytes long.
    pub fn add_payload(&mut self, mut payload: impl Read) -> Result<(), BundleError> {
        let image = self
            .manifest
            .images
            .get(self.next_image)
            .ok_or_else(|| BundleError::Usage("more payloads than manifest images".into()))?
            .clone();
        let header = entry_header(
            &image.entry_path(),
            image.compressed_size,
            self.manifest.created,
        )?;
        self.out
            .write_all(&header)
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        let copied = io::copy(
            &mut (&mut payload).take(image.compressed_size),
            &mut self.out,
        )
        .map_err(|e| BundleError::io(format!("copying the payload of '{}'", image.name), e))?;
        let mut probe = [0u8; 1];
        let longer = payload
            .read(&mut probe)
            .map_err(|e| BundleError::io(format!("reading the payload of '{}'", image.name), e))?;
        if copied != image.compressed_size || longer != 0 {
            return Err(BundleError::PayloadSizeMismatch {
                image: image.name.clone(),
                expected: image.compressed_size,
                found: copied + longer as u64,
            });
        }
        self.out
            .write_all(&[0u8; BLOCK][..padding_len(image.compressed_size)])
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        self.next_image += 1;
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output.
    pub fn finish(mut self) -> Result<W, BundleError> {
        if self.next_image != self.manifest.images.len() {
            return Err(BundleError::Usage(format!(
                "{} of {} payloads written",
                self.next_image,
                self.manifest.images.len()
            )));
        }
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .and_then(|()| self.out.flush())
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        Ok(self.out)
    }
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
    /// zstd level.
    pub level: i32,
    /// zstd worker threads (at least 1).
    pub workers: u32,
}

/// Write buffer in front of a staging file.
const STAGING_BUFFER: usize = 1 << 20;

/// Builds and signs a complete bundle into `out`. Each image is compressed once into a staging buffer made by
/// `staging` (a temp file for real images, a `Cursor<Vec<u8>>` in tests) because the manifest, which comes first,
/// needs the compressed sizes; the staged payloads are then copied behind the header.
pub fn build_bundle<W, S>(
    out: W,
    spec: &BundleSpec,
    images: Vec<ImageInput<'_>>,
    keys: &[SecretKey],
    mut staging: impl FnMut() -> io::Result<S>,
    mut progress: impl FnMut(u64),
) -> Result<(Manifest, W), BundleError>
where
    W: Write,
    S: Read + Write + io::Seek,
{
    if keys.is_empty() {
        return Err(BundleError::Usage(
            "at least one signing key is required".into(),
        ));
    }
    let mut entries = Vec::new();
    let mut staged = Vec::new();
    for input in images {
        let mut stage = staging().map_err(|e| BundleError::io("creating a staging file", e))?;
        // zstd hands out its output in small pieces: batch them into large writes to the staging file.
        let mut buffered = io::BufWriter::with_capacity(STAGING_BUFFER, &mut stage);
        let measured = compress_image(
            input.reader,
            &mut buffered,
            spec.level,
            spec.workers,
            &mut progress,
        )
        .and_then(|measured| buffered.flush().map(|()| measured))
        .map_err(|e| BundleError::io(format!("compressing image '{}'", input.name), e))?;
        drop(buffered);
        stage
            .seek(io::SeekFrom::Start(0))
            .map_err(|e| BundleError::io("rewinding a staging file", e))?;
        entries.push(crate::manifest::ImageEntry {
            name: input.name,
            slot_class: input.slot_class,
            payload: crate::manifest::PAYLOAD_FULL.into(),
            compression: crate::manifest::COMPRESSION_ZSTD.into(),
            size: measured.size,
            compressed_size: measured.compressed_size,
            payload_sha256: measured.payload_sha256,
            sha256: measured.sha256,
        });
        staged.push(stage);
    }
    let manifest = Manifest {
        format_version: crate::FORMAT_VERSION,
        version: spec.version.clone(),
        compatible: spec.compatible.clone(),
        created: spec.created,
        description: spec.description.clone(),
        images: entries,
    };
    manifest.validate()?;
    let manifest_bytes = manifest.to_bytes();
    let signatures = sign_manifest(&manifest_bytes, keys);
    let mut writer = BundleWriter::new(out, &manifest_bytes, &signatures)?;
    for stage in staged {
        writer.add_payload(stage)?;
    }
    Ok((manifest, writer.finish()?))
}
