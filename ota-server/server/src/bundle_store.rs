//! The content-addressed bundle store: uploads are streamed to a temp file while hashing, verified against the
//! trust root, then fsynced and renamed into `blobs/<sha256>` before the database row is written. A refused or
//! interrupted upload leaves nothing behind: the temp file is deleted when it goes out of scope, and
//! [`sweep`] removes leftovers of a crash at start.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;
use ota_bundle_format::BundleReader;
use ota_protocol::admin::{ImageInfo, PublishResponse};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::{blocking, unix_now, AppState};
use crate::store::{BundleRecord, Store};

/// Streams an upload into a temp file, verifies it and publishes it.
pub async fn upload(
    state: &Arc<AppState>,
    content_length: Option<u64>,
    body: Body,
) -> Result<(bool, PublishResponse), ApiError> {
    let result = receive_and_publish(state, content_length, body).await;
    if result.is_err() {
        state
            .metrics
            .uploads_rejected
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "bundle larger than the server's upload limit of {limit} bytes (--max-upload-bytes)"
        ),
    )
}

async fn receive_and_publish(
    state: &Arc<AppState>,
    content_length: Option<u64>,
    body: Body,
) -> Result<(bool, PublishResponse), ApiError> {
    let limit = state.config.max_upload_bytes;
    if content_length.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let tmp = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(state.tmp_dir())
        .map_err(|e| ApiError::internal("creating the upload temp file", e))?;
    let std_file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| ApiError::internal("opening the upload temp file", e))?;
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(std_file));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        hasher.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|e| ApiError::internal("writing the upload temp file", e))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|e| ApiError::internal("writing the upload temp file", e))?;
    drop(file);
    if content_length.is_some_and(|len| len != size) {
        return Err(ApiError::bad_request(format!(
            "upload interrupted: received {size} of {} bytes",
            content_length.unwrap_or_default()
        )));
    }
    let sha = hex::encode(hasher.finalize());
    let st = state.clone();
    let record = tokio::task::spawn_blocking(move || verify_and_store(&st, tmp, sha, size))
        .await
        .map_err(|e| ApiError::internal("verifying the upload", e))??;
    let (fresh, record) = record;
    let rec = record.clone();
    let inserted = blocking(&state.store, move |s| s.insert_bundle(&rec)).await;
    let inserted = match inserted {
        Ok(v) => v,
        Err(err) => {
            if fresh {
                // The row is missing: take the blob back so nothing half-published stays.
                let _ = std::fs::remove_file(state.blob_dir().join(&record.bundle_id));
            }
            return Err(err);
        }
    };
    let deduplicated = !inserted;
    if inserted {
        state.add_bundle(record.clone());
        state
            .metrics
            .uploads_accepted
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(bundle = %record.bundle_id, version = %record.version, "bundle published");
    } else {
        state
            .metrics
            .uploads_deduplicated
            .fetch_add(1, Ordering::Relaxed);
    }
    let existing = state.bundle(&record.bundle_id).unwrap_or(record);
    Ok((
        inserted,
        PublishResponse {
            bundle_id: existing.bundle_id,
            version: existing.version,
            compatible: existing.compatible,
            manifest_digest: existing.manifest_digest,
            size: existing.size,
            deduplicated,
        },
    ))
}

/// Verifies the staged file completely, then moves it into the blob store. Returns whether a new blob was
/// created.
fn verify_and_store(
    state: &AppState,
    tmp: tempfile::NamedTempFile,
    sha: String,
    size: u64,
) -> Result<(bool, BundleRecord), ApiError> {
    let reader = BufReader::with_capacity(
        1 << 20,
        tmp.reopen()
            .map_err(|e| ApiError::internal("reopening the upload", e))?,
    );
    let rejected = |e: ota_bundle_format::BundleError| {
        ApiError::unprocessable(format!("bundle rejected: {e}"))
    };
    let mut bundle = BundleReader::open(reader, &state.config.trust).map_err(rejected)?;
    let manifest = bundle.manifest().clone();
    let manifest_digest = bundle.manifest_digest();
    bundle.verify_remaining_images().map_err(rejected)?;
    bundle.finish().map_err(rejected)?;
    let allowed = &state.config.allowed_compatible;
    if !allowed.is_empty() && !allowed.contains(&manifest.compatible) {
        return Err(ApiError::unprocessable(format!(
            "bundle rejected: compatible '{}' is not one this server accepts ({}); see --allowed-compatible",
            manifest.compatible,
            allowed.join(", ")
        )));
    }
    let record = BundleRecord {
        bundle_id: sha.clone(),
        version: manifest.version.clone(),
        compatible: manifest.compatible.clone(),
        manifest_digest,
        size,
        description: manifest.description.clone(),
        uploaded_at: unix_now(),
        images: manifest
            .images
            .iter()
            .map(|i| ImageInfo {
                name: i.name.clone(),
                slot_class: i.slot_class.clone(),
                size: i.size,
                sha256: i.sha256.clone(),
            })
            .collect(),
    };
    let target = state.blob_dir().join(&sha);
    if target.exists() {
        return Ok((false, record));
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| ApiError::internal("syncing the upload", e))?;
    match tmp.persist_noclobber(&target) {
        Ok(_) => {}
        Err(e) if target.exists() => drop(e),
        Err(e) => {
            return Err(ApiError::internal(
                "moving the upload into the blob store",
                e.error,
            ))
        }
    }
    sync_dir(&state.blob_dir()).map_err(|e| ApiError::internal("syncing the blob directory", e))?;
    Ok((true, record))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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

/// Writes `bytes` to a file in `dir` with mode 0600 (used for generated secrets).
pub fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'\n');
    ota_keys::write_file_atomically(path, &bytes, 0o600)?;
    let _ = std::io::stdout().flush();
    Ok(())
}
