//! The content-addressed blob store on disk. An upload is read once: its bytes go through the verifying bundle
//! reader and, as they are read, into a staging file under `tmp/` written through
//! [`ota_image_io::atomic::AtomicFile`] (random name, exclusive, no link followed). Only a bundle that verified
//! is fsynced, renamed into `blobs/<sha256>` and the directory fsynced, before the database row is written. A
//! refused or interrupted upload leaves nothing behind: the staging file is deleted when it is dropped, and
//! [`sweep`] removes leftovers of a crash at start.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use ota_bundle_format::BundleReader;
use ota_image_io::atomic::{self, AtomicFile};
use ota_keys::TrustRoot;
use ota_protocol::admin::ImageInfo;
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;

use crate::error::ServiceError;
use crate::store::{BundleRecord, Store};

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
    file: AtomicFile,
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

    /// Makes the staged file durable as `blob_dir/<record.bundle_id>`. Returns false (and drops the staged
    /// file) when that blob exists already.
    pub fn publish(self, blob_dir: &Path) -> Result<bool, ServiceError> {
        let target = blob_dir.join(&self.record.bundle_id);
        if target.exists() {
            return Ok(false);
        }
        let staged = self.file.path().to_path_buf();
        self.file
            .commit()
            .map_err(|e| ServiceError::internal("syncing the upload", e))?;
        // Same file system: the rename is atomic, and the data is already on disk.
        if let Err(e) = std::fs::rename(&staged, &target) {
            let _ = std::fs::remove_file(&staged);
            return Err(ServiceError::internal(
                "moving the upload into the blob store",
                e,
            ));
        }
        atomic::sync_dir(blob_dir)
            .map_err(|e| ServiceError::internal("syncing the blob directory", e))?;
        Ok(true)
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

/// Creates the store's directories and removes what a crash may have left: staged uploads and blobs without a
/// database row. Returns the paths removed.
pub fn sweep(data_dir: &Path, store: &dyn Store) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let blobs = data_dir.join("blobs");
    let tmp = data_dir.join("tmp");
    for dir in [&blobs, &tmp] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut removed = Vec::new();
    for entry in
        std::fs::read_dir(&tmp).with_context(|| format!("cannot list {}", tmp.display()))?
    {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        removed.push(path);
    }
    for entry in
        std::fs::read_dir(&blobs).with_context(|| format!("cannot list {}", blobs.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !store.bundle_exists(&name)? {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Writes a generated secret and a newline to `path` with mode 0600, atomically.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), atomic::FileError> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'\n');
    atomic::write_atomically(path, &bytes, 0o600)
}
