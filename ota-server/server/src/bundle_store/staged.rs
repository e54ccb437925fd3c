//! Staging an upload. It is read once: its bytes go through the verifying bundle reader and, as they are read,
//! into a staging file under `tmp/` written through [`ota_image_io::atomic::AtomicFile`] (random name,
//! exclusive, no link followed). Only a bundle that verified is handed to a [`super::BundleStore`]; a refused or
//! interrupted upload leaves nothing behind: the staging file is deleted when it is dropped.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use axum::body::Bytes;
use ota_bundle_format::BundleReader;
use ota_image_io::atomic::{self, AtomicFile};
use ota_keys::TrustRoot;
use ota_protocol::admin::ImageInfo;
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;

use crate::error::ServiceError;
use crate::store::BundleRecord;

/// Reads the chunks of an upload, writing each byte it hands out to the staging file.
struct Tee {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
    out: BufWriter<AtomicFile>,
    write_error: Option<io::Error>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let message = e.to_string();
            self.write_error = Some(e);
            return Err(io::Error::other(message));
        }
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// A bundle that verified, staged under `tmp/`.
pub struct Staged {
    pub(super) file: AtomicFile,
    /// What to store; the caller sets `bundle_id` and `size` (it hashed and counted the upload).
    pub record: BundleRecord,
}

impl Staged {
    /// Receives an upload from `chunks` (until the sender is dropped) into a staging file in `tmp_dir` while
    /// verifying it against `trust` and the `allowed_compatible` list (empty: any). Blocking.
    pub fn receive(
        chunks: mpsc::Receiver<Bytes>,
        tmp_dir: &Path,
        trust: &TrustRoot,
        allowed_compatible: &[String],
        now: u64,
    ) -> Result<Staged, ServiceError> {
        let name = format!("upload-{:016x}", OsRng.next_u64());
        let file = AtomicFile::create(&tmp_dir.join(name), 0o644)
            .map_err(|e| ServiceError::internal("creating the upload temp file", e))?;
        let mut tee = Tee {
            chunks,
            current: Bytes::new(),
            out: BufWriter::with_capacity(1 << 20, file),
            write_error: None,
        };
        let verified = verify(&mut tee, trust);
        if let Some(e) = tee.write_error.take() {
            return Err(ServiceError::internal("writing the upload temp file", e));
        }
        let mut record = verified?;
        if !allowed_compatible.is_empty() && !allowed_compatible.contains(&record.compatible) {
            return Err(ServiceError::Rejected(format!(
                "bundle rejected: compatible '{}' is not one this server accepts ({}); see --allowed-compatible",
                record.compatible,
                allowed_compatible.join(", ")
            )));
        }
        record.uploaded_at = now;
        let file = tee
            .out
            .into_inner()
            .map_err(|e| ServiceError::internal("writing the upload temp file", e.error()))?;
        Ok(Staged { file, record })
    }
}

/// Reads a whole bundle through the verifying reader; returns its record without id and size.
fn verify(source: impl Read, trust: &TrustRoot) -> Result<BundleRecord, ServiceError> {
    let rejected =
        |e: ota_bundle_format::BundleError| ServiceError::Rejected(format!("bundle rejected: {e}"));
    let mut bundle = BundleReader::open(source, trust).map_err(rejected)?;
    let manifest_digest = bundle.manifest_digest();
    bundle.verify_remaining_images().map_err(rejected)?;
    // `finish` reads to the end of the upload, so every byte went into the staging file.
    let manifest = bundle.finish().map_err(rejected)?;
    Ok(BundleRecord {
        bundle_id: String::new(),
        version: manifest.version,
        compatible: manifest.compatible,
        manifest_digest,
        size: 0,
        description: manifest.description,
        uploaded_at: 0,
        images: manifest
            .images
            .into_iter()
            .map(|i| ImageInfo {
                name: i.name,
                slot_class: i.slot_class,
                size: i.size,
                sha256: i.sha256,
                payload: i.payload,
            })
            .collect(),
    })
}

/// Writes a generated secret and a newline to `path` with mode 0600, atomically.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), atomic::FileError> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'\n');
    atomic::write_atomically(path, &bytes, 0o600)
}
