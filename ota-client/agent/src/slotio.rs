//! Writing slots: block devices and regular files behind one small trait, so tests can wrap
//! the writer to cut the power after N bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

/// A slot being written: bytes go in order from offset 0; `sync` makes them durable.
pub trait SlotWriter: Write + Send {
    /// Flushes and fsyncs everything written.
    fn sync(&mut self) -> io::Result<()>;
}

/// Bytes written between two writeback kicks.
const WRITEBACK_WINDOW: u64 = 8 << 20;
/// How far behind the newest kicked window pages are released from the page cache.
const RELEASE_LAG: u64 = 32 << 20;

/// Writes a block device or a regular file in place, with the kernel's writeback following close behind.
///
/// Without help the whole image would sit dirty in the page cache (the kernel starts writeback only at its dirty
/// thresholds, gigabytes on a big machine) and [`SlotWriter::sync`] would write all of it in one serial stall
/// after the last byte is decoded. Instead, each [`WRITEBACK_WINDOW`] just written gets `POSIX_FADV_DONTNEED`,
/// which starts asynchronous writeback of its dirty pages, and the range [`RELEASE_LAG`] behind (written back
/// by then) is advised again to drop its clean pages, so an install neither stalls at the end nor fills the
/// page cache with the image. Advice is only a hint: errors are ignored; durability comes from `sync`.
pub struct FileSlotWriter {
    file: File,
    path: PathBuf,
    written: u64,
    kicked: u64,
    released: u64,
}

impl FileSlotWriter {
    /// Opens `path` for writing from offset 0 without truncating (a partition cannot be
    /// truncated; a file slot keeps its size, so its capacity stays the same).
    pub fn open(path: &Path) -> io::Result<FileSlotWriter> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(FileSlotWriter {
            file,
            path: path.to_path_buf(),
            written: 0,
            kicked: 0,
            released: 0,
        })
    }

    fn advise_dontneed(&self, start: u64, end: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
            return;
        };
        let _ = posix_fadvise(
            self.file.as_raw_fd(),
            offset,
            len,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }

    /// The slot's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Write for FileSlotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= WRITEBACK_WINDOW {
            self.advise_dontneed(self.kicked, self.written);
            self.kicked = self.written;
            if self.kicked - self.released >= RELEASE_LAG + WRITEBACK_WINDOW {
                let end = self.kicked - RELEASE_LAG;
                self.advise_dontneed(self.released, end);
                self.released = end;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl SlotWriter for FileSlotWriter {
    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_all()
    }
}

/// A slot's capacity: `explicit` if configured, else a block device's size (seek to its
/// end) or a regular file's length.
pub fn capacity(path: &Path, explicit: Option<u64>) -> io::Result<u64> {
    if let Some(size) = explicit {
        return Ok(size);
    }
    let meta = std::fs::metadata(path)?;
    if meta.file_type().is_block_device() {
        let mut f = File::open(path)?;
        return f.seek(SeekFrom::End(0));
    }
    if meta.is_file() {
        return Ok(meta.len());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a block device or regular file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_capacity_and_in_place_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slot");
        std::fs::write(&p, vec![7u8; 100]).unwrap();
        assert_eq!(capacity(&p, None).unwrap(), 100);
        assert_eq!(capacity(&p, Some(5)).unwrap(), 5);
        let mut w = FileSlotWriter::open(&p).unwrap();
        w.write_all(b"abc").unwrap();
        w.sync().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..3], b"abc");
        assert_eq!(bytes.len(), 100);
        assert!(capacity(dir.path(), None).is_err());
        assert!(capacity(&dir.path().join("none"), None).is_err());
    }

    #[test]
    fn write_behind_keeps_every_byte_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slot");
        let total = (RELEASE_LAG + 3 * WRITEBACK_WINDOW + 12345) as usize;
        std::fs::write(&p, vec![0u8; total + 10]).unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut w = FileSlotWriter::open(&p).unwrap();
        for chunk in data.chunks(1 << 20) {
            w.write_all(chunk).unwrap();
        }
        assert!(w.kicked > 0 && w.released > 0);
        w.sync().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), total + 10);
        assert!(bytes[..total] == data[..], "content differs");
        assert_eq!(&bytes[total..], &[0u8; 10]);
    }
}
