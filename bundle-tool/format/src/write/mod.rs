//! Writing a chunked image: pass 1 cuts and hashes it ([`chunker`]), then its index room is reserved, its frames
//! are compressed in parallel straight into place ([`frames`], [`pool`]), its deltas against a base bundle's image
//! ([`base`], [`delta`]) follow, and the index is written last into its room. Reads the image twice and the base
//! only where references lie; holds neither.

pub mod base;
pub mod chunker;
pub mod delta;
pub mod frames;
pub mod pool;

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::chunked::{ChunkIndex, ChunkParams, ChunkRecord, DeltaRecord, FrameRecord, MAX_INDEX};
use crate::error::BundleError;
use crate::framing::{entry_header, padding_len, BLOCK};
use crate::manifest::{ChunkedInfo, ImageEntry, PAYLOAD_CHUNKED};

pub use base::{BaseBundle, BaseImage};
pub use chunker::for_each_chunk;
pub use delta::decode_delta;

/// How chunked images are cut and compressed.
#[derive(Clone, Copy, Debug)]
pub struct ChunkedSettings {
    /// FastCDC parameters.
    pub params: ChunkParams,
    /// zstd level of the frames (deltas use at most 3).
    pub level: i32,
    /// Compression threads.
    pub workers: usize,
}

/// Write buffer in front of the output: frames arrive in pieces of a megabyte or two.
const OUTPUT_BUFFER: usize = 1 << 20;

/// Writes the entries of one chunked image (`index/<name>`, `images/<name>`, `delta/<name>` with a base) at the
/// current position of `out`, and fills in `entry`'s sizes, digests and chunk facts. `image` is read from its
/// start twice (`progress` counts both reads); `base` is the base bundle's image of the same name, if any.
pub(crate) fn write_chunked_image<W, R, B>(
    out: &mut W,
    mtime: u64,
    entry: &mut ImageEntry,
    mut image: R,
    mut base: Option<BaseImage<'_, B>>,
    settings: &ChunkedSettings,
    progress: &mut dyn FnMut(u64),
) -> Result<(), BundleError>
where
    W: Write + Seek,
    R: Read + Seek,
    B: Read + Seek,
{
    let name = entry.name.clone();
    let read_err = |e| BundleError::io(format!("reading image '{name}'"), e);
    let out_err = |e| BundleError::io("writing the bundle", e);

    // Pass 1.
    let hints = base.as_ref().map(|b| b.chunk_offsets());
    image.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let scan = chunker::scan(&mut image, settings.params, hints.as_ref(), &mut *progress)
        .map_err(read_err)?;
    if scan.chunks.is_empty() {
        return Err(BundleError::Usage(format!(
            "image '{name}' is empty; an empty image can only be bundled with the full payload"
        )));
    }
    // Frame sizes and digests are filled in as the frames are compressed.
    let mut index = ChunkIndex {
        params: settings.params,
        frames: scan
            .frames
            .iter()
            .map(|&chunks| FrameRecord {
                chunks,
                compressed_size: 0,
                sha256: [0; 32],
            })
            .collect(),
        chunks: scan.chunks,
        deltas: Vec::new(),
    };
    let offsets = index.chunk_offsets();
    let level = delta::delta_level(settings.level);

    // Which chunks get deltas: every chunk missing from the base, except those of new frames whose deltas would
    // cost more than a fifth of their bytes (a trial encoding tells): robots fetch those frames instead.
    let mut windows = Vec::new();
    if let Some(base) = base.as_mut() {
        windows = delta::reference_windows(&index.chunks, &offsets, base.size());
        let new = delta::new_frames(&index);
        let frame_of = index.frame_of_chunks();
        let trial: Vec<_> = windows
            .iter()
            .copied()
            .filter(|w| new[frame_of[w.0]])
            .collect();
        let mut cost = vec![0u64; index.frames.len()];
        let mut k = 0;
        run_deltas(
            &name,
            &mut image,
            base,
            &index.chunks,
            &offsets,
            &trial,
            level,
            settings.workers,
            |done| {
                cost[frame_of[trial[k].0]] += done.bytes.len() as u64;
                k += 1;
                Ok(())
            },
        )?;
        let spans = index.frame_spans();
        windows.retain(|w| {
            let f = frame_of[w.0];
            !new[f] || delta::worth_deltas(spans[f].raw_size, cost[f])
        });
    }
    let index_len = ChunkIndex::encoded_len(index.chunks.len(), index.frames.len(), windows.len());
    if index_len > MAX_INDEX {
        return Err(BundleError::TooLarge {
            what: "chunk index",
            size: index_len,
            limit: MAX_INDEX,
        });
    }

    // Index room, then the frames.
    let index_at = out.stream_position().map_err(out_err)?;
    out.write_all(&entry_header(&entry.index_path(), index_len, mtime)?)
        .and_then(|()| out.write_all(&vec![0u8; index_len as usize + padding_len(index_len)]))
        .map_err(out_err)?;
    let payload_at = out.stream_position().map_err(out_err)?;
    out.write_all(&[0u8; BLOCK]).map_err(out_err)?;
    image.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut payload_hash = Sha256::new();
    let mut payload_len = 0u64;
    {
        let chunks = &index.chunks;
        let frames = &mut index.frames;
        let frame_chunks: Vec<u32> = frames.iter().map(|f| f.chunks).collect();
        let mut sink = io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut *out);
        let mut first = 0usize;
        let mut next_frame = frame_chunks.iter();
        let mut done_frames = 0;
        pool::ordered_map(
            settings.workers,
            || {
                let Some(&n) = next_frame.next() else {
                    return Ok(None);
                };
                let range = first..first + n as usize;
                first += n as usize;
                let len: u64 = chunks[range.clone()]
                    .iter()
                    .map(|c| u64::from(c.size))
                    .sum();
                let mut raw = vec![0u8; len as usize];
                image.read_exact(&mut raw).map_err(read_err)?;
                Ok(Some((raw, range)))
            },
            |(raw, range)| frames::compress_frame(&name, raw, &chunks[range], settings.level),
            |done| {
                sink.write_all(&done.bytes).map_err(out_err)?;
                payload_hash.update(&done.bytes);
                payload_len += done.bytes.len() as u64;
                frames[done_frames].compressed_size = done.bytes.len() as u32;
                frames[done_frames].sha256 = done.sha256;
                done_frames += 1;
                progress(done.raw_len);
                Ok(())
            },
        )?;
        sink.flush().map_err(out_err)?;
    }
    out.write_all(&[0u8; BLOCK][..padding_len(payload_len)])
        .map_err(out_err)?;

    // The deltas.
    let mut delta_hash = Sha256::new();
    let mut delta_len = 0u64;
    let delta_at = out.stream_position().map_err(out_err)?;
    if let Some(base) = base.as_mut() {
        out.write_all(&[0u8; BLOCK]).map_err(out_err)?;
        let deltas = &mut index.deltas;
        let mut sink = io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut *out);
        let mut k = 0;
        run_deltas(
            &name,
            &mut image,
            base,
            &index.chunks,
            &offsets,
            &windows,
            level,
            settings.workers,
            |done| {
                sink.write_all(&done.bytes).map_err(out_err)?;
                delta_hash.update(&done.bytes);
                delta_len += done.bytes.len() as u64;
                let (chunk, ref_offset, ref_len) = windows[k];
                deltas.push(DeltaRecord {
                    chunk: chunk as u32,
                    compressed_size: done.bytes.len() as u32,
                    ref_offset,
                    ref_len,
                });
                k += 1;
                Ok(())
            },
        )?;
        sink.flush().map_err(out_err)?;
        drop(sink);
        out.write_all(&[0u8; BLOCK][..padding_len(delta_len)])
            .map_err(out_err)?;
    }
    let end = out.stream_position().map_err(out_err)?;

    // The index into its room, the entry headers now that their sizes are known.
    let index_bytes = index.encode();
    debug_assert_eq!(index_bytes.len() as u64, index_len);
    let mut patch = |at: u64, bytes: &[u8]| {
        out.seek(SeekFrom::Start(at))
            .and_then(|_| out.write_all(bytes))
            .map_err(out_err)
    };
    patch(index_at + BLOCK as u64, &index_bytes)?;
    patch(
        payload_at,
        &entry_header(&entry.entry_path(), payload_len, mtime)?,
    )?;
    if base.is_some() {
        patch(
            delta_at,
            &entry_header(&entry.delta_path(), delta_len, mtime)?,
        )?;
    }
    out.seek(SeekFrom::Start(end)).map_err(out_err)?;

    entry.payload = PAYLOAD_CHUNKED.into();
    entry.size = scan.size;
    entry.sha256 = hex::encode(scan.sha256);
    entry.compressed_size = payload_len;
    entry.payload_sha256 = hex::encode(payload_hash.finalize());
    let with_base = base.as_ref().map(|b| b.delta_base().clone());
    entry.chunks = Some(ChunkedInfo {
        index_size: index_len,
        index_sha256: hex::encode(Sha256::digest(&index_bytes)),
        delta_size: with_base.is_some().then_some(delta_len),
        delta_sha256: with_base
            .is_some()
            .then(|| hex::encode(delta_hash.finalize())),
        base: with_base,
    });
    Ok(())
}

/// Encodes the deltas of `windows` ((chunk, reference offset, reference length), in chunk order) on `workers`
/// threads and hands them to `sink` in that order. The chunks are read again from `image` and checked.
#[allow(clippy::too_many_arguments)]
fn run_deltas<R: Read + Seek, B: Read + Seek>(
    name: &str,
    image: &mut R,
    base: &mut BaseImage<'_, B>,
    chunks: &[ChunkRecord],
    offsets: &[u64],
    windows: &[(usize, u64, u32)],
    level: i32,
    workers: usize,
    sink: impl FnMut(frames::Compressed) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let mut jobs = windows.iter();
    pool::ordered_map(
        workers,
        || {
            let Some(&(chunk, ref_offset, ref_len)) = jobs.next() else {
                return Ok(None);
            };
            let mut raw = vec![0u8; chunks[chunk].size as usize];
            image
                .seek(SeekFrom::Start(offsets[chunk]))
                .and_then(|_| image.read_exact(&mut raw))
                .map_err(|e| BundleError::io(format!("reading image '{name}'"), e))?;
            let reference = base.read_at(ref_offset, ref_len as usize)?;
            Ok(Some((raw, chunk, reference)))
        },
        |(raw, chunk, reference)| {
            frames::compress_delta(name, raw, &chunks[chunk], reference, level)
        },
        sink,
    )
}

#[cfg(test)]
mod tests;
