//! A bundle that carries the trust chain: a robot installing it from a file (a USB stick) or a download walks the
//! chain from its kept root before it checks the bundle's signatures, keeps the newer root, and refuses a chain
//! that does not verify without moving its root.

use ota_bundle_format::chunked::ChunkParams;
use ota_bundle_format::writer::sign_manifest;
use ota_bundle_format::{rewrite_head, UnverifiedBundle};
use ota_client::{BundleSource, InstallOptions, NoProgress};
use ota_keys::{SecretKey, SignedTrustRoot};
use ota_testkit::robot::*;

use crate::common::chunked_bundle;
use crate::common::served::Served;
use crate::trust::{chain_json, keys, link, robot_at_v1, rootfs};

/// `bundle` with its signatures replaced by `signers`' and `chain` carried beside them.
fn carrying(bundle: &[u8], signers: &[&SecretKey], chain: &[SignedTrustRoot]) -> Vec<u8> {
    let head = UnverifiedBundle::read(bundle).unwrap();
    let owned: Vec<SecretKey> = signers
        .iter()
        .map(|k| SecretKey::from_pem(&k.to_pem()).unwrap())
        .collect();
    let signatures = sign_manifest(head.manifest_bytes(), &owned);
    rewrite_head(head, Vec::new(), &signatures, chain).unwrap()
}

fn kept_version(r: &Robot) -> Option<u64> {
    let path = r.client().kept_root_path();
    path.exists()
        .then(|| ota_keys::load_trust_root(&path).unwrap().version)
}

#[test]
fn a_robot_on_v1_installs_from_a_file_a_bundle_of_v3_keys_that_carries_v2_and_v3() {
    let r = robot_at_v1();
    let keys = keys(3);
    let signed_by_v3 = rootfs(&r, keys[2], "2.0.0");
    let chain = [link(&keys, 2), link(&keys, 3)];

    // Without the chain: refused by the threshold, nothing kept.
    let err = r.install(&signed_by_v3).unwrap_err().to_string();
    assert!(err.contains("signature check failed"), "{err}");
    assert!(err.contains("of the required 1 signatures"), "{err}");
    assert_eq!(kept_version(&r), None);

    // With it: the walk reaches version 3 before the signatures are checked.
    let image_root = std::fs::read(r.path("trust.pub")).unwrap();
    r.install(&carrying(&signed_by_v3, &[keys[2]], &chain))
        .unwrap();
    assert_eq!(r.status().trust_version, Some(3));
    assert_eq!(kept_version(&r), Some(3));
    assert_eq!(
        std::fs::read(r.path("trust.pub")).unwrap(),
        image_root,
        "the image's root is never written"
    );
    // The kept root is what later installs verify with: version 1's key no longer installs.
    let err = r
        .install(&rootfs(&r, keys[0], "2.1.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("signature check failed"), "{err}");
}

#[test]
fn a_tampered_chain_is_refused_naming_the_link_and_the_kept_root_stays() {
    let r = robot_at_v1();
    let keys = keys(3);
    let mut broken = link(&keys, 3);
    // Version 3's signature by version 2's key (the hand-over) no longer verifies.
    let v2_key = keys[1].public_key().key_id();
    broken
        .signatures
        .iter_mut()
        .find(|s| s.key_id == v2_key)
        .unwrap()
        .sig[0] ^= 1;
    let bundle = carrying(
        &rootfs(&r, keys[2], "2.0.0"),
        &[keys[2]],
        &[link(&keys, 2), broken],
    );
    let err = r.install(&bundle).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the bundle's trust chain does not verify: trust root version 3 refused"),
        "{err}"
    );
    assert!(err.contains("does not verify"), "{err}");
    assert!(err.contains("the trust root stays at version 1"), "{err}");
    assert_eq!(
        kept_version(&r),
        None,
        "not even the good version 2 is kept"
    );
    assert_eq!(r.status().trust_version, Some(1));
}

#[test]
fn a_chain_older_than_the_kept_root_is_ignored_and_the_kept_root_verifies() {
    let r = robot_at_v1();
    let keys = keys(3);
    let file = r.put("chain.json", &chain_json(&[link(&keys, 2), link(&keys, 3)]));
    assert_eq!(r.client().trust_update(&file).unwrap(), 3);
    // A bundle of the current keys carrying an old chain (ending at version 2) installs against version 3.
    r.install(&carrying(
        &rootfs(&r, keys[2], "2.0.0"),
        &[keys[2]],
        &[link(&keys, 2)],
    ))
    .unwrap();
    assert_eq!(kept_version(&r), Some(3));
    // One signed by version 1's key carrying that old chain is refused: no downgrade through a carried chain.
    let err = r
        .install(&carrying(
            &rootfs(&r, keys[0], "2.1.0"),
            &[keys[0]],
            &[link(&keys, 2)],
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("signature check failed"), "{err}");
    assert_eq!(kept_version(&r), Some(3));
}

#[test]
fn a_valid_chain_is_kept_even_when_the_bundle_is_then_refused() {
    let r = robot_at_v1();
    let keys = keys(3);
    // Signed by version 1's key only, which the chain it carries revokes.
    let bundle = carrying(
        &rootfs(&r, keys[0], "2.0.0"),
        &[keys[0]],
        &[link(&keys, 2), link(&keys, 3)],
    );
    let err = r.install(&bundle).unwrap_err().to_string();
    assert!(err.contains("signature check failed"), "{err}");
    assert_eq!(kept_version(&r), Some(3), "the rotation itself was valid");
}

/// The daemon's download: a chunked bundle read by ranges from the first request, head and chain included, from
/// a server that published the rotation (it checks uploads against its newest root).
#[test]
fn a_downloaded_chunked_bundle_carrying_the_chain_installs_by_ranges() {
    let r = robot_at_v1();
    let keys = keys(3);
    let params = ChunkParams {
        min: 1024,
        avg: 4096,
        max: 16 << 10,
    };
    let chain = [link(&keys, 2), link(&keys, 3)];
    let body = carrying(
        &chunked_bundle("2.0.0", &r.rootfs_image("2.0.0"), None, params),
        &[keys[2]],
        &chain,
    );
    let served = Served::publish_after(&chain, &body);
    let source = BundleSource::Http(served.request().ranges_first());
    r.client()
        .install(&source, &InstallOptions::default(), &mut NoProgress)
        .unwrap();
    let seen = served.proxy.seen();
    let downloads: Vec<_> = seen
        .iter()
        .filter(|s| s.path.ends_with("/download"))
        .collect();
    assert!(
        !downloads.is_empty() && downloads.iter().all(|s| s.range.is_some()),
        "read by ranges: {downloads:?}"
    );
    assert_eq!(kept_version(&r), Some(3));
}
