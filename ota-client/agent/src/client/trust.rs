//! The robot's trust root. The root built into the image (`config.trust_root`) is only where a walk starts; the
//! newest root a walk reached is kept in the data directory ([`KEPT_ROOT`]), outside the A/B slots, so a slot
//! switch keeps it and the image's file is never written. Every verification asks [`Client::trust_root`], and
//! every bundle is verified against [`Client::bundle_trust`]: that root moved forward by the chain the bundle
//! carries. Chains arrive three ways (a poll, `ota-client trust update`, a bundle); each is walked by
//! `ota_keys::chain::walk` and kept by [`Client::keep_root`].

use std::path::{Path, PathBuf};

use ota_bundle_format::trust_chain;
use ota_image_io::atomic::write_atomically;
use ota_keys::chain::{self, parse_chain};
use ota_keys::{RotationError, SignedTrustRoot, TrustRoot, TrustRootError};

use super::{Client, ClientError};

/// Where the accepted root is kept, under the data directory.
pub const KEPT_ROOT: &str = "trust/root.json";

impl Client {
    /// THE trust root every verification uses (install, daemon, status): the kept root unless the image brings a
    /// newer version ([`chain::effective`]). A kept root that cannot be read is an error, never skipped: falling
    /// back to the image's root could bring back a key a rotation revoked.
    pub fn trust_root(&self) -> Result<TrustRoot, ClientError> {
        let image = ota_keys::load_trust_root(&self.config.trust_root)?;
        let kept = match ota_keys::load_trust_root(&self.kept_root_path()) {
            Ok(root) => Some(root),
            Err(TrustRootError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        Ok(chain::effective(image, kept))
    }

    /// The kept root's path.
    pub fn kept_root_path(&self) -> PathBuf {
        self.config.data_dir.join(KEPT_ROOT)
    }

    /// Walks `chain` (any order, one root or many) from [`Client::trust_root`] and keeps the newest root reached,
    /// even when a later link is refused (the robot stays at the last good version). Returns the new version;
    /// an error when a link was refused or nothing in `chain` is newer.
    pub fn trust_walk(&mut self, roots: &[SignedTrustRoot]) -> Result<u64, ClientError> {
        let _lock = self.data.lock()?;
        let start = self.trust_root()?;
        let (reached, refused) = match chain::walk(&start, roots) {
            Ok(root) => (root, None),
            Err(e) => (e.reached, Some(e.error)),
        };
        if reached != start {
            let signed = roots
                .iter()
                .find(|c| c.signed == reached)
                .expect("a walk reaches a root of its chain");
            self.keep_root(signed)?;
        }
        match refused {
            Some(error) => Err((*error).into()),
            None if reached == start => Err(RotationError::VersionNotIncreasing {
                current: start.version,
                candidate: roots.iter().map(|c| c.signed.version).max().unwrap_or(0),
            }
            .into()),
            None => Ok(reached.version),
        }
    }

    /// The root a bundle's signatures are checked against: [`Client::trust_root`] walked through the chain the
    /// bundle carries (`carried`, often empty), all or nothing ([`trust_chain::resolve`]). A newer root is kept
    /// as soon as the walk verified it, before the bundle's signatures are checked and whatever becomes of the
    /// install: it is a valid rotation whichever channel brought it (a poll would accept the same roots), and a
    /// robot that cannot install this bundle must still stop trusting the keys the rotation revoked. A chain
    /// that does not verify refuses the bundle and keeps nothing; one holding nothing newer changes nothing.
    /// The caller holds the data directory's lock (the install does).
    pub(super) fn bundle_trust(
        &self,
        carried: &[SignedTrustRoot],
    ) -> Result<TrustRoot, ClientError> {
        let kept = self.trust_root()?;
        if carried.is_empty() {
            return Ok(kept);
        }
        let resolved = trust_chain::resolve(&kept, carried)?;
        if let Some(newer) = &resolved.adopted {
            self.keep_root(newer)?;
        }
        Ok(resolved.root)
    }

    /// `ota-client trust update FILE`: [`Client::trust_walk`] over a chain file (one root or a JSON list).
    pub fn trust_update(&mut self, file: &Path) -> Result<u64, ClientError> {
        let text = std::fs::read_to_string(file).map_err(|error| ClientError::File {
            op: "reading",
            path: file.display().to_string(),
            error,
        })?;
        let roots = parse_chain(&text).map_err(|e| match e {
            TrustRootError::Parse { detail, .. } => TrustRootError::Parse {
                path: Some(file.to_path_buf()),
                detail,
            },
            TrustRootError::WrongType { found, .. } => TrustRootError::WrongType {
                path: Some(file.to_path_buf()),
                found,
            },
            other => other,
        })?;
        self.trust_walk(&roots)
    }

    /// Keeps `root` as the robot's root: one atomic file write, so a power cut leaves the old root or the new one.
    fn keep_root(&self, root: &SignedTrustRoot) -> Result<(), ClientError> {
        let path = self.kept_root_path();
        let file_error = |e: ota_image_io::atomic::FileError| ClientError::File {
            op: e.op,
            path: e.path.display().to_string(),
            error: e.source,
        };
        let dir = ota_image_io::atomic::parent_dir(&path);
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|error| ClientError::File {
                op: "creating",
                path: dir.display().to_string(),
                error,
            })?;
            // The new directory's own entry must survive a power cut too.
            ota_image_io::atomic::sync_dir(ota_image_io::atomic::parent_dir(dir))
                .map_err(file_error)?;
        }
        write_atomically(&path, root.to_json_pretty().as_bytes(), 0o644).map_err(file_error)
    }
}
