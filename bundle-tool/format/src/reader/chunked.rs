//! Streaming a `chunked` image: `index/<name>` (exact size, digest from the manifest, strict decode), then the
//! payload frame by frame, then `delta/<name>` (exact size and digest; its frames need the base image, so a
//! stream reader does not decode them).
//!
//! Unlike a `full` payload, a chunked one never hands out a byte it has not checked: each frame's compressed bytes
//! are hashed against the index before the frame is decoded, and the frame must decode to exactly its chunks'
//! size. With [`super::ImageReader::check_content_digest`] every chunk's digest is checked as well (the whole
//! image's digest is checked by the image reader as for every payload).

use std::io::{self, Write};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::source::Source;
use super::{check_entry_size, check_payload_size, MAX_WINDOW_LOG};
use crate::chunked::{ChunkIndex, FrameSpan, IndexLimits, MAX_INDEX};
use crate::error::BundleError;
use crate::manifest::ImageEntry;

/// Frames queued between the reading, decoding and writing threads of [`ChunkedPayload::copy_to`]: with frames
/// of ~4 MiB (8 MiB at most) the pipeline holds a few MiB.
const FRAMES_IN_FLIGHT: usize = 2;
/// Piece size when hashing the delta entry.
const DELTA_PIECE: usize = 1 << 20;

/// What the manifest says a chunked image's index must agree with.
pub fn index_limits(image: &ImageEntry) -> Option<IndexLimits> {
    let info = image.chunked()?;
    Some(IndexLimits {
        image_size: image.size,
        compressed_size: image.compressed_size,
        delta_size: info.delta_size,
        base_size: info.base.as_ref().map(|b| b.size),
    })
}

/// Checks the bytes of `index/<name>` against the (authenticated) manifest entry: exact size, SHA-256, then the
/// strict decode. The one way an index becomes trusted, for the stream reader and for range clients alike.
pub fn verify_index(image: &ImageEntry, bytes: &[u8]) -> Result<ChunkIndex, BundleError> {
    let (Some(info), Some(limits)) = (image.chunked(), index_limits(image)) else {
        return Err(BundleError::Usage(format!(
            "image '{}' is not chunked: it has no index",
            image.name
        )));
    };
    if bytes.len() as u64 != info.index_size {
        return Err(BundleError::BadIndex(format!(
            "the entry '{}' is {} bytes, but the manifest says {} (chunks.index_size)",
            image.index_path(),
            bytes.len(),
            info.index_size
        )));
    }
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    if digest != image.index_sha256_bytes()? {
        return Err(BundleError::DigestMismatch {
            image: image.name.clone(),
            what: "chunk index",
            field: "chunks.index_sha256",
            expected: info.index_sha256.clone(),
            actual: hex::encode(digest),
        });
    }
    ChunkIndex::decode(bytes, &limits)
}

/// The delta entry as the manifest describes it.
struct DeltaEntry {
    path: String,
    size: u64,
    sha256: [u8; 32],
    hex: String,
}

/// The index and where each frame lies: read-only while the frames stream.
struct Frames {
    image: String,
    index: ChunkIndex,
    spans: Vec<FrameSpan>,
}

/// Reads frames off the bundle, checking each against the index.
struct FrameSource<'a, R> {
    src: &'a mut Source<R>,
    next: usize,
    payload_hasher: Sha256,
}

/// What [`ChunkedPayload::copy_to`] measured: bytes written, the payload's digest, the content's (if hashed).
pub(super) type Copied = (u64, [u8; 32], Option<[u8; 32]>);

/// One chunked image being streamed.
pub(super) struct ChunkedPayload<'a, R> {
    source: FrameSource<'a, R>,
    frames: Frames,
    /// Also check every chunk's digest.
    pub(super) check_chunks: bool,
    /// The manifest entry.
    entry: ImageEntry,
    payload_path: String,
    compressed_size: u64,
    delta: Option<DeltaEntry>,
    /// Entry paths met so far (for duplicate detection of the delta entry).
    seen: Vec<String>,
    /// For the `Read` path: the current decoded frame and how much of it was handed out.
    decoder: Option<zstd::bulk::Decompressor<'static>>,
    compressed: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<R: io::Read> FrameSource<'_, R> {
    /// Reads the next frame's compressed bytes into `buf` and checks them against the index. `None` after the
    /// last frame.
    fn next(&mut self, frames: &Frames, buf: &mut Vec<u8>) -> Result<Option<usize>, BundleError> {
        let i = self.next;
        let Some(span) = frames.spans.get(i) else {
            return Ok(None);
        };
        buf.clear();
        buf.resize(span.compressed_size as usize, 0);
        self.src
            .read_full(buf, &format!("frame {i} of image '{}'", frames.image))?;
        self.payload_hasher.update(&buf[..]);
        if <[u8; 32]>::from(Sha256::digest(&buf[..])) != frames.index.frames[i].sha256 {
            return Err(BundleError::CorruptPayload {
                image: frames.image.clone(),
                detail: format!(
                    "frame {i} (payload bytes {}..{}) does not match its SHA-256 in the index: the payload was modified",
                    span.payload_offset,
                    span.payload_offset + span.compressed_size
                ),
            });
        }
        self.next += 1;
        Ok(Some(i))
    }
}

impl Frames {
    fn corrupt(&self, detail: String) -> BundleError {
        BundleError::CorruptPayload {
            image: self.image.clone(),
            detail,
        }
    }

    /// Decodes frame `i` (already checked) into `out`: exactly its chunks' size.
    fn decode(
        &self,
        decoder: &mut zstd::bulk::Decompressor<'static>,
        i: usize,
        compressed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BundleError> {
        let span = &self.spans[i];
        let corrupt = |detail: String| self.corrupt(detail);
        out.clear();
        out.reserve_exact(span.raw_size as usize);
        decoder
            .decompress_to_buffer(compressed, out)
            .map_err(|e| corrupt(format!("frame {i} does not decode: {e}")))?;
        if out.len() as u64 != span.raw_size {
            return Err(corrupt(format!(
                "frame {i} decodes to {} bytes, but its chunks add up to {}",
                out.len(),
                span.raw_size
            )));
        }
        Ok(())
    }

    /// Checks every chunk of decoded frame `i` against its digest in the index.
    fn check_chunks(&self, i: usize, raw: &[u8]) -> Result<(), BundleError> {
        let span = &self.spans[i];
        let chunks = &self.index.chunks[span.first_chunk..span.first_chunk + span.chunks];
        let mut at = 0usize;
        for (k, chunk) in chunks.iter().enumerate() {
            let bytes = &raw[at..at + chunk.size as usize];
            if <[u8; 32]>::from(Sha256::digest(bytes)) != chunk.sha256 {
                return Err(self.corrupt(format!(
                    "chunk {} (image bytes {}..{}) does not match its SHA-256 in the index",
                    span.first_chunk + k,
                    span.image_offset + at as u64,
                    span.image_offset + (at + bytes.len()) as u64
                )));
            }
            at += bytes.len();
        }
        Ok(())
    }
}

/// A frame decoder whose window is bounded like the full payload's.
fn frame_decoder() -> Result<zstd::bulk::Decompressor<'static>, BundleError> {
    let mut decoder = zstd::bulk::Decompressor::new()
        .map_err(|e| BundleError::io("starting the zstd decoder", e))?;
    decoder
        .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|e| BundleError::io("configuring the zstd decoder", e))?;
    Ok(decoder)
}

impl<'a, R: io::Read> ChunkedPayload<'a, R> {
    /// Reads and checks the index entry, then the payload entry's header. `seen`: the entries before this image.
    pub(super) fn open(
        src: &'a mut Source<R>,
        image: &ImageEntry,
        mut seen: Vec<String>,
    ) -> Result<Self, BundleError> {
        let info = image.chunked().expect("opened for chunked images only");
        let index_path = image.index_path();
        let header = src.expect_entry(&index_path, &seen)?;
        let bytes = src.read_small_entry(&header, "chunk index", MAX_INDEX)?;
        let index = verify_index(image, &bytes)?;
        seen.push(index_path);
        let payload_path = image.entry_path();
        let header = src.expect_entry(&payload_path, &seen)?;
        check_payload_size(image, header.size)?;
        seen.push(payload_path.clone());
        let delta = match (info.delta_size, image.delta_sha256_bytes()?) {
            (Some(size), Some(sha256)) => Some(DeltaEntry {
                path: image.delta_path(),
                size,
                sha256,
                hex: info.delta_sha256.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        let spans = index.frame_spans();
        Ok(ChunkedPayload {
            source: FrameSource {
                src,
                next: 0,
                payload_hasher: Sha256::new(),
            },
            frames: Frames {
                image: image.name.clone(),
                index,
                spans,
            },
            check_chunks: false,
            entry: image.clone(),
            payload_path,
            compressed_size: image.compressed_size,
            delta,
            seen,
            decoder: None,
            compressed: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Hands out checked image bytes; 0 after the last frame (then call [`Self::finish`]).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        while self.out_pos == self.out.len() {
            let Some(i) = self.source.next(&self.frames, &mut self.compressed)? else {
                return Ok(0);
            };
            let decoder = match &mut self.decoder {
                Some(decoder) => decoder,
                empty => empty.insert(frame_decoder()?),
            };
            self.frames
                .decode(decoder, i, &self.compressed, &mut self.out)?;
            if self.check_chunks {
                self.frames.check_chunks(i, &self.out)?;
            }
            self.out_pos = 0;
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }

    /// After the last frame: the payload's padding, then the delta entry (exact size and digest). Returns the
    /// payload's digest, which the image reader checks against the manifest.
    pub(super) fn finish(&mut self) -> Result<[u8; 32], BundleError> {
        let src = &mut *self.source.src;
        src.skip_padding(self.compressed_size, &self.payload_path)?;
        if let Some(delta) = &self.delta {
            let header = src.expect_entry(&delta.path, &self.seen)?;
            check_entry_size(&self.entry, &delta.path, delta.size, header.size)?;
            let mut hasher = Sha256::new();
            let mut piece = vec![0u8; DELTA_PIECE.min(delta.size as usize)];
            let mut left = delta.size;
            while left > 0 {
                let n = (left as usize).min(piece.len());
                src.read_full(&mut piece[..n], &format!("'{}'", delta.path))?;
                hasher.update(&piece[..n]);
                left -= n as u64;
            }
            let digest: [u8; 32] = hasher.finalize().into();
            if digest != delta.sha256 {
                return Err(BundleError::DigestMismatch {
                    image: self.frames.image.clone(),
                    what: "delta entry",
                    field: "chunks.delta_sha256",
                    expected: delta.hex.clone(),
                    actual: hex::encode(digest),
                });
            }
            src.skip_padding(delta.size, &delta.path)?;
        }
        Ok(self.source.payload_hasher.finalize_reset().into())
    }

    /// Streams the whole image into `writer`: this thread reads and checks frames, a second one decodes them, a
    /// third writes (checking the chunks and hashing the whole content first when asked to, which balances the
    /// two busy threads). Returns the bytes written, the payload digest and the content digest.
    pub(super) fn copy_to<W: Write + Send>(
        mut self,
        writer: &mut W,
        content_hasher: Option<Sha256>,
    ) -> Result<Copied, BundleError> {
        let (to_decoder, decoder_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(FRAMES_IN_FLIGHT);
        let (to_writer, writer_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(FRAMES_IN_FLIGHT);
        let (compressed_back, compressed_free) = mpsc::channel::<Vec<u8>>();
        let (raw_back, raw_free) = mpsc::channel::<Vec<u8>>();
        let frames = &self.frames;
        let check_chunks = self.check_chunks;
        let source = &mut self.source;
        let (read, decoded, written) = std::thread::scope(|scope| {
            let decoder_thread = scope.spawn(move || -> Result<(), BundleError> {
                let mut decoder = frame_decoder()?;
                for (i, compressed) in decoder_rx {
                    let mut out = raw_free.try_recv().unwrap_or_default();
                    frames.decode(&mut decoder, i, &compressed, &mut out)?;
                    // The reader may have stopped; then nobody takes the buffer back.
                    let _ = compressed_back.send(compressed);
                    if to_writer.send((i, out)).is_err() {
                        // The writer failed; its error is reported below.
                        return Ok(());
                    }
                }
                Ok(())
            });
            let write_failed = |error| BundleError::WriteFailed {
                image: frames.image.clone(),
                error,
            };
            let writer_thread =
                scope.spawn(move || -> Result<(u64, Option<[u8; 32]>), BundleError> {
                    let mut content_hasher = content_hasher;
                    let mut written = 0u64;
                    for (i, raw) in writer_rx {
                        if check_chunks {
                            frames.check_chunks(i, &raw)?;
                        }
                        if let Some(hasher) = content_hasher.as_mut() {
                            hasher.update(&raw);
                        }
                        writer.write_all(&raw).map_err(write_failed)?;
                        written += raw.len() as u64;
                        let _ = raw_back.send(raw);
                    }
                    writer.flush().map_err(write_failed)?;
                    Ok((written, content_hasher.map(|h| h.finalize().into())))
                });
            let read = (|| -> Result<(), BundleError> {
                loop {
                    let mut buf = compressed_free.try_recv().unwrap_or_default();
                    let Some(i) = source.next(frames, &mut buf)? else {
                        return Ok(());
                    };
                    if to_decoder.send((i, buf)).is_err() {
                        // The decoder failed; its error is reported below.
                        return Ok(());
                    }
                }
            })();
            drop(to_decoder);
            let decoded = decoder_thread
                .join()
                .expect("decoder thread does not panic");
            let written = writer_thread.join().expect("writer thread does not panic");
            (read, decoded, written)
        });
        read?;
        decoded?;
        let (written, content_digest) = written?;
        let expected: u64 = self.frames.spans.iter().map(|s| s.raw_size).sum();
        if written != expected {
            return Err(BundleError::WriteFailed {
                image: self.frames.image.clone(),
                error: io::Error::other("the writer stopped early"),
            });
        }
        let payload_digest = self.finish()?;
        Ok((written, payload_digest, content_digest))
    }
}

#[cfg(test)]
mod tests;
