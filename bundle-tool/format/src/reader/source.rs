//! The byte source under the reader: counts offsets and remembers how the stream ended, and reads the tar framing
//! (headers, small entries, padding, the end of the archive) the way this format insists on it.

use std::io::{self, Read};

use crate::error::BundleError;
use crate::framing::{self, parse_header, BLOCK};

/// Counts bytes and remembers how the underlying stream ended, so errors can say "truncated at byte N" or name
/// the I/O failure instead of blaming the decoder.
pub(super) struct Source<R> {
    inner: R,
    pub(super) offset: u64,
    pub(super) hit_eof: bool,
    pub(super) io_error: bool,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.hit_eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.offset += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.io_error = true;
                }
                Err(e)
            }
        }
    }
}

impl<R: Read> Source<R> {
    pub(super) fn new(inner: R) -> Self {
        Source {
            inner,
            offset: 0,
            hit_eof: false,
            io_error: false,
        }
    }

    /// Fills `buf` completely or reports truncation.
    pub(super) fn read_full(&mut self, buf: &mut [u8], inside: &str) -> Result<(), BundleError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(BundleError::Truncated {
                        offset: self.offset,
                        inside: inside.to_string(),
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BundleError::io(format!("reading {inside}"), e)),
            }
        }
        Ok(())
    }

    pub(super) fn read_header(
        &mut self,
        expected: &str,
    ) -> Result<Option<framing::EntryHeader>, BundleError> {
        let offset = self.offset;
        let mut block = [0u8; BLOCK];
        self.read_full(&mut block, &format!("the header of {expected}"))?;
        parse_header(&block, offset)
    }

    /// Reads the header of the entry that must come next, insisting on its exact path.
    pub(super) fn expect_entry(
        &mut self,
        path: &str,
        seen: &[String],
    ) -> Result<framing::EntryHeader, BundleError> {
        match self.read_header(&format!("'{path}'"))? {
            None => Err(BundleError::UnexpectedEntry {
                found: "end of archive".into(),
                expected: format!("'{path}'"),
            }),
            Some(h) if h.path == path => Ok(h),
            Some(h) if seen.contains(&h.path) => Err(BundleError::DuplicateEntry { path: h.path }),
            Some(h) => Err(BundleError::UnexpectedEntry {
                found: h.path,
                expected: format!("'{path}'"),
            }),
        }
    }

    /// Reads a small entry's content (bounded by `limit`) and skips its padding.
    pub(super) fn read_small_entry(
        &mut self,
        header: &framing::EntryHeader,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, BundleError> {
        if header.size > limit {
            return Err(BundleError::TooLarge {
                what,
                size: header.size,
                limit,
            });
        }
        let mut content = vec![0u8; header.size as usize];
        self.read_full(&mut content, &format!("'{}'", header.path))?;
        self.skip_padding(header.size, &header.path)?;
        Ok(content)
    }

    /// Skips (and checks) the zero padding after an entry.
    pub(super) fn skip_padding(&mut self, size: u64, path: &str) -> Result<(), BundleError> {
        let mut pad = [0u8; BLOCK];
        let pad = &mut pad[..framing::padding_len(size)];
        self.read_full(pad, &format!("the padding after '{path}'"))?;
        if pad.iter().any(|&b| b != 0) {
            return Err(BundleError::CorruptHeader {
                offset: self.offset,
                detail: format!("non-zero padding after '{path}'"),
            });
        }
        Ok(())
    }
}

/// Checks the two zero blocks that end the archive and that nothing follows them.
pub(super) fn finish_archive<R: Read>(src: &mut Source<R>) -> Result<(), BundleError> {
    for _ in 0..2 {
        let offset = src.offset;
        let mut block = [0u8; BLOCK];
        src.read_full(&mut block, "the end-of-archive marker")?;
        if block.iter().any(|&b| b != 0) {
            return Err(match parse_header(&block, offset) {
                Ok(Some(h)) => BundleError::UnexpectedEntry {
                    found: h.path,
                    expected: "the end of the bundle".into(),
                },
                _ => BundleError::TrailingData { offset },
            });
        }
    }
    let offset = src.offset;
    let mut probe = [0u8; 1];
    loop {
        match src.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(BundleError::TrailingData { offset }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BundleError::io("reading the end of the bundle", e)),
        }
    }
}
