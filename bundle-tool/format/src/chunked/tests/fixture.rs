//! A small chunked-bundle builder for the reader's tests, independent of the production writer: fixed-size
//! chunks, a fixed number of chunks per frame, plain zstd frames; deltas (for chunks the base lacks) are plain
//! zstd frames too (the stream reader never decodes them). Every part can be tampered before the tar is framed.

use ota_keys::{SecretKey, TrustRoot};
use sha2::{Digest, Sha256};

use crate::chunked::{ChunkIndex, ChunkParams, ChunkRecord, DeltaRecord, FrameRecord, NO_BASE};
use crate::framing::{entry_header, format_marker, padding_len, BLOCK};
use crate::framing::{FORMAT_ENTRY, MANIFEST_ENTRY, SIGNATURES_ENTRY};
use crate::manifest::{
    ChunkedInfo, DeltaBase, ImageEntry, Manifest, COMPRESSION_ZSTD, PAYLOAD_CHUNKED,
};
use crate::writer::{encode_signatures, sign_manifest};
use crate::FORMAT_VERSION;

/// The parts of a bundle before framing; tests change them to build hostile bundles.
pub(crate) struct Parts {
    pub manifest: Manifest,
    pub index: Vec<u8>,
    pub frames: Vec<Vec<u8>>,
    pub delta: Vec<u8>,
}

/// A built bundle and what went into it.
pub(crate) struct Built {
    pub bundle: Vec<u8>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signatures_len: u64,
    pub trust: TrustRoot,
}

pub(crate) fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Deterministic, moderately compressible bytes.
pub(crate) fn image_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 5) as u8).wrapping_mul(29).wrapping_add(seed) ^ (i % 241) as u8)
        .collect()
}

/// Chunk size used by the fixture (a multiple of nothing in particular, so chunks straddle blocks).
pub(crate) const CHUNK: usize = 3000;
/// Chunks per frame.
pub(crate) const PER_FRAME: usize = 3;

fn params() -> ChunkParams {
    ChunkParams {
        min: 1024,
        avg: 2048,
        max: 4096,
    }
}

/// Cuts `image` into the fixture's chunks and frames; with `base`, deltas for chunks the base lacks.
pub(crate) fn parts(image: &[u8], base: Option<&[u8]>) -> (ChunkIndex, Parts) {
    let base_chunks: std::collections::HashMap<[u8; 32], u64> = base
        .map(|b| {
            b.chunks(CHUNK)
                .enumerate()
                .map(|(i, c)| (sha(c), (i * CHUNK) as u64))
                .collect()
        })
        .unwrap_or_default();
    let mut chunks = Vec::new();
    let mut deltas = Vec::new();
    let mut delta_bytes = Vec::new();
    for (i, c) in image.chunks(CHUNK).enumerate() {
        let digest = sha(c);
        let base_offset = base_chunks.get(&digest).copied().unwrap_or(NO_BASE);
        if let (Some(b), NO_BASE) = (base, base_offset) {
            let frame = zstd::bulk::compress(c, 3).unwrap();
            deltas.push(DeltaRecord {
                chunk: i as u32,
                compressed_size: frame.len() as u32,
                ref_offset: 0,
                ref_len: b.len().min(4096) as u32,
            });
            delta_bytes.extend_from_slice(&frame);
        }
        chunks.push(ChunkRecord {
            size: c.len() as u32,
            sha256: digest,
            base_offset,
        });
    }
    let mut frames = Vec::new();
    let mut frame_bytes = Vec::new();
    for group in image.chunks(CHUNK * PER_FRAME) {
        let frame = zstd::bulk::compress(group, 3).unwrap();
        frames.push(FrameRecord {
            chunks: group.len().div_ceil(CHUNK) as u32,
            compressed_size: frame.len() as u32,
            sha256: sha(&frame),
        });
        frame_bytes.push(frame);
    }
    let index = ChunkIndex {
        params: params(),
        frames,
        chunks,
        deltas,
    };
    let payload: Vec<u8> = frame_bytes.concat();
    let encoded = index.encode();
    let info = ChunkedInfo {
        index_size: encoded.len() as u64,
        index_sha256: hex::encode(sha(&encoded)),
        delta_size: base.map(|_| delta_bytes.len() as u64),
        delta_sha256: base.map(|_| hex::encode(sha(&delta_bytes))),
        base: base.map(|b| DeltaBase {
            bundle: "ab".repeat(32),
            version: semver::Version::new(1, 0, 0),
            size: b.len() as u64,
            sha256: hex::encode(sha(b)),
        }),
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        version: semver::Version::new(2, 0, 0),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: "chunked test bundle".into(),
        security_floor: None,
        images: vec![ImageEntry {
            name: "rootfs.ext4".into(),
            slot_class: "rootfs".into(),
            payload: PAYLOAD_CHUNKED.into(),
            compression: COMPRESSION_ZSTD.into(),
            size: image.len() as u64,
            compressed_size: payload.len() as u64,
            payload_sha256: hex::encode(sha(&payload)),
            sha256: hex::encode(sha(image)),
            chunks: Some(info),
        }],
    };
    (
        index.clone(),
        Parts {
            manifest,
            index: encoded,
            frames: frame_bytes,
            delta: delta_bytes,
        },
    )
}

impl Parts {
    /// Makes the manifest agree with the current index bytes (a producer that signed a bad index).
    pub(crate) fn seal_index(&mut self) {
        let info = self.manifest.images[0].chunks.as_mut().unwrap();
        info.index_size = self.index.len() as u64;
        info.index_sha256 = hex::encode(sha(&self.index));
    }
}

fn entry(out: &mut Vec<u8>, path: &str, content: &[u8]) {
    out.extend_from_slice(&entry_header(path, content.len() as u64, 0).unwrap());
    out.extend_from_slice(content);
    out.extend_from_slice(&[0u8; BLOCK][..padding_len(content.len() as u64)]);
}

/// Frames and signs `parts` into a bundle.
pub(crate) fn frame(parts: &Parts) -> Built {
    let key = SecretKey::generate();
    let trust = TrustRoot::new(1, 1, vec![key.public_key()]).unwrap();
    let manifest_bytes = parts.manifest.to_bytes();
    let signatures = encode_signatures(&sign_manifest(&manifest_bytes, &[key]));
    let image = &parts.manifest.images[0];
    let mut out = Vec::new();
    entry(&mut out, FORMAT_ENTRY, &format_marker());
    entry(&mut out, MANIFEST_ENTRY, &manifest_bytes);
    entry(&mut out, SIGNATURES_ENTRY, &signatures);
    entry(&mut out, &image.index_path(), &parts.index);
    entry(&mut out, &image.entry_path(), &parts.frames.concat());
    if image.chunks.as_ref().unwrap().base.is_some() {
        entry(&mut out, &image.delta_path(), &parts.delta);
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    Built {
        bundle: out,
        manifest: parts.manifest.clone(),
        manifest_bytes,
        signatures_len: signatures.len() as u64,
        trust,
    }
}

/// An honest chunked bundle of `image`, with deltas against `base` if given.
pub(crate) fn build(image: &[u8], base: Option<&[u8]>) -> Built {
    frame(&parts(image, base).1)
}
