//! The trust chain a bundle carries (`create --trust-chain`, `set-chain`, shown by `info` and walked by `verify`):
//! the roots a robot updated from a file walks from its own root before it checks the bundle's signatures. The
//! chain sits beside the signatures, outside the signed manifest, so setting it changes neither the bundle id nor
//! a signature.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ota_bundle_format::trust_chain::{check_chain, normalize_chain};
use ota_bundle_format::{rewrite_head, UnverifiedBundle};
use ota_keys::chain::{parse_chain, walk};
use ota_keys::SignedTrustRoot;

use super::{describe, open_bundle};
use crate::output::AtomicOutput;

/// Arguments of `set-chain`.
#[derive(clap::Args)]
pub struct Args {
    /// The chain to carry: trust root files (as `ota-bundle trust create/sign` write them), JSON lists of them,
    /// or the server's answer to `GET /api/trust/chain`; repeatable, merged oldest first.
    #[arg(long, value_name = "FILE", required_unless_present = "remove")]
    trust_chain: Vec<PathBuf>,
    /// Carry no chain any more.
    #[arg(long, conflicts_with = "trust_chain")]
    remove: bool,
    /// Write the result here instead of replacing BUNDLE (atomically) in place.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// The bundle.
    bundle: PathBuf,
}

/// Reads the chain files for a bundle to carry (each one root, a JSON list of roots, or the server's
/// `{"newest": N, "roots": [...]}`): merged, sorted oldest first, identical copies merged, and refused unless each
/// root is accepted by the one before it (a chain that cannot walk would only make robots refuse the bundle).
pub fn read_chain_files(paths: &[PathBuf]) -> Result<Vec<SignedTrustRoot>> {
    let mut roots = Vec::new();
    for path in paths {
        roots.extend(read_chain_file(path)?);
    }
    let chain = normalize_chain(roots);
    check_chain(&chain).context("the trust chain to carry")?;
    let Some((first, rest)) = chain.split_first() else {
        bail!("the trust chain to carry holds no trust root");
    };
    walk(&first.signed, rest)
        .context("the trust chain to carry does not walk from its oldest root")?;
    Ok(chain)
}

fn read_chain_file(path: &Path) -> Result<Vec<SignedTrustRoot>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the trust chain {}", path.display()))?;
    match served_roots(&text) {
        Some(values) => values
            .iter()
            .map(|v| SignedTrustRoot::from_json(&v.to_string()))
            .collect::<Result<Vec<_>, _>>(),
        None => parse_chain(&text),
    }
    .with_context(|| format!("trust chain {}", path.display()))
}

/// The roots of the server's `GET /api/trust/chain` answer, when `text` is one.
fn served_roots(text: &str) -> Option<Vec<serde_json::Value>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("roots")?.as_array().cloned()
}

/// The chain's versions for people: `2, 3` (or `none`).
pub fn versions(chain: &[SignedTrustRoot]) -> String {
    if chain.is_empty() {
        return "none".into();
    }
    chain
        .iter()
        .map(|r| r.signed.version.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: Args) -> Result<()> {
    let chain = if args.remove {
        Vec::new()
    } else {
        read_chain_files(&args.trust_chain)?
    };
    let (reader, bar) = open_bundle(&args.bundle, "copying")?;
    let head = UnverifiedBundle::read(reader).map_err(|e| describe(&args.bundle, e))?;
    let before = versions(head.trust_chain());
    let signatures = head.signatures().to_vec();
    let target = args.output.clone().unwrap_or_else(|| args.bundle.clone());
    let mut out = AtomicOutput::create(&target, args.output.is_none())?;
    rewrite_head(head, out.file(), &signatures, &chain).map_err(|e| describe(&args.bundle, e))?;
    bar.finish_and_clear();
    out.commit()?;
    println!(
        "{}: trust chain {} (was {before}); manifest and signatures unchanged",
        target.display(),
        if chain.is_empty() {
            "removed".to_string()
        } else {
            format!("versions {}", versions(&chain))
        }
    );
    Ok(())
}
