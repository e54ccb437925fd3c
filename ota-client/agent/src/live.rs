//! Live slot classes: the active slot is whatever the class's symlink points at, switched
//! atomically (new symlink under a random name next to it, rename over, fsync the directory).

use std::path::{Path, PathBuf};

use ota_client_core::Slot;
use ota_image_io::atomic::{is_temp_of, parent_dir, sync_dir, temp_path};

use crate::config::ClassConfig;

/// A symlink problem.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {error}", path.display())]
pub struct LinkError {
    op: &'static str,
    path: PathBuf,
    error: std::io::Error,
}

/// The active slot of a live class: the slot its link points at; a missing link means A
/// (the factory content), a link pointing elsewhere is an error.
pub fn active(class: &ClassConfig) -> Result<Slot, LinkError> {
    let link = class.active_link.as_deref().expect("live class");
    match std::fs::read_link(link) {
        Ok(target) => {
            let resolved = if target.is_relative() {
                link.parent().unwrap_or(Path::new("/")).join(&target)
            } else {
                target.clone()
            };
            for slot in Slot::ALL {
                if resolved == class.path(slot) || target == class.path(slot) {
                    return Ok(slot);
                }
            }
            Err(LinkError {
                op: "resolving",
                path: link.to_path_buf(),
                error: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "it points at {}, which is neither slot a nor b",
                        target.display()
                    ),
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Slot::A),
        Err(error) => Err(LinkError {
            op: "reading",
            path: link.to_path_buf(),
            error,
        }),
    }
}

/// How earlier clients ended the names of new links (`.<link>.<hex>.ota-new`); still swept.
const OLD_TEMP_SUFFIX: &str = ".ota-new";

/// Removes new links a power cut left before their rename (symlinks only: removing one never
/// touches what it points at). Best effort: a leftover costs a directory entry, nothing more.
fn remove_leftovers(link: &Path) {
    let Ok(entries) = std::fs::read_dir(parent_dir(link)) else {
        return;
    };
    let old_prefix = format!(
        ".{}.",
        link.file_name().unwrap_or_default().to_string_lossy()
    );
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let lossy = name.to_string_lossy();
        let old = lossy.starts_with(&old_prefix) && lossy.ends_with(OLD_TEMP_SUFFIX);
        if is_link && (old || is_temp_of(link, &name)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Points the class's link at `slot` atomically. Idempotent.
///
/// The new link is made under a random name beside the old one (`symlink` creates a new entry
/// and never follows one already there, so a name planted in the directory is not written
/// through), renamed over it, and the directory is fsynced.
pub fn switch(class: &ClassConfig, slot: Slot) -> Result<(), LinkError> {
    let link = class.active_link.as_deref().expect("live class");
    let err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |error| LinkError { op, path, error }
    };
    let dir = parent_dir(link);
    remove_leftovers(link);
    let tmp = loop {
        let tmp = temp_path(link);
        match std::os::unix::fs::symlink(class.path(slot), &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err("creating symlink", &tmp)(e)),
        }
    };
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("renaming over", link)(e));
    }
    sync_dir(dir).map_err(|e| LinkError {
        op: e.op,
        path: e.path,
        error: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let class = ClassConfig {
            a: dir.path().join("a.bin"),
            b: dir.path().join("b.bin"),
            size: None,
            active_link: Some(dir.path().join("current")),
            service_restart: vec![],
        };
        assert_eq!(active(&class).unwrap(), Slot::A);
        switch(&class, Slot::B).unwrap();
        assert_eq!(active(&class).unwrap(), Slot::B);
        switch(&class, Slot::B).unwrap();
        switch(&class, Slot::A).unwrap();
        assert_eq!(active(&class).unwrap(), Slot::A);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp link left"
        );
        let leftover = dir.path().join(".current.0123456789abcdef.ota-new");
        std::os::unix::fs::symlink(class.path(Slot::B), &leftover).unwrap();
        switch(&class, Slot::A).unwrap();
        assert!(
            std::fs::symlink_metadata(&leftover).is_err(),
            "a power cut's leftover is removed"
        );
        let leftover = temp_path(&dir.path().join("current"));
        std::os::unix::fs::symlink(class.path(Slot::B), &leftover).unwrap();
        switch(&class, Slot::A).unwrap();
        assert!(
            std::fs::symlink_metadata(&leftover).is_err(),
            "a leftover under the shared temp name is removed too"
        );
        std::fs::remove_file(dir.path().join("current")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", dir.path().join("current")).unwrap();
        assert!(active(&class)
            .unwrap_err()
            .to_string()
            .contains("neither slot"));
    }
}
