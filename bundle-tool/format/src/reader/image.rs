//! One image's payload as it streams out of a bundle: decoded, sized and hashed on the way, its digests checked
//! before end-of-file is returned ([`ImageReader`]), also on three threads ([`ImageReader::copy_to`]). The
//! bundle reader ([`super::BundleReader::next_image`]) opens it once the manifest is authenticated.

use std::io::{self, BufReader, Read, Take, Write};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::chunked::ChunkedPayload;
use super::source::Source;
use super::MAX_WINDOW_LOG;
use crate::error::BundleError;
use crate::hash_thread::{self, HashFeed};
use crate::manifest::ImageEntry;

/// Chunk size of the decode/hash/write pipeline: 1 MiB chunks take a quarter of the thread hand-offs of 256 KiB
/// ones (5-10 % less CPU for verify and extract of a 1 GiB image); the pipeline then holds up to ~12 MiB.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between pipeline stages.
const PIPELINE_DEPTH: usize = 4;
/// Decoded chunks start at this alignment, so a writer using direct I/O (`O_DIRECT` needs 4 KiB-aligned buffers)
/// can hand them to the device without copying them first.
const CHUNK_ALIGN: usize = 4096;

/// A decoded chunk of an image: `len` bytes at an aligned offset of an over-allocated buffer.
struct Chunk {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let storage = vec![0u8; CHUNK + CHUNK_ALIGN];
        let start = storage.as_ptr().align_offset(CHUNK_ALIGN);
        Chunk {
            storage,
            start,
            len: 0,
        }
    }

    /// The whole aligned space, for the decoder to fill.
    fn space(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + CHUNK]
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

type Decoder<'a, R> =
    zstd::stream::read::Decoder<'static, BufReader<PayloadTap<Take<&'a mut Source<R>>>>>;

/// Sees every compressed byte of a payload on its way to the decoder, to hash it.
struct PayloadTap<T> {
    inner: T,
    hash: TapHash,
}

/// Where a payload's compressed bytes are hashed.
enum TapHash {
    /// Here, on the reading thread.
    Inline(Sha256),
    /// On another thread, which gets a copy of each piece (compressed data is a fraction of the image, so the
    /// copies are cheap and the decoding thread keeps its core for decoding) and sends the buffer back.
    Forward(HashFeed),
}

impl<T: Read> Read for PayloadTap<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hash {
            TapHash::Inline(hasher) => hasher.update(&buf[..n]),
            // A hasher that stopped has failed the copy already; its absence is reported there.
            TapHash::Forward(feed) if n > 0 => {
                let mut piece = feed.recycled.try_recv().unwrap_or_default();
                piece.clear();
                piece.extend_from_slice(&buf[..n]);
                let _ = feed.to_hasher.send(piece);
            }
            TapHash::Forward(_) => {}
        }
        Ok(n)
    }
}

/// One image's payload as a stream of verified-on-completion uncompressed bytes.
///
/// Its `Read` implementation returns end-of-file only after the exact size and the SHA-256 have been checked; a
/// mismatch is returned as an error instead of end-of-file (the `io::Error` carries a [`BundleError`], see
/// [`BundleError::from_io`]). [`ImageReader::copy_to`] does the same with decoding, hashing and writing on three
/// threads.
pub struct ImageReader<'a, R> {
    decoder: Option<Decoder<'a, R>>,
    /// A chunked image's frames (then `decoder` is `None`).
    chunked: Option<ChunkedPayload<'a, R>>,
    image: ImageEntry,
    expected_payload_sha256: [u8; 32],
    /// The payload digest, once hashed inline to the end.
    payload_digest: Option<[u8; 32]>,
    expected_content_sha256: [u8; 32],
    /// Hashes the uncompressed content when asked to ([`ImageReader::check_content_digest`]).
    content_hasher: Option<Sha256>,
    produced: u64,
    pending_flag: &'a mut bool,
    done: bool,
}

/// The digests the manifest gives an image: its payload's and its uncompressed content's.
pub(super) struct Expected {
    pub(super) payload: [u8; 32],
    pub(super) content: [u8; 32],
}

impl<'a, R: Read> ImageReader<'a, R> {
    /// A `full` payload: `payload` is its archive entry, decoded as zstd (window bounded by [`MAX_WINDOW_LOG`]).
    pub(super) fn full(
        payload: Take<&'a mut Source<R>>,
        image: ImageEntry,
        expected: Expected,
        pending_flag: &'a mut bool,
    ) -> Result<Self, BundleError> {
        let tap = PayloadTap {
            inner: payload,
            hash: TapHash::Inline(Sha256::new()),
        };
        let mut decoder = zstd::stream::read::Decoder::new(tap)
            .map_err(|e| BundleError::io("starting the zstd decoder", e))?;
        decoder
            .window_log_max(MAX_WINDOW_LOG)
            .map_err(|e| BundleError::io("configuring the zstd decoder", e))?;
        Ok(Self::new(
            Some(decoder),
            None,
            image,
            expected,
            pending_flag,
        ))
    }

    /// A `chunked` payload's frames.
    pub(super) fn chunked(
        payload: ChunkedPayload<'a, R>,
        image: ImageEntry,
        expected: Expected,
        pending_flag: &'a mut bool,
    ) -> Self {
        Self::new(None, Some(payload), image, expected, pending_flag)
    }

    fn new(
        decoder: Option<Decoder<'a, R>>,
        chunked: Option<ChunkedPayload<'a, R>>,
        image: ImageEntry,
        expected: Expected,
        pending_flag: &'a mut bool,
    ) -> Self {
        ImageReader {
            decoder,
            chunked,
            image,
            expected_payload_sha256: expected.payload,
            payload_digest: None,
            expected_content_sha256: expected.content,
            content_hasher: None,
            produced: 0,
            pending_flag,
            done: false,
        }
    }
}

impl<R: Read> ImageReader<'_, R> {
    /// The manifest entry of this image.
    pub fn entry(&self) -> &ImageEntry {
        &self.image
    }

    /// Also checks the SHA-256 of the uncompressed content, not only the payload's.
    ///
    /// The payload digest alone authenticates the image: zstd decoding is a pure function of the compressed
    /// bytes, and the exact size is enforced. Hashing the uncompressed image as well proves that the producer's
    /// manifest describes it truthfully; it is what `verify` and the server's upload check do. Writing a slot
    /// skips it, because a sequential SHA-256 of the whole image would cost as much time as decoding it.
    pub fn check_content_digest(mut self) -> Self {
        self.content_hasher = Some(Sha256::new());
        if let Some(payload) = self.chunked.as_mut() {
            payload.check_chunks = true;
        }
        self
    }

    /// Decodes into `buf` without hashing, enforcing the exact size. Returns 0 at the checked end of the payload.
    fn decode(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        if let Some(payload) = self.chunked.as_mut() {
            let n = payload.read(buf)?;
            self.produced += n as u64;
            if n == 0 && !buf.is_empty() {
                self.payload_digest = Some(payload.finish()?);
                self.chunked = None;
            }
            return Ok(n);
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(0);
        };
        let n = loop {
            match decoder.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.classify(e)),
            }
        };
        self.produced += n as u64;
        if self.produced > self.image.size {
            return Err(BundleError::ImageSizeMismatch {
                image: self.image.name.clone(),
                expected: self.image.size,
                found: format!("more than {}", self.image.size),
            });
        }
        if n == 0 && !buf.is_empty() {
            self.end_of_payload()?;
        }
        Ok(n)
    }

    /// Maps a decoder error to what really happened: a broken source, a truncated bundle, or bad compressed data.
    fn classify(&mut self, e: io::Error) -> BundleError {
        let src = self
            .decoder
            .as_ref()
            .map(|d| &**d.get_ref().get_ref().inner.get_ref());
        match src {
            Some(src) if src.io_error => BundleError::io("reading the bundle", e),
            Some(src) if src.hit_eof => BundleError::Truncated {
                offset: src.offset,
                inside: format!("the payload of image '{}'", self.image.name),
            },
            _ => BundleError::CorruptPayload {
                image: self.image.name.clone(),
                detail: e.to_string(),
            },
        }
    }

    /// The decoder reported the end of its frames: the payload entry must be fully consumed, the size exact.
    fn end_of_payload(&mut self) -> Result<(), BundleError> {
        let decoder = self.decoder.take().expect("called once");
        let mut rest = decoder.finish();
        let tap = rest.get_mut();
        if let TapHash::Inline(hasher) = &mut tap.hash {
            self.payload_digest = Some(hasher.finalize_reset().into());
        }
        let leftover = rest.buffer().len() as u64 + rest.get_ref().inner.limit();
        if leftover != 0 {
            return Err(BundleError::CorruptPayload {
                image: self.image.name.clone(),
                detail: format!("{leftover} bytes follow the compressed data"),
            });
        }
        if self.produced != self.image.size {
            return Err(BundleError::ImageSizeMismatch {
                image: self.image.name.clone(),
                expected: self.image.size,
                found: self.produced.to_string(),
            });
        }
        let src = rest.get_mut().inner.get_mut();
        src.skip_padding(self.image.compressed_size, &self.image.entry_path())
    }

    /// Checks the digests after the payload ended: the payload's, then the content's if it was hashed.
    fn check_digests(
        &mut self,
        payload: [u8; 32],
        content: Option<[u8; 32]>,
    ) -> Result<(), BundleError> {
        if payload != self.expected_payload_sha256 {
            return Err(BundleError::DigestMismatch {
                image: self.image.name.clone(),
                what: "compressed payload",
                field: "payload_sha256",
                expected: self.image.payload_sha256.clone(),
                actual: hex::encode(payload),
            });
        }
        if let Some(content) = content.filter(|c| *c != self.expected_content_sha256) {
            return Err(BundleError::DigestMismatch {
                image: self.image.name.clone(),
                what: "uncompressed content",
                field: "sha256",
                expected: self.image.sha256.clone(),
                actual: hex::encode(content),
            });
        }
        self.done = true;
        *self.pending_flag = false;
        Ok(())
    }

    /// Decodes this image into `writer`, decoding on this thread while two scoped threads hash the compressed
    /// payload and write the output (the writer also hashes the content when [`Self::check_content_digest`] asked
    /// for it). Returns the number of bytes written once the size and digests have been verified.
    pub fn copy_to<W: Write + Send>(mut self, writer: &mut W) -> Result<u64, BundleError> {
        if let Some(payload) = self.chunked.take() {
            let content_hasher = self.content_hasher.take();
            let (written, payload_digest, content_digest) =
                payload.copy_to(writer, content_hasher)?;
            self.check_digests(payload_digest, content_digest)?;
            return Ok(written);
        }
        let (write_tx, write_rx) = mpsc::sync_channel::<Chunk>(PIPELINE_DEPTH);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Chunk>();
        let content_hasher = self.content_hasher.take();

        let (decoded, payload_digest, written) = std::thread::scope(|scope| {
            let (feed, payload_hasher) = hash_thread::spawn(scope, PIPELINE_DEPTH * 8);
            if let Some(decoder) = self.decoder.as_mut() {
                decoder.get_mut().get_mut().hash = TapHash::Forward(feed);
            }
            let writer_thread = scope.spawn(move || -> io::Result<(u64, Option<[u8; 32]>)> {
                let mut content_hasher = content_hasher;
                let mut written = 0u64;
                for chunk in write_rx {
                    if let Some(hasher) = content_hasher.as_mut() {
                        hasher.update(chunk.bytes());
                    }
                    writer.write_all(chunk.bytes())?;
                    written += chunk.len as u64;
                    // The decoder may have stopped; then nobody takes the buffer back.
                    let _ = recycle_tx.send(chunk);
                }
                writer.flush()?;
                Ok((written, content_hasher.map(|h| h.finalize().into())))
            });

            let decoded = (|| -> Result<(), BundleError> {
                loop {
                    let mut chunk = recycle_rx.try_recv().unwrap_or_else(|_| Chunk::new());
                    let space = chunk.space();
                    let mut filled = 0;
                    while filled < CHUNK {
                        let n = self.decode(&mut space[filled..])?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                    }
                    if filled == 0 {
                        return Ok(());
                    }
                    chunk.len = filled;
                    if write_tx.send(chunk).is_err() {
                        // The writer failed; its error is reported below.
                        return Ok(());
                    }
                }
            })();
            drop(write_tx);
            // Ends the payload hasher's input (the decoder holds the sender until the payload ends).
            self.decoder = None;
            let payload_digest = payload_hasher.join().expect("hash thread does not panic");
            let written = writer_thread.join().expect("writer thread does not panic");
            (decoded, payload_digest, written)
        });
        decoded?;
        let write_failed = |error| BundleError::WriteFailed {
            image: self.image.name.clone(),
            error,
        };
        let (written, content_digest) = written.map_err(write_failed)?;
        if written != self.image.size {
            return Err(write_failed(io::Error::other("the writer stopped early")));
        }
        self.check_digests(payload_digest, content_digest)?;
        Ok(written)
    }
}

impl<R: Read> Read for ImageReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.decode(buf).map_err(BundleError::into_io)?;
        if n == 0 {
            let payload = self
                .payload_digest
                .expect("the payload was hashed inline to its end");
            let content = self.content_hasher.take().map(|h| h.finalize().into());
            self.check_digests(payload, content)
                .map_err(BundleError::into_io)?;
            return Ok(0);
        }
        if let Some(hasher) = self.content_hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}
