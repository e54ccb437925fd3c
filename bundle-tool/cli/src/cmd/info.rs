//! `ota-bundle info`: what a bundle says about itself. Reads only the head of the file (and the indexes of
//! chunked images, checked against the manifest) and checks no signature, so it works without keys (and says so).

use std::path::PathBuf;

use anyhow::Result;
use ota_bundle_format::chunked::ChunkIndex;
use ota_bundle_format::ImageEntry;
use ota_keys::SignedTrustRoot;
use serde::Serialize;

use super::bundle_file::BundleFile;
use crate::output::human_bytes;

/// Arguments of `info`.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON (manifest, manifest digest, signature key ids, chunk statistics, carried trust chain) instead
    /// of text.
    #[arg(long)]
    json: bool,
    /// The bundle to show.
    bundle: PathBuf,
}

/// What a chunked image's index says, for people: how finely it is cut and what a delta install would use.
#[derive(Serialize)]
struct ChunkStats {
    image: String,
    chunks: usize,
    frames: usize,
    average_chunk: u64,
    index_size: u64,
    deltas: usize,
    delta_size: Option<u64>,
    base_version: Option<String>,
    base_bundle: Option<String>,
}

impl ChunkStats {
    fn of(image: &ImageEntry, index: &ChunkIndex) -> ChunkStats {
        let info = image
            .chunked()
            .expect("an index belongs to a chunked image");
        ChunkStats {
            image: image.name.clone(),
            chunks: index.chunks.len(),
            frames: index.frames.len(),
            average_chunk: image.size / index.chunks.len().max(1) as u64,
            index_size: info.index_size,
            deltas: index.deltas.len(),
            delta_size: info.delta_size,
            base_version: info.base.as_ref().map(|b| b.version.to_string()),
            base_bundle: info.base.as_ref().map(|b| b.bundle.clone()),
        }
    }

    fn print(&self) {
        println!(
            "             chunked: {} chunks (average {}) in {} frames, index {}",
            self.chunks,
            human_bytes(self.average_chunk),
            self.frames,
            human_bytes(self.index_size)
        );
        if let (Some(version), Some(bundle)) = (&self.base_version, &self.base_bundle) {
            println!(
                "             delta base: version {version}, bundle {}: {} deltas, {}",
                &bundle[..bundle.len().min(12)],
                self.deltas,
                human_bytes(self.delta_size.unwrap_or(0))
            );
        }
    }
}

/// One root of the carried chain, for people (nothing checked).
#[derive(Serialize)]
struct ChainRoot {
    version: u64,
    threshold: u32,
    keys: Vec<String>,
    signed_by: Vec<String>,
}

impl ChainRoot {
    fn of(root: &SignedTrustRoot) -> ChainRoot {
        ChainRoot {
            version: root.signed.version,
            threshold: root.signed.threshold,
            keys: root
                .signed
                .key_ids()
                .iter()
                .map(ToString::to_string)
                .collect(),
            signed_by: root
                .signatures
                .iter()
                .map(|s| s.key_id.to_string())
                .collect(),
        }
    }

    fn print(&self) {
        println!(
            "             version {}: {} of {} keys ({}), signed by {}",
            self.version,
            self.threshold,
            self.keys.len(),
            self.keys.join(", "),
            self.signed_by.join(", ")
        );
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut bundle = BundleFile::open(&args.bundle)?;
    let manifest = bundle.manifest.clone();
    let mut stats = Vec::new();
    for image in &manifest.images {
        if let Some(index) = bundle.index(image)? {
            stats.push(ChunkStats::of(image, &index));
        }
    }
    let digest = &bundle.bundle_id;
    let key_ids = &bundle.key_ids;
    let chain: Vec<ChainRoot> = bundle.trust_chain.iter().map(ChainRoot::of).collect();
    if args.json {
        let value = serde_json::json!({
            "manifest": manifest,
            "manifest_sha256": digest,
            "signatures": key_ids,
            "verified": false,
            "chunk_stats": stats,
            "trust_chain": chain,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("bundle:      {}", args.bundle.display());
    println!("format:      {}", manifest.format_version);
    println!("version:     {}", manifest.version);
    println!("compatible:  {}", manifest.compatible);
    println!(
        "created:     {}",
        ota_protocol::defaults::utc_time(manifest.created)
    );
    if let Some(floor) = &manifest.security_floor {
        println!("floor:       {floor} (security floor: robots that commit it never run a lower version)");
    }
    if !manifest.description.is_empty() {
        println!("description: {}", manifest.description);
    }
    println!("manifest:    sha256 {digest}");
    println!("signatures:  {} (not verified)", key_ids.join(", "));
    if !chain.is_empty() {
        println!(
            "trust chain: versions {} (not verified: a robot walks it from its own root before checking the \
             signatures)",
            super::chain::versions(&bundle.trust_chain)
        );
        for root in &chain {
            root.print();
        }
    }
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
        if let Some(stats) = stats.iter().find(|s| s.image == image.name) {
            stats.print();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::download_size::tests::{chunked, versions};

    #[test]
    fn stats_of_a_delta_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = versions();
        let old = chunked(dir.path(), "old.otab", &v1, None);
        let new = chunked(dir.path(), "new.otab", &v2, Some(&old));
        let old_id = BundleFile::open(&old).unwrap().bundle_id;
        let mut bundle = BundleFile::open(&new).unwrap();
        let image = bundle.manifest.images[0].clone();
        let index = bundle.index(&image).unwrap().unwrap();
        let stats = ChunkStats::of(&image, &index);
        assert_eq!(stats.chunks, index.chunks.len());
        assert_eq!(
            stats.average_chunk,
            v2.len() as u64 / index.chunks.len() as u64
        );
        assert!(stats.frames >= 1 && stats.deltas >= 1);
        assert_eq!(stats.base_version.as_deref(), Some("1.0.0"));
        assert_eq!(stats.base_bundle, Some(old_id));
        assert_eq!(stats.index_size, image.chunked().unwrap().index_size);
        assert!(stats.delta_size.unwrap() > 0);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["chunks"], index.chunks.len());
        // A full image has no index.
        let full = super::super::download_size::tests::full(dir.path(), "full.otab", &v1);
        let mut full = BundleFile::open(&full).unwrap();
        let entry = full.manifest.images[0].clone();
        assert!(full.index(&entry).unwrap().is_none());
    }
}
