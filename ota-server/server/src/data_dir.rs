//! The data directory holds the key device tokens are derived from (in the database), the admin token and the
//! enrollment secret: it is readable by the server's own user only (0700, its files 0600, the SQLite
//! database's `-wal` and `-shm` files included). A directory or file found looser is tightened, with a warning
//! saying what it was: the server is its only legitimate reader, and a warning alone leaves the tokens exposed
//! until someone reads the log.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The mode a path should have instead of `mode`: without any group or other bits; `None` when it has none.
pub fn tightened(mode: u32) -> Option<u32> {
    let mode = mode & 0o7777;
    (mode & 0o077 != 0).then_some(mode & !0o077)
}

/// Creates `dir` for this user only, or tightens it and the files directly in it; with `sqlite`, creates that
/// database file 0600 before SQLite does (SQLite gives its `-wal` and `-shm` files the database's mode) or
/// tightens it and its companions.
pub fn make_private(dir: &Path, sqlite: Option<&Path>) -> anyhow::Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))
        }
    }
    tighten(dir);
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the data directory {}", dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            tighten(&entry.path());
        }
    }
    if let Some(db) = sqlite {
        create_private_file(db)?;
        for path in companions(db) {
            tighten(&path);
        }
    }
    Ok(())
}

/// The database and the files SQLite keeps beside it.
fn companions(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates an empty file readable by this user only, unless something is there already (or its directory is
/// missing: opening the database reports that).
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Clears the group and other bits of `path` (never through a link), warning with what they were.
fn tighten(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let Some(mode) = tightened(meta.permissions().mode()) else {
        return;
    };
    let was = meta.permissions().mode() & 0o7777;
    match std::fs::set_permissions(path, Permissions::from_mode(mode)) {
        Ok(()) => tracing::warn!(
            "{} was readable by other users (mode {was:04o}); made it {mode:04o}",
            path.display()
        ),
        Err(e) => tracing::warn!(
            "{} is readable by other users (mode {was:04o}) and cannot be changed ({e}); make it {mode:04o}",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(tightened(0o755), Some(0o700));
        assert_eq!(tightened(0o644), Some(0o600));
        assert_eq!(tightened(0o600), None);
        assert_eq!(tightened(0o40700), None);
    }

    proptest! {
        #[test]
        fn tightened_keeps_the_owner_and_clears_the_rest(mode in 0u32..0o200000) {
            match tightened(mode) {
                None => prop_assert_eq!(mode & 0o077, 0),
                Some(m) => {
                    prop_assert_eq!(m & 0o077, 0);
                    prop_assert_eq!(m & 0o7700, mode & 0o7700);
                }
            }
        }
    }
}
