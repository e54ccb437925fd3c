//! Bundles: publishing an upload (stream, verify, store, record), the catalogue, and who may download what.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt};
use ota_protocol::admin::{BundleInfo, PublishResponse};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::bundle_store::{orphans, BundleStoreRef, Staged, REMOTE_ORPHAN_AGE};
use crate::error::ServiceError;
use crate::fleet::{bundle_info, read, unix_now, write, Shared};
use crate::rollout;
use crate::store::BundleRecord;
use crate::tokens::Caller;

/// Where a granted download comes from.
pub struct DownloadGrant {
    /// The store holding the bundle.
    pub store: BundleStoreRef,
    /// Redirect to a presigned URL valid this long, if the store can presign.
    pub presign: Option<Duration>,
}

/// Bundles.
#[derive(Clone)]
pub struct BundleService(pub(crate) Arc<Shared>);

/// Checks the shape of a bundle id.
fn check_id(id: &str) -> Result<(), ServiceError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "bundle id must be 64 lowercase hex digits (the bundle file's SHA-256)".into(),
        ))
    }
}

fn no_bundle(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no bundle '{id}'"))
}

fn too_large(limit: u64) -> ServiceError {
    ServiceError::TooLarge(format!(
        "bundle larger than the server's upload limit of {limit} bytes (--max-upload-bytes)"
    ))
}

impl BundleService {
    /// Number of bundles.
    pub fn count(&self) -> usize {
        read(&self.0.fleet).bundles.len()
    }

    /// All bundles, newest first.
    pub fn list(&self) -> Vec<BundleInfo> {
        let mut out: Vec<BundleInfo> = read(&self.0.fleet)
            .bundles
            .values()
            .map(bundle_info)
            .collect();
        out.sort_by(|a, b| {
            b.uploaded_at
                .cmp(&a.uploaded_at)
                .then(a.bundle_id.cmp(&b.bundle_id))
        });
        out
    }

    /// One bundle.
    pub fn get(&self, id: &str) -> Result<BundleInfo, ServiceError> {
        check_id(id)?;
        self.record(id).map(|b| bundle_info(&b))
    }

    fn record(&self, id: &str) -> Result<BundleRecord, ServiceError> {
        read(&self.0.fleet)
            .bundles
            .get(id)
            .cloned()
            .ok_or_else(|| no_bundle(id))
    }

    /// Whether a caller may download a bundle, and from where: admins get any, a device only one offered to it
    /// (in a reached stage of a rollout that is not aborted).
    pub fn download(&self, caller: &Caller, id: &str) -> Result<DownloadGrant, ServiceError> {
        check_id(id)?;
        let allowed = {
            let fleet = read(&self.0.fleet);
            if !fleet.bundles.contains_key(id) {
                return Err(no_bundle(id));
            }
            match caller {
                Caller::User(_) => true,
                Caller::Device(device) => fleet.rollouts.values().any(|r| {
                    r.bundle.bundle_id == id
                        && rollout::may_download(
                            &r.plan(),
                            r.members.len() as u64,
                            r.membership(device),
                        )
                }),
            }
        };
        if !allowed {
            return Err(ServiceError::Forbidden(
                "this bundle has not been offered to this device".into(),
            ));
        }
        self.0.metrics.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(DownloadGrant {
            store: self.0.config.bundle_store.clone(),
            presign: self.0.config.presign_downloads,
        })
    }

    /// Removes a shared (remote) store's blobs that have no database row and are older than
    /// [`REMOTE_ORPHAN_AGE`] (what a crash between the put and the row left); the local store was swept at
    /// start. Returns the ids removed.
    pub async fn sweep_store(&self) -> Result<Vec<String>, ServiceError> {
        let bundles = &self.0.config.bundle_store;
        if bundles.local_dir().is_some() {
            return Ok(Vec::new());
        }
        let listed = bundles
            .list()
            .await
            .map_err(|e| ServiceError::internal("listing the bundle store", e))?;
        let cutoff = SystemTime::now()
            .checked_sub(REMOTE_ORPHAN_AGE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // A database error keeps the blob: better an orphan than a bundle without bytes.
        let doomed = self
            .0
            .blocking(move |s| {
                Ok(orphans(
                    listed,
                    |id| s.bundle_exists(id).unwrap_or(true),
                    cutoff,
                ))
            })
            .await?;
        for id in &doomed {
            bundles
                .delete(id)
                .await
                .map_err(|e| ServiceError::internal("removing an orphaned blob", e))?;
        }
        Ok(doomed)
    }

    /// Streams an upload into the staging area, verifies it and publishes it. Returns whether the bundle is
    /// new and what was published.
    pub async fn upload<S, E>(
        &self,
        content_length: Option<u64>,
        body: S,
    ) -> Result<(bool, PublishResponse), ServiceError>
    where
        S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let result = self.receive_and_publish(content_length, body).await;
        if result.is_err() {
            self.0
                .metrics
                .uploads_rejected
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn receive_and_publish<S, E>(
        &self,
        content_length: Option<u64>,
        mut body: S,
    ) -> Result<(bool, PublishResponse), ServiceError>
    where
        S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let shared = &self.0;
        let limit = shared.config.max_upload_bytes;
        if content_length.is_some_and(|len| len > limit) {
            return Err(too_large(limit));
        }
        let (tmp_dir, trust, allowed) = (
            shared.config.tmp_dir(),
            crate::services::trust::upload_root(shared).await?,
            shared.config.allowed_compatible.clone(),
        );
        // The upload is verified and staged while it streams in (one pass over the bytes).
        let (chunks, received) = mpsc::channel(16);
        let verifier = tokio::task::spawn_blocking(move || {
            Staged::receive(received, &tmp_dir, &trust, &allowed, unix_now())
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut chunks = Some(chunks);
        let streamed: Result<(), ServiceError> = async {
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| ServiceError::Invalid(format!("upload interrupted: {e}")))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(too_large(limit));
                }
                hasher.update(&chunk);
                // A verifier that already refused the bundle stops listening: read the rest of the body
                // anyway, so the client gets the answer rather than a reset connection.
                if let Some(tx) = &chunks {
                    if tx.send(chunk).await.is_err() {
                        chunks = None;
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let verified = verifier
            .await
            .map_err(|e| ServiceError::internal("verifying the upload", e))?;
        streamed?;
        if content_length.is_some_and(|len| len != size) {
            return Err(ServiceError::Invalid(format!(
                "upload interrupted: received {size} of {} bytes",
                content_length.unwrap_or_default()
            )));
        }
        let mut staged = verified?;
        staged.record.bundle_id = hex::encode(hasher.finalize());
        staged.record.size = size;
        let record = staged.record.clone();
        let bundles = &shared.config.bundle_store;
        let fresh = bundles
            .put(&record.bundle_id, staged)
            .await
            .map_err(|e| ServiceError::internal("storing the upload", e))?;
        let rec = record.clone();
        let inserted = match shared.blocking(move |s| s.insert_bundle(&rec)).await {
            Ok(v) => v,
            Err(err) => {
                if fresh {
                    // The row is missing: take the blob back so nothing half-published stays.
                    if let Err(e) = bundles.delete(&record.bundle_id).await {
                        tracing::warn!("cannot take back the blob of an unrecorded upload (swept at the next start): {e}");
                    }
                }
                return Err(err);
            }
        };
        let existing = {
            let mut fleet = write(&shared.fleet);
            if inserted {
                fleet
                    .bundles
                    .insert(record.bundle_id.clone(), record.clone());
            }
            fleet.bundles.get(&record.bundle_id).cloned()
        };
        if inserted {
            shared
                .metrics
                .uploads_accepted
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(bundle = %record.bundle_id, version = %record.version, "bundle published");
        } else {
            shared
                .metrics
                .uploads_deduplicated
                .fetch_add(1, Ordering::Relaxed);
        }
        let existing = existing.unwrap_or(record);
        Ok((
            inserted,
            PublishResponse {
                bundle_id: existing.bundle_id,
                version: existing.version,
                compatible: existing.compatible,
                manifest_digest: existing.manifest_digest,
                size: existing.size,
                deduplicated: !inserted,
            },
        ))
    }
}
