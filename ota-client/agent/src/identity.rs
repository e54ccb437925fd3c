//! The robot's own ed25519 key pair: it proves to the server that a robot is the one an operator admitted
//! (enrollment signs a one-time server challenge with it). Generated on first start into the data partition
//! (`<data_dir>/identity/device.pem`, outside the A/B slots, directory 0700, file 0600, written atomically), or
//! provisioned at the factory (`[server] identity_key = PATH`). A key that exists is never replaced: one that
//! cannot be read is an error, because a new key is a new robot in the server's eyes.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ota_keys::SecretKey;
use ota_protocol::device::enroll_message;

/// Directory of the generated key, under the data directory.
pub const IDENTITY_DIR: &str = "identity";
/// The generated key's file name.
pub const KEY_FILE: &str = "device.pem";

/// Why the robot has no usable identity key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key exists but cannot be read or parsed.
    #[error("cannot read the robot's identity key {}: {detail}; restore it (a new key makes the server see a new robot that an operator must admit again)", path.display())]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A factory-provisioned key (`identity_key`) is missing.
    #[error("the robot's identity key {} (server.identity_key) does not exist; provision it or remove identity_key to generate one", path.display())]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// A new key cannot be written.
    #[error("cannot create the robot's identity key {}: {detail}", path.display())]
    Create {
        /// The key file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Where the key lives: the provisioned one, else the generated one's place in `data_dir`.
pub fn key_path(data_dir: &Path, provisioned: Option<&Path>) -> PathBuf {
    provisioned.map_or_else(
        || data_dir.join(IDENTITY_DIR).join(KEY_FILE),
        Path::to_path_buf,
    )
}

/// The robot's key: read, or on first start generated (never with a provisioned path).
pub fn load_or_create(
    data_dir: &Path,
    provisioned: Option<&Path>,
) -> Result<SecretKey, IdentityError> {
    let path = key_path(data_dir, provisioned);
    match load(data_dir, provisioned)? {
        Some(key) => Ok(key),
        None if provisioned.is_some() => Err(IdentityError::Missing { path }),
        None => create(&path),
    }
}

/// The robot's key if it has one (`None`: not generated yet, or a provisioned file missing); never creates it.
pub fn load(
    data_dir: &Path,
    provisioned: Option<&Path>,
) -> Result<Option<SecretKey>, IdentityError> {
    let path = key_path(data_dir, provisioned);
    let unreadable = |detail: String| IdentityError::Unreadable {
        path: path.clone(),
        detail,
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => SecretKey::from_pem(&pem)
            .map(Some)
            .map_err(|e| unreadable(e.to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// What `ota-client identity show` tells an operator (e.g. to pre-authorise the robot on the server).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shown {
    /// Where the key is (or will be) kept.
    pub path: PathBuf,
    /// Whether it was provisioned (`[server] identity_key`) rather than generated.
    pub provisioned: bool,
    /// The key's id (as in trust roots and signatures); `None` while there is no key.
    pub key_id: Option<String>,
    /// The public key as the server stores it (64 hex digits).
    pub public_key_hex: Option<String>,
    /// The public key as an SPKI PEM (what `ota-server devices preauthorize --key` reads).
    pub public_key_pem: Option<String>,
    /// The id this robot enrolled as, if it has.
    pub device_id: Option<String>,
}

impl Shown {
    /// The robot's identity as kept in `data_dir` (read only: a missing key is shown as missing, not made).
    pub fn read(
        data_dir: &Path,
        provisioned: Option<&Path>,
        device_id: Option<String>,
    ) -> Result<Shown, IdentityError> {
        let key = load(data_dir, provisioned)?;
        let public = key.as_ref().map(SecretKey::public_key);
        Ok(Shown {
            path: key_path(data_dir, provisioned),
            provisioned: provisioned.is_some(),
            key_id: public.as_ref().map(|p| p.key_id().to_string()),
            public_key_hex: key.as_ref().map(public_key_hex),
            public_key_pem: public.as_ref().map(|p| p.to_pem()),
            device_id,
        })
    }

    /// The lines `identity show` prints.
    pub fn lines(&self) -> Vec<String> {
        let how = if self.provisioned {
            "provisioned"
        } else {
            "generated"
        };
        let mut out = vec![format!("key file:    {} ({how})", self.path.display())];
        match (&self.key_id, &self.public_key_hex) {
            (Some(id), Some(hex)) => {
                out.push(format!("key id:      {id}"));
                out.push(format!("public key:  {hex}"));
            }
            _ if self.provisioned => {
                out.push("key id:      none: the provisioned key file does not exist".to_string())
            }
            _ => out.push(
                "key id:      none yet: the daemon generates the key at its first start"
                    .to_string(),
            ),
        }
        out.push(match &self.device_id {
            Some(id) => format!("device id:   {id} (enrolled)"),
            None => "device id:   not enrolled".to_string(),
        });
        if let Some(pem) = &self.public_key_pem {
            out.extend(pem.lines().map(str::to_string));
        }
        out
    }
}

fn create(path: &Path) -> Result<SecretKey, IdentityError> {
    let failed = |detail: String| IdentityError::Create {
        path: path.to_path_buf(),
        detail,
    };
    let dir = ota_image_io::atomic::parent_dir(path);
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Made by an older start that stopped before writing the key: tighten it all the same.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| failed(e.to_string()))?;
        }
        Err(e) => return Err(failed(e.to_string())),
    }
    let key = SecretKey::generate();
    ota_image_io::atomic::write_atomically(path, key.to_pem().as_bytes(), 0o600)
        .map_err(|e| failed(e.to_string()))?;
    Ok(key)
}

/// The public key as the server stores it: 64 hex digits.
pub fn public_key_hex(key: &SecretKey) -> String {
    hex::encode(key.public_key().to_bytes())
}

/// The signature (128 hex digits) of an enrollment ([`enroll_message`]).
pub fn sign_enrollment(
    key: &SecretKey,
    device_id: &str,
    challenge: &str,
    request_id: &str,
) -> String {
    let message = enroll_message(device_id, &public_key_hex(key), challenge, request_id);
    hex::encode(key.sign(&message).sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn generated_once_private_and_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), None).unwrap();
        let path = key_path(dir.path(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let bytes = std::fs::read(&path).unwrap();
        let again = load_or_create(dir.path(), None).unwrap();
        assert_eq!(public_key_hex(&first), public_key_hex(&again));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is not rewritten"
        );
    }

    #[test]
    fn an_unreadable_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path(), None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        let e = load_or_create(dir.path(), None).unwrap_err();
        assert!(matches!(e, IdentityError::Unreadable { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[test]
    fn a_provisioned_key_is_used_and_never_generated() {
        let dir = tempfile::tempdir().unwrap();
        let factory = dir.path().join("factory.pem");
        let e = load_or_create(dir.path(), Some(&factory)).unwrap_err();
        assert!(matches!(e, IdentityError::Missing { .. }), "{e}");
        assert!(!factory.exists());
        let key = SecretKey::generate();
        std::fs::write(&factory, key.to_pem().as_bytes()).unwrap();
        let got = load_or_create(dir.path(), Some(&factory)).unwrap();
        assert_eq!(public_key_hex(&got), public_key_hex(&key));
        assert!(!key_path(dir.path(), None).exists());
    }

    #[test]
    fn show_reads_without_creating_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let none = Shown::read(dir.path(), None, None).unwrap();
        assert_eq!(none.key_id, None);
        assert!(
            !key_path(dir.path(), None).exists(),
            "show never makes a key"
        );
        assert!(none.lines()[1].contains("none yet"), "{:?}", none.lines());
        let key = load_or_create(dir.path(), None).unwrap();
        let shown = Shown::read(dir.path(), None, Some("r1".into())).unwrap();
        assert_eq!(shown.key_id, Some(key.key_id().to_string()));
        assert_eq!(shown.public_key_hex, Some(public_key_hex(&key)));
        let pem = shown.public_key_pem.clone().unwrap();
        assert_eq!(
            ota_keys::PublicKey::from_pem(&pem).unwrap(),
            key.public_key()
        );
        let lines = shown.lines().join("\n");
        assert!(lines.contains("device id:   r1 (enrolled)"), "{lines}");
        assert!(lines.contains(&pem.trim_end().to_string()), "{lines}");
        assert!(lines.contains(&key_path(dir.path(), None).display().to_string()));
        let factory = dir.path().join("factory.pem");
        let missing = Shown::read(dir.path(), Some(&factory), None).unwrap();
        assert!(missing.provisioned && missing.key_id.is_none());
        assert!(missing.lines()[1].contains("provisioned key file does not exist"));
    }

    #[test]
    fn the_signature_verifies_over_the_enrollment_message() {
        let key = SecretKey::generate();
        let sig = sign_enrollment(&key, "r1", "c1.x", "req-1");
        let raw: [u8; 64] = hex::decode(sig).unwrap().try_into().unwrap();
        let signature = ota_keys::Signature {
            key_id: key.key_id(),
            sig: raw,
        };
        let message = enroll_message("r1", &public_key_hex(&key), "c1.x", "req-1");
        key.public_key().verify(&message, &signature).unwrap();
        let other = enroll_message("r2", &public_key_hex(&key), "c1.x", "req-1");
        assert!(key.public_key().verify(&other, &signature).is_err());
    }
}
