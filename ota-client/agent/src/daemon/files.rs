//! The daemon's files in the data directory: its saved [`DaemonState`] and the device token,
//! both written atomically with mode 0600 and never read through a link planted at their names,
//! and this robot's default device id.

use std::io;
use std::path::{Path, PathBuf};

use ota_client_core::daemon::DaemonState;
use ota_image_io::atomic::{read_no_follow, write_atomically, FileError};

use super::error::DaemonError;

/// The device token, in the data directory.
pub const TOKEN_FILE: &str = "device-token";
/// The daemon's own state (identity, the offer being worked on), in the data directory.
pub const STATE_FILE: &str = "daemon-state.json";

/// The state and token files of one data directory.
pub(super) struct Files {
    state: PathBuf,
    token: PathBuf,
}

impl Files {
    /// The files in `data_dir`, which is created if missing.
    pub(super) fn open(data_dir: &Path) -> Result<Files, DaemonError> {
        std::fs::create_dir_all(data_dir).map_err(|error| DaemonError::File {
            op: "creating",
            path: data_dir.to_path_buf(),
            error,
        })?;
        Ok(Files {
            state: data_dir.join(STATE_FILE),
            token: data_dir.join(TOKEN_FILE),
        })
    }

    /// The saved state; `None` if never saved.
    pub(super) fn load_state(&self) -> Result<Option<DaemonState>, DaemonError> {
        match read_no_follow(&self.state).map_err(file_error)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| DaemonError::Corrupt {
                        path: self.state.clone(),
                        detail: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    pub(super) fn save_state(&self, state: &DaemonState) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec_pretty(state).expect("serialisable");
        write_atomically(&self.state, &bytes, 0o600).map_err(file_error)
    }

    /// The stored token, if any. Never read through a link planted at its name: what it points to would be
    /// sent to the server as the token.
    pub(super) fn token(&self) -> Result<Option<String>, DaemonError> {
        let bytes = read_no_follow(&self.token).map_err(file_error)?;
        let text = bytes.map(|b| String::from_utf8_lossy(&b).trim().to_string());
        Ok(text.filter(|t| !t.is_empty()))
    }

    pub(super) fn save_token(&self, token: &str) -> Result<(), DaemonError> {
        write_atomically(&self.token, token.as_bytes(), 0o600).map_err(file_error)
    }

    pub(super) fn remove_token(&self) -> Result<(), DaemonError> {
        match std::fs::remove_file(&self.token) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.error("removing", &self.token, error)),
        }
    }

    fn error(&self, op: &'static str, path: &Path, error: io::Error) -> DaemonError {
        DaemonError::File {
            op,
            path: path.to_path_buf(),
            error,
        }
    }
}

pub(super) fn file_error(e: FileError) -> DaemonError {
    DaemonError::File {
        op: e.op,
        path: e.path,
        error: e.source,
    }
}

/// The daemon state for tests and tools: the id this robot enrolled as, if it has.
pub fn enrolled_device_id(data_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(data_dir.join(STATE_FILE)).ok()?;
    let state: DaemonState = serde_json::from_slice(&bytes).ok()?;
    data_dir
        .join(TOKEN_FILE)
        .exists()
        .then_some(state.device_id)
}

/// This robot's id when `[server] device_id` is not set: /etc/machine-id, else the hostname.
pub fn default_device_id() -> Result<String, DaemonError> {
    let mut tried = Vec::new();
    for path in [
        "/etc/machine-id",
        "/proc/sys/kernel/hostname",
        "/etc/hostname",
    ] {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let id = text.trim().to_string();
                match ota_protocol::validate_device_id(&id) {
                    Ok(()) => return Ok(id),
                    Err(e) => tried.push(format!("{path}: {e}")),
                }
            }
            Err(e) => tried.push(format!("{path}: {e}")),
        }
    }
    Err(DaemonError::DeviceId(tried.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link planted at the token's or the state's name is never read (its target would go to the server as
    /// the token) nor written through.
    #[test]
    fn planted_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        let files = Files::open(dir.path()).unwrap();
        for name in [TOKEN_FILE, STATE_FILE] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let err = files.token().unwrap_err().to_string();
        assert!(
            err.contains("symbolic link") && err.contains(TOKEN_FILE),
            "{err}"
        );
        assert!(files.load_state().is_err());
        files.save_token("new").unwrap();
        assert_eq!(files.token().unwrap().as_deref(), Some("new"));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret");
    }
}
