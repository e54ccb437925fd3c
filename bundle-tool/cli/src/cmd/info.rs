//! `ota-bundle info`: what a bundle says about itself. Reads only the head of the file and checks nothing, so
//! it works without keys (and says so).

use std::path::PathBuf;

use anyhow::Result;
use ota_bundle_format::{manifest_digest, UnverifiedBundle};

use super::{describe, open_bundle};
use crate::output::human_bytes;

/// Arguments of `info`.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON (manifest, manifest digest, signature key ids) instead of text.
    #[arg(long)]
    json: bool,
    /// The bundle to show.
    bundle: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let (reader, _bar) = open_bundle(&args.bundle, "reading")?;
    let head = UnverifiedBundle::read(reader).map_err(|e| describe(&args.bundle, e))?;
    let manifest = head
        .manifest_unverified()
        .map_err(|e| describe(&args.bundle, e))?;
    let digest = manifest_digest(head.manifest_bytes());
    let key_ids: Vec<String> = head
        .signatures()
        .iter()
        .map(|s| s.key_id.to_string())
        .collect();
    if args.json {
        let value = serde_json::json!({
            "manifest": manifest,
            "manifest_sha256": digest,
            "signatures": key_ids,
            "verified": false,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("bundle:      {}", args.bundle.display());
    println!("format:      {}", manifest.format_version);
    println!("version:     {}", manifest.version);
    println!("compatible:  {}", manifest.compatible);
    println!("created:     {} (unix time)", manifest.created);
    if let Some(floor) = &manifest.security_floor {
        println!("floor:       {floor} (security floor: robots that commit it never run a lower version)");
    }
    if !manifest.description.is_empty() {
        println!("description: {}", manifest.description);
    }
    println!("manifest:    sha256 {digest}");
    println!("signatures:  {} (not verified)", key_ids.join(", "));
    for image in &manifest.images {
        println!(
            "image:       {} -> slot class {}: {} ({} {} payload, {}), sha256 {}\n             payload sha256 {}",
            image.name,
            image.slot_class,
            human_bytes(image.size),
            image.payload,
            image.compression,
            human_bytes(image.compressed_size),
            image.sha256,
            image.payload_sha256
        );
    }
    Ok(())
}
