//! The in-process server: secrets generated on first start and read back on the next, API clients with and
//! without the admin token, settings changed before it opens.

use ota_protocol::client::ErrorKind;
use ota_testkit::release::trust_root;
use ota_testkit::robot::{bundle_with, release_key, COMPATIBLE};
use ota_testkit::server::{ServerHandle, ServerOptions};

#[test]
fn a_server_starts_keeps_its_secrets_and_answers_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::new(&dir.path().join("server"), trust_root(&[release_key()], 1));
    let first = ServerHandle::start(&options).unwrap();
    assert!(
        first.base.starts_with("http://127.0.0.1:"),
        "{}",
        first.base
    );
    assert!(first.admin().bundles().unwrap().is_empty());
    let refused = first.anonymous().bundles().unwrap_err();
    assert_eq!(refused.status, Some(401), "{refused}");
    assert_eq!(refused.kind, ErrorKind::Reauthenticate);
    let bundle = bundle_with(
        release_key(),
        "1.1.0",
        COMPATIBLE,
        &[("rootfs", vec![7; 4096])],
    );
    first.admin().publish_bytes(bundle).unwrap();
    let (token, secret) = (first.admin_token.clone(), first.enrollment_secret.clone());
    first.stop().unwrap();

    let second = ServerHandle::start(&options).unwrap();
    assert_eq!(
        (second.admin_token.clone(), second.enrollment_secret.clone()),
        (token, secret)
    );
    assert_eq!(
        second.admin().bundles().unwrap().len(),
        1,
        "the data directory kept the bundle"
    );
}

#[test]
fn settings_can_be_changed_before_the_server_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut options =
        ServerOptions::new(&dir.path().join("server"), trust_root(&[release_key()], 1));
    options.admin_token = Some("admin-token-for-kit-tests-0123456789".into());
    let server = ServerHandle::start_with(&options, |s| s.config.max_upload_bytes = 1024).unwrap();
    assert_eq!(server.admin_token, "admin-token-for-kit-tests-0123456789");
    let bundle = bundle_with(
        release_key(),
        "1.1.0",
        COMPATIBLE,
        &[("rootfs", vec![7; 64 * 1024])],
    );
    let too_big = server.admin().publish_bytes(bundle).unwrap_err();
    assert_eq!(too_big.status, Some(413), "{too_big}");
}
