//! Writing a whole image, front to back, into a slot (block device or regular file) or a new file.
//!
//! An image is written once and not read again soon, so routing it through the page cache only costs: a copy of
//! every byte into the cache, then the kernel's writeback afterwards, and an fsync at the end that waits for all
//! of it. [`ImageWriter`] writes with `O_DIRECT` where the filesystem allows it: the device takes the bytes
//! straight from an aligned buffer, and a write returns once they are on the device, so the closing fsync is
//! short. Where `O_DIRECT` is refused (tmpfs, some FUSE filesystems) it falls back to buffered writes with the
//! kernel's writeback kicked window by window right behind the writer, and the written pages dropped from the
//! cache. Either way memory stays bounded whatever the image size, and durability comes from
//! [`ImageWriter::sync`].
//!
//! Runs of zeros (a filesystem image's free space) are not written byte by byte: `fallocate(FALLOC_FL_ZERO_RANGE)`
//! zeroes them as a metadata operation on a file, or with the device's write-zeroes command on a block device
//! (the kernel writes the zeros itself where the device has none). The result reads back identical.

pub mod atomic;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{fcntl, posix_fadvise, FcntlArg, OFlag, PosixFadviseAdvice};

/// Alignment `O_DIRECT` needs for buffer addresses, lengths and file offsets: the largest logical block size
/// of common devices.
pub const DIRECT_ALIGN: usize = 4096;
/// Bytes gathered before each direct write: large enough that the device streams, small enough to keep memory
/// bounded.
pub const DIRECT_CHUNK: usize = 2 << 20;
/// Buffered mode: bytes written between two writeback kicks.
pub const WRITEBACK_WINDOW: u64 = 8 << 20;
/// Buffered mode: how far behind the newest kicked window pages are released from the page cache.
pub const RELEASE_LAG: u64 = 32 << 20;
/// Shortest run of zeros worth a `fallocate` call instead of a write.
pub const ZERO_RANGE_MIN: usize = 64 << 10;

/// How bytes reach the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `O_DIRECT` from an aligned buffer.
    Direct,
    /// Through the page cache, with writeback kicked behind the writer.
    Buffered,
}

/// A 4 KiB-aligned window into an over-allocated `Vec`, so no `unsafe` allocation is needed.
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    filled: usize,
}

impl AlignedBuffer {
    fn new(len: usize) -> AlignedBuffer {
        let storage = vec![0u8; len + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuffer {
            storage,
            start,
            filled: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.storage.len() - DIRECT_ALIGN
    }

    /// Copies as much of `buf` as fits; returns how much.
    fn fill_from(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(self.capacity() - self.filled);
        let at = self.start + self.filled;
        self.storage[at..at + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        n
    }

    fn bytes(&self, len: usize) -> &[u8] {
        &self.storage[self.start..self.start + len]
    }

    /// Drops the first `len` bytes, moving the rest to the front.
    fn consume(&mut self, len: usize) {
        let from = self.start + len..self.start + self.filled;
        self.storage.copy_within(from, self.start);
        self.filled -= len;
    }
}

/// Writes an image sequentially from offset 0 of a file or block device. See the crate docs.
pub struct ImageWriter {
    file: File,
    mode: WriteMode,
    /// Direct mode only.
    buffer: Option<AlignedBuffer>,
    written: u64,
    behind: WriteBehind,
    /// Cleared after the first refused `FALLOC_FL_ZERO_RANGE`.
    zero_range: bool,
    zeroed: u64,
}

impl ImageWriter {
    /// Opens an existing slot (block device or regular file) for writing from offset 0, without truncating: a
    /// partition cannot be truncated, and a file slot keeps its size so its capacity stays the same.
    pub fn open_slot(path: &Path) -> io::Result<ImageWriter> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path);
        match direct {
            Ok(file) => Ok(ImageWriter::new(file, WriteMode::Direct)),
            // EINVAL: the filesystem does not support O_DIRECT.
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(ImageWriter::new(
                OpenOptions::new().write(true).open(path)?,
                WriteMode::Buffered,
            )),
            Err(e) => Err(e),
        }
    }

    /// Writes into `file` (e.g. a fresh temporary file) from its current offset, which must be 0. With
    /// `expected_size`, the space is reserved first, so a full disk fails before the first byte rather than
    /// halfway through.
    pub fn for_file(file: File, expected_size: Option<u64>) -> io::Result<ImageWriter> {
        if let Some(size) = expected_size.filter(|&s| s > 0) {
            reserve(&file, size)?;
        }
        let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?;
        let direct = OFlag::from_bits_retain(flags) | OFlag::O_DIRECT;
        let mode = match fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(direct)) {
            Ok(_) => WriteMode::Direct,
            Err(_) => WriteMode::Buffered,
        };
        Ok(ImageWriter::new(file, mode))
    }

    fn new(file: File, mode: WriteMode) -> ImageWriter {
        ImageWriter {
            file,
            buffer: (mode == WriteMode::Direct).then(|| AlignedBuffer::new(DIRECT_CHUNK)),
            mode,
            written: 0,
            behind: WriteBehind::default(),
            zero_range: true,
            zeroed: 0,
        }
    }

    /// Bytes that were runs of zeros and zeroed without being written.
    pub fn zeroed(&self) -> u64 {
        self.zeroed
    }

    /// Zeroes the next bytes instead of writing them when `buf` starts with a long enough run of zeros and
    /// nothing is buffered. Returns how many bytes it took care of (0: write them normally).
    fn zero_instead_of_writing(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() - buf.len() % DIRECT_ALIGN;
        let nothing_buffered = !matches!(&self.buffer, Some(b) if b.filled > 0);
        if !self.zero_range
            || len < ZERO_RANGE_MIN
            || !nothing_buffered
            || self.written & (DIRECT_ALIGN as u64 - 1) != 0
            || !is_all_zero(&buf[..len])
        {
            return Ok(0);
        }
        let (Ok(offset), Ok(size)) = (i64::try_from(self.written), i64::try_from(len)) else {
            return Ok(0);
        };
        let zeroed = nix::fcntl::fallocate(
            self.file.as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_ZERO_RANGE,
            offset,
            size,
        );
        if zeroed.is_err() {
            // Not supported here (tmpfs, some devices): write the zeros like any other bytes from now on.
            self.zero_range = false;
            return Ok(0);
        }
        self.file.seek(SeekFrom::Current(size))?;
        self.zeroed += len as u64;
        Ok(len)
    }

    /// How bytes currently reach the file (a direct writer turns buffered for an unaligned tail, or when the
    /// filesystem refuses a direct write).
    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes out everything buffered and fsyncs the file; after this every accepted byte is durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }

    /// Gives back the file, all bytes written and `O_DIRECT` cleared so it reads and writes like any file.
    pub fn into_file(mut self) -> io::Result<File> {
        self.flush()?;
        if self.mode == WriteMode::Direct {
            self.leave_direct_mode()?;
        }
        Ok(self.file)
    }

    /// Writes the buffer's first `len` bytes (a multiple of [`DIRECT_ALIGN`]) with `O_DIRECT`, falling back to
    /// buffered mode if the filesystem refuses.
    fn write_direct(&mut self, len: usize) -> io::Result<()> {
        let buffer = self.buffer.as_mut().expect("direct mode has a buffer");
        let result = self.file.write_all(buffer.bytes(len));
        match result {
            Ok(()) => {
                buffer.consume(len);
                Ok(())
            }
            // Accepted at open but refused on write: go through the page cache from here on. A failed direct
            // write transfers nothing, so the file offset has not moved.
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => self.leave_direct_mode(),
            Err(e) => Err(e),
        }
    }

    /// Clears `O_DIRECT` and writes whatever is buffered through the page cache.
    fn leave_direct_mode(&mut self) -> io::Result<()> {
        let flags = fcntl(self.file.as_raw_fd(), FcntlArg::F_GETFL)?;
        let buffered = OFlag::from_bits_retain(flags) - OFlag::O_DIRECT;
        fcntl(self.file.as_raw_fd(), FcntlArg::F_SETFL(buffered))?;
        self.mode = WriteMode::Buffered;
        if let Some(buffer) = self.buffer.take() {
            self.file.write_all(buffer.bytes(buffer.filled))?;
        }
        Ok(())
    }
}

impl Write for ImageWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let zeroed = self.zero_instead_of_writing(buf)?;
        if zeroed > 0 {
            self.written += zeroed as u64;
            return Ok(zeroed);
        }
        let n = match self.mode {
            WriteMode::Direct => {
                let buffer = self.buffer.as_mut().expect("direct mode has a buffer");
                let aligned_len = buf.len() - buf.len() % DIRECT_ALIGN;
                if buffer.filled == 0
                    && aligned_len > 0
                    && buf.as_ptr().align_offset(DIRECT_ALIGN) == 0
                {
                    // Already aligned (the bundle reader's chunks are): straight to the device, no copy.
                    match self.file.write(&buf[..aligned_len]) {
                        Ok(n) => {
                            self.written += n as u64;
                            return Ok(n);
                        }
                        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                            self.leave_direct_mode()?;
                            return self.write(buf);
                        }
                        Err(e) => return Err(e),
                    }
                }
                let n = buffer.fill_from(buf);
                if buffer.filled == buffer.capacity() {
                    self.write_direct(DIRECT_CHUNK)?;
                }
                n
            }
            WriteMode::Buffered => {
                let n = self.file.write(buf)?;
                self.behind
                    .written_up_to(&self.file, self.written + n as u64);
                n
            }
        };
        self.written += n as u64;
        Ok(n)
    }

    /// Writes out what is buffered. The aligned part goes direct; an unaligned tail (only at the very end of an
    /// image whose size is not a multiple of 4 KiB) goes through the page cache, and the writer stays buffered.
    fn flush(&mut self) -> io::Result<()> {
        let Some(buffer) = self.buffer.as_ref() else {
            return Ok(());
        };
        let aligned = buffer.filled - buffer.filled % DIRECT_ALIGN;
        if aligned > 0 {
            self.write_direct(aligned)?;
        }
        if self.buffer.as_ref().is_some_and(|b| b.filled > 0) {
            self.leave_direct_mode()?;
        }
        Ok(())
    }
}

/// Follows a file being written front to back with the kernel's writeback: each full [`WRITEBACK_WINDOW`]
/// just written is handed to writeback (`POSIX_FADV_DONTNEED` starts asynchronous writeback of dirty pages), and
/// the range [`RELEASE_LAG`] behind it, written back by then, is advised again to drop its clean pages. So the
/// closing fsync has little left to wait for and the page cache does not fill up with the file. Advice is only a
/// hint: errors are ignored; durability comes from fsync.
#[derive(Debug, Default)]
struct WriteBehind {
    kicked: u64,
    released: u64,
}

impl WriteBehind {
    /// Everything before `position` has been written (positions behind what was kicked already are ignored).
    fn written_up_to(&mut self, file: &impl AsFd, position: u64) {
        if position < self.kicked + WRITEBACK_WINDOW {
            return;
        }
        advise_dontneed(file, self.kicked, position);
        self.kicked = position;
        if self.kicked - self.released >= RELEASE_LAG + WRITEBACK_WINDOW {
            let end = self.kicked - RELEASE_LAG;
            advise_dontneed(file, self.released, end);
            self.released = end;
        }
    }
}

fn advise_dontneed(file: &impl AsFd, start: u64, end: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
        return;
    };
    let _ = posix_fadvise(
        file.as_fd().as_raw_fd(),
        offset,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// A file written mostly front to back (a bundle: its payloads in order, then a few header blocks patched at the
/// front), with the kernel's writeback following the writer so the final fsync is short.
pub struct WriteBehindFile<F> {
    file: F,
    position: u64,
    behind: WriteBehind,
}

impl<F: Write + Seek + AsFd> WriteBehindFile<F> {
    /// Wraps `file`, whose offset must be 0.
    pub fn new(file: F) -> Self {
        WriteBehindFile {
            file,
            position: 0,
            behind: WriteBehind::default(),
        }
    }

    /// The wrapped file.
    pub fn into_inner(self) -> F {
        self.file
    }
}

impl<F: Write + Seek + AsFd> Write for WriteBehindFile<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.position += n as u64;
        self.behind.written_up_to(&self.file, self.position);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl<F: Write + Seek + AsFd> Seek for WriteBehindFile<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.position = self.file.seek(to)?;
        Ok(self.position)
    }
}

/// Whether every byte is zero; checks 64-byte blocks without branching inside them, so it runs at memory speed.
fn is_all_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    let whole = blocks
        .by_ref()
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0);
    whole && blocks.remainder().iter().all(|&b| b == 0)
}

/// Reserves `size` bytes of disk for `file` (`fallocate` without changing the file's contents or growing it
/// past `size`). Filesystems without `fallocate` are left to allocate as the bytes arrive.
fn reserve(file: &File, size: u64) -> io::Result<()> {
    let Ok(len) = i64::try_from(size) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "image size out of range",
        ));
    };
    match nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Writes `data` in `piece`-sized writes, then syncs.
    fn write_in_pieces(w: &mut ImageWriter, data: &[u8], piece: usize) {
        for chunk in data.chunks(piece) {
            w.write_all(chunk).unwrap();
        }
        w.sync().unwrap();
    }

    /// The whole content of `file`, read from its start.
    fn read_back(mut file: File) -> Vec<u8> {
        use std::io::Read;
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        back
    }

    /// The size of the bundle reader's chunks.
    const READER_CHUNK: usize = 1 << 20;

    /// Writes `image` in [`READER_CHUNK`] pieces, each from a 4 KiB-aligned buffer as the bundle reader hands
    /// them out.
    fn write_aligned_pieces(w: &mut ImageWriter, image: &[u8]) {
        for piece in image.chunks(READER_CHUNK) {
            let mut aligned = AlignedBuffer::new(piece.len());
            aligned.fill_from(piece);
            w.write_all(aligned.bytes(piece.len())).unwrap();
        }
    }

    #[test]
    fn slot_is_overwritten_in_place_and_keeps_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot");
        let total = 3 * DIRECT_CHUNK + 12345;
        std::fs::write(&path, vec![0xEEu8; total + 100]).unwrap();
        let data = pattern(total);
        let mut w = ImageWriter::open_slot(&path).unwrap();
        write_in_pieces(&mut w, &data, 1 << 20);
        assert_eq!(w.written(), total as u64);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), total + 100, "a slot is not truncated");
        assert!(bytes[..total] == data[..], "content differs");
        assert_eq!(&bytes[total..], &[0xEEu8; 100][..]);
    }

    #[test]
    fn odd_sized_writes_and_an_unaligned_tail_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        for (total, piece) in [
            (DIRECT_CHUNK * 2, 4097),
            (5 * DIRECT_ALIGN + 1, 333),
            (7, 3),
            (0, 1),
        ] {
            let file = tempfile::tempfile_in(dir.path()).unwrap();
            let data = pattern(total);
            let mut w = ImageWriter::for_file(file, Some(total as u64)).unwrap();
            write_in_pieces(&mut w, &data, piece);
            let back = read_back(w.into_file().unwrap());
            assert!(back == data, "total {total}, piece {piece}");
        }
    }

    #[test]
    fn buffered_mode_kicks_and_releases_writeback_without_losing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot");
        let total = (RELEASE_LAG + 3 * WRITEBACK_WINDOW + 12345) as usize;
        std::fs::write(&path, vec![0u8; total + 10]).unwrap();
        let data = pattern(total);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut w = ImageWriter::new(file, WriteMode::Buffered);
        write_in_pieces(&mut w, &data, 1 << 20);
        assert!(w.behind.kicked > 0 && w.behind.released > 0);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[..total] == data[..], "content differs");
        assert_eq!(&bytes[total..], &[0u8; 10]);
    }

    #[test]
    fn a_direct_writer_leaves_direct_mode_only_for_an_unaligned_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot");
        std::fs::write(&path, vec![0u8; DIRECT_CHUNK * 2]).unwrap();
        let mut w = ImageWriter::open_slot(&path).unwrap();
        if w.mode() == WriteMode::Buffered {
            eprintln!("this filesystem refuses O_DIRECT; only the buffered path was exercised");
            return;
        }
        w.write_all(&pattern(DIRECT_CHUNK + DIRECT_ALIGN)).unwrap();
        w.flush().unwrap();
        assert_eq!(w.mode(), WriteMode::Direct, "aligned data stays direct");
        w.write_all(&[1, 2, 3]).unwrap();
        w.sync().unwrap();
        assert_eq!(w.mode(), WriteMode::Buffered);
        let bytes = std::fs::read(&path).unwrap();
        let end = DIRECT_CHUNK + DIRECT_ALIGN;
        assert_eq!(&bytes[end..end + 3], &[1, 2, 3]);
    }

    #[test]
    fn runs_of_zeros_overwrite_old_slot_content_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot");
        let chunk = READER_CHUNK;
        // The slot's old content is all 0xEE: every zero of the new image must really replace it.
        std::fs::write(&path, vec![0xEEu8; 6 * chunk]).unwrap();
        let mut image = pattern(6 * chunk);
        image[chunk..3 * chunk].fill(0); // two whole zero chunks
        image[4 * chunk + 100..5 * chunk].fill(0); // a zero run that does not start a chunk
        let mut w = ImageWriter::open_slot(&path).unwrap();
        write_aligned_pieces(&mut w, &image);
        w.sync().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert!(back == image, "content differs");
        if w.zeroed() == 0 {
            eprintln!("this filesystem refuses FALLOC_FL_ZERO_RANGE; zeros were written");
        } else {
            assert_eq!(
                w.zeroed(),
                2 * chunk as u64,
                "only whole zero chunks are zeroed"
            );
        }
    }

    #[test]
    fn aligned_chunks_go_direct_and_arrive_intact() {
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let data = pattern(3 * DIRECT_CHUNK + 8192);
        let mut w = ImageWriter::for_file(file, Some(data.len() as u64)).unwrap();
        let direct = w.mode() == WriteMode::Direct;
        write_aligned_pieces(&mut w, &data);
        w.flush().unwrap();
        assert_eq!(w.mode() == WriteMode::Direct, direct, "no fallback needed");
        assert!(read_back(w.into_file().unwrap()) == data, "content differs");
    }

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[]));
        assert!(is_all_zero(&[0u8; 1000]));
        for at in [0, 63, 64, 999] {
            let mut v = vec![0u8; 1000];
            v[at] = 1;
            assert!(!is_all_zero(&v), "{at}");
        }
    }

    #[test]
    fn write_behind_file_keeps_seeks_and_patches() {
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let total = (RELEASE_LAG + 3 * WRITEBACK_WINDOW) as usize;
        let data = pattern(total);
        let mut w = WriteBehindFile::new(file);
        w.seek(SeekFrom::Start(4096)).unwrap();
        for chunk in data[4096..].chunks(1 << 20) {
            w.write_all(chunk).unwrap();
        }
        assert!(w.behind.kicked > 0 && w.behind.released > 0);
        // Patch the front last, as a bundle writer does with its header.
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(&data[..4096]).unwrap();
        let file = w.into_inner();
        file.sync_all().unwrap();
        assert!(read_back(file) == data, "content differs");
    }

    #[test]
    fn a_missing_slot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageWriter::open_slot(&dir.path().join("absent"))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
