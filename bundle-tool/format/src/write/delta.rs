//! Deltas: each chunk the base image lacks, compressed by zstd with a window of the base image as its prefix
//! (ZSTD refPrefix), so the parts of it that merely moved or changed a little cost a few bytes. The reference is
//! chosen from the index alone (pure), so a robot finds the same bytes in its active slot.

use std::io;

use sha2::{Digest, Sha256};
use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter};

use crate::chunked::{ChunkIndex, ChunkRecord, NO_BASE};

/// Bytes of the base image a delta is compressed against.
pub const REFERENCE_LEN: u64 = 512 << 10;
/// zstd window of a delta frame: covers the reference and the largest chunk.
const WINDOW_LOG: u32 = 23;
/// Match-finder table sizes: about one slot per byte of reference and chunk. Larger tables (2^21, as first
/// designed) make deltas 0.01 % smaller on the 1 GiB benchmark pair but cost 40 % more time, mostly clearing them.
const TABLE_LOG: u32 = 19;

/// zstd level of delta frames: higher levels barely shrink them and cost much more time.
pub fn delta_level(level: i32) -> i32 {
    level.min(3)
}

/// Where the reference of each chunk missing from the base lies in the base image, in chunk order: a window of
/// [`REFERENCE_LEN`] bytes (the whole base when smaller) centred on where the chunk is expected. The expected
/// place keeps the chunk's distance from the nearest preceding chunk found in the base (else the nearest
/// following one; with none found, the chunk's own offset), clamped to the base.
/// `offsets` are the chunks' offsets in the image. Returns (chunk, reference offset, reference length).
pub fn reference_windows(
    chunks: &[ChunkRecord],
    offsets: &[u64],
    base_size: u64,
) -> Vec<(usize, u64, u32)> {
    // shift = base offset - image offset of the nearest found chunk.
    let shift_of = |i: usize| i128::from(chunks[i].base_offset) - i128::from(offsets[i]);
    let mut following = vec![None; chunks.len()];
    let mut next = None;
    for i in (0..chunks.len()).rev() {
        following[i] = next;
        if chunks[i].base_offset != NO_BASE {
            next = Some(shift_of(i));
        }
    }
    let len = REFERENCE_LEN.min(base_size);
    let mut preceding = None;
    let mut windows = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        if c.base_offset != NO_BASE {
            preceding = Some(shift_of(i));
            continue;
        }
        let shift = preceding.or(following[i]).unwrap_or(0);
        let centre = i128::from(offsets[i]) + shift + i128::from(c.size / 2);
        let start = (centre - i128::from(len / 2)).clamp(0, i128::from(base_size - len));
        windows.push((i, start as u64, len as u32));
    }
    windows
}

/// Frames whose every chunk is missing from the base: new content, or content changed all over. Only these may
/// go without deltas (a robot fetching such a frame fetches nothing it already holds).
pub fn new_frames(index: &ChunkIndex) -> Vec<bool> {
    index
        .frame_spans()
        .iter()
        .map(|f| {
            index.chunks[f.first_chunk..f.first_chunk + f.chunks]
                .iter()
                .all(|c| c.base_offset == NO_BASE)
        })
        .collect()
}

/// Whether the chunks of a new frame (of `raw` bytes) get deltas, given what their deltas cost together. Deltas
/// of content the base does not resemble cost about what compressing each chunk alone costs, while the frame
/// compresses them together with more context (on the 1 GiB benchmark pair such chunks cost 12.9 MB as deltas and
/// 7.5 MB in frames); deltas of content the base does resemble cost a few percent of it.
pub fn worth_deltas(raw: u64, deltas: u64) -> bool {
    u128::from(deltas) * 5 <= u128::from(raw)
}

/// Compresses `chunk` against `reference` at `level`.
pub fn encode_delta(chunk: &[u8], reference: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let zerr = |code| io::Error::other(zstd::zstd_safe::get_error_name(code).to_string());
    let mut cctx = CCtx::create();
    for p in [
        CParameter::CompressionLevel(level),
        CParameter::WindowLog(WINDOW_LOG),
        CParameter::HashLog(TABLE_LOG),
        CParameter::ChainLog(TABLE_LOG),
        CParameter::ContentSizeFlag(true),
        CParameter::ChecksumFlag(false),
    ] {
        cctx.set_parameter(p).map_err(zerr)?;
    }
    cctx.ref_prefix(reference).map_err(zerr)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(chunk.len()));
    cctx.compress2(&mut out, chunk).map_err(zerr)?;
    Ok(out)
}

/// Decodes a delta frame against `reference`; `size` is the chunk's size, the most it may produce.
pub fn decode_delta(delta: &[u8], reference: &[u8], size: usize) -> io::Result<Vec<u8>> {
    let zerr = |code| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            zstd::zstd_safe::get_error_name(code).to_string(),
        )
    };
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG))
        .map_err(zerr)?;
    dctx.ref_prefix(reference).map_err(zerr)?;
    let mut out = Vec::with_capacity(size);
    dctx.decompress(&mut out, delta).map_err(zerr)?;
    Ok(out)
}

/// [`encode_delta`], then decodes the result once and keeps it only if it gives back bytes with the chunk's
/// digest: a delta that a robot could not decode would fail every install that uses it.
pub fn encode_checked_delta(
    chunk: &[u8],
    sha256: &[u8; 32],
    reference: &[u8],
    level: i32,
) -> io::Result<Vec<u8>> {
    let delta = encode_delta(chunk, reference, level)?;
    let back = decode_delta(&delta, reference, chunk.len())?;
    if <[u8; 32]>::from(Sha256::digest(&back)) != *sha256 {
        return Err(io::Error::other(
            "a delta does not decode back to its chunk (zstd fault)",
        ));
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(size: u32, base_offset: u64) -> ChunkRecord {
        ChunkRecord {
            size,
            sha256: [0; 32],
            base_offset,
        }
    }

    fn reference_windows(chunks: &[ChunkRecord], base_size: u64) -> Vec<(usize, u64, u32)> {
        let offsets: Vec<u64> = chunks
            .iter()
            .scan(0u64, |at, c| {
                *at += u64::from(c.size);
                Some(*at - u64::from(c.size))
            })
            .collect();
        super::reference_windows(chunks, &offsets, base_size)
    }

    #[test]
    fn the_reference_follows_the_nearest_found_chunk() {
        let base = 100 << 20;
        // Chunk 1 is new; chunk 0 sits at 10 MiB in the base, so chunk 1 is expected right behind it.
        let chunks = [
            chunk(1 << 16, 10 << 20),
            chunk(1 << 16, NO_BASE),
            chunk(1 << 16, 50 << 20),
        ];
        let expected = (10 << 20) + (1 << 16) + (1 << 15) - (REFERENCE_LEN / 2);
        assert_eq!(
            reference_windows(&chunks, base),
            vec![(1, expected, REFERENCE_LEN as u32)]
        );
        // Without a preceding found chunk, the following one places it.
        let chunks = [chunk(1 << 16, NO_BASE), chunk(1 << 16, 50 << 20)];
        let expected = (50 << 20) - (1 << 16) + (1 << 15) - (REFERENCE_LEN / 2);
        assert_eq!(
            reference_windows(&chunks, base),
            vec![(0, expected, REFERENCE_LEN as u32)]
        );
        // Near the start and with a base smaller than a window, the window is clamped.
        assert_eq!(
            reference_windows(&[chunk(100, NO_BASE)], base),
            vec![(0, 0, REFERENCE_LEN as u32)]
        );
        assert_eq!(
            reference_windows(&[chunk(100, NO_BASE)], 1000),
            vec![(0, 0, 1000)]
        );
    }

    proptest! {
        #[test]
        fn references_lie_inside_the_base(
            chunks in proptest::collection::vec((1u32..300_000, proptest::option::of(0u64..1 << 30)), 1..60),
            base_size in 1u64..2 << 30,
        ) {
            let chunks: Vec<ChunkRecord> = chunks
                .into_iter()
                .map(|(size, at)| chunk(size, at.map_or(NO_BASE, |a| a.min(base_size.saturating_sub(u64::from(size))))))
                .collect();
            let windows = reference_windows(&chunks, base_size);
            let missing: Vec<usize> = (0..chunks.len()).filter(|&i| chunks[i].base_offset == NO_BASE).collect();
            prop_assert_eq!(windows.iter().map(|w| w.0).collect::<Vec<_>>(), missing);
            for (_, offset, len) in windows {
                prop_assert_eq!(u64::from(len), REFERENCE_LEN.min(base_size));
                prop_assert!(offset + u64::from(len) <= base_size);
            }
        }
    }

    #[test]
    fn only_frames_wholly_missing_from_the_base_may_go_without_deltas() {
        let chunks = [
            chunk(10, NO_BASE),
            chunk(10, NO_BASE),
            chunk(10, 0),
            chunk(10, NO_BASE),
            chunk(10, NO_BASE),
        ];
        let frame = |chunks| crate::chunked::FrameRecord {
            chunks,
            compressed_size: 1,
            sha256: [0; 32],
        };
        let index = ChunkIndex {
            params: crate::chunked::DEFAULT_PARAMS,
            frames: vec![frame(2), frame(2), frame(1)],
            chunks: chunks.to_vec(),
            deltas: Vec::new(),
        };
        assert_eq!(new_frames(&index), vec![true, false, true]);
        assert!(worth_deltas(1000, 200) && !worth_deltas(1000, 201));
        assert!(worth_deltas(0, 0) && !worth_deltas(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_delta_decodes_back_only_against_its_reference() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let reference: Vec<u8> = (0..REFERENCE_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut chunk = reference[1000..70_000].to_vec();
        chunk[500..520].copy_from_slice(b"a small local change");
        let sha: [u8; 32] = Sha256::digest(&chunk).into();
        let delta = encode_checked_delta(&chunk, &sha, &reference, 3).unwrap();
        assert!(delta.len() < 200, "{} bytes", delta.len());
        assert!(delta.len() * 20 < zstd::bulk::compress(&chunk, 3).unwrap().len());
        assert_eq!(
            decode_delta(&delta, &reference, chunk.len()).unwrap(),
            chunk
        );
        let mut other = reference.clone();
        other[2000] ^= 1;
        assert_ne!(
            decode_delta(&delta, &other, chunk.len()).ok(),
            Some(chunk.clone())
        );
        assert!(decode_delta(&delta, &reference, chunk.len() - 1).is_err());
    }
}
