//! Chunked bundles as the writer makes them, read back through the layout and the index alone (the streaming
//! reader has tests of its own): round trips, deltas, reproducibility, refused bases.

use std::io::Cursor;

use ota_keys::SecretKey;
use sha2::{Digest, Sha256};

use crate::chunked::{BundleLayout, ChunkIndex, IndexLimits, DEFAULT_PARAMS, NO_BASE};
use crate::manifest::PAYLOAD_CHUNKED;
use crate::reader::UnverifiedBundle;
use crate::write::{decode_delta, BaseBundle};
use crate::writer::encode_signatures;
use crate::{build_bundle_to_vec, build_chunked_bundle, BundleError, BundleSpec, ImageInput};
use crate::{Manifest, SeekableImage};

fn spec(workers: u32) -> BundleSpec {
    BundleSpec {
        version: "2.0.0".parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: "chunked".into(),
        security_floor: None,
        level: 3,
        workers,
    }
}

/// Text-like content from a seed: compressible, and with enough entropy for content-defined cuts.
fn image(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "robot ", "wheel ", "lidar ", "motor ", "arm ", "grip ", "map ", "path ", "slot ", "boot ",
        "kernel ", "update ", "delta ", "frame ", "chunk ", "index ",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 16) as usize].as_bytes());
        if x.is_multiple_of(97) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// v1 with content inserted, changed and removed in a few places (everything behind moves).
fn next_version(v1: &[u8]) -> Vec<u8> {
    let mut v2 = Vec::new();
    v2.extend_from_slice(&v1[..500_000]);
    v2.extend_from_slice(&image(99, 3_000));
    v2.extend_from_slice(&v1[500_000..1_700_000]);
    v2.extend_from_slice(&image(98, 200_000));
    v2.extend_from_slice(&v1[1_900_000..2_600_000]);
    let mut changed = v1[2_600_000..2_700_000].to_vec();
    for b in changed.iter_mut().step_by(5_000) {
        *b ^= 0x55;
    }
    v2.extend_from_slice(&changed);
    v2.extend_from_slice(&v1[2_750_000..]);
    v2
}

fn chunked(
    images: &[(&str, &str, &[u8])],
    base: Option<&[u8]>,
    workers: u32,
    keys: &[SecretKey],
) -> Result<(Manifest, Vec<u8>), BundleError> {
    let inputs = images
        .iter()
        .map(|(name, class, data)| SeekableImage {
            name: name.to_string(),
            slot_class: class.to_string(),
            reader: Box::new(Cursor::new(data.to_vec())),
        })
        .collect();
    let mut base = base
        .map(|b| BaseBundle::open(Cursor::new(b.to_vec())))
        .transpose()?;
    let (manifest, out) = build_chunked_bundle(
        Cursor::new(Vec::new()),
        &spec(workers),
        DEFAULT_PARAMS,
        inputs,
        base.as_mut(),
        keys,
        |_| {},
    )?;
    Ok((manifest, out.into_inner()))
}

/// The manifest as stored, the layout, and each image's decoded index, checked against the manifest's digests.
fn open(bundle: &[u8]) -> (Manifest, BundleLayout, Vec<ChunkIndex>) {
    let head = UnverifiedBundle::read(Cursor::new(bundle)).unwrap();
    let manifest = head.manifest_unverified().unwrap();
    let layout = BundleLayout::new(
        head.manifest_bytes().len() as u64,
        encode_signatures(head.signatures()).len() as u64,
        &manifest,
    );
    assert_eq!(layout.total_len(), bundle.len() as u64, "canonical length");
    let at = |span: crate::chunked::Span| &bundle[span.offset as usize..span.end() as usize];
    let indexes = manifest
        .images
        .iter()
        .map(|entry| {
            let info = entry.chunked().expect("chunked");
            let spans = layout.image(&manifest, &entry.name).unwrap();
            let index_bytes = at(spans.index.unwrap());
            assert_eq!(hex::encode(Sha256::digest(index_bytes)), info.index_sha256);
            assert_eq!(
                hex::encode(Sha256::digest(at(spans.payload))),
                entry.payload_sha256
            );
            if let Some(delta) = spans.delta {
                assert_eq!(
                    Some(hex::encode(Sha256::digest(at(delta)))),
                    info.delta_sha256
                );
            }
            ChunkIndex::decode(
                index_bytes,
                &IndexLimits {
                    image_size: entry.size,
                    compressed_size: entry.compressed_size,
                    delta_size: info.delta_size,
                    base_size: info.base.as_ref().map(|b| b.size),
                },
            )
            .unwrap()
        })
        .collect();
    (manifest, layout, indexes)
}

/// The image decoded from its frames, each frame checked against its digest.
fn decode_frames(bundle: &[u8], layout: &BundleLayout, manifest: &Manifest, i: usize) -> Vec<u8> {
    let (_, _, indexes) = open(bundle);
    let payload = layout
        .image(manifest, &manifest.images[i].name)
        .unwrap()
        .payload;
    let mut out = Vec::new();
    for (span, record) in indexes[i].frame_spans().iter().zip(&indexes[i].frames) {
        let start = (payload.offset + span.payload_offset) as usize;
        let frame = &bundle[start..start + span.compressed_size as usize];
        assert_eq!(<[u8; 32]>::from(Sha256::digest(frame)), record.sha256);
        out.extend(zstd::bulk::decompress(frame, span.raw_size as usize).unwrap());
    }
    out
}

#[test]
fn chunked_round_trip_of_several_images() {
    let keys = [SecretKey::generate()];
    let rootfs = image(1, 40 << 20);
    let model = image(2, 40_000);
    let (manifest, bundle) = chunked(
        &[
            ("rootfs.ext4", "rootfs", &rootfs),
            ("model.bin", "model", &model),
        ],
        None,
        2,
        &keys,
    )
    .unwrap();
    let (stored, layout, indexes) = open(&bundle);
    assert_eq!(stored, manifest);
    for (i, data) in [&rootfs, &model].into_iter().enumerate() {
        let entry = &manifest.images[i];
        assert_eq!(entry.payload, PAYLOAD_CHUNKED);
        assert_eq!(entry.size, data.len() as u64);
        assert_eq!(entry.sha256, hex::encode(Sha256::digest(data)));
        assert!(entry.chunks.as_ref().unwrap().base.is_none());
        assert_eq!(&decode_frames(&bundle, &layout, &manifest, i), data);
        let index = &indexes[i];
        assert!(index.deltas.is_empty());
        assert!(index.chunks.iter().all(|c| c.base_offset == NO_BASE));
        for (chunk, offset) in index.chunks.iter().zip(index.chunk_offsets()) {
            let bytes = &data[offset as usize..(offset + u64::from(chunk.size)) as usize];
            assert_eq!(<[u8; 32]>::from(Sha256::digest(bytes)), chunk.sha256);
        }
    }
    assert!(
        indexes[0].frames.len() > 1,
        "a 40 MiB image has several frames (of 12 to 20 MiB)"
    );
    // Frames are compressed: the whole payload is well below the image.
    assert!(manifest.images[0].compressed_size * 2 < rootfs.len() as u64);
}

#[test]
fn a_delta_costs_less_than_the_plain_frames_and_decodes_against_the_base() {
    let keys = [SecretKey::generate()];
    let v1 = image(1, 4 << 20);
    let v2 = next_version(&v1);
    let (_, old) = chunked(&[("rootfs.ext4", "rootfs", &v1)], None, 2, &keys).unwrap();
    let (manifest, bundle) =
        chunked(&[("rootfs.ext4", "rootfs", &v2)], Some(&old), 2, &keys).unwrap();
    let (_, layout, indexes) = open(&bundle);
    let index = &indexes[0];
    let info = manifest.images[0].chunks.as_ref().unwrap();
    let base = info.base.as_ref().unwrap();
    let (old_manifest, _, _) = open(&old);
    let old_head = UnverifiedBundle::read(Cursor::new(&old)).unwrap();
    assert_eq!(
        base.bundle,
        crate::manifest_digest(old_head.manifest_bytes())
    );
    assert_eq!(base.version, old_manifest.version);
    assert_eq!(
        (base.size, base.sha256.as_str()),
        (v1.len() as u64, old_manifest.images[0].sha256.as_str())
    );
    assert_eq!(decode_frames(&bundle, &layout, &manifest, 0), v2);

    let offsets = index.chunk_offsets();
    let missing: Vec<usize> = (0..index.chunks.len())
        .filter(|&i| index.chunks[i].base_offset == NO_BASE)
        .collect();
    assert!(
        !missing.is_empty() && missing.len() * 4 < index.chunks.len(),
        "{} of {}",
        missing.len(),
        index.chunks.len()
    );
    // Every chunk missing from the base has a delta: the content is like the base's, so deltas pay everywhere.
    assert_eq!(
        index
            .deltas
            .iter()
            .map(|d| d.chunk as usize)
            .collect::<Vec<_>>(),
        missing
    );
    // Chunks found in the base point at the same bytes there.
    for (c, &at) in index.chunks.iter().zip(&offsets) {
        if c.base_offset != NO_BASE {
            let size = c.size as usize;
            assert_eq!(
                &v1[c.base_offset as usize..][..size],
                &v2[at as usize..][..size]
            );
        }
    }
    // Every delta decodes against its reference in v1 to its chunk.
    let delta = layout
        .image(&manifest, "rootfs.ext4")
        .unwrap()
        .delta
        .unwrap();
    let mut plain = 0;
    for (d, at) in index.deltas.iter().zip(index.delta_offsets()) {
        let start = (delta.offset + at) as usize;
        let frame = &bundle[start..start + d.compressed_size as usize];
        let reference = &v1[d.ref_offset as usize..][..d.ref_len as usize];
        let c = &index.chunks[d.chunk as usize];
        let chunk = &v2[offsets[d.chunk as usize] as usize..][..c.size as usize];
        assert_eq!(
            decode_delta(frame, reference, c.size as usize).unwrap(),
            chunk
        );
        plain += zstd::bulk::compress(chunk, 3).unwrap().len() as u64;
    }
    let delta_size = info.delta_size.unwrap();
    assert!(
        delta_size * 2 < plain,
        "deltas {delta_size} bytes, plain {plain}"
    );
}

#[test]
fn new_content_unlike_the_base_is_left_to_its_frames() {
    let keys = [SecretKey::generate()];
    // Noise spanning several whole frames (12 to 20 MiB each).
    let v1 = image(6, 8 << 20);
    let mut x = 77u64;
    let noise: Vec<u8> = (0..(64 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut v2 = v1[..4 << 20].to_vec();
    v2.extend_from_slice(&noise);
    v2.extend_from_slice(&v1[4 << 20..]);
    let (_, old) = chunked(&[("rootfs.ext4", "rootfs", &v1)], None, 2, &keys).unwrap();
    let (manifest, bundle) =
        chunked(&[("rootfs.ext4", "rootfs", &v2)], Some(&old), 2, &keys).unwrap();
    let (_, layout, indexes) = open(&bundle);
    let index = &indexes[0];
    assert_eq!(decode_frames(&bundle, &layout, &manifest, 0), v2);
    let spans = index.frame_spans();
    let frame_of = index.frame_of_chunks();
    let with_delta: Vec<usize> = index.deltas.iter().map(|d| d.chunk as usize).collect();
    let mut left_to_frames = 0;
    for (i, c) in index.chunks.iter().enumerate() {
        let span = spans[frame_of[i]];
        let frame = &index.chunks[span.first_chunk..span.first_chunk + span.chunks];
        let frame_is_new = frame.iter().all(|c| c.base_offset == NO_BASE);
        if c.base_offset == NO_BASE && !with_delta.contains(&i) {
            assert!(
                frame_is_new,
                "chunk {i} lost its delta in a frame the robot may not fetch"
            );
            left_to_frames += 1;
        }
        if !frame_is_new && c.base_offset == NO_BASE {
            assert!(
                with_delta.contains(&i),
                "chunk {i} of a mixed frame has no delta"
            );
        }
    }
    assert!(
        left_to_frames > 10,
        "{left_to_frames} noise chunks left to frames"
    );
    // Noise costs its size as a delta: only the chunks of mixed frames have one.
    let info = manifest.images[0].chunks.as_ref().unwrap();
    assert!(info.delta_size.unwrap() < noise.len() as u64 - 10 * 16_384);
}

#[test]
fn output_is_reproducible_whatever_the_thread_count() {
    let keys = [SecretKey::generate()];
    let v1 = image(3, 3 << 20);
    let v2 = next_version(&image(3, 3 << 20));
    let (_, old) = chunked(&[("rootfs.ext4", "rootfs", &v1)], None, 1, &keys).unwrap();
    let one = chunked(&[("rootfs.ext4", "rootfs", &v2)], Some(&old), 1, &keys).unwrap();
    let three = chunked(&[("rootfs.ext4", "rootfs", &v2)], Some(&old), 3, &keys).unwrap();
    assert!(one.1 == three.1, "same inputs give the same bytes");
}

#[test]
fn bases_that_cannot_serve_are_refused_naming_the_image() {
    let keys = [SecretKey::generate()];
    let v1 = image(4, 300_000);
    let (_, full) = build_bundle_to_vec(
        &spec(1),
        vec![ImageInput {
            name: "rootfs.ext4".into(),
            slot_class: "rootfs".into(),
            reader: Box::new(Cursor::new(v1.clone())),
        }],
        &keys,
    )
    .unwrap();
    let err = chunked(&[("rootfs.ext4", "rootfs", &v1)], Some(&full), 1, &keys).unwrap_err();
    assert!(
        err.to_string().contains("image 'rootfs.ext4'")
            && err.to_string().contains("'full' payload"),
        "{err}"
    );
    let (_, old) = chunked(&[("rootfs.ext4", "rootfs", &v1)], None, 1, &keys).unwrap();
    let err = chunked(&[("rootfs.ext4", "model", &v1)], Some(&old), 1, &keys).unwrap_err();
    assert!(
        err.to_string().contains("image 'rootfs.ext4'")
            && err.to_string().contains("slot class 'rootfs'"),
        "{err}"
    );
    let err = chunked(&[("other.ext4", "rootfs", &v1)], Some(&old), 1, &keys).unwrap_err();
    assert!(err.to_string().contains("no image of that name"), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn a_damaged_base_is_refused() {
    let keys = [SecretKey::generate()];
    let v1 = image(5, 1 << 20);
    let (_, mut old) = chunked(&[("rootfs.ext4", "rootfs", &v1)], None, 1, &keys).unwrap();
    let (manifest, layout, _) = open(&old);
    let payload = layout.image(&manifest, "rootfs.ext4").unwrap().payload;
    old[payload.offset as usize + 100] ^= 1;
    let mut v2 = v1.clone();
    v2[10..20].copy_from_slice(b"0123456789");
    let err = chunked(&[("rootfs.ext4", "rootfs", &v2)], Some(&old), 1, &keys).unwrap_err();
    assert!(err.to_string().contains("base bundle frame"), "{err}");
}

/// An image that reads differently from its second pass on: a file rewritten while `create` reads it.
struct Rewritten {
    data: Cursor<Vec<u8>>,
    rewinds: u32,
}

impl std::io::Read for Rewritten {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.data.position();
        let n = self.data.read(buf)?;
        if self.rewinds >= 2 && at + (n as u64) > 1000 {
            for b in &mut buf[..n] {
                *b = b.wrapping_add(1);
            }
        }
        Ok(n)
    }
}

impl std::io::Seek for Rewritten {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        if to == std::io::SeekFrom::Start(0) {
            self.rewinds += 1;
        }
        self.data.seek(to)
    }
}

#[test]
fn an_image_that_changes_between_the_passes_fails_the_build() {
    let keys = [SecretKey::generate()];
    let inputs = vec![SeekableImage {
        name: "rootfs.ext4".into(),
        slot_class: "rootfs".into(),
        reader: Box::new(Rewritten {
            data: Cursor::new(image(7, 1 << 20)),
            rewinds: 0,
        }),
    }];
    let err = build_chunked_bundle::<_, Cursor<Vec<u8>>>(
        Cursor::new(Vec::new()),
        &spec(2),
        DEFAULT_PARAMS,
        inputs,
        None,
        &keys,
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("image 'rootfs.ext4': it changed while the bundle was being built"),
        "{err}"
    );
}
