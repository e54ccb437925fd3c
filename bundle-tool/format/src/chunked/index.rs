//! The binary chunk index (`index/<name>`): fixed-size little-endian records, so its exact length is known from
//! the counts alone and the writer can reserve its room before compressing the frames behind it.
//!
//! ```text
//! header  32 B  "OTACIDX1", u32 chunks N, u32 frames F, u32 deltas D, u32 min, u32 avg, u32 max
//! frames  F x 40 B  u32 chunk count, u32 compressed size, [32] SHA-256 of the compressed frame
//! chunks  N x 44 B  u32 size, [32] SHA-256 of the chunk, u64 offset in the base image (NO_BASE: not there)
//! deltas  D x 24 B  u32 chunk, u32 compressed size, u64 reference offset, u32 reference length, u32 zero
//! ```
//!
//! [`ChunkIndex::decode`] accepts only an index whose every count, size and offset agrees with the manifest, so
//! code that uses a decoded index never meets an out-of-range number.

use crate::error::BundleError;

/// The index's magic bytes.
pub const MAGIC: &[u8; 8] = b"OTACIDX1";
/// Length of the index header.
pub const HEADER_LEN: usize = 32;
/// Length of one frame record.
pub const FRAME_LEN: usize = 40;
/// Length of one chunk record.
pub const CHUNK_LEN: usize = 44;
/// Length of one delta record.
pub const DELTA_LEN: usize = 24;
/// Largest index a reader accepts: it is held in memory on the robot (a 1 GiB image needs about 0.5 MB).
pub const MAX_INDEX: u64 = 32 << 20;
/// Largest uncompressed frame (frames are decoded in pieces, so this bounds the compressed bytes a decode holds,
/// not its output).
pub const MAX_FRAME_RAW: u64 = 24 << 20;
/// Largest zstd window of a plain frame (8 MiB, zstd's own choice up to level 19): the writer caps it, readers
/// refuse more. Decoding a frame in pieces holds one window, whatever the frame's size.
pub const FRAME_WINDOW_LOG_MAX: u32 = 23;
/// Largest delta reference, read from the base image on the robot.
pub const MAX_REF: u32 = 4 << 20;
/// `base_offset` of a chunk the base image does not hold.
pub const NO_BASE: u64 = u64::MAX;

/// FastCDC (v2020, normalisation level 1) chunk size bounds. A robot that is not on the delta base cuts its
/// active slot with the same parameters to find chunks it already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// Minimum chunk size (except the last chunk of an image).
    pub min: u32,
    /// Average chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

/// 16 / 64 / 256 KiB: small enough that a small change costs one 64 KiB chunk, large enough that the index of a
/// 1 GiB image stays near half a megabyte.
pub const DEFAULT_PARAMS: ChunkParams = ChunkParams {
    min: 16 << 10,
    avg: 64 << 10,
    max: 256 << 10,
};

impl ChunkParams {
    /// FastCDC v2020's accepted ranges.
    fn check(&self) -> Result<(), String> {
        let ok = (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
            && u64::from(self.max) <= MAX_FRAME_RAW;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk parameters {}/{}/{} are outside what FastCDC accepts",
                self.min, self.avg, self.max
            ))
        }
    }
}

/// One independently compressed frame: a run of consecutive chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// How many chunks the frame holds.
    pub chunks: u32,
    /// Size of the compressed frame in the payload entry.
    pub compressed_size: u32,
    /// SHA-256 of the compressed frame bytes.
    pub sha256: [u8; 32],
}

/// One content-defined chunk of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Chunk size.
    pub size: u32,
    /// SHA-256 of the chunk bytes.
    pub sha256: [u8; 32],
    /// Where the base image holds the same bytes, or [`NO_BASE`].
    pub base_offset: u64,
}

/// A chunk encoded against bytes of the base image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaRecord {
    /// The chunk this delta produces.
    pub chunk: u32,
    /// Size of the delta frame in the delta entry.
    pub compressed_size: u32,
    /// Start of the reference (the zstd prefix) in the base image.
    pub ref_offset: u64,
    /// Length of the reference.
    pub ref_len: u32,
}

/// What the manifest says the index must agree with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLimits {
    /// The image's uncompressed size.
    pub image_size: u64,
    /// Size of the payload entry (all frames).
    pub compressed_size: u64,
    /// Size of the delta entry, when the image has a base.
    pub delta_size: Option<u64>,
    /// Size of the base image, when the image has a base.
    pub base_size: Option<u64>,
}

/// A decoded, checked chunk index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    /// Chunking parameters.
    pub params: ChunkParams,
    /// Frames in payload order.
    pub frames: Vec<FrameRecord>,
    /// Chunks in image order.
    pub chunks: Vec<ChunkRecord>,
    /// Deltas in chunk order.
    pub deltas: Vec<DeltaRecord>,
}

/// Where a frame lies in the payload entry and in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpan {
    /// Offset of the compressed frame in the payload entry.
    pub payload_offset: u64,
    /// Compressed size.
    pub compressed_size: u64,
    /// Offset of its first byte in the image.
    pub image_offset: u64,
    /// Uncompressed size.
    pub raw_size: u64,
    /// Index of its first chunk.
    pub first_chunk: usize,
    /// Number of chunks.
    pub chunks: usize,
}

impl ChunkIndex {
    /// The exact encoded length of an index with these counts.
    pub fn encoded_len(chunks: usize, frames: usize, deltas: usize) -> u64 {
        (HEADER_LEN + frames * FRAME_LEN + chunks * CHUNK_LEN + deltas * DELTA_LEN) as u64
    }

    /// The index bytes.
    pub fn encode(&self) -> Vec<u8> {
        let len = Self::encoded_len(self.chunks.len(), self.frames.len(), self.deltas.len());
        let mut out = Vec::with_capacity(len as usize);
        out.extend_from_slice(MAGIC);
        for n in [
            self.chunks.len() as u32,
            self.frames.len() as u32,
            self.deltas.len() as u32,
            self.params.min,
            self.params.avg,
            self.params.max,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for f in &self.frames {
            out.extend_from_slice(&f.chunks.to_le_bytes());
            out.extend_from_slice(&f.compressed_size.to_le_bytes());
            out.extend_from_slice(&f.sha256);
        }
        for c in &self.chunks {
            out.extend_from_slice(&c.size.to_le_bytes());
            out.extend_from_slice(&c.sha256);
            out.extend_from_slice(&c.base_offset.to_le_bytes());
        }
        for d in &self.deltas {
            out.extend_from_slice(&d.chunk.to_le_bytes());
            out.extend_from_slice(&d.compressed_size.to_le_bytes());
            out.extend_from_slice(&d.ref_offset.to_le_bytes());
            out.extend_from_slice(&d.ref_len.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        debug_assert_eq!(out.len() as u64, len);
        out
    }

    /// Decodes and checks an index against the manifest's facts. Every way an index can disagree with itself or
    /// the manifest is refused with a message naming it.
    pub fn decode(bytes: &[u8], limits: &IndexLimits) -> Result<ChunkIndex, BundleError> {
        let bad = |msg: String| BundleError::BadIndex(msg);
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(bad("it does not start with the index magic".into()));
        }
        if bytes.len() as u64 > MAX_INDEX {
            return Err(bad(format!("it is larger than {MAX_INDEX} bytes")));
        }
        let mut r = Cursor { bytes, pos: 8 };
        let (n, f, d) = (r.u32() as usize, r.u32() as usize, r.u32() as usize);
        let params = ChunkParams {
            min: r.u32(),
            avg: r.u32(),
            max: r.u32(),
        };
        params.check().map_err(bad)?;
        let expected = Self::encoded_len(n, f, d);
        if bytes.len() as u64 != expected {
            return Err(bad(format!(
                "it is {} bytes, but its counts ({n} chunks, {f} frames, {d} deltas) need {expected}",
                bytes.len()
            )));
        }
        if n == 0 || f == 0 {
            return Err(bad("it lists no chunks or no frames".into()));
        }
        let frames: Vec<FrameRecord> = (0..f)
            .map(|_| FrameRecord {
                chunks: r.u32(),
                compressed_size: r.u32(),
                sha256: r.digest(),
            })
            .collect();
        let chunks: Vec<ChunkRecord> = (0..n)
            .map(|_| ChunkRecord {
                size: r.u32(),
                sha256: r.digest(),
                base_offset: r.u64(),
            })
            .collect();
        let deltas: Vec<DeltaRecord> = (0..d)
            .map(|_| {
                let rec = DeltaRecord {
                    chunk: r.u32(),
                    compressed_size: r.u32(),
                    ref_offset: r.u64(),
                    ref_len: r.u32(),
                };
                (rec, r.u32())
            })
            .map(|(rec, zero)| (zero == 0).then_some(rec).ok_or(()))
            .collect::<Result<_, ()>>()
            .map_err(|()| bad("a delta record has a non-zero reserved field".into()))?;
        let index = ChunkIndex {
            params,
            frames,
            chunks,
            deltas,
        };
        index.check(limits).map_err(bad)?;
        Ok(index)
    }

    /// The consistency rules, in the order a reader meets them.
    fn check(&self, limits: &IndexLimits) -> Result<(), String> {
        let mut image = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.size == 0 || c.size > self.params.max {
                return Err(format!(
                    "chunk {i} has size {}, outside 1..={}",
                    c.size, self.params.max
                ));
            }
            if c.base_offset != NO_BASE {
                let Some(base) = limits.base_size else {
                    return Err(format!(
                        "chunk {i} names a base offset, but the image has no base"
                    ));
                };
                if c.base_offset
                    .checked_add(u64::from(c.size))
                    .is_none_or(|end| end > base)
                {
                    return Err(format!("chunk {i} lies outside the base image"));
                }
            }
            image += u64::from(c.size);
        }
        if image != limits.image_size {
            return Err(format!(
                "its chunks add up to {image} bytes, but the image is {} bytes",
                limits.image_size
            ));
        }
        let (mut chunks, mut payload) = (0u64, 0u64);
        for (i, f) in self.frames.iter().enumerate() {
            if f.chunks == 0 || f.compressed_size == 0 {
                return Err(format!("frame {i} is empty"));
            }
            let first = chunks as usize;
            chunks += u64::from(f.chunks);
            if chunks > self.chunks.len() as u64 {
                return Err(format!("frame {i} runs past the last chunk"));
            }
            let raw: u64 = self.chunks[first..chunks as usize]
                .iter()
                .map(|c| u64::from(c.size))
                .sum();
            if raw > MAX_FRAME_RAW {
                return Err(format!(
                    "frame {i} holds {raw} bytes, more than {MAX_FRAME_RAW}"
                ));
            }
            if u64::from(f.compressed_size) > compress_bound(raw) {
                return Err(format!(
                    "frame {i} is larger than its content could compress to"
                ));
            }
            payload += u64::from(f.compressed_size);
        }
        if chunks != self.chunks.len() as u64 {
            return Err(format!(
                "its frames hold {chunks} chunks, but it lists {}",
                self.chunks.len()
            ));
        }
        if payload != limits.compressed_size {
            return Err(format!(
                "its frames add up to {payload} bytes, but the payload is {} bytes",
                limits.compressed_size
            ));
        }
        let mut delta = 0u64;
        let mut previous: Option<u32> = None;
        for (i, d) in self.deltas.iter().enumerate() {
            let Some(base) = limits.base_size else {
                return Err("it lists deltas, but the image has no base".into());
            };
            if previous.is_some_and(|p| d.chunk <= p) {
                return Err(format!("delta {i} is out of order or repeats a chunk"));
            }
            previous = Some(d.chunk);
            let Some(chunk) = self.chunks.get(d.chunk as usize) else {
                return Err(format!(
                    "delta {i} names chunk {}, which does not exist",
                    d.chunk
                ));
            };
            if d.compressed_size == 0
                || u64::from(d.compressed_size) > compress_bound(u64::from(chunk.size))
            {
                return Err(format!(
                    "delta {i} has an impossible size {}",
                    d.compressed_size
                ));
            }
            if d.ref_len == 0 || d.ref_len > MAX_REF {
                return Err(format!(
                    "delta {i} has a reference of {} bytes, outside 1..={MAX_REF}",
                    d.ref_len
                ));
            }
            if d.ref_offset
                .checked_add(u64::from(d.ref_len))
                .is_none_or(|end| end > base)
            {
                return Err(format!("delta {i}'s reference lies outside the base image"));
            }
            delta += u64::from(d.compressed_size);
        }
        if delta != limits.delta_size.unwrap_or(0) {
            return Err(format!(
                "its deltas add up to {delta} bytes, but the delta entry is {} bytes",
                limits.delta_size.unwrap_or(0)
            ));
        }
        Ok(())
    }

    /// Offset of each chunk in the image.
    pub fn chunk_offsets(&self) -> Vec<u64> {
        let mut at = 0;
        self.chunks
            .iter()
            .map(|c| {
                let offset = at;
                at += u64::from(c.size);
                offset
            })
            .collect()
    }

    /// Where each frame lies in the payload and in the image.
    pub fn frame_spans(&self) -> Vec<FrameSpan> {
        let (mut payload, mut image, mut chunk) = (0u64, 0u64, 0usize);
        self.frames
            .iter()
            .map(|f| {
                let n = f.chunks as usize;
                let raw: u64 = self.chunks[chunk..chunk + n]
                    .iter()
                    .map(|c| u64::from(c.size))
                    .sum();
                let span = FrameSpan {
                    payload_offset: payload,
                    compressed_size: u64::from(f.compressed_size),
                    image_offset: image,
                    raw_size: raw,
                    first_chunk: chunk,
                    chunks: n,
                };
                payload += span.compressed_size;
                image += raw;
                chunk += n;
                span
            })
            .collect()
    }

    /// Offset of each delta frame in the delta entry.
    pub fn delta_offsets(&self) -> Vec<u64> {
        let mut at = 0;
        self.deltas
            .iter()
            .map(|d| {
                let offset = at;
                at += u64::from(d.compressed_size);
                offset
            })
            .collect()
    }

    /// The frame holding each chunk.
    pub fn frame_of_chunks(&self) -> Vec<usize> {
        self.frames
            .iter()
            .enumerate()
            .flat_map(|(i, f)| std::iter::repeat_n(i, f.chunks as usize))
            .collect()
    }
}

/// zstd's worst-case compressed size of `n` bytes (ZSTD_COMPRESSBOUND).
pub fn compress_bound(n: u64) -> u64 {
    let margin = if n < 128 << 10 {
        ((128 << 10) - n) >> 11
    } else {
        0
    };
    n + (n >> 8) + margin
}

/// Reads fixed-width little-endian fields; lengths were checked before any read.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let out = self.bytes[self.pos..self.pos + N]
            .try_into()
            .expect("length checked");
        self.pos += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn digest(&mut self) -> [u8; 32] {
        self.take()
    }
}
