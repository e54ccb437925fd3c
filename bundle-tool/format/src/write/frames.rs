//! The work of one frame (compress its chunks as one zstd frame) and of one delta, done on the pool's threads.
//! Both check the bytes read again against digests of pass 1, so an image that changed between the passes fails
//! the build instead of giving a bundle whose index lies: a delta checks its chunk, a frame its last chunk (hashing
//! every chunk again would cost a fifth of the build; the caller also compares the file's metadata before and
//! after).

use sha2::{Digest, Sha256};

use crate::chunked::{ChunkRecord, FRAME_WINDOW_LOG_MAX};
use crate::error::BundleError;
use crate::write::delta::encode_checked_delta;

/// A compressed frame or delta and what the index records of it.
pub struct Compressed {
    /// The zstd frame.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`.
    pub sha256: [u8; 32],
    /// Uncompressed bytes it holds (for progress).
    pub raw_len: u64,
}

/// The error for bytes that no longer match pass 1.
fn changed(image: &str) -> BundleError {
    BundleError::io(
        format!("reading image '{image}'"),
        std::io::Error::other("it changed while the bundle was being built"),
    )
}

/// Compresses a frame holding `chunks` (whose records pass 1 made) at `level`.
pub fn compress_frame(
    image: &str,
    raw: Vec<u8>,
    chunks: &[ChunkRecord],
    level: i32,
) -> Result<Compressed, BundleError> {
    let last = chunks.last().expect("a frame holds at least one chunk");
    let tail = raw
        .len()
        .checked_sub(last.size as usize)
        .map(|at| &raw[at..]);
    if tail.is_none_or(|b| <[u8; 32]>::from(Sha256::digest(b)) != last.sha256) {
        return Err(changed(image));
    }
    let bytes = compress_capped(&raw, level)
        .map_err(|e| BundleError::io(format!("compressing image '{image}'"), e))?;
    Ok(Compressed {
        sha256: Sha256::digest(&bytes).into(),
        bytes,
        raw_len: raw.len() as u64,
    })
}

/// zstd at `level` with the window capped at [`FRAME_WINDOW_LOG_MAX`] (only levels above 19 would choose more;
/// zstd shrinks it further to fit a smaller frame), so readers decode any frame holding one 8 MiB window.
pub fn compress_capped(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut zstd = zstd::bulk::Compressor::new(level)?;
    if level > 19 {
        zstd.set_parameter(zstd::zstd_safe::CParameter::WindowLog(FRAME_WINDOW_LOG_MAX))?;
    }
    zstd.compress(raw)
}

/// Encodes the chunk `raw` (recorded as `chunk`) against `reference` at `level`.
pub fn compress_delta(
    image: &str,
    raw: Vec<u8>,
    chunk: &ChunkRecord,
    reference: Vec<u8>,
    level: i32,
) -> Result<Compressed, BundleError> {
    if <[u8; 32]>::from(Sha256::digest(&raw)) != chunk.sha256 {
        return Err(changed(image));
    }
    let bytes = encode_checked_delta(&raw, &chunk.sha256, &reference, level)
        .map_err(|e| BundleError::io(format!("encoding a delta of image '{image}'"), e))?;
    Ok(Compressed {
        sha256: Sha256::digest(&bytes).into(),
        bytes,
        raw_len: raw.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zstd::zstd_safe::{DCtx, DParameter};

    #[test]
    fn frames_of_any_level_decode_within_the_window_readers_allow() {
        // Larger than the window, so zstd's choice of window is what the frame header names.
        let mut raw = vec![0u8; 10 << 20];
        let mut x = 7u64;
        for b in raw.iter_mut().step_by(61) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for level in [3, 19, 22] {
            let frame = compress_capped(&raw, level).unwrap();
            let mut dctx = DCtx::create();
            dctx.set_parameter(DParameter::WindowLogMax(FRAME_WINDOW_LOG_MAX))
                .unwrap();
            let mut out = Vec::with_capacity(raw.len());
            dctx.decompress(&mut out, &frame).unwrap_or_else(|e| {
                panic!("level {level}: {}", zstd::zstd_safe::get_error_name(e))
            });
            assert!(out == raw, "level {level}");
        }
    }
}
