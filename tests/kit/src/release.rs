//! Release keys and a trust root made on disk, as `ota-bundle keygen` and `ota-bundle trust` would.

use std::path::Path;

use anyhow::Context;
use ota_keys::{SecretKey, TrustRoot};

/// Release keys and the trust root made for a demo or test.
pub struct Release {
    /// The signing key.
    pub key: SecretKey,
    /// The trust root (the key, threshold 1).
    pub trust: TrustRoot,
}

impl Release {
    /// Generates a key pair under `dir` (`release.key`, `release.pub`) and a signed trust root
    /// (`trust.json`).
    pub fn create(dir: &Path) -> anyhow::Result<Release> {
        std::fs::create_dir_all(dir)?;
        let (_, _, key) = ota_keys::write_keypair(&dir.join("release"))
            .context("cannot write the release key pair")?;
        let root = TrustRoot::new(1, 1, vec![key.public_key()])?;
        let mut signed = ota_keys::SignedTrustRoot::new(root);
        signed.sign(&key);
        let path = dir.join("trust.json");
        std::fs::write(&path, signed.to_json_pretty())?;
        let trust = ota_keys::load_trust_root(&path)
            .with_context(|| format!("cannot load {}", path.display()))?;
        Ok(Release { key, trust })
    }
}

/// A trust root of `keys` needing `threshold` of them (version 1).
pub fn trust_root(keys: &[&SecretKey], threshold: u32) -> TrustRoot {
    TrustRoot::new(1, threshold, keys.iter().map(|k| k.public_key()).collect())
        .expect("a valid trust root")
}
