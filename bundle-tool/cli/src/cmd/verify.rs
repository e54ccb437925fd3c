//! `ota-bundle verify`: exit 0 only for a bundle whose signatures meet the trust root's threshold and whose every
//! payload matches the manifest, with nothing missing or extra.

use std::path::PathBuf;

use anyhow::Result;

use super::{describe, load_trust, open_verified};

/// Arguments of `verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Trust root (JSON from `trust create`) or a single .pub key.
    #[arg(long)]
    trust: PathBuf,
    /// The bundle to check.
    bundle: PathBuf,
    /// Print the result as JSON (`ok`, `version`, `compatible`, `images`, `signed_by`, `threshold`,
    /// `manifest_sha256`) instead of a line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let trust = load_trust(&args.trust)?;
    let (mut bundle, bar) = open_verified(&args.bundle, &trust, "verifying")?;
    let signed_by: Vec<String> = bundle.signed_by().iter().map(|k| k.to_string()).collect();
    let digest = bundle.manifest_digest();
    bundle
        .verify_remaining_images()
        .map_err(|e| describe(&args.bundle, e))?;
    let manifest = bundle.finish().map_err(|e| describe(&args.bundle, e))?;
    bar.finish_and_clear();
    if args.json {
        let value = serde_json::json!({
            "ok": true,
            "version": manifest.version.to_string(),
            "compatible": manifest.compatible,
            "images": manifest.images.len(),
            "signed_by": signed_by,
            "threshold": trust.threshold,
            "manifest_sha256": digest.to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "OK {}: version {} for '{}', {} image(s), signed by {} ({} of {} required), manifest sha256 {}",
        args.bundle.display(),
        manifest.version,
        manifest.compatible,
        manifest.images.len(),
        signed_by.join(", "),
        signed_by.len(),
        trust.threshold,
        digest
    );
    Ok(())
}
