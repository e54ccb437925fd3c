//! Live slot classes: the active slot is whatever the class's symlink points at, switched
//! atomically (new symlink next to it, rename over, fsync the directory).

use std::path::{Path, PathBuf};

use ota_client_core::Slot;

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

/// Points the class's link at `slot` atomically. Idempotent.
pub fn switch(class: &ClassConfig, slot: Slot) -> Result<(), LinkError> {
    let link = class.active_link.as_deref().expect("live class");
    let err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |error| LinkError { op, path, error }
    };
    let dir = link.parent().unwrap_or(Path::new("/"));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(link.file_name().unwrap_or_default());
    tmp_name.push(".ota-new");
    let tmp = dir.join(tmp_name);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing", &tmp)(e)),
    }
    std::os::unix::fs::symlink(class.path(slot), &tmp).map_err(err("creating symlink", &tmp))?;
    std::fs::rename(&tmp, link).map_err(err("renaming over", link))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("syncing", dir))
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
        std::fs::remove_file(dir.path().join("current")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", dir.path().join("current")).unwrap();
        assert!(active(&class)
            .unwrap_err()
            .to_string()
            .contains("neither slot"));
    }
}
