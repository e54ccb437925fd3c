//! `trust update`: installing a rotated trust root the installed one accepts.

use std::path::Path;

use ota_image_io::atomic::write_atomically;

use super::{Client, ClientError};

impl Client {
    /// Installs a rotated trust root if the installed one accepts it.
    pub fn trust_update(&mut self, candidate: &Path) -> Result<u64, ClientError> {
        let _lock = self.data.lock()?;
        let current = ota_keys::load_trust_root(&self.config.trust_root)?;
        let text = std::fs::read_to_string(candidate).map_err(|error| ClientError::File {
            op: "reading",
            path: candidate.display().to_string(),
            error,
        })?;
        let signed = ota_keys::SignedTrustRoot::from_json(&text)?;
        let accepted = ota_keys::accept_rotation(&current, &signed)?;
        write_atomically(
            &self.config.trust_root,
            signed.to_json_pretty().as_bytes(),
            0o644,
        )
        .map_err(|e| ClientError::File {
            op: e.op,
            path: e.path.display().to_string(),
            error: e.source,
        })?;
        Ok(accepted.version)
    }
}
