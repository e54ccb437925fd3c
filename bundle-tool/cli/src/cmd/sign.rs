//! `ota-bundle sign`: a second release engineer co-signs a bundle. The payloads and the carried trust chain are
//! copied as they are; before the result replaces the bundle it is verified in full with the new key, so nobody
//! signs a damaged payload.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use anyhow::{Context, Result};
use ota_bundle_format::{rewrite_head, BundleReader, UnverifiedBundle};
use ota_keys::TrustRoot;

use super::{describe, open_bundle};
use crate::keyspec::{self, KeySpec};
use crate::output::AtomicOutput;

/// Arguments of `sign`.
#[derive(clap::Args)]
pub struct Args {
    /// The signing key: a .key file or a pkcs11: URI of a key on a token.
    #[arg(long, value_parser = keyspec::value_parser())]
    key: KeySpec,
    /// Write the co-signed bundle here instead of replacing BUNDLE (atomically) in place.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// The bundle to sign.
    bundle: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let key = args.key.signer()?;
    let (reader, bar) = open_bundle(&args.bundle, "signing")?;
    let head = UnverifiedBundle::read(reader).map_err(|e| describe(&args.bundle, e))?;
    let manifest_bytes = head.manifest_bytes().to_vec();
    let manifest = head
        .manifest_unverified()
        .map_err(|e| describe(&args.bundle, e))?;
    let mut signatures: Vec<_> = head
        .signatures()
        .iter()
        .filter(|s| s.key_id != key.key_id())
        .cloned()
        .collect();
    let replaced = signatures.len() != head.signatures().len();
    signatures.push(key.sign(&manifest_bytes)?);

    let target = args.output.clone().unwrap_or_else(|| args.bundle.clone());
    let mut out = AtomicOutput::create(&target, args.output.is_none())?;
    // The carried trust chain stays as it is: it is not signed, so a new signature does not touch it.
    let chain = head.trust_chain().to_vec();
    rewrite_head(head, out.file(), &signatures, &chain).map_err(|e| describe(&args.bundle, e))?;
    bar.finish_and_clear();

    // Check the whole result with the new signature before it replaces anything.
    let file = out.file();
    file.seek(SeekFrom::Start(0))?;
    let own_key = TrustRoot::single_key(key.public_key());
    let mut check = BundleReader::open(std::io::BufReader::new(file.by_ref()), &own_key)
        .map_err(|e| describe(&target, e))?;
    check
        .verify_remaining_images()
        .and_then(|()| check.finish().map(drop))
        .map_err(|e| describe(&args.bundle, e))
        .context("refusing to sign: the bundle's payloads do not match its manifest")?;
    out.commit()?;
    println!(
        "{} key {} on {} (version {}); now signed by {}",
        if replaced {
            "re-signed with"
        } else {
            "added signature of"
        },
        key.key_id(),
        target.display(),
        manifest.version,
        signatures
            .iter()
            .map(|s| s.key_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
