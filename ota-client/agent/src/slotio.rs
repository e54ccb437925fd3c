//! Writing slots: block devices and regular files behind one small trait, so tests can wrap
//! the writer to cut the power after N bytes.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

pub use ota_image_io::ImageWriter;

/// A slot being written: bytes go in order from offset 0; `sync` makes them durable.
pub trait SlotWriter: Write + Send {
    /// Flushes and fsyncs everything written.
    fn sync(&mut self) -> io::Result<()>;
}

/// Slots are written by [`ImageWriter`]: `O_DIRECT` where the device or filesystem allows it, else through the
/// page cache with writeback following close behind, so an install neither fills the page cache nor stalls in
/// one long fsync at the end.
impl SlotWriter for ImageWriter {
    fn sync(&mut self) -> io::Result<()> {
        ImageWriter::sync(self)
    }
}

/// Opens a slot for writing from `offset` on: [`ImageWriter`] from offset 0, else (continuing an interrupted
/// write, at a chunk boundary that need not be aligned for `O_DIRECT`) a buffered writer positioned there.
pub fn open_slot_at(path: &Path, offset: u64) -> io::Result<Box<dyn SlotWriter>> {
    if offset == 0 {
        return Ok(Box::new(ImageWriter::open_slot(path)?));
    }
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok(Box::new(ContinuedWriter(io::BufWriter::with_capacity(
        1 << 20,
        file,
    ))))
}

/// A slot written from the middle on, through the page cache.
struct ContinuedWriter(io::BufWriter<File>);

impl Write for ContinuedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl SlotWriter for ContinuedWriter {
    fn sync(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_data()
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
        let mut w = ImageWriter::open_slot(&p).unwrap();
        w.write_all(b"abc").unwrap();
        SlotWriter::sync(&mut w).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..3], b"abc");
        assert_eq!(bytes.len(), 100);
        assert!(capacity(dir.path(), None).is_err());
        assert!(capacity(&dir.path().join("none"), None).is_err());
    }
}
