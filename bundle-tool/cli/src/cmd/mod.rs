//! One module per subcommand, each with its clap `Args` and a `run` function.

pub mod bundle_file;
pub mod chain;
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
use ota_bundle_format::trust_chain::{self, Resolved};
use ota_bundle_format::{BundleError, BundleReader, UnverifiedBundle};
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

/// A bundle file being read, its head authenticated.
pub type VerifiedBundle = BundleReader<BufReader<ProgressBarIter<File>>>;

/// Which root a bundle's signatures were checked against.
pub struct Checked {
    /// The root reached from the given one through the carried chain, and where the walk started.
    pub resolved: Resolved,
    /// The versions of the chain the bundle carries (empty for most bundles).
    pub carried: Vec<u64>,
}

/// Opens and authenticates a bundle as a robot does: the trust chain it carries is walked from `trust` first
/// (all or nothing, [`trust_chain::resolve`]), and the signatures are checked against the root reached, which
/// is returned with the reader for its images.
pub fn open_verified(
    path: &Path,
    trust: &TrustRoot,
    message: &str,
) -> Result<(VerifiedBundle, ProgressBar, Checked)> {
    let (reader, bar) = open_bundle(path, message)?;
    let head = UnverifiedBundle::read(reader).map_err(|e| describe(path, e))?;
    let carried = head
        .trust_chain()
        .iter()
        .map(|r| r.signed.version)
        .collect();
    let resolved =
        trust_chain::resolve(trust, head.trust_chain()).map_err(|e| describe(path, e))?;
    let bundle = head.verify(&resolved.root).map_err(|e| describe(path, e))?;
    Ok((bundle, bar, Checked { resolved, carried }))
}

/// Names the bundle file in a format error.
pub fn describe(path: &Path, err: BundleError) -> anyhow::Error {
    anyhow::Error::new(err).context(format!("{}", path.display()))
}
