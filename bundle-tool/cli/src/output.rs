//! Output discipline shared by the subcommands: files appear complete or not at all, and progress bars show only
//! on a terminal.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// A file being written next to its final path; it replaces (or creates) the final path only on [`commit`], and
/// disappears if dropped before. A power cut leaves either the old file or the new one.
///
/// [`commit`]: AtomicOutput::commit
pub struct AtomicOutput {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicOutput {
    /// Prepares to write `path`; refuses an existing file unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        if !overwrite && path.exists() {
            bail!(
                "{} already exists (use --force to replace it)",
                path.display()
            );
        }
        let dir = parent_dir(path);
        let temp = tempfile::Builder::new()
            .prefix(".ota-bundle-")
            .suffix(".partial")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(AtomicOutput {
            temp,
            path: path.to_path_buf(),
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// fsyncs the data, renames it into place and fsyncs the directory. A replaced file keeps its permissions; a
    /// new one gets 0644 (temporary files start private).
    pub fn commit(mut self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path.clone();
        let permissions = std::fs::metadata(&path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
        self.temp
            .as_file()
            .set_permissions(permissions)
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
        self.temp
            .as_file_mut()
            .flush()
            .and_then(|()| self.temp.as_file().sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.temp
            .persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename the finished file to {}", path.display()))?;
        File::open(parent_dir(&path))
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync the directory of {}", path.display()))?;
        Ok(())
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
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
