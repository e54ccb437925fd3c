//! The server's timestamp: an online key (named in the trust root's `timestamp` role) signs a small document
//! every period, which every poll response carries and `GET /api/trust/timestamp` serves, so robots without a
//! trusted clock can tell fresh metadata from withheld or replayed metadata (docs/time-model.md).
//!
//! The document for a moment is [`ota_keys::timestamp::issue`]'s: aligned to the period, version = issue time,
//! valid three periods. Replicas sharing the key (and roughly a clock) therefore sign the very same bytes,
//! and a robot moving between replicas never sees the version go back except across a period boundary,
//! which it refuses quietly. The key is `--timestamp-key FILE`, else `DATA_DIR/timestamp.key`, generated on
//! first start; `ota-server timestamp-key` prints its public half for the root.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_keys::timestamp::{issue, SignedTimestamp};
use ota_keys::{KeyError, PublicKey, SecretKey};

/// Default `--timestamp-period-secs`: re-signed every hour, valid three.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(3600);

/// The key's prefix in the data directory (`timestamp.key`, `timestamp.pub`).
pub const KEY_PREFIX: &str = "timestamp";

/// Signs the current period's timestamp, once per period.
pub struct Timestamper {
    key: SecretKey,
    period: u64,
    cache: Mutex<Option<Signed>>,
}

/// The last document: `(version, trust_version)` and its JSON.
type Signed = ((u64, u64), Arc<serde_json::Value>);

impl std::fmt::Debug for Timestamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Timestamper({}, every {} s)",
            self.key.key_id(),
            self.period
        )
    }
}

impl Timestamper {
    /// A signer with `key`, re-signing every `period` (at least a second).
    pub fn new(key: SecretKey, period: Duration) -> Self {
        Self {
            key,
            period: period.as_secs().max(1),
            cache: Mutex::new(None),
        }
    }

    /// The public key robots verify with.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The signed document for `now` (Unix seconds) naming `trust_version`: the cached one while the period
    /// and the trust version stay the same, a newly signed one when either moved.
    pub fn current(&self, now: u64, trust_version: u64) -> Arc<serde_json::Value> {
        let ts = issue(now, self.period, trust_version);
        let id = (ts.version, ts.trust_version);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, doc)) = cache.as_ref() {
            if *cached == id {
                return doc.clone();
            }
        }
        let doc = Arc::new(
            serde_json::to_value(SignedTimestamp::sign(ts, &[&self.key]))
                .expect("a timestamp serializes"),
        );
        *cache = Some((id, doc.clone()));
        doc
    }
}

/// Why the timestamp key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TimestampKeyError {
    /// The key file is missing, unreadable or not an ed25519 PKCS#8 key.
    #[error("timestamp key: {0}")]
    Key(#[from] KeyError),
}

/// The signing key: `given` (`--timestamp-key`), else `DATA_DIR/timestamp.key`, generated (with
/// `timestamp.pub`) when missing. Returns the key and, when it was generated now, the public key's file.
pub fn load_or_generate(
    data_dir: &Path,
    given: Option<&Path>,
) -> Result<(SecretKey, Option<PathBuf>), TimestampKeyError> {
    if let Some(path) = given {
        return Ok((ota_keys::load_secret_key(path)?, None));
    }
    let prefix = data_dir.join(KEY_PREFIX);
    let key_file = data_dir.join(format!("{KEY_PREFIX}.key"));
    match std::fs::symlink_metadata(&key_file) {
        Ok(_) => Ok((ota_keys::load_secret_key(&key_file)?, None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (_, public, key) = ota_keys::write_keypair(&prefix)?;
            Ok((key, Some(public)))
        }
        Err(error) => Err(KeyError::Io {
            path: key_file,
            error,
        }
        .into()),
    }
}

/// What an operator puts in the trust root for `key`: its id, its PEM and the `timestamp` role as JSON.
pub fn describe(key: &PublicKey) -> String {
    let role = serde_json::json!({ "threshold": 1, "keys": [key] });
    format!(
        "timestamp key {}\n{}\nIn the trust root's \"signed\" object (then sign the new root with the release keys):\n\
         \"timestamp\": {role}\n",
        key.key_id(),
        key.to_pem().trim_end(),
    )
}

#[cfg(test)]
mod tests {
    use ota_keys::timestamp::{parse_timestamp, verify_timestamp, TimestampRole};
    use ota_keys::TrustRoot;

    use super::*;

    fn root_naming(key: &PublicKey) -> TrustRoot {
        let mut root = TrustRoot::new(4, 1, vec![SecretKey::generate().public_key()]).unwrap();
        root.timestamp = Some(TimestampRole::new(vec![key.clone()]));
        root
    }

    #[test]
    fn signs_once_per_period_and_verifies_with_the_roots_key() {
        let t = Timestamper::new(SecretKey::generate(), Duration::from_secs(3600));
        let root = root_naming(&t.public_key());
        let first = t.current(7_200, 4);
        assert!(
            Arc::ptr_eq(&first, &t.current(10_799, 4)),
            "cached within the period"
        );
        let ts = verify_timestamp(&root, &parse_timestamp(&first).unwrap()).unwrap();
        assert_eq!(
            (ts.version, ts.issued_at, ts.expires, ts.trust_version),
            (7_200, 7_200, 18_000, 4)
        );
        let next = t.current(10_800, 4);
        let ts2 = verify_timestamp(&root, &parse_timestamp(&next).unwrap()).unwrap();
        assert_eq!(ts2.version, 10_800, "re-signed when the period turns");
        let rotated = t.current(10_800, 5);
        assert_eq!(parse_timestamp(&rotated).unwrap().signed.trust_version, 5);
    }

    #[test]
    fn replicas_sharing_a_key_sign_the_same_bytes() {
        let pem = SecretKey::generate().to_pem();
        let a = Timestamper::new(SecretKey::from_pem(&pem).unwrap(), DEFAULT_PERIOD);
        let b = Timestamper::new(SecretKey::from_pem(&pem).unwrap(), DEFAULT_PERIOD);
        assert_eq!(a.current(1_000_000, 1), b.current(1_000_100, 1));
    }

    #[test]
    fn the_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (key, generated) = load_or_generate(dir.path(), None).unwrap();
        let public = generated.expect("generated on first start");
        assert_eq!(
            ota_keys::load_public_key(&public).unwrap(),
            key.public_key()
        );
        let (again, generated) = load_or_generate(dir.path(), None).unwrap();
        assert!(generated.is_none());
        assert_eq!(again.public_key(), key.public_key());
        let text = describe(&key.public_key());
        assert!(text.contains(&key.key_id().to_string()), "{text}");
        let role = text
            .lines()
            .find_map(|l| l.strip_prefix("\"timestamp\": "))
            .unwrap_or_else(|| panic!("{text}"));
        let role: TimestampRole = serde_json::from_str(role).unwrap();
        assert_eq!(role, TimestampRole::new(vec![key.public_key()]));
        let e = load_or_generate(dir.path(), Some(&dir.path().join("nope.key"))).unwrap_err();
        assert!(e.to_string().contains("nope.key"), "{e}");
    }
}
