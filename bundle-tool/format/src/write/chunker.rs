//! Pass 1 of a chunked image: cut it into content-defined chunks, hash each one, and group them into frames.
//! Reads the image once, front to back, holding at most one read buffer of it.

use std::collections::HashMap;
use std::io::{self, Read};

use fastcdc::v2020::FastCDC;
use sha2::{Digest, Sha256};

use crate::chunked::{ChunkParams, ChunkRecord, MAX_FRAME_RAW, NO_BASE};
use crate::hash_thread::{self, HashFeed};

/// Read buffer of the chunker: many chunks per refill, so the leftover copied to its front stays small.
const READ_BUFFER: usize = 4 << 20;
/// Read buffers handed to the whole-image hasher ahead of it.
const HASH_QUEUE: usize = 4;
/// A frame ends after at most this many chunks.
pub const FRAME_MAX_CHUNKS: u32 = 2048;
/// No frame ends on its content before it holds this many average chunks (10 MiB with the default parameters):
/// frames of ~15 MiB lose little against one zstd stream (independent frames each restart with an empty
/// window), yet two cores still decode in parallel. In average chunks, so small test images still get frames.
pub const FRAME_MIN_AVG_CHUNKS: u64 = 160;
/// A frame ends once it holds at least this many average chunks (20 MiB with the default parameters; so it never
/// exceeds this plus one maximal chunk, and never [`MAX_FRAME_RAW`]).
pub const FRAME_FULL_AVG_CHUNKS: u64 = 320;
/// Past [`FRAME_MIN_AVG_CHUNKS`], a frame ends after a chunk whose digest's first byte has these bits clear (one chunk
/// in 64, ~6 MiB of a typical image, so frames average ~15 MiB): frame ends then depend on content, so an
/// insertion early in an image does not shift every later frame (hits are sparse against the minimum, so
/// frames end where they ended before right after an insertion, or within a few frames), and a robot that is
/// not on the delta base still finds most of the old release's frames unchanged. Larger frames compress better
/// at the cost of larger fetches for such robots.
const FRAME_END_MASK: u8 = 0x3f;

/// Calls `on_chunk` with each FastCDC v2020 chunk of `input` (normalisation level 1), in order, and returns the
/// number of bytes read. The cut points are those of fastcdc's `StreamCDC` with the same parameters: a cut only
/// depends on the `max` bytes after the previous one, and the buffer always holds that many unless at the end.
pub fn for_each_chunk<R: Read>(
    mut input: R,
    params: ChunkParams,
    mut on_chunk: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let max = params.max as usize;
    let mut buf = vec![0u8; READ_BUFFER.max(2 * max)];
    let (mut len, mut total, mut eof) = (0usize, 0u64, false);
    loop {
        while !eof && len < buf.len() {
            match input.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    len += n;
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let cdc = FastCDC::new(&buf[..len], params.min, params.avg, params.max);
        let mut start = 0;
        while start < len && (eof || len - start >= max) {
            let (_, end) = cdc.cut(start, len - start);
            on_chunk(&buf[start..end])?;
            start = end;
        }
        if eof {
            return Ok(total);
        }
        buf.copy_within(start..len, 0);
        len -= start;
    }
}

/// Decides where frames end, chunk by chunk (pure).
#[derive(Debug, Clone)]
pub struct FrameGrouper {
    chunks: u32,
    raw: u64,
    /// No content-defined end before this many bytes.
    min: u64,
    /// A frame ends once it holds this many bytes (lower when chunks may be so large that one more would pass
    /// [`MAX_FRAME_RAW`]).
    full: u64,
}

impl FrameGrouper {
    /// A grouper for chunks cut with `params`.
    pub fn new(params: ChunkParams) -> Self {
        let avg = u64::from(params.avg);
        let full =
            (FRAME_FULL_AVG_CHUNKS * avg).min(MAX_FRAME_RAW.saturating_sub(u64::from(params.max)));
        FrameGrouper {
            chunks: 0,
            raw: 0,
            min: (FRAME_MIN_AVG_CHUNKS * avg).min(full),
            full,
        }
    }

    /// Adds the next chunk; true when the frame ends after it.
    pub fn push(&mut self, size: u32, sha256: &[u8; 32]) -> bool {
        self.chunks += 1;
        self.raw += u64::from(size);
        let end = (sha256[0] & FRAME_END_MASK == 0 && self.raw >= self.min)
            || self.chunks >= FRAME_MAX_CHUNKS
            || self.raw >= self.full;
        if end {
            self.chunks = 0;
            self.raw = 0;
        }
        end
    }

    /// Ends the frame here (a cut decided by the caller).
    pub fn end(&mut self) {
        self.chunks = 0;
        self.raw = 0;
    }

    /// True when chunks were pushed since the last frame end.
    pub fn is_open(&self) -> bool {
        self.chunks > 0
    }
}

/// A run of chunks the base does not hold, at least this many average chunks long (1 MiB with the default
/// parameters), gets frames of its own: new content whose deltas are poor is then left to whole frames that
/// robots on the base fetch (see `delta::worth_deltas`), instead of sharing frames with old chunks.
pub const NEW_RUN_AVG_CHUNKS: u64 = 16;

/// The frames of `chunks` (chunk counts, in order): [`FrameGrouper`]'s content-defined ends, and with a base
/// (`with_base`) also the start and the end of every long run of chunks the base does not hold (pure).
pub fn group_frames(chunks: &[ChunkRecord], params: ChunkParams, with_base: bool) -> Vec<u32> {
    // cut[i]: a frame ends after chunk i.
    let mut cut = vec![false; chunks.len()];
    if with_base {
        let long = NEW_RUN_AVG_CHUNKS * u64::from(params.avg);
        let mut i = 0;
        while i < chunks.len() {
            if chunks[i].base_offset != NO_BASE {
                i += 1;
                continue;
            }
            let start = i;
            let mut raw = 0u64;
            while i < chunks.len() && chunks[i].base_offset == NO_BASE {
                raw += u64::from(chunks[i].size);
                i += 1;
            }
            if raw >= long {
                if start > 0 {
                    cut[start - 1] = true;
                }
                cut[i - 1] = true;
            }
        }
    }
    let mut grouper = FrameGrouper::new(params);
    let (mut frames, mut open) = (Vec::new(), 0u32);
    for (c, cut) in chunks.iter().zip(cut) {
        open += 1;
        if grouper.push(c.size, &c.sha256) || cut {
            grouper.end();
            frames.push(std::mem::take(&mut open));
        }
    }
    if open > 0 {
        frames.push(open);
    }
    frames
}

/// What pass 1 learnt about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Chunks in image order, with their base offsets when a base was given.
    pub chunks: Vec<ChunkRecord>,
    /// Chunk count of each frame, in order.
    pub frames: Vec<u32>,
    /// Image size.
    pub size: u64,
    /// SHA-256 of the whole image.
    pub sha256: [u8; 32],
}

/// Pass 1: chunks, chunk digests and frames of `input`, its whole digest hashed on a thread of its own. `hints`
/// maps chunk digests of the base image to their first offset there.
pub fn scan<R: Read>(
    input: R,
    params: ChunkParams,
    hints: Option<&HashMap<[u8; 32], u64>>,
    mut progress: impl FnMut(u64),
) -> io::Result<Scan> {
    let mut chunks = Vec::new();
    let (size, sha256) = std::thread::scope(|scope| {
        let (feed, hasher) = hash_thread::spawn(scope, HASH_QUEUE);
        let tee = Tee { inner: input, feed };
        let size = for_each_chunk(tee, params, |bytes| {
            let sha256: [u8; 32] = Sha256::digest(bytes).into();
            let size = bytes.len() as u32;
            let base_offset = hints
                .and_then(|h| h.get(&sha256).copied())
                .unwrap_or(NO_BASE);
            chunks.push(ChunkRecord {
                size,
                sha256,
                base_offset,
            });
            progress(bytes.len() as u64);
            Ok(())
        });
        // The tee (and so the feed) was moved into the chunker and is dropped by now: the hasher ends.
        let digest = hasher.join().expect("the hashing thread does not panic");
        size.map(|size| (size, digest))
    })?;
    let frames = group_frames(&chunks, params, hints.is_some());
    Ok(Scan {
        chunks,
        frames,
        size,
        sha256,
    })
}

/// Hands a copy of everything read to the whole-image hasher.
struct Tee<R> {
    inner: R,
    feed: HashFeed,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let mut copy = self.feed.recycled.try_recv().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(&buf[..n]);
            self.feed
                .to_hasher
                .send(copy)
                .map_err(|_| io::Error::other("the hashing thread stopped"))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::DEFAULT_PARAMS;
    use proptest::prelude::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn cuts_like_fastcdc_on_the_whole_buffer_whatever_the_read_sizes() {
        let data = noise(3 * READ_BUFFER + 12345, 7);
        let expected: Vec<usize> = FastCDC::new(
            &data,
            DEFAULT_PARAMS.min,
            DEFAULT_PARAMS.avg,
            DEFAULT_PARAMS.max,
        )
        .map(|c| c.length)
        .collect();
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(100_003);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut got = Vec::new();
        let total = for_each_chunk(Dribble(&data), DEFAULT_PARAMS, |c| {
            got.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(total, data.len() as u64);
        assert_eq!(got, expected);
    }

    #[test]
    fn scan_hashes_the_whole_image_and_hints_base_chunks() {
        let data = noise(2 << 20, 3);
        let plain = scan(&data[..], DEFAULT_PARAMS, None, |_| {}).unwrap();
        assert_eq!(plain.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(plain.size, data.len() as u64);
        assert!(plain.chunks.iter().all(|c| c.base_offset == NO_BASE));
        let hints: HashMap<[u8; 32], u64> = [(plain.chunks[1].sha256, 99)].into();
        let hinted = scan(&data[..], DEFAULT_PARAMS, Some(&hints), |_| {}).unwrap();
        assert_eq!(hinted.chunks[1].base_offset, 99);
        assert_eq!(
            hinted
                .chunks
                .iter()
                .filter(|c| c.base_offset == NO_BASE)
                .count(),
            plain.chunks.len() - 1
        );
        let empty = scan(&[][..], DEFAULT_PARAMS, None, |_| {}).unwrap();
        assert!(empty.chunks.is_empty() && empty.frames.is_empty());
    }

    /// Frame ends of `chunks` ((size, first digest byte)), as image offsets.
    fn frame_ends(chunks: &[(u32, u8)]) -> Vec<u64> {
        let mut g = FrameGrouper::new(DEFAULT_PARAMS);
        let mut at = 0u64;
        let mut out = Vec::new();
        for (size, first) in chunks {
            at += u64::from(*size);
            let mut sha = [0xffu8; 32];
            sha[0] = *first;
            if g.push(*size, &sha) {
                out.push(at);
            }
        }
        out
    }

    /// Frame ends depend on content (past the minimum): after an insertion, frames end where they ended before
    /// right away in nearly every case, within a few frames always, and from then on every later one does too.
    #[test]
    fn frames_resynchronise_after_an_insertion() {
        let (mut at_once, mut cases) = (0, 0);
        for seed in 1..=64u64 {
            let chunks: Vec<(u32, u8)> = noise(6000 * 3, seed)
                .chunks(3)
                .map(|c| (16 << 10 | u32::from(c[0]) << 9 | u32::from(c[1]), c[2]))
                .collect();
            let before = frame_ends(&chunks);
            for inserted in [1, 17, 90] {
                let mut shifted = chunks[..inserted].to_vec();
                shifted.push((40 << 10, 0xff));
                shifted.extend_from_slice(&chunks[inserted..]);
                let after: Vec<u64> = frame_ends(&shifted)
                    .into_iter()
                    .map(|e| e - (40 << 10))
                    .collect();
                let k = after
                    .iter()
                    .position(|e| before.binary_search(e).is_ok())
                    .expect("frames resynchronise");
                assert!(k <= 6, "seed {seed}: {before:?} {after:?}");
                let at = before.binary_search(&after[k]).unwrap();
                assert_eq!(after[k..], before[at..], "seed {seed}");
                cases += 1;
                at_once += usize::from(k <= 1);
            }
        }
        assert!(at_once * 100 >= cases * 95, "{at_once} of {cases} at once");
    }

    proptest! {
        /// Long runs of new chunks start and end on frame ends; without a base, frames are the grouper's.
        #[test]
        fn long_new_runs_get_frames_of_their_own(
            chunks in proptest::collection::vec((1u32..=256 << 10, any::<u8>(), any::<bool>()), 1..600)
        ) {
            let records: Vec<ChunkRecord> = chunks
                .iter()
                .map(|(size, first, new)| {
                    let mut sha256 = [0xffu8; 32];
                    sha256[0] = *first;
                    ChunkRecord { size: *size, sha256, base_offset: if *new { NO_BASE } else { 0 } }
                })
                .collect();
            let plain = group_frames(&records, DEFAULT_PARAMS, false);
            let mut g = FrameGrouper::new(DEFAULT_PARAMS);
            let mut expected = Vec::new();
            let mut open = 0;
            for c in &records {
                open += 1;
                if g.push(c.size, &c.sha256) {
                    expected.push(std::mem::take(&mut open));
                }
            }
            if open > 0 {
                expected.push(open);
            }
            prop_assert_eq!(&plain, &expected);
            let framed = group_frames(&records, DEFAULT_PARAMS, true);
            prop_assert_eq!(framed.iter().map(|&n| n as usize).sum::<usize>(), records.len());
            let mut ends = std::collections::HashSet::new();
            let mut at = 0usize;
            for n in &framed {
                at += *n as usize;
                ends.insert(at);
            }
            ends.insert(0);
            let long = NEW_RUN_AVG_CHUNKS * u64::from(DEFAULT_PARAMS.avg);
            let mut i = 0;
            while i < records.len() {
                let start = i;
                let mut raw = 0;
                while i < records.len() && records[i].base_offset == NO_BASE {
                    raw += u64::from(records[i].size);
                    i += 1;
                }
                if raw >= long {
                    prop_assert!(ends.contains(&start) && ends.contains(&i), "run {}..{}", start, i);
                }
                i = i.max(start + 1);
            }
        }

        #[test]
        fn frames_cover_every_chunk_within_their_limits(
            max_chunk in prop_oneof![Just(256u32 << 10), Just(16u32 << 20)],
            sizes in proptest::collection::vec((1u32..=256 << 10, any::<u8>()), 1..1000)
        ) {
            let params = ChunkParams { max: max_chunk, ..DEFAULT_PARAMS };
            let mut grouper = FrameGrouper::new(params);
            let full = (FRAME_FULL_AVG_CHUNKS * u64::from(params.avg))
                .min(MAX_FRAME_RAW - u64::from(max_chunk));
            let min = (FRAME_MIN_AVG_CHUNKS * u64::from(params.avg)).min(full);
            let (mut frames, mut open, mut raw) = (Vec::new(), 0u32, 0u64);
            for (size, first) in &sizes {
                let size = (*size).min(max_chunk);
                let mut sha = [0xffu8; 32];
                sha[0] = *first;
                open += 1;
                raw += u64::from(size);
                let content_end = first & FRAME_END_MASK == 0 && raw >= min;
                if grouper.push(size, &sha) {
                    prop_assert!(content_end || open == FRAME_MAX_CHUNKS || raw >= full);
                    prop_assert!(raw < full + u64::from(max_chunk));
                    prop_assert!(raw <= MAX_FRAME_RAW);
                    frames.push(open);
                    open = 0;
                    raw = 0;
                } else {
                    prop_assert!(!content_end && open < FRAME_MAX_CHUNKS && raw < full);
                }
                prop_assert_eq!(grouper.is_open(), open > 0);
            }
            if open > 0 {
                frames.push(open);
            }
            prop_assert_eq!(frames.iter().map(|&n| n as usize).sum::<usize>(), sizes.len());
        }

    }
}
