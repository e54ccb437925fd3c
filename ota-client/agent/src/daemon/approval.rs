//! The local confirmation a rollout may require before the reboot: `ota-client approve`
//! writes `DATA_DIR/approval.json` naming the bundle's manifest digest (atomically, so a
//! power cut leaves the old approval or the new one); the daemon reboots into that bundle only
//! while the file names it, so an approval never carries over to another release.

use std::path::Path;

use ota_image_io::atomic::write_atomically;
use serde::{Deserialize, Serialize};

use super::error::DaemonError;
use super::files::{file_error, Files};

/// The approval, in the data directory.
pub const APPROVAL_FILE: &str = "approval.json";

/// What `ota-client approve` confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The bundle's identity.
    pub manifest_digest: String,
    /// Its release, when known (for people reading the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<semver::Version>,
}

/// Approves the reboot into `manifest_digest`, or (`None`) into the update the daemon works on.
pub fn approve(data_dir: &Path, manifest_digest: Option<&str>) -> Result<Approval, DaemonError> {
    let active = Files::open(data_dir)?.load_state()?.and_then(|s| s.active);
    let approval = match (manifest_digest, active) {
        (Some(d), active) => Approval {
            manifest_digest: d.to_string(),
            version: active.filter(|a| a.manifest_digest == d).map(|a| a.version),
        },
        (None, Some(a)) => Approval {
            manifest_digest: a.manifest_digest,
            version: Some(a.version),
        },
        (None, None) => return Err(DaemonError::NothingToApprove),
    };
    let bytes = serde_json::to_vec_pretty(&approval).expect("serialisable");
    write_atomically(&data_dir.join(APPROVAL_FILE), &bytes, 0o600).map_err(file_error)?;
    Ok(approval)
}

/// Whether the reboot into `manifest_digest` was approved (a missing or unreadable file: no).
pub(super) fn approved(data_dir: &Path, manifest_digest: &str) -> bool {
    std::fs::read(data_dir.join(APPROVAL_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Approval>(&bytes).ok())
        .is_some_and(|a| a.manifest_digest == manifest_digest)
}

#[cfg(test)]
mod tests {
    use ota_client_core::daemon::{ActiveOffer, DaemonState};

    use super::*;

    #[test]
    fn an_approval_names_one_bundle_and_defaults_to_the_one_worked_on() {
        let dir = tempfile::tempdir().unwrap();
        let err = approve(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("no update is waiting"), "{err}");
        assert!(!approved(dir.path(), "d1"));
        let mut state = DaemonState::new("robot", 1);
        state.active = Some(ActiveOffer {
            rollout_id: 3,
            bundle_id: "b".into(),
            version: "2.0.0".parse().unwrap(),
            manifest_digest: "d1".into(),
            rebooting: false,
            staged: true,
        });
        Files::open(dir.path()).unwrap().save_state(&state).unwrap();
        let a = approve(dir.path(), None).unwrap();
        assert_eq!(a.version, Some("2.0.0".parse().unwrap()));
        assert!(approved(dir.path(), "d1"));
        assert!(!approved(dir.path(), "d2"), "not another release");
        approve(dir.path(), Some("d2")).unwrap();
        assert!(approved(dir.path(), "d2") && !approved(dir.path(), "d1"));
        std::fs::write(dir.path().join(APPROVAL_FILE), b"{").unwrap();
        assert!(
            !approved(dir.path(), "d2"),
            "a damaged file approves nothing"
        );
    }
}
