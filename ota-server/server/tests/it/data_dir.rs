//! The data directory and the database are readable by the server's user only, on a fresh start and after a
//! start on a directory left open to others.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;
use ota_keys::SecretKey;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn serve_a_little(dir: &Path) {
    let mut s = settings(dir, &trust(&[&SecretKey::generate()], 1));
    // Generated on the first start, so they are written by the server.
    s.admin_token = None;
    s.enrollment_secret = None;
    let server = TestServer::start(s).await;
    // While it runs, the database's -wal and -shm files are there too.
    assert!(dir.join("ota.sqlite-wal").exists());
    assert_private(dir);
    server.stop().await;
}

fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "the data directory");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            files += 1;
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
    for name in ["ota.sqlite", "admin-token", "enrollment-secret"] {
        assert!(dir.join(name).exists(), "{name}");
    }
    assert!(files >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_is_private() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    serve_a_little(&dir).await;
    assert_private(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_open_to_others_is_tightened() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    serve_a_little(&dir).await;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["ota.sqlite", "admin-token"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // (Never truncate it: the stopped server's last connection may still be closing.)
    let wal = dir.join("ota.sqlite-wal");
    if !wal.exists() {
        std::fs::write(&wal, b"").unwrap();
    }
    std::fs::set_permissions(
        dir.join("ota.sqlite-wal"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    serve_a_little(&dir).await;
    assert_private(&dir);
}
