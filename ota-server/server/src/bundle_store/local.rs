//! The default home of bundles: `DATA_DIR/blobs/<sha256>`. A verified staged upload is fsynced, renamed into
//! place and the directory fsynced (the staging file is in `DATA_DIR/tmp`, same file system: the rename is
//! atomic), before the database row is written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ota_image_io::atomic;

use super::{is_bundle_id, Blob, BlobError, BlobSource, BundleStore, Staged};
use crate::store::Store;

/// Bundles in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// Bundles in `dir` (created by [`super::sweep`] at start).
    pub fn new(dir: PathBuf) -> LocalDir {
        LocalDir { dir }
    }

    fn error(&self, what: &'static str, e: impl std::fmt::Display) -> BlobError {
        BlobError {
            store: format!("local directory {}", self.dir.display()),
            what,
            detail: e.to_string(),
            not_found: false,
        }
    }

    /// Whether the blob `id` is there: a regular file, never a link planted in its place (`rename` replaces one).
    fn is_stored(&self, id: &str) -> bool {
        std::fs::symlink_metadata(self.dir.join(id)).is_ok_and(|m| m.is_file())
    }

    fn put_blocking(&self, id: &str, staged: Staged) -> Result<bool, BlobError> {
        let target = self.dir.join(id);
        if self.is_stored(id) {
            return Ok(false);
        }
        let path = staged.file.path().to_path_buf();
        staged
            .file
            .commit()
            .map_err(|e| self.error("syncing the upload", e))?;
        if let Err(e) = std::fs::rename(&path, &target) {
            let _ = std::fs::remove_file(&path);
            return Err(self.error("moving the upload into place", e));
        }
        atomic::sync_dir(&self.dir).map_err(|e| self.error("syncing the directory", e))?;
        Ok(true)
    }

    /// Runs `f` on the blocking pool with a clone of this store.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalDir) -> Result<T, BlobError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, BlobError>> {
        let me = self.clone();
        async move {
            let err = me.error("running a file task", "the task panicked");
            tokio::task::spawn_blocking(move || f(&me))
                .await
                .unwrap_or(Err(err))
        }
        .boxed()
    }
}

impl BundleStore for LocalDir {
    fn put(&self, id: &str, staged: Staged) -> BoxFuture<'_, Result<bool, BlobError>> {
        let id = id.to_string();
        self.blocking(move |me| me.put_blocking(&id, staged))
    }

    fn open(&self, id: &str) -> BoxFuture<'_, Result<Blob, BlobError>> {
        let id = id.to_string();
        self.blocking(move |me| {
            // Never through a link planted in the directory: what it points to would be served as the bundle.
            let path = me.dir.join(&id);
            let file = atomic::open_no_follow(&path, std::fs::OpenOptions::new().read(true))
                .map_err(|e| BlobError {
                    not_found: e.source.kind() == std::io::ErrorKind::NotFound,
                    ..me.error("opening the bundle file", e)
                })?;
            let len = file
                .metadata()
                .map_err(|e| me.error("reading the bundle file's size", e))?
                .len();
            Ok(Blob {
                len,
                source: BlobSource::File(file),
            })
        })
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), BlobError>> {
        let id = id.to_string();
        self.blocking(move |me| match std::fs::remove_file(me.dir.join(&id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(me.error("removing the bundle file", e))
            }
            _ => Ok(()),
        })
    }

    fn exists(&self, id: &str) -> BoxFuture<'_, Result<bool, BlobError>> {
        let id = id.to_string();
        self.blocking(move |me| Ok(me.is_stored(&id)))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, BlobError>> {
        self.blocking(|me| {
            let mut out = Vec::new();
            let entries = std::fs::read_dir(&me.dir).map_err(|e| me.error("listing", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| me.error("listing", e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if is_bundle_id(&name) {
                    let written = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((name, written));
                }
            }
            Ok(out)
        })
    }

    fn presign(
        &self,
        _id: &str,
        _ttl: Duration,
    ) -> BoxFuture<'_, Result<Option<String>, BlobError>> {
        async { Ok(None) }.boxed()
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// Creates `blobs` and removes files in it without a database row (what a crash between the rename and the
/// row left). Returns the paths removed.
pub fn sweep(blobs: &Path, store: &dyn Store) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    std::fs::create_dir_all(blobs).with_context(|| format!("cannot create {}", blobs.display()))?;
    let mut removed = Vec::new();
    for entry in
        std::fs::read_dir(blobs).with_context(|| format!("cannot list {}", blobs.display()))?
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A link planted at a blob's name is neither served nor taken for the stored bundle.
    #[tokio::test]
    async fn a_planted_link_is_not_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        let id = "a".repeat(64);
        std::os::unix::fs::symlink(&victim, dir.path().join(&id)).unwrap();
        let store = LocalDir::new(dir.path().to_path_buf());
        assert!(!store.exists(&id).await.unwrap());
        let err = store.open(&id).await.err().expect("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
