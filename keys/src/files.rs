//! Key files: creating a key pair (never overwriting one) and loading keys. Other files that must survive a power
//! cut are written with `ota_image_io::atomic`, not with this module.
//!
//! Unix only: file modes are part of the security model (secret keys are 0600).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ota_image_io::atomic::{parent_dir, sync_dir};
use zeroize::Zeroizing;

use crate::{KeyError, PublicKey, SecretKey};

/// `prefix` + `suffix` as a path. Unlike `Path::with_extension` this keeps dots
/// already in the prefix (`release-2026.11` → `release-2026.11.key`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(prefix.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Write `bytes` to an already created file with exactly `mode` (independent of
/// the umask) and fsync it.
fn fill(file: &mut File, bytes: &[u8], mode: u32) -> io::Result<()> {
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Create `path` (which must not exist) with `mode` and write `bytes` to it; on
/// failure nothing is left behind.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => KeyError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => KeyError::Io {
                path: path.to_path_buf(),
                error: source,
            },
        })?;
    if let Err(source) = fill(&mut file, bytes, mode) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(KeyError::Io {
            path: path.to_path_buf(),
            error: source,
        });
    }
    Ok(())
}

/// Generate a new key pair and write `PREFIX.key` (PKCS#8 PEM, mode 0600) and
/// `PREFIX.pub` (SubjectPublicKeyInfo PEM, mode 0644).
///
/// Never overwrites: if either file exists nothing is written
/// ([`KeyError::AlreadyExists`]), because replacing a signing key by accident
/// cannot be undone. The secret key file is created with mode 0600 from the
/// start, so it is never readable by others, and it is removed again if the
/// public key cannot be written. Both files and the directory are fsynced.
pub fn write_keypair(prefix: &Path) -> Result<(PathBuf, PathBuf, SecretKey), KeyError> {
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    for path in [&key_path, &pub_path] {
        // symlink_metadata: a dangling symlink also counts as "exists".
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(KeyError::AlreadyExists { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.clone(),
                    error: source,
                })
            }
        }
    }

    let secret = SecretKey::generate();
    write_new_file(&key_path, secret.to_pem().as_bytes(), 0o600)?;
    if let Err(e) = write_new_file(&pub_path, secret.public_key().to_pem().as_bytes(), 0o644) {
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    sync_dir(parent_dir(&key_path)).map_err(|e| KeyError::Io {
        path: e.path,
        error: e.source,
    })?;
    Ok((key_path, pub_path, secret))
}

/// Read a key file as text, keeping secret bytes out of unzeroed buffers.
fn read_pem_file(path: &Path, expected: &'static str) -> Result<Zeroizing<String>, KeyError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        error: source,
    })?);
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => Err(KeyError::NotPem {
            path: Some(path.to_path_buf()),
            expected,
        }),
    }
}

/// Load a PKCS#8 PEM secret key (ours or `openssl genpkey -algorithm ed25519`).
pub fn load_secret_key(path: &Path) -> Result<SecretKey, KeyError> {
    let pem = read_pem_file(path, "PRIVATE KEY")?;
    SecretKey::from_pem(&pem).map_err(|e| e.with_path(path))
}

/// Load a SubjectPublicKeyInfo PEM public key (ours or `openssl pkey -pubout`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let pem = read_pem_file(path, "PUBLIC KEY")?;
    PublicKey::from_pem(&pem).map_err(|e| e.with_path(path))
}
