//! `<state_dir>/download.json`: how far an image write got, so a restarted install continues from there
//! (what it may keep is decided by [`ota_client_core::resume`]). Written atomically after the slot was synced.

use std::io;
use std::path::{Path, PathBuf};

use ota_client_core::resume::DownloadJournal;
use ota_image_io::atomic::write_atomically;

use crate::client::ClientError;

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "download.json";

/// The journal file of a state directory.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join(JOURNAL_FILE)
}

/// Reads the journal. A missing or unreadable one is no journal: resuming is an optimisation, and every byte it
/// points at is verified again before use.
pub fn load(path: &Path) -> Option<DownloadJournal> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Persists the journal (atomically: a power cut leaves the old one or the new one).
pub fn save(path: &Path, journal: &DownloadJournal) -> Result<(), ClientError> {
    let bytes = serde_json::to_vec_pretty(journal).expect("the journal serializes");
    write_atomically(path, &bytes, 0o600).map_err(|e| ClientError::File {
        op: e.op,
        path: e.path.display().to_string(),
        error: e.source,
    })
}

/// Removes the journal (the image verified, or another bundle is being written).
pub fn remove(path: &Path) -> Result<(), ClientError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ClientError::File {
            op: "removing the download journal",
            path: path.display().to_string(),
            error,
        }),
    }
}

/// Removes the journal if it belongs to another bundle than `bundle` (whose write is about to start).
pub fn discard_other(path: &Path, bundle: &str) -> Result<(), ClientError> {
    match load(path) {
        Some(j) if ota_client_core::resume::journal_is_stale(&j, bundle) => remove(path),
        _ => Ok(()),
    }
}
