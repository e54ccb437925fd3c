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

/// The robot's range engine against a server that presigns: its probe, its single ranges and its lists of
/// ranges (which object stores do not answer) are all served by the server from the object under the server's
/// ETag, so the validator it pinned holds for every request (docs/bundle-store.md); only full-stream downloads
/// and their resumes are redirected.
#[test]
fn the_range_engine_reads_ranges_across_the_presigned_redirect() {
    use ota_client::config::HttpConfig;
    use ota_client::source::ranges::{HttpRanges, RangeSource, Span};
    let Some(s3) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let trust = ota_testkit::release::trust_root(&[release_key()], 1);
    let server = ServerHandle::start_with(
        &ServerOptions::new(&dir.path().join("server"), trust),
        |s| s3.serve_bundles(s, "", true),
    )
    .unwrap();
    let bytes = rootfs_bundle("2.1.0");
    let id = server
        .admin()
        .publish_bytes(bytes.clone())
        .unwrap()
        .bundle_id;
    let url = format!("{}/api/bundles/{id}/download", server.base);
    let auth = vec![(
        "authorization".to_string(),
        format!("Bearer {}", server.admin_token),
    )];
    let mut http = HttpRanges::open(&url, &auth, &HttpConfig::default(), None)
        .unwrap()
        .expect("the store answers ranges");
    assert_eq!(http.len(), bytes.len() as u64);
    let len = bytes.len() as u64;
    for ranges in [
        vec![Span {
            offset: 100,
            len: 1000,
        }],
        vec![Span {
            offset: len - 10,
            len: 10,
        }],
        vec![Span { offset: 0, len: 10 }],
        vec![Span {
            offset: len / 2,
            len: 4096,
        }],
    ] {
        let mut parts = vec![Vec::new(); ranges.len()];
        http.read_ranges(&ranges, &mut |i, b| {
            parts[i].extend_from_slice(b);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{ranges:?}: {e}"));
        for (p, r) in parts.iter().zip(&ranges) {
            assert!(
                p[..] == bytes[r.offset as usize..(r.offset + r.len) as usize],
                "{r:?}"
            );
        }
    }
    let several = [
        Span { offset: 0, len: 10 },
        Span {
            offset: len / 2,
            len: 4096,
        },
    ];
    let mut parts = vec![Vec::new(); several.len()];
    http.read_ranges(&several, &mut |i, b| {
        parts[i].extend_from_slice(b);
        Ok(())
    })
    .expect("several ranges are served by the server under the store's ETag");
    for (p, r) in parts.iter().zip(&several) {
        assert!(
            p[..] == bytes[r.offset as usize..(r.offset + r.len) as usize],
            "{r:?}"
        );
    }
}
