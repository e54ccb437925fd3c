//! The two file operations the whole-file stores share.

use std::io::ErrorKind;
use std::path::Path;

use ota_bootloader::BootEnvError;
use ota_image_io::atomic::{self, FileError};

/// Mode of an environment file the stores create (grub-editenv's).
const ENV_FILE_MODE: u32 = 0o644;

/// Replaces `path` by `bytes` so that a power cut leaves the old or the new file.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), BootEnvError> {
    atomic::write_atomically(path, bytes, ENV_FILE_MODE).map_err(file_error)
}

/// The shared writer's error as the stores' (same step, path and cause).
pub(crate) fn file_error(FileError { op, path, source }: FileError) -> BootEnvError {
    BootEnvError::Io { op, path, source }
}

/// Reads a whole file; `Ok(None)` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BootEnvError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BootEnvError::io("reading", path, e)),
    }
}
