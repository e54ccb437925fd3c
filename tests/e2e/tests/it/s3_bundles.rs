//! A robot installs a bundle kept in a real S3-compatible store (ota_testkit::s3): streamed through the
//! server, and fetched straight from the store after the server's presigned 307 (the robot's token stays
//! with the server; the robot verifies every byte against its own trust root either way).

use ota_client::source::HttpRequest;
use ota_client::{BundleSource, InstallOptions, NoProgress};
use ota_testkit::robot::{release_key, rootfs_bundle, Backend, Robot};
use ota_testkit::s3::S3Server;
use ota_testkit::server::{ServerHandle, ServerOptions};

fn install_from_s3(presign: bool) {
    let Some(s3) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let trust = ota_testkit::release::trust_root(&[release_key()], 1);
    let server = ServerHandle::start_with(
        &ServerOptions::new(&dir.path().join("server"), trust),
        |s| s3.serve_bundles(s, "fleet", presign),
    )
    .unwrap();
    let id = server
        .admin()
        .publish_bytes(rootfs_bundle("2.0.0"))
        .unwrap()
        .bundle_id;
    assert_eq!(s3.objects(), vec![format!("fleet/{id}")]);
    let r = Robot::new(Backend::File);
    let standby = r.booted().other();
    let url = format!("{}/api/bundles/{id}/download", server.base);
    let source = BundleSource::Http(HttpRequest::bearer(&url, &server.admin_token));
    r.client()
        .install(&source, &InstallOptions::default(), &mut NoProgress)
        .unwrap();
    assert_eq!(r.slot_bytes("rootfs", standby), r.rootfs_image("2.0.0"));
}

#[test]
fn a_robot_installs_a_bundle_kept_in_s3_through_the_server() {
    install_from_s3(false);
}

#[test]
fn a_robot_installs_a_bundle_kept_in_s3_by_the_presigned_redirect() {
    install_from_s3(true);
}
