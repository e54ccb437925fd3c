//! The index codec: every way an index can be wrong is refused with its own message; encode/decode round trip;
//! decode never panics.

use proptest::prelude::*;

use crate::chunked::index::{compress_bound, CHUNK_LEN, DELTA_LEN, FRAME_LEN};
use crate::chunked::{
    ChunkIndex, ChunkParams, ChunkRecord, DeltaRecord, FrameRecord, IndexLimits, HEADER_LEN,
    MAX_FRAME_RAW, MAX_INDEX, MAX_REF, NO_BASE,
};
use crate::error::BundleError;

const BASE: u64 = 100_000;

/// Five chunks in two frames, deltas for chunks 1 and 3, hints for chunks 0 and 4.
pub(super) fn sample() -> (ChunkIndex, IndexLimits) {
    let sizes = [1000u32, 2000, 1500, 3000, 500];
    let chunks: Vec<ChunkRecord> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| ChunkRecord {
            size,
            sha256: [i as u8 + 1; 32],
            base_offset: match i {
                0 => 0,
                4 => 50_000,
                _ => NO_BASE,
            },
        })
        .collect();
    let frames = vec![
        FrameRecord {
            chunks: 2,
            compressed_size: 700,
            sha256: [0xa0; 32],
        },
        FrameRecord {
            chunks: 3,
            compressed_size: 900,
            sha256: [0xa1; 32],
        },
    ];
    let deltas = vec![
        DeltaRecord {
            chunk: 1,
            compressed_size: 100,
            ref_offset: 1000,
            ref_len: 4096,
        },
        DeltaRecord {
            chunk: 3,
            compressed_size: 200,
            ref_offset: 90_000,
            ref_len: 10_000,
        },
    ];
    let index = ChunkIndex {
        params: ChunkParams {
            min: 256,
            avg: 1024,
            max: 4096,
        },
        frames,
        chunks,
        deltas,
    };
    let limits = IndexLimits {
        image_size: 8000,
        compressed_size: 1600,
        delta_size: Some(300),
        base_size: Some(BASE),
    };
    (index, limits)
}

fn refused(index: &ChunkIndex, limits: &IndexLimits) -> String {
    refused_bytes(&index.encode(), limits)
}

fn refused_bytes(bytes: &[u8], limits: &IndexLimits) -> String {
    match ChunkIndex::decode(bytes, limits) {
        Ok(_) => panic!("a bad index was accepted"),
        Err(BundleError::BadIndex(msg)) => msg,
        Err(other) => panic!("wrong error kind: {other}"),
    }
}

#[test]
fn the_sample_is_valid_and_round_trips() {
    let (index, limits) = sample();
    let bytes = index.encode();
    assert_eq!(
        bytes.len() as u64,
        ChunkIndex::encoded_len(5, 2, 2),
        "encoded_len is exact"
    );
    assert_eq!(ChunkIndex::decode(&bytes, &limits).unwrap(), index);
}

/// Each case: what was done to the index, and the words its refusal must contain.
type Case = (
    &'static str,
    Box<dyn Fn(&mut ChunkIndex, &mut IndexLimits)>,
    &'static str,
);

fn structural_cases() -> Vec<Case> {
    vec![
        (
            "params below FastCDC's range",
            Box::new(|i, _| i.params.min = 10),
            "outside what FastCDC accepts",
        ),
        (
            "params min > avg",
            Box::new(|i, _| i.params.min = 2048),
            "outside what FastCDC accepts",
        ),
        (
            "empty chunk",
            Box::new(|i, l| {
                i.chunks[2].size = 0;
                l.image_size -= 1500
            }),
            "chunk 2 has size 0",
        ),
        (
            "oversized chunk",
            Box::new(|i, l| {
                i.chunks[2].size = 5000;
                l.image_size += 3500
            }),
            "chunk 2 has size 5000",
        ),
        (
            "hint outside the base",
            Box::new(|i, _| i.chunks[4].base_offset = BASE - 10),
            "chunk 4 lies outside the base image",
        ),
        (
            "hint overflowing",
            Box::new(|i, _| i.chunks[0].base_offset = u64::MAX - 1),
            "chunk 0 lies outside the base image",
        ),
        (
            "hint without a base",
            Box::new(|i, l| {
                i.deltas.clear();
                l.delta_size = None;
                l.base_size = None;
                let _ = i;
            }),
            "chunk 0 names a base offset",
        ),
        (
            "chunk sizes disagree with the image",
            Box::new(|_, l| l.image_size += 1),
            "chunks add up to 8000 bytes",
        ),
        (
            "empty frame",
            Box::new(|i, _| i.frames[0].chunks = 0),
            "frame 0 is empty",
        ),
        (
            "zero-byte frame",
            Box::new(|i, l| {
                i.frames[0].compressed_size = 0;
                l.compressed_size -= 700
            }),
            "frame 0 is empty",
        ),
        (
            "frame past the last chunk",
            Box::new(|i, _| i.frames[1].chunks = 4),
            "frame 1 runs past the last chunk",
        ),
        (
            "frames hold fewer chunks",
            Box::new(|i, _| i.frames[1].chunks = 2),
            "frames hold 4 chunks, but it lists 5",
        ),
        (
            "frame larger than compress bound",
            Box::new(|i, l| {
                i.frames[0].compressed_size = 5000;
                l.compressed_size += 4300
            }),
            "frame 0 is larger than its content could compress to",
        ),
        (
            "frame sizes disagree with the payload",
            Box::new(|_, l| l.compressed_size -= 1),
            "frames add up to 1600 bytes",
        ),
        (
            "deltas without a base",
            Box::new(|i, l| {
                for c in &mut i.chunks {
                    c.base_offset = NO_BASE
                }
                l.base_size = None;
            }),
            "lists deltas, but the image has no base",
        ),
        (
            "deltas reordered",
            Box::new(|i, _| i.deltas.swap(0, 1)),
            "delta 1 is out of order",
        ),
        (
            "delta duplicated",
            Box::new(|i, _| i.deltas[1].chunk = 1),
            "delta 1 is out of order or repeats a chunk",
        ),
        (
            "delta of a missing chunk",
            Box::new(|i, _| i.deltas[1].chunk = 5),
            "delta 1 names chunk 5, which does not exist",
        ),
        (
            "empty delta",
            Box::new(|i, l| {
                i.deltas[0].compressed_size = 0;
                l.delta_size = Some(200)
            }),
            "delta 0 has an impossible size 0",
        ),
        (
            "delta larger than its chunk could compress to",
            Box::new(|i, l| {
                i.deltas[0].compressed_size = 3000;
                l.delta_size = Some(3200)
            }),
            "delta 0 has an impossible size 3000",
        ),
        (
            "empty reference",
            Box::new(|i, _| i.deltas[0].ref_len = 0),
            "delta 0 has a reference of 0 bytes",
        ),
        (
            "oversized reference",
            Box::new(|i, _| i.deltas[0].ref_len = MAX_REF + 1),
            "outside 1..=",
        ),
        (
            "reference outside the base",
            Box::new(|i, _| i.deltas[1].ref_offset = 90_001),
            "delta 1's reference lies outside the base image",
        ),
        (
            "reference overflowing",
            Box::new(|i, _| i.deltas[1].ref_offset = u64::MAX - 5),
            "delta 1's reference lies outside the base image",
        ),
        (
            "delta sizes disagree with the delta entry",
            Box::new(|_, l| l.delta_size = Some(301)),
            "deltas add up to 300 bytes, but the delta entry is 301",
        ),
        (
            "deltas but no delta entry",
            Box::new(|_, l| l.delta_size = None),
            "but the delta entry is 0 bytes",
        ),
        (
            "delta missing",
            Box::new(|i, _| {
                i.deltas.pop();
            }),
            "deltas add up to 100 bytes",
        ),
        (
            "frame record duplicated",
            Box::new(|i, l| {
                i.frames.push(i.frames[1].clone());
                l.compressed_size += 900
            }),
            "frame 2 runs past the last chunk",
        ),
        (
            "frame record missing",
            Box::new(|i, l| {
                i.frames.pop();
                l.compressed_size -= 900
            }),
            "frames hold 2 chunks, but it lists 5",
        ),
        (
            "chunk record duplicated",
            Box::new(|i, _| {
                let c = i.chunks[2].clone();
                i.chunks.insert(2, c)
            }),
            "chunks add up to 9500 bytes",
        ),
        (
            "chunk record missing",
            Box::new(|i, _| {
                i.chunks.pop();
            }),
            "chunks add up to 7500 bytes",
        ),
        (
            "no chunks, no frames",
            Box::new(|i, _| {
                i.chunks.clear();
                i.frames.clear();
                i.deltas.clear();
            }),
            "lists no chunks or no frames",
        ),
    ]
}

#[test]
fn every_structural_fault_is_refused_with_its_own_message() {
    let mut messages = std::collections::HashSet::new();
    for (what, tamper, expect) in structural_cases() {
        let (mut index, mut limits) = sample();
        tamper(&mut index, &mut limits);
        let msg = refused(&index, &limits);
        assert!(
            msg.contains(expect),
            "{what}: got '{msg}', wanted '{expect}'"
        );
        messages.insert(msg);
    }
    assert!(messages.len() >= 28, "messages are specific: {messages:?}");
}

#[test]
fn a_frame_over_the_raw_limit_is_refused() {
    let chunks = (MAX_FRAME_RAW / 4096 + 1) as usize;
    let index = ChunkIndex {
        params: ChunkParams {
            min: 1024,
            avg: 2048,
            max: 4096,
        },
        frames: vec![FrameRecord {
            chunks: chunks as u32,
            compressed_size: 100,
            sha256: [0; 32],
        }],
        chunks: vec![
            ChunkRecord {
                size: 4096,
                sha256: [1; 32],
                base_offset: NO_BASE,
            };
            chunks
        ],
        deltas: vec![],
    };
    let limits = IndexLimits {
        image_size: chunks as u64 * 4096,
        compressed_size: 100,
        delta_size: None,
        base_size: None,
    };
    let msg = refused(&index, &limits);
    assert!(msg.contains(&format!("more than {MAX_FRAME_RAW}")), "{msg}");
}

#[test]
fn byte_level_faults_are_refused() {
    let (index, limits) = sample();
    let good = index.encode();
    let deltas_at = HEADER_LEN + 2 * FRAME_LEN + 5 * CHUNK_LEN;

    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(refused_bytes(&magic, &limits).contains("index magic"));

    assert!(refused_bytes(&good[..HEADER_LEN - 1], &limits).contains("index magic"));

    let mut trailing = good.clone();
    trailing.push(0);
    assert!(
        refused_bytes(&trailing, &limits).contains("counts (5 chunks, 2 frames, 2 deltas) need")
    );

    assert!(refused_bytes(&good[..good.len() - 1], &limits).contains("need"));

    let mut more_chunks = good.clone();
    more_chunks[8] = 6;
    assert!(refused_bytes(&more_chunks, &limits).contains("6 chunks"));

    let mut reserved = good.clone();
    reserved[deltas_at + DELTA_LEN - 1] = 1;
    assert!(refused_bytes(&reserved, &limits).contains("non-zero reserved field"));

    let huge = vec![0u8; MAX_INDEX as usize + 1];
    let mut huge = huge;
    huge[..8].copy_from_slice(crate::chunked::index::MAGIC);
    assert!(refused_bytes(&huge, &limits).contains("larger than"));

    // Records reordered so that counts and sizes still add up pass decode; the index digest in the manifest
    // refuses them (the reader's tests show it). Reordered deltas are refused here (see the structural cases).
}

#[test]
fn compress_bound_matches_zstd() {
    for n in [
        0usize,
        1,
        100,
        4096,
        128 << 10,
        (128 << 10) + 1,
        1 << 20,
        8 << 20,
    ] {
        assert_eq!(
            compress_bound(n as u64),
            zstd::zstd_safe::compress_bound(n) as u64,
            "n = {n}"
        );
    }
}

/// A valid index with its limits, of any shape the format allows (small sizes, so cases are cheap).
pub(super) fn any_index() -> impl Strategy<Value = (ChunkIndex, IndexLimits)> {
    (
        prop::collection::vec((1u32..=4096, any::<[u8; 32]>(), any::<bool>()), 1..40),
        any::<bool>(),
        prop::collection::vec(1usize..6, 1..40),
        any::<u64>(),
    )
        .prop_map(|(raw_chunks, with_base, cuts, seed)| {
            let base_size = 1u64 << 20;
            let mut rng = seed;
            let mut next = move || {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                rng >> 33
            };
            let chunks: Vec<ChunkRecord> = raw_chunks
                .iter()
                .map(|&(size, sha256, hinted)| ChunkRecord {
                    size,
                    sha256,
                    base_offset: if with_base && hinted {
                        next() % (base_size - u64::from(size))
                    } else {
                        NO_BASE
                    },
                })
                .collect();
            let mut frames = Vec::new();
            let mut at = 0usize;
            for cut in cuts.iter().cycle() {
                if at == chunks.len() {
                    break;
                }
                let n = (*cut).min(chunks.len() - at);
                let raw: u64 = chunks[at..at + n].iter().map(|c| u64::from(c.size)).sum();
                frames.push(FrameRecord {
                    chunks: n as u32,
                    compressed_size: 1 + (next() % compress_bound(raw)) as u32,
                    sha256: [frames.len() as u8; 32],
                });
                at += n;
            }
            let deltas: Vec<DeltaRecord> = if with_base {
                let picked: Vec<(usize, &ChunkRecord)> = chunks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.base_offset == NO_BASE && next() % 2 == 0)
                    .collect();
                picked
                    .into_iter()
                    .map(|(i, c)| {
                        let ref_len = (1 + next() % u64::from(MAX_REF)).min(base_size);
                        DeltaRecord {
                            chunk: i as u32,
                            compressed_size: 1
                                + (next() % compress_bound(u64::from(c.size))) as u32,
                            ref_offset: next() % (base_size - ref_len + 1),
                            ref_len: ref_len as u32,
                        }
                    })
                    .collect()
            } else {
                vec![]
            };
            let limits = IndexLimits {
                image_size: chunks.iter().map(|c| u64::from(c.size)).sum(),
                compressed_size: frames.iter().map(|f| u64::from(f.compressed_size)).sum(),
                delta_size: with_base
                    .then(|| deltas.iter().map(|d| u64::from(d.compressed_size)).sum()),
                base_size: with_base.then_some(base_size),
            };
            let index = ChunkIndex {
                params: ChunkParams {
                    min: 1024,
                    avg: 2048,
                    max: 4096,
                },
                frames,
                chunks,
                deltas,
            };
            (index, limits)
        })
}

proptest! {
    #[test]
    fn encode_decode_round_trip((index, limits) in any_index()) {
        let bytes = index.encode();
        prop_assert_eq!(bytes.len() as u64, ChunkIndex::encoded_len(index.chunks.len(), index.frames.len(), index.deltas.len()));
        prop_assert_eq!(ChunkIndex::decode(&bytes, &limits).unwrap(), index);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (_, limits) = sample();
        let mut with_magic = crate::chunked::index::MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = ChunkIndex::decode(&bytes, &limits);
        let _ = ChunkIndex::decode(&with_magic, &limits);
    }

    #[test]
    fn decode_never_panics_on_damaged_indexes(
        (index, limits) in any_index(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = index.encode();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(decoded) = ChunkIndex::decode(&bytes, &limits) {
            // Whatever passes is self-consistent: its derived views cover the image and the payload exactly.
            let spans = decoded.frame_spans();
            prop_assert_eq!(spans.iter().map(|s| s.raw_size).sum::<u64>(), limits.image_size);
            prop_assert_eq!(spans.iter().map(|s| s.compressed_size).sum::<u64>(), limits.compressed_size);
            prop_assert_eq!(decoded.frame_of_chunks().len(), decoded.chunks.len());
        }
    }
}
