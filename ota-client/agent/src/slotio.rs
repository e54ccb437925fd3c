//! Writing slots: block devices and regular files behind one small trait, so tests can wrap
//! the writer to cut the power after N bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// A slot being written: bytes go in order from offset 0; `sync` makes them durable.
pub trait SlotWriter: Write + Send {
    /// Flushes and fsyncs everything written.
    fn sync(&mut self) -> io::Result<()>;
}

/// Writes a block device or a regular file in place.
pub struct FileSlotWriter {
    file: File,
    path: PathBuf,
}

impl FileSlotWriter {
    /// Opens `path` for writing from offset 0 without truncating (a partition cannot be
    /// truncated; a file slot keeps its size, so its capacity stays the same).
    pub fn open(path: &Path) -> io::Result<FileSlotWriter> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(FileSlotWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The slot's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Write for FileSlotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
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
}
