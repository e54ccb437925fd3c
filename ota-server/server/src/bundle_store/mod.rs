//! Where published bundles live: a small [`BundleStore`] trait with two homes, the local directory
//! ([`local::LocalDir`], the default: `DATA_DIR/blobs/<sha256>`, unchanged) and an S3-compatible object store
//! ([`s3::S3Store`], chosen with `--bundle-store s3://...`). Both get the same input: an upload that was staged
//! in `DATA_DIR/tmp` and verified ([`Staged`]); neither ever holds a whole bundle in memory. A store holds only
//! verified bytes, but robots verify everything they download again, so the store needs no trust: downloads may
//! go through the server ([`Blob`]) or straight to the store by a presigned URL ([`BundleStore::presign`]).

pub mod local;
pub mod s3;
pub mod spec;
mod staged;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

pub use self::spec::StoreSpec;
pub use self::staged::{write_secret_file, Staged};
use crate::store::Store;

/// Why the bundle store failed; the message names the store and what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("bundle store {store}: {what}: {detail}")]
pub struct BlobError {
    /// Which store (`local directory /var/lib/...` or `s3://bucket/prefix`).
    pub store: String,
    /// What it was doing.
    pub what: &'static str,
    /// The underlying error.
    pub detail: String,
    /// No blob of that id.
    pub not_found: bool,
}

/// A stored bundle opened for download.
pub struct Blob {
    /// Its length in bytes.
    pub len: u64,
    /// Where its bytes come from.
    pub source: BlobSource,
}

/// Where a downloaded bundle's bytes come from.
pub enum BlobSource {
    /// A local file: read with `pread` in large chunks (the fast path).
    File(std::fs::File),
    /// A remote object: each range is one streamed request.
    Remote(Arc<dyn RangeSource>),
}

/// Streams byte ranges of one remote object.
pub trait RangeSource: Send + Sync {
    /// Bytes `first..end` (end exclusive), streamed as they arrive.
    fn stream(&self, first: u64, end: u64) -> BoxStream<'static, io::Result<Bytes>>;
}

/// A home for published bundles, keyed by bundle id (the file's SHA-256, so a blob never changes).
pub trait BundleStore: Send + Sync + fmt::Debug {
    /// Makes a verified staged upload the blob `id`, all or nothing: nothing appears under `id` unless every
    /// byte arrived. Returns false (dropping the staged file) when a blob of that id exists already.
    fn put(&self, id: &str, staged: Staged) -> BoxFuture<'_, Result<bool, BlobError>>;
    /// Opens blob `id` for download.
    fn open(&self, id: &str) -> BoxFuture<'_, Result<Blob, BlobError>>;
    /// Removes blob `id` (absent is fine).
    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), BlobError>>;
    /// Whether blob `id` exists.
    fn exists(&self, id: &str) -> BoxFuture<'_, Result<bool, BlobError>>;
    /// The blobs stored, with when each was written (only names that are bundle ids).
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, BlobError>>;
    /// A URL that lets anyone holding it GET blob `id` (ranges included) for `ttl`; `None` if this store
    /// cannot presign (the local directory).
    fn presign(&self, id: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<String>, BlobError>>;
    /// The local directory, when this is one (its orphans are swept synchronously at start).
    fn local_dir(&self) -> Option<&Path> {
        None
    }
}

/// The bundle store a server uses (a cheap clone; `Debug` names the store).
#[derive(Clone, Debug)]
pub struct BundleStoreRef(pub Arc<dyn BundleStore>);

impl std::ops::Deref for BundleStoreRef {
    type Target = dyn BundleStore;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

impl BundleStoreRef {
    /// The store `spec` names; the local one keeps bundles in `data_dir/blobs`.
    pub fn open(spec: &StoreSpec, data_dir: &Path) -> Result<BundleStoreRef, BlobError> {
        Ok(BundleStoreRef(match spec {
            StoreSpec::Local => Arc::new(local::LocalDir::new(data_dir.join("blobs"))),
            StoreSpec::S3(s3) => Arc::new(s3::S3Store::new(s3)?),
        }))
    }
}

/// Whether `name` is a bundle id (64 lowercase hex digits): stores never touch anything else.
pub fn is_bundle_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Which stored blobs to remove: those without a database row, written before `cutoff` (a blob another
/// replica is publishing right now has no row yet; `cutoff` leaves it alone).
pub fn orphans(
    blobs: Vec<(String, SystemTime)>,
    has_row: impl Fn(&str) -> bool,
    cutoff: SystemTime,
) -> Vec<String> {
    blobs
        .into_iter()
        .filter(|(id, written)| *written <= cutoff && !has_row(id))
        .map(|(id, _)| id)
        .collect()
}

/// How old an orphan in a shared (remote) store must be before a starting server removes it.
pub const REMOTE_ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Creates the data directory's `blobs/` and `tmp/`, removes staged uploads a crash left, and, for the local
/// store, blobs without a database row. Returns the paths removed. A remote store is swept once the
/// server runs (`BundleService::sweep_store`).
pub fn sweep(
    data_dir: &Path,
    bundles: &dyn BundleStore,
    store: &dyn Store,
) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let tmp = data_dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut removed = Vec::new();
    for entry in
        std::fs::read_dir(&tmp).with_context(|| format!("cannot list {}", tmp.display()))?
    {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        removed.push(path);
    }
    if let Some(blobs) = bundles.local_dir() {
        removed.extend(local::sweep(blobs, store)?);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// An orphan is removed only when it has no row and is old enough; everything else stays.
        #[test]
        fn only_old_blobs_without_rows_are_orphans(blobs in proptest::collection::btree_map(0u8..40, (0u64..100, any::<bool>()), 0..30), cutoff in 0u64..100) {
            let blobs: Vec<(u8, u64, bool)> = blobs.into_iter().map(|(n, (t, row))| (n, t, row)).collect();
            let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
            let listed: Vec<(String, SystemTime)> = blobs.iter().map(|(n, t, _)| (format!("{n:064x}"), at(*t))).collect();
            let rows: std::collections::HashSet<String> = blobs.iter().filter(|b| b.2).map(|(n, _, _)| format!("{n:064x}")).collect();
            let doomed = orphans(listed.clone(), |id| rows.contains(id), at(cutoff));
            for (id, t) in &listed {
                let expected = !rows.contains(id) && *t <= at(cutoff);
                prop_assert_eq!(doomed.contains(id), expected, "{} {:?}", id, t);
            }
        }
    }

    #[test]
    fn bundle_ids_are_64_lowercase_hex_digits() {
        assert!(is_bundle_id(&"a".repeat(64)));
        assert!(!is_bundle_id(&"A".repeat(64)));
        assert!(!is_bundle_id(&"a".repeat(63)));
        assert!(!is_bundle_id("upload-0123"));
    }
}
