//! One module per subcommand, each with its clap `Args` and a `run` function.

pub mod bundle_file;
pub mod create;
pub mod download_size;
pub mod extract;
pub mod info;
pub mod keygen;
pub mod publish;
pub mod sign;
pub mod trust;
pub mod verify;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressBarIter};
use ota_bundle_format::{BundleError, BundleReader};
use ota_keys::TrustRoot;

/// Read buffer for bundle files: large enough that the tar framing never dominates.
const READ_BUFFER: usize = 1 << 20;

/// Opens a bundle file for one streaming pass, with a progress bar over its bytes.
pub fn open_bundle(
    path: &Path,
    message: &str,
) -> Result<(BufReader<ProgressBarIter<File>>, ProgressBar)> {
    let file =
        File::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = crate::output::progress_bar(len, message);
    Ok((
        BufReader::with_capacity(READ_BUFFER, bar.wrap_read(file)),
        bar,
    ))
}

/// Loads a trust root file, or a single `.pub` as a one-key root.
pub fn load_trust(path: &Path) -> Result<TrustRoot> {
    Ok(ota_keys::load_trust_root(path)?)
}

/// Opens, authenticates and fully verifies a bundle, leaving the caller the reader for its images.
pub fn open_verified(
    path: &Path,
    trust: &TrustRoot,
    message: &str,
) -> Result<(BundleReader<BufReader<ProgressBarIter<File>>>, ProgressBar)> {
    let (reader, bar) = open_bundle(path, message)?;
    let bundle = BundleReader::open(reader, trust).map_err(|e| describe(path, e))?;
    Ok((bundle, bar))
}

/// Names the bundle file in a format error.
pub fn describe(path: &Path, err: BundleError) -> anyhow::Error {
    anyhow::Error::new(err).context(format!("{}", path.display()))
}
