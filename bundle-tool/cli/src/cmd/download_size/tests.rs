//! download-size on bundles built in the test: on the delta base, off it (chunks found by the index or by
//! decoding a full OLD alike), and a full NEW refused in one line.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ota_bundle_format::chunked::DEFAULT_PARAMS;
use ota_bundle_format::write::BaseBundle;
use ota_bundle_format::{
    build_bundle_to_vec, build_chunked_bundle, BundleSpec, ImageInput, SeekableImage,
};
use ota_keys::SecretKey;

use super::*;

fn spec(version: &str) -> BundleSpec {
    BundleSpec {
        version: version.parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: None,
        level: 1,
        workers: 2,
    }
}

/// Text-like bytes with enough entropy for content-defined cuts.
fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&[b"robot ", b"lidar ", b"wheel ", b"map   "][(x % 4) as usize][..]);
        out.push((x >> 40) as u8);
    }
    out.truncate(len);
    out
}

pub(crate) fn chunked(dir: &Path, name: &str, data: &[u8], base: Option<&Path>) -> PathBuf {
    let mut base = base.map(|p| BaseBundle::open(std::fs::File::open(p).unwrap()).unwrap());
    let inputs = vec![SeekableImage {
        name: "rootfs.ext4".into(),
        slot_class: "rootfs".into(),
        reader: Box::new(Cursor::new(data.to_vec())),
    }];
    let (_, out) = build_chunked_bundle(
        Cursor::new(Vec::new()),
        &spec(if base.is_some() { "2.0.0" } else { "1.0.0" }),
        DEFAULT_PARAMS,
        inputs,
        base.as_mut(),
        &[SecretKey::generate()],
        |_| {},
    )
    .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, out.into_inner()).unwrap();
    path
}

pub(crate) fn full(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let inputs = vec![ImageInput {
        name: "rootfs.ext4".into(),
        slot_class: "rootfs".into(),
        reader: Box::new(Cursor::new(data.to_vec())),
    }];
    let (_, bytes) = build_bundle_to_vec(&spec("1.0.0"), inputs, &[SecretKey::generate()]).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn run_estimate(old: &Path, new: &Path) -> Result<Estimate> {
    estimate(&mut BundleFile::open(old)?, &mut BundleFile::open(new)?)
}

pub(crate) fn versions() -> (Vec<u8>, Vec<u8>) {
    // Several frames of ~4 MiB, so a robot off the base reuses the frames the insertion did not touch.
    let v1 = image(1, 24_000_000);
    let mut v2 = v1[..8_000_000].to_vec();
    v2.extend_from_slice(&image(2, 100_000));
    v2.extend_from_slice(&v1[8_000_000..]);
    (v1, v2)
}

fn check_totals(e: &Estimate) {
    assert_eq!(e.bytes, e.head_bytes + e.index_bytes + e.data_bytes);
    let data_ranges: u64 = e.images.iter().map(|i| i.data_ranges).sum();
    assert_eq!(e.ranges, 1 + e.images.len() as u64 + data_ranges);
    assert!(e.bytes <= e.every_frame_bytes + COALESCE_GAP * data_ranges);
    assert!(e.every_frame_bytes < e.full_bundle_bytes + 1);
}

#[test]
fn a_robot_on_the_base_fetches_deltas_and_few_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = versions();
    let old = chunked(dir.path(), "old.otab", &v1, None);
    let new = chunked(dir.path(), "new.otab", &v2, Some(&old));
    let e = run_estimate(&old, &new).unwrap();
    check_totals(&e);
    let i = &e.images[0];
    assert_eq!(i.reuse, "delta base");
    assert!(
        i.deltas_fetched > 0 && i.deltas_fetched == i.deltas,
        "{i:?}"
    );
    assert!(i.frames_fetched < i.frames / 2, "{i:?}");
    assert!(e.bytes * 4 < e.every_frame_bytes, "{e:?}");
    assert!(e.bytes < e.full_bundle_bytes);
}

#[test]
fn a_robot_off_the_base_finds_the_same_chunks_in_a_chunked_or_a_full_old() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = versions();
    let old_chunked = chunked(dir.path(), "old.otab", &v1, None);
    let old_full = full(dir.path(), "old-full.otab", &v1);
    let new = chunked(dir.path(), "new.otab", &v2, None);
    let by_index = run_estimate(&old_chunked, &new).unwrap();
    let by_decoding = run_estimate(&old_full, &new).unwrap();
    check_totals(&by_index);
    let i = &by_index.images[0];
    assert_eq!(i.reuse, "scanned");
    assert!(i.local_bytes > 1_000_000, "{i:?}");
    assert!(i.frames_fetched < i.frames, "{i:?}");
    assert_eq!(by_index.data_bytes, by_decoding.data_bytes);
    assert_eq!(i.local_bytes, by_decoding.images[0].local_bytes);
    // A robot on something unrelated fetches every frame.
    let other = chunked(dir.path(), "other.otab", &image(9, 500_000), None);
    let e = run_estimate(&other, &new).unwrap();
    assert_eq!(e.images[0].frames_fetched, e.images[0].frames);
}

#[test]
fn a_full_new_bundle_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = versions();
    let old = chunked(dir.path(), "old.otab", &v1, None);
    let new = full(dir.path(), "new.otab", &v2);
    let err = run_estimate(&old, &new).unwrap_err().to_string();
    assert!(err.contains("new.otab is not chunked"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn requests_carry_up_to_64_ranges() {
    let image = |data_ranges| ImageSize {
        image: "a".into(),
        slot_class: "a".into(),
        reuse: "scanned",
        chunks: 1,
        frames: 1,
        frames_fetched: 1,
        deltas: 0,
        deltas_fetched: 0,
        index_bytes: 100,
        data_bytes: 10,
        data_ranges,
        local_bytes: 0,
        all_frames_bytes: 10,
    };
    for (ranges, requests) in [(0, 2), (1, 3), (64, 3), (65, 4), (128, 4)] {
        let e = summarise(1000, 5000, vec![image(ranges)]);
        assert_eq!(e.requests, requests, "{ranges} ranges");
        assert_eq!(e.bytes, 1110);
        assert_eq!(e.ranges, 2 + ranges);
    }
}
