//! Streaming a `chunked` image: `index/<name>` (exact size, digest from the manifest, strict decode), then the
//! payload frame by frame, then `delta/<name>` (exact size and digest; its frames need the base image, so a
//! stream reader does not decode them).
//!
//! Unlike a `full` payload, a chunked one never hands out a byte it has not checked: each frame's compressed bytes
//! are hashed against the index before the frame is decoded, and the frame must decode to exactly its chunks'
//! size. With [`super::ImageReader::check_content_digest`] every chunk's digest is checked as well, before a
//! byte of the chunk is handed out (the whole image's digest is checked by the image reader as for every
//! payload). Frames are decoded in pieces ([`PIECE`]), so memory holds a compressed frame, one zstd window and a
//! chunk or two, whatever the frame size.

use std::io::{self, Write};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

use super::source::Source;
use super::{check_entry_size, check_payload_size};
use crate::chunked::{ChunkIndex, FrameSpan, IndexLimits, FRAME_WINDOW_LOG_MAX, MAX_INDEX};
use crate::error::BundleError;
use crate::manifest::ImageEntry;

/// Compressed frames queued between the reading and the decoding thread of [`ChunkedPayload::copy_to`].
const FRAMES_IN_FLIGHT: usize = 1;
/// Decoded pieces queued between the decoding and the writing thread.
const PIECES_IN_FLIGHT: usize = 4;
/// Frames are decoded in pieces of at most this size.
const PIECE: usize = 1 << 20;
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
    /// For the `Read` path: the frame being decoded, its compressed bytes, checked bytes not yet handed out
    /// and how much of them was.
    decoding: Option<FrameDecoder>,
    compressed: Vec<u8>,
    gate: ChunkGate,
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

    /// Decodes frame `i` (already checked) in pieces, handing each to `piece`: exactly its chunks' size.
    fn decode(
        &self,
        i: usize,
        compressed: &[u8],
        mut piece: impl FnMut(Vec<u8>) -> Result<bool, BundleError>,
    ) -> Result<(), BundleError> {
        let mut decoder = FrameDecoder::new(i);
        loop {
            let mut out = Vec::with_capacity(PIECE);
            let more = decoder.next_piece(self, compressed, &mut out)?;
            if !out.is_empty() && !piece(out)? {
                return Ok(());
            }
            if !more {
                return Ok(());
            }
        }
    }
}

/// One frame being decoded in pieces.
struct FrameDecoder {
    frame: usize,
    dctx: DCtx<'static>,
    /// Compressed bytes consumed.
    read: usize,
    /// Bytes decoded.
    decoded: u64,
}

impl FrameDecoder {
    fn new(frame: usize) -> Self {
        FrameDecoder {
            frame,
            dctx: DCtx::create(),
            read: 0,
            decoded: 0,
        }
    }

    /// Decodes the next piece of the frame (at most `out`'s capacity, at least a byte) into `out`; false once
    /// the frame is done and found to hold exactly its chunks' size.
    fn next_piece(
        &mut self,
        frames: &Frames,
        compressed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, BundleError> {
        let (i, raw) = (self.frame, frames.spans[self.frame].raw_size);
        let corrupt = |detail: String| frames.corrupt(detail);
        let zstd_err = |code| {
            corrupt(format!(
                "frame {i} does not decode: {}",
                zstd::zstd_safe::get_error_name(code)
            ))
        };
        if self.read == 0 && self.decoded == 0 {
            self.dctx
                .set_parameter(DParameter::WindowLogMax(FRAME_WINDOW_LOG_MAX))
                .map_err(zstd_err)?;
        }
        out.clear();
        let mut from = InBuffer::around(&compressed[self.read..]);
        let left = loop {
            let left = self
                .dctx
                .decompress_stream(&mut OutBuffer::around(out), &mut from)
                .map_err(zstd_err)?;
            if left == 0 || !out.is_empty() || from.pos() == compressed.len() - self.read {
                break left;
            }
        };
        self.read += from.pos();
        self.decoded += out.len() as u64;
        if self.decoded > raw {
            return Err(corrupt(format!(
                "frame {i} decodes to more than {raw} bytes, but its chunks add up to {raw}"
            )));
        }
        if left != 0 {
            if out.is_empty() {
                return Err(corrupt(format!(
                    "frame {i} does not decode: it is truncated"
                )));
            }
            return Ok(true);
        }
        if self.read != compressed.len() {
            return Err(corrupt(format!(
                "frame {i} does not decode: {} bytes follow it",
                compressed.len() - self.read
            )));
        }
        if self.decoded != raw {
            return Err(corrupt(format!(
                "frame {i} decodes to {} bytes, but its chunks add up to {raw}",
                self.decoded
            )));
        }
        Ok(false)
    }
}

/// Holds decoded bytes back until the chunk they belong to matched its digest (when chunks are checked).
#[derive(Default)]
struct ChunkGate {
    /// The next chunk to check.
    next: usize,
    /// Its image offset.
    offset: u64,
    /// Bytes of it (and what follows) decoded so far.
    pending: Vec<u8>,
}

impl ChunkGate {
    /// Adds decoded bytes; appends to `out` those of every chunk completed and checked.
    fn feed(
        &mut self,
        frames: &Frames,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BundleError> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0usize;
        while let Some(chunk) = frames.index.chunks.get(self.next) {
            let size = chunk.size as usize;
            if self.pending.len() - at < size {
                break;
            }
            let piece = &self.pending[at..at + size];
            if <[u8; 32]>::from(Sha256::digest(piece)) != chunk.sha256 {
                return Err(frames.corrupt(format!(
                    "chunk {} (image bytes {}..{}) does not match its SHA-256 in the index",
                    self.next,
                    self.offset,
                    self.offset + size as u64
                )));
            }
            out.extend_from_slice(piece);
            at += size;
            self.offset += size as u64;
            self.next += 1;
        }
        self.pending.drain(..at);
        Ok(())
    }
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
            decoding: None,
            compressed: Vec::new(),
            gate: ChunkGate::default(),
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Hands out checked image bytes; 0 after the last frame (then call [`Self::finish`]).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        while self.out_pos == self.out.len() {
            let decoder = match &mut self.decoding {
                Some(decoder) => decoder,
                idle => {
                    let Some(i) = self.source.next(&self.frames, &mut self.compressed)? else {
                        return Ok(0);
                    };
                    idle.insert(FrameDecoder::new(i))
                }
            };
            let mut piece = std::mem::take(&mut self.out);
            piece.reserve(PIECE);
            let more = decoder.next_piece(&self.frames, &self.compressed, &mut piece)?;
            if !more {
                self.decoding = None;
            }
            if self.check_chunks {
                let mut out = Vec::with_capacity(piece.len());
                self.gate.feed(&self.frames, &piece, &mut out)?;
                self.out = out;
            } else {
                self.out = piece;
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

    /// Streams the whole image into `writer`: this thread reads and checks frames, a second one decodes them in
    /// pieces, a third writes (checking the chunks and hashing the whole content first when asked to, which
    /// balances the two busy threads). Returns the bytes written, the payload digest and the content digest.
    pub(super) fn copy_to<W: Write + Send>(
        mut self,
        writer: &mut W,
        content_hasher: Option<Sha256>,
    ) -> Result<Copied, BundleError> {
        let (to_decoder, decoder_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(FRAMES_IN_FLIGHT);
        let (to_writer, writer_rx) = mpsc::sync_channel::<Vec<u8>>(PIECES_IN_FLIGHT);
        let (compressed_back, compressed_free) = mpsc::channel::<Vec<u8>>();
        let frames = &self.frames;
        let check_chunks = self.check_chunks;
        let source = &mut self.source;
        let (read, decoded, written) = std::thread::scope(|scope| {
            let decoder_thread = scope.spawn(move || -> Result<(), BundleError> {
                for (i, compressed) in decoder_rx {
                    // The writer may have failed; its error is reported below.
                    let mut open = true;
                    frames.decode(i, &compressed, |piece| {
                        open = to_writer.send(piece).is_ok();
                        Ok(open)
                    })?;
                    // The reader may have stopped; then nobody takes the buffer back.
                    let _ = compressed_back.send(compressed);
                    if !open {
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
                    let mut gate = ChunkGate::default();
                    let mut checked = Vec::new();
                    for piece in writer_rx {
                        let raw = if check_chunks {
                            checked.clear();
                            gate.feed(frames, &piece, &mut checked)?;
                            &checked
                        } else {
                            &piece
                        };
                        if let Some(hasher) = content_hasher.as_mut() {
                            hasher.update(raw);
                        }
                        writer.write_all(raw).map_err(write_failed)?;
                        written += raw.len() as u64;
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
