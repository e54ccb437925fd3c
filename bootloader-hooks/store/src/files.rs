//! The stores that keep the environment in one whole file: GRUB's `grubenv` and the `file`
//! backend's state file.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use ota_bootloader::{grubenv, statefile, BootEnvError, EnvState, EnvStore};

use ota_image_io::atomic::open_no_follow;

use crate::fsio::{file_error, read_optional, replace_file};

/// Overwrites an existing file of the same length from offset 0 and syncs it, touching no
/// filesystem metadata but the timestamps.
/// Never through a link: a link swapped in after the caller's check is refused, not written through.
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), BootEnvError> {
    let mut f = open_no_follow(path, OpenOptions::new().write(true)).map_err(file_error)?;
    f.write_all(bytes)
        .map_err(|e| BootEnvError::io("writing", path, e))?;
    f.sync_all()
        .map_err(|e| BootEnvError::io("syncing", path, e))
}

/// GRUB's environment block file (e.g. `/boot/grub/grubenv` or `/boot/efi/EFI/BOOT/grubenv`).
///
/// An existing block is rewritten in place, the way GRUB's own `save_env` does: same file, same
/// clusters, same size, so no filesystem metadata changes. That matters on a FAT ESP, where a
/// power cut during a temp-file + rename left a directory entry pointing at a freed cluster
/// (found by the QEMU power-cut tests; `fsck.fat -a` would then truncate the env). The variables
/// the client changes sit in the block's first 512-byte sector, which storage writes atomically.
/// Only a missing file (a factory image) is created, by temp file + rename. A link is never written
/// through: one at the grubenv's path is replaced by the file itself (a link planted there must not
/// redirect the write), so where a distribution links `/boot/grub/grubenv` into the ESP, configure
/// the ESP's file (the link's target) as the grubenv.
#[derive(Debug, Clone)]
pub struct GrubEnvFile {
    /// The grubenv file.
    pub path: PathBuf,
}

impl GrubEnvFile {
    /// A store for the grubenv at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        GrubEnvFile { path: path.into() }
    }
}

impl EnvStore for GrubEnvFile {
    fn load(&self) -> Result<EnvState, BootEnvError> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(EnvState::NeverWritten);
        };
        let vars = grubenv::parse(&bytes).map_err(|e| e.context(self.describe()))?;
        Ok(if vars.is_empty() {
            EnvState::NeverWritten
        } else {
            EnvState::Vars(vars)
        })
    }

    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let block = grubenv::encode(vars).map_err(|e| e.context(self.describe()))?;
        // `symlink_metadata`: a link is never the file to rewrite in place, whatever its target's size.
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_file() && meta.len() == block.len() as u64 => {
                rewrite_in_place(&self.path, &block)
            }
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(BootEnvError::io("inspecting", &self.path, e))
            }
            _ => replace_file(&self.path, &block),
        }
    }

    fn describe(&self) -> String {
        format!("GRUB environment {}", self.path.display())
    }
}

/// The `file` backend ([`statefile`] format) for custom bootloaders and tests.
#[derive(Debug, Clone)]
pub struct StateFile {
    /// The state file.
    pub path: PathBuf,
}

impl StateFile {
    /// A store for the state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }
}

impl EnvStore for StateFile {
    fn load(&self) -> Result<EnvState, BootEnvError> {
        match read_optional(&self.path)? {
            None => Ok(EnvState::NeverWritten),
            Some(bytes) => statefile::parse(&bytes)
                .map(EnvState::Vars)
                .map_err(|e| e.context(self.describe())),
        }
    }

    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let bytes = statefile::encode(vars).map_err(|e| e.context(self.describe()))?;
        replace_file(&self.path, &bytes)
    }

    fn describe(&self) -> String {
        format!("boot state file {}", self.path.display())
    }
}
