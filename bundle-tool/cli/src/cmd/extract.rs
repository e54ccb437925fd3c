//! `ota-bundle extract`: verify and write the uncompressed images. Images are written to hidden temporary files
//! in DIR and renamed to their names only after the whole bundle has verified, so a bad bundle leaves nothing.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

use anyhow::{bail, Context, Result};

use super::{describe, load_trust, open_verified};

/// Arguments of `extract`.
#[derive(clap::Args)]
pub struct Args {
    /// Trust root (JSON from `trust create`) or a single .pub key.
    #[arg(long)]
    trust: PathBuf,
    /// Replace images that already exist in DIR.
    #[arg(long)]
    force: bool,
    /// The bundle.
    bundle: PathBuf,
    /// Directory to write the images into (created if missing).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let trust = load_trust(&args.trust)?;
    let (mut bundle, bar) = open_verified(&args.bundle, &trust, "extracting")?;
    let names: Vec<String> = bundle
        .manifest()
        .images
        .iter()
        .map(|i| i.name.clone())
        .collect();
    for name in &names {
        let target = args.dir.join(name);
        if !args.force && target.exists() {
            bail!(
                "{} already exists (use --force to replace it)",
                target.display()
            );
        }
    }
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut staged = Vec::new();
    while let Some(image) = bundle.next_image().map_err(|e| describe(&args.bundle, e))? {
        let name = image.entry().name.clone();
        let temp = tempfile::Builder::new()
            .prefix(".ota-extract-")
            .tempfile_in(&args.dir)
            .with_context(|| format!("cannot create a file in {}", args.dir.display()))?;
        let mut out = WritebackFile::new(temp.as_file());
        image
            .copy_to(&mut out)
            .map_err(|e| describe(&args.bundle, e))?;
        temp.as_file()
            .sync_all()
            .with_context(|| format!("cannot write {name}"))?;
        staged.push((temp, name));
    }
    bundle.finish().map_err(|e| describe(&args.bundle, e))?;
    bar.finish_and_clear();
    for (temp, name) in staged {
        let target = args.dir.join(&name);
        temp.persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", target.display()))?;
        println!("{}", target.display());
    }
    fs::File::open(&args.dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", args.dir.display()))?;
    Ok(())
}

/// Bytes written between two writeback kicks.
const WRITEBACK_WINDOW: u64 = 8 << 20;
/// How far behind the newest kicked window pages are released from the page cache.
const RELEASE_LAG: u64 = 32 << 20;

/// Writes an image file with the kernel's writeback following close behind, instead of leaving the whole image
/// dirty in the page cache for the final fsync to write in one go: with gigabytes of RAM the kernel would not
/// start on its own before its dirty thresholds, and the fsync would be a long serial stall after decoding.
///
/// `POSIX_FADV_DONTNEED` on a range starts asynchronous writeback of its dirty pages and drops the clean ones:
/// each full window just written is kicked off that way, and a window [`RELEASE_LAG`] behind (written back by
/// then) is advised again to release its pages, so an extract does not fill the page cache with the image.
/// Advice is a hint: errors are ignored, and durability still comes from the caller's fsync. Chunks from the
/// decoder are already large, so they go straight to the file without another buffer.
struct WritebackFile<'a> {
    file: &'a File,
    written: u64,
    kicked: u64,
    released: u64,
}

impl<'a> WritebackFile<'a> {
    fn new(file: &'a File) -> Self {
        WritebackFile {
            file,
            written: 0,
            kicked: 0,
            released: 0,
        }
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
}

impl Write for WritebackFile<'_> {
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
        Ok(())
    }
}
