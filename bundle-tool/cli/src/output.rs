//! Output discipline shared by the subcommands: files appear complete or not at all, and progress bars show only
//! on a terminal.

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ota_image_io::atomic::AtomicFile;

/// A file being written next to its final path ([`AtomicFile`]); it replaces (or creates) the final path only on
/// [`commit`], and disappears if dropped before. A power cut leaves either the old file or the new one.
///
/// [`commit`]: AtomicOutput::commit
pub struct AtomicOutput {
    file: AtomicFile,
}

impl AtomicOutput {
    /// Prepares to write `path`; refuses an existing file unless `overwrite`. A replaced file keeps its
    /// permissions; a new one gets 0644.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        if !overwrite && path.exists() {
            bail!(
                "{} already exists (use --force to replace it)",
                path.display()
            );
        }
        let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
        Ok(AtomicOutput {
            file: AtomicFile::create(path, mode)?,
        })
    }

    /// The open temporary file (readable too, so a result can be checked before it replaces anything).
    pub fn file(&mut self) -> &mut File {
        self.file.file()
    }

    /// fsyncs the data, renames it into place and fsyncs the directory.
    pub fn commit(self) -> Result<()> {
        Ok(self.file.commit()?)
    }
}

/// A byte-count progress bar on a terminal, an invisible one otherwise (pipes and CI logs stay clean).
pub fn progress_bar(total: u64, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// Formats a byte count for humans.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
