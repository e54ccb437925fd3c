//! End-to-end checks of the format in memory: every way of damaging a bundle is refused with its own error.

use std::io::{Cursor, Read};

use ota_bundle_format::framing::{entry_header, BLOCK, MAX_MANIFEST_LEN};
use ota_bundle_format::writer::{encode_signatures, sign_manifest};
use ota_bundle_format::*;
use ota_keys::{SecretKey, ThresholdError, TrustRoot};
use proptest::prelude::*;

struct Fixture {
    keys: Vec<SecretKey>,
    bundle: Vec<u8>,
    manifest: Manifest,
}

fn spec(version: &str) -> BundleSpec {
    BundleSpec {
        version: version.parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: "test bundle".into(),
        security_floor: None,
        level: 3,
        workers: 1,
    }
}

fn image_bytes(seed: u8, len: usize) -> Vec<u8> {
    // Compressible but not trivial.
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i % 251) as u8)
        .collect()
}

fn build(keys: &[SecretKey], images: &[(&str, &str, Vec<u8>)]) -> (Manifest, Vec<u8>) {
    let inputs = images
        .iter()
        .map(|(name, class, data)| ImageInput {
            name: name.to_string(),
            slot_class: class.to_string(),
            reader: Box::new(Cursor::new(data.clone())),
        })
        .collect();
    build_bundle_to_vec(&spec("1.2.3"), inputs, keys).unwrap()
}

fn fixture() -> Fixture {
    let keys = vec![SecretKey::generate(), SecretKey::generate()];
    let (manifest, bundle) = build(
        &keys,
        &[
            ("rootfs.ext4", "rootfs", image_bytes(1, 300_000)),
            ("model.bin", "model", image_bytes(2, 5_000)),
        ],
    );
    Fixture {
        keys,
        bundle,
        manifest,
    }
}

fn trust(keys: &[&SecretKey], threshold: u32) -> TrustRoot {
    TrustRoot::new(1, threshold, keys.iter().map(|k| k.public_key()).collect()).unwrap()
}

/// Reads and verifies a whole bundle, returning the decoded images.
fn read_all(bundle: &[u8], trust: &TrustRoot) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut reader = BundleReader::open(bundle, trust)?;
    let mut out = Vec::new();
    while let Some(mut image) = reader.next_image()? {
        let mut data = Vec::new();
        image
            .read_to_end(&mut data)
            .map_err(|e| BundleError::from_io("reading", e))?;
        out.push(data);
    }
    reader.finish()?;
    Ok(out)
}

/// Same through the threaded pipeline.
fn copy_all(bundle: &[u8], trust: &TrustRoot) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut reader = BundleReader::open(bundle, trust)?;
    let mut out = Vec::new();
    while let Some(image) = reader.next_image()? {
        let mut data = Vec::new();
        image.copy_to(&mut data)?;
        out.push(data);
    }
    reader.finish()?;
    Ok(out)
}

#[test]
fn round_trip_both_read_paths() {
    let f = fixture();
    let t = trust(&[&f.keys[0], &f.keys[1]], 2);
    let expected = vec![image_bytes(1, 300_000), image_bytes(2, 5_000)];
    assert_eq!(read_all(&f.bundle, &t).unwrap(), expected);
    assert_eq!(copy_all(&f.bundle, &t).unwrap(), expected);
    let reader = BundleReader::open(f.bundle.as_slice(), &t).unwrap();
    assert_eq!(reader.manifest(), &f.manifest);
    assert_eq!(reader.signed_by().len(), 2);
}

#[test]
fn output_is_deterministic_and_independent_of_worker_count() {
    let keys = vec![SecretKey::generate()];
    let data = image_bytes(9, 3_000_000);
    let make = |workers| {
        let mut s = spec("2.0.0");
        s.workers = workers;
        build_bundle_to_vec(
            &s,
            vec![ImageInput {
                name: "rootfs.img".into(),
                slot_class: "rootfs".into(),
                reader: Box::new(Cursor::new(data.clone())),
            }],
            &keys,
        )
        .unwrap()
        .1
    };
    let a = make(1);
    assert_eq!(a, make(1));
    assert_eq!(a, make(2));
}

#[test]
fn threshold_errors_are_distinct() {
    let f = fixture();
    let stranger = SecretKey::generate();
    // Below threshold: one of the two signers is trusted, three signatures required.
    let third = SecretKey::generate();
    let err = BundleReader::open(
        f.bundle.as_slice(),
        &trust(&[&f.keys[0], &third, &stranger], 3),
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            BundleError::Signature(ThresholdError::BelowThreshold { .. })
        ),
        "{err}"
    );
    // Unknown keys only.
    let err = BundleReader::open(f.bundle.as_slice(), &trust(&[&stranger], 1))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            BundleError::Signature(ThresholdError::UnknownKeys { .. })
        ),
        "{err}"
    );
}

/// Rebuilds a bundle's head with different manifest bytes or signatures, keeping the payloads.
fn reframe(f: &Fixture, manifest_bytes: &[u8], signatures: &[ota_keys::Signature]) -> Vec<u8> {
    let unverified = UnverifiedBundle::read(f.bundle.as_slice()).unwrap();
    let mut payloads = Vec::new();
    unverified
        .for_each_raw_payload(|_, r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            payloads.push(v);
            Ok(())
        })
        .unwrap();
    let mut w = BundleWriter::new(Vec::new(), manifest_bytes, signatures).unwrap();
    for p in payloads {
        w.add_payload(p.as_slice()).unwrap();
    }
    w.finish().unwrap()
}

/// The fixture's bundle with its manifest edited by `edit` and signed again by all its keys: what a
/// signer who lies (or a buggy producer) would publish.
fn resigned(f: &Fixture, edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut m = f.manifest.clone();
    edit(&mut m);
    let bytes = m.to_bytes();
    reframe(f, &bytes, &sign_manifest(&bytes, &f.keys))
}

#[test]
fn the_security_floor_is_signed_and_bounds_the_version() {
    let f = fixture();
    let t = trust(&[&f.keys[0], &f.keys[1]], 2);
    let floored = resigned(&f, |m| m.security_floor = Some("1.2.0".parse().unwrap()));
    let reader = BundleReader::open(floored.as_slice(), &t).unwrap();
    assert_eq!(
        reader.manifest().security_floor,
        Some("1.2.0".parse().unwrap())
    );
    // Signed by the release keys, yet no robot could ever run it: refused before any payload. (The
    // writer refuses to frame it, so the valid bundle's manifest and signatures are swapped in place.)
    let mut m = f.manifest.clone();
    m.security_floor = Some("1.2.0".parse().unwrap());
    let valid_bytes = m.to_bytes();
    m.security_floor = Some("2.0.0".parse().unwrap());
    let impossible_bytes = m.to_bytes();
    let mut impossible = floored.clone();
    let swap = |bundle: &mut Vec<u8>, from: &[u8], to: &[u8]| {
        assert_eq!(from.len(), to.len());
        let at = bundle
            .windows(from.len())
            .position(|w| w == from)
            .expect("present");
        bundle[at..at + to.len()].copy_from_slice(to);
    };
    swap(&mut impossible, &valid_bytes, &impossible_bytes);
    let sigs = |bytes: &[u8]| encode_signatures(&sign_manifest(bytes, &f.keys));
    swap(
        &mut impossible,
        &sigs(&valid_bytes),
        &sigs(&impossible_bytes),
    );
    let err = BundleReader::open(impossible.as_slice(), &t)
        .err()
        .expect("a bundle below its own floor is refused")
        .to_string();
    assert!(
        err.contains("version 1.2.3 is below the bundle's own security floor 2.0.0"),
        "{err}"
    );
    // Nobody but the release keys can add or change it.
    let mut m = f.manifest.clone();
    m.security_floor = Some("1.0.0".parse().unwrap());
    let bytes = m.to_bytes();
    let forged = reframe(&f, &bytes, &sign_manifest(&f.manifest.to_bytes(), &f.keys));
    assert!(BundleReader::open(forged.as_slice(), &t).is_err());
}

/// The manifest digest of a floor-less bundle built from fixed inputs, as written before the
/// `security_floor` field existed: old bundles re-created without a floor stay byte-identical.
const FLOORLESS_MANIFEST_DIGEST: &str =
    "8a7d87df85b4bb495deb69fd6176b4ea2c3f8a57ee3ad56e6045707f433ccadc";

#[test]
fn bundles_without_a_floor_keep_their_bytes() {
    let keys = vec![SecretKey::generate()];
    let (manifest, bundle) = build_bundle_to_vec(
        &spec("1.2.3"),
        vec![ImageInput {
            name: "rootfs.img".into(),
            slot_class: "rootfs".into(),
            reader: Box::new(Cursor::new(image_bytes(3, 10_000))),
        }],
        &keys,
    )
    .unwrap();
    assert_eq!(manifest.security_floor, None);
    let reader = BundleReader::open(bundle.as_slice(), &trust(&[&keys[0]], 1)).unwrap();
    assert_eq!(reader.manifest_digest(), FLOORLESS_MANIFEST_DIGEST);
}

#[test]
fn wrong_key_and_tampered_manifest_are_bad_signatures() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    // A signature that names key 0 but was made by another key.
    let forger = SecretKey::generate();
    let bytes = f.manifest.to_bytes();
    let mut forged = forger.sign(&bytes);
    forged.key_id = f.keys[0].key_id();
    let bundle = reframe(&f, &bytes, &[forged]);
    let err = BundleReader::open(bundle.as_slice(), &t).err().unwrap();
    assert!(
        matches!(
            err,
            BundleError::Signature(ThresholdError::BadSignature { .. })
        ),
        "{err}"
    );
    // The manifest changed after signing (a bigger image claimed).
    let mut m = f.manifest.clone();
    m.description = "evil".into();
    let sigs = sign_manifest(&f.manifest.to_bytes(), &f.keys);
    let bundle = reframe(&f, &m.to_bytes(), &sigs);
    let err = BundleReader::open(bundle.as_slice(), &t).err().unwrap();
    assert!(
        matches!(
            err,
            BundleError::Signature(ThresholdError::BadSignature { .. })
        ),
        "{err}"
    );
    // No signatures at all.
    let bundle = reframe(&f, &f.manifest.to_bytes(), &[]);
    let err = BundleReader::open(bundle.as_slice(), &t).err().unwrap();
    assert!(
        matches!(err, BundleError::Signature(ThresholdError::NoSignatures)),
        "{err}"
    );
}

#[test]
fn tampered_payload_is_a_digest_mismatch() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    // Re-sign a manifest whose payload digest for the model image is wrong: the payload no longer matches it.
    let bundle = resigned(&f, |m| m.images[1].payload_sha256 = "00".repeat(32));
    for read in [read_all, copy_all, verify_all] {
        let err = read(&bundle, &t).unwrap_err();
        assert!(
            matches!(err, BundleError::DigestMismatch { ref image, what: "compressed payload", .. } if image == "model.bin"),
            "{err}"
        );
    }
}

/// Checks every image completely, as `ota-bundle verify` and the server do.
fn verify_all(bundle: &[u8], trust: &TrustRoot) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut reader = BundleReader::open(bundle, trust)?;
    reader.verify_remaining_images()?;
    reader.finish()?;
    Ok(Vec::new())
}

#[test]
fn a_manifest_lying_about_the_content_fails_the_full_check() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    // Signed, with the right payload digest but a wrong content digest: only a producer bug (or a signer's lie)
    // gets there. The full check catches it; the streaming paths rely on the payload digest.
    let bundle = resigned(&f, |m| m.images[1].sha256 = "00".repeat(32));
    let err = verify_all(&bundle, &t).unwrap_err();
    assert!(
        matches!(err, BundleError::DigestMismatch { ref image, what: "uncompressed content", .. } if image == "model.bin"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("uncompressed content of image 'model.bin'"),
        "{err}"
    );
    let expected = vec![image_bytes(1, 300_000), image_bytes(2, 5_000)];
    assert_eq!(copy_all(&bundle, &t).unwrap(), expected);
    // Both read paths check the content when asked.
    let mut reader = BundleReader::open(bundle.as_slice(), &t).unwrap();
    let first = reader.next_image().unwrap().unwrap().check_content_digest();
    first.copy_to(&mut Vec::new()).unwrap();
    let mut second = reader.next_image().unwrap().unwrap().check_content_digest();
    let err = second.read_to_end(&mut Vec::new()).unwrap_err();
    let err = BundleError::from_io("reading", err);
    assert!(
        matches!(
            err,
            BundleError::DigestMismatch {
                what: "uncompressed content",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn size_lies_are_refused() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    // Manifest claims a smaller uncompressed size: the stream stops at the limit (no endless data).
    let bundle = resigned(&f, |m| m.images[0].size -= 1);
    for read in [read_all, copy_all] {
        let err = read(&bundle, &t).unwrap_err();
        assert!(
            matches!(err, BundleError::ImageSizeMismatch { .. }),
            "{err}"
        );
    }
    // Manifest claims a larger uncompressed size.
    let bundle = resigned(&f, |m| m.images[0].size += 1);
    let err = read_all(&bundle, &t).unwrap_err();
    assert!(
        matches!(err, BundleError::ImageSizeMismatch { .. }),
        "{err}"
    );
}

#[test]
fn oversize_manifest_is_refused_before_reading_it() {
    let mut bundle = Vec::new();
    bundle.extend_from_slice(&entry_header("ota-bundle", 20, 0).unwrap());
    let mut marker = b"ota-bundle-format 1\n".to_vec();
    marker.resize(BLOCK, 0);
    bundle.extend_from_slice(&marker);
    bundle.extend_from_slice(&entry_header("manifest.json", MAX_MANIFEST_LEN + 1, 0).unwrap());
    let t = trust(&[&SecretKey::generate()], 1);
    let err = BundleReader::open(bundle.as_slice(), &t).err().unwrap();
    assert!(
        matches!(
            err,
            BundleError::TooLarge {
                what: "manifest",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unknown_format_version_is_named() {
    let f = fixture();
    let mut bundle = f.bundle.clone();
    // The marker's content starts right after the first header block.
    let pos = BLOCK + "ota-bundle-format ".len();
    bundle[pos] = b'7';
    let err = BundleReader::open(bundle.as_slice(), &trust(&[&f.keys[0]], 1))
        .err()
        .unwrap();
    assert!(
        matches!(err, BundleError::UnsupportedFormatVersion { ref found, .. } if found == "7"),
        "{err}"
    );
}

#[test]
fn extra_duplicate_and_traversal_entries_are_refused() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    let end = f.bundle.len() - 2 * BLOCK;
    // An extra entry before the end marker.
    let mut extra = f.bundle[..end].to_vec();
    extra.extend_from_slice(&entry_header("images/extra", 0, 0).unwrap());
    extra.extend_from_slice(&[0u8; 2 * BLOCK]);
    let err = read_all(&extra, &t).unwrap_err();
    assert!(matches!(err, BundleError::UnexpectedEntry { .. }), "{err}");

    // A duplicate manifest entry where the signatures belong.
    let head = UnverifiedBundle::read(f.bundle.as_slice()).unwrap();
    let mut dup = Vec::new();
    dup.extend_from_slice(&entry_header("ota-bundle", 20, 0).unwrap());
    let mut marker = b"ota-bundle-format 1\n".to_vec();
    marker.resize(BLOCK, 0);
    dup.extend_from_slice(&marker);
    for _ in 0..2 {
        let m = head.manifest_bytes();
        dup.extend_from_slice(&entry_header("manifest.json", m.len() as u64, 0).unwrap());
        dup.extend_from_slice(m);
        dup.resize(dup.len().next_multiple_of(BLOCK), 0);
    }
    let err = BundleReader::open(dup.as_slice(), &t).err().unwrap();
    assert!(matches!(err, BundleError::DuplicateEntry { .. }), "{err}");

    // Path traversal in place of the signatures.
    let mut trav = dup[..dup.len() - BLOCK * 2].to_vec();
    let mut header = tar::Header::new_ustar();
    header.as_mut_bytes()[..12].copy_from_slice(b"../../x.json");
    header.set_size(0);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    trav.truncate(BLOCK * 2 + head.manifest_bytes().len().next_multiple_of(BLOCK) + BLOCK);
    trav.extend_from_slice(header.as_bytes());
    let err = BundleReader::open(trav.as_slice(), &t).err().unwrap();
    assert!(matches!(err, BundleError::PathTraversal { .. }), "{err}");
    let _ = encode_signatures(&[]);
}

#[test]
fn trailing_garbage_and_truncation_at_the_end() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    let mut longer = f.bundle.clone();
    longer.push(0);
    assert!(matches!(
        read_all(&longer, &t),
        Err(BundleError::TrailingData { .. })
    ));
    let shorter = &f.bundle[..f.bundle.len() - 1];
    assert!(matches!(
        read_all(shorter, &t),
        Err(BundleError::Truncated { .. })
    ));
}

#[test]
fn images_must_be_read_before_finish() {
    let f = fixture();
    let t = trust(&[&f.keys[0]], 1);
    let reader = BundleReader::open(f.bundle.as_slice(), &t).unwrap();
    assert!(matches!(reader.finish(), Err(BundleError::Usage(_))));
}

fn small_fixture() -> (Vec<u8>, TrustRoot) {
    let key = SecretKey::generate();
    let (_, bundle) = build(
        std::slice::from_ref(&key),
        &[("rootfs.ext4", "rootfs", image_bytes(3, 4_000))],
    );
    (bundle, trust(&[&key], 1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any single flipped bit anywhere in the file is caught (the only slack would be tar header fields we do not
    /// interpret, which the header checksum covers).
    #[test]
    fn any_flipped_bit_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (bundle, t) = FIXTURE.with(|f| f.clone());
        let mut damaged = bundle.clone();
        let i = pos.index(damaged.len());
        damaged[i] ^= 1 << bit;
        prop_assert!(read_all(&damaged, &t).is_err(), "flip at byte {} bit {} accepted", i, bit);
    }

    #[test]
    fn any_truncation_is_rejected(cut in any::<prop::sample::Index>()) {
        let (bundle, t) = FIXTURE.with(|f| f.clone());
        let cut = cut.index(bundle.len());
        prop_assert!(read_all(&bundle[..cut], &t).is_err());
        prop_assert!(copy_all(&bundle[..cut], &t).is_err());
    }

    #[test]
    fn any_appended_bytes_are_rejected(extra in prop::collection::vec(any::<u8>(), 1..2048)) {
        let (mut bundle, t) = FIXTURE.with(|f| f.clone());
        bundle.extend_from_slice(&extra);
        prop_assert!(read_all(&bundle, &t).is_err());
    }
}

thread_local! {
    static FIXTURE: (Vec<u8>, TrustRoot) = small_fixture();
}
