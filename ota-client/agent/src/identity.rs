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
    let unreadable = |detail: String| IdentityError::Unreadable {
        path: path.clone(),
        detail,
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => SecretKey::from_pem(&pem).map_err(|e| unreadable(e.to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound && provisioned.is_some() => {
            Err(IdentityError::Missing { path })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => create(&path),
        Err(e) => Err(unreadable(e.to_string())),
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
