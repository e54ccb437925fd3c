//! The client's own files in the data directory: the state (`state.json`, replaced through
//! `ota_image_io::atomic`: random temp name, fsync, rename, fsync directory) and the lock that serialises
//! writers (`lock`, an `flock` held for the whole operation and released by the kernel if
//! the process dies), and the robot's security floor (`security-floor`, a copy of the state's
//! floor in its own file, so an operator who moves a corrupt state away does not lower it).
//! None of them is opened through a link planted at its name (`ota_image_io::atomic`'s rules).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use ota_client_core::ClientState;
use ota_image_io::atomic::{open_no_follow, read_no_follow, write_atomically, FileError};

/// File name of the state in the data directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the lock in the data directory.
pub const LOCK_FILE: &str = "lock";
/// File name of the security floor in the data directory (one semver and a newline).
pub const FLOOR_FILE: &str = "security-floor";
/// Free space the data directory needs for a few generations of the state file.
pub const STATE_SPACE_NEEDED: u64 = 256 * 1024;

/// A state file problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on a file of the data directory.
    #[error("{op} {}: {error}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The state file is not valid (it is written atomically, so this means outside damage).
    #[error("state file {} is corrupt ({detail}); move it away to let the client start from what is running", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// The security floor file is not a version: never guessed, since a lower guess would let a
    /// vulnerable release back in.
    #[error("security floor file {} is corrupt ({detail}): write the floor this robot last committed (a version, e.g. 2.1.0) into it; nothing is installed or activated until then", path.display())]
    FloorCorrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// Another writer holds the lock.
    #[error("another ota-client operation holds the lock {}: try again when it has finished", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    dir: PathBuf,
}

/// The writer lock, held until dropped.
#[derive(Debug)]
pub struct WriterLock {
    _lock: Flock<File>,
}

impl DataDir {
    /// The data directory at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> DataDir {
        DataDir { dir: dir.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |error| StoreError::Io {
            op,
            path: path.to_path_buf(),
            error,
        }
    }

    /// Takes the writer lock without waiting: a second writer fails at once.
    pub fn lock(&self) -> Result<WriterLock, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("creating", &self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        // Never through a link planted at the lock's name: its target is neither created nor locked.
        let file = open_no_follow(&path, OpenOptions::new().create(true).write(true))
            .map_err(file_error)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(WriterLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Locked { path }),
            Err((_, e)) => Err(StoreError::Io {
                op: "locking",
                path,
                error: e.into(),
            }),
        }
    }

    /// The persisted state, or `None` if the client never wrote one.
    pub fn load(&self) -> Result<Option<ClientState>, StoreError> {
        let path = self.dir.join(STATE_FILE);
        let Some(bytes) = read_no_follow(&path).map_err(file_error)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                detail: e.to_string(),
            })
    }

    /// Replaces the state atomically.
    pub fn save(&self, state: &ClientState) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("creating", &self.dir))?;
        let path = self.dir.join(STATE_FILE);
        let mut bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        bytes.push(b'\n');
        write_atomically(&path, &bytes, 0o644).map_err(file_error)
    }

    /// The security floor kept in its own file, or `None` if none was ever committed.
    pub fn load_floor(&self) -> Result<Option<semver::Version>, StoreError> {
        let path = self.dir.join(FLOOR_FILE);
        let Some(bytes) = read_no_follow(&path).map_err(file_error)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        // Fail closed: a damaged floor refuses operations instead of silently lowering it.
        text.trim()
            .parse()
            .map(Some)
            .map_err(|e: semver::Error| StoreError::FloorCorrupt {
                path,
                detail: e.to_string(),
            })
    }

    /// Replaces the security floor atomically.
    pub fn save_floor(&self, floor: &semver::Version) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("creating", &self.dir))?;
        let path = self.dir.join(FLOOR_FILE);
        write_atomically(&path, format!("{floor}\n").as_bytes(), 0o644).map_err(file_error)
    }

    /// Free bytes for unprivileged writers in the data directory (or its nearest existing
    /// ancestor, before it is created).
    pub fn free_space(&self) -> Result<u64, StoreError> {
        let mut probe = self.dir.as_path();
        while !probe.exists() {
            probe = probe.parent().unwrap_or(Path::new("/"));
        }
        let st = nix::sys::statvfs::statvfs(probe).map_err(|e| StoreError::Io {
            op: "measuring free space in",
            path: probe.to_path_buf(),
            error: e.into(),
        })?;
        Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }
}

fn file_error(e: FileError) -> StoreError {
    StoreError::Io {
        op: e.op,
        path: e.path,
        error: e.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path().join("ota"));
        assert_eq!(d.load().unwrap(), None);
        let mut s = ClientState::default();
        s.record_mut("rootfs", ota_client_core::Slot::B).state =
            ota_client_core::SlotState::Installed;
        d.save(&s).unwrap();
        assert_eq!(d.load().unwrap(), Some(s));
        std::fs::write(d.path().join(STATE_FILE), b"{ not json").unwrap();
        let e = d.load().unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("state.json"), "{e}");
        assert!(d.free_space().unwrap() > 0);
    }

    #[test]
    fn floor_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path().join("ota"));
        assert_eq!(d.load_floor().unwrap(), None);
        d.save_floor(&"2.1.0".parse().unwrap()).unwrap();
        assert_eq!(d.load_floor().unwrap(), Some("2.1.0".parse().unwrap()));
        assert_eq!(
            std::fs::read_to_string(d.path().join(FLOOR_FILE)).unwrap(),
            "2.1.0\n"
        );
        std::fs::write(d.path().join(FLOOR_FILE), b"two").unwrap();
        let e = d.load_floor().unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("security-floor"), "{e}");
    }

    #[test]
    fn second_writer_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        let held = d.lock().unwrap();
        let e = d.lock().unwrap_err().to_string();
        assert!(
            e.contains("another ota-client operation holds the lock"),
            "{e}"
        );
        drop(held);
        d.lock().unwrap();
    }
}
