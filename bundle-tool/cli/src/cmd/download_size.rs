//! `ota-bundle download-size --from OLD.otab NEW.otab`: what a robot running OLD downloads to install NEW, before
//! anything is published. Each image is planned exactly as the client plans it ([`plan_fetch`]): a robot whose
//! active slot holds NEW's delta base (NEW names OLD's bundle id) uses the base's chunks and the deltas; any other
//! robot cuts its active slot with NEW's chunk parameters and reuses the chunks it finds there, which for a
//! chunked OLD cut alike are OLD's own chunks.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ota_bundle_format::chunked::{plan_fetch, ChunkIndex, FetchPlan, Have};
use ota_bundle_format::write::chunker;
use ota_bundle_format::ImageEntry;
use serde::Serialize;

use super::bundle_file::BundleFile;
use crate::output::human_bytes;

/// Arguments of `download-size`.
#[derive(clap::Args)]
pub struct Args {
    /// The bundle the robot runs now.
    #[arg(long, value_name = "OLD.otab")]
    from: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The new (chunked) bundle.
    #[arg(value_name = "NEW.otab")]
    bundle: PathBuf,
}

/// Ranges the client asks for in one HTTP request.
pub const RANGES_PER_REQUEST: u64 = ota_bundle_format::chunked::RANGES_PER_REQUEST as u64;
pub use ota_bundle_format::chunked::COALESCE_GAP;

/// One image's share of the download.
#[derive(Debug, Serialize)]
struct ImageSize {
    image: String,
    slot_class: String,
    /// "delta base": the robot holds NEW's base; "scanned": it reuses chunks found in its active slot.
    reuse: &'static str,
    chunks: usize,
    frames: usize,
    frames_fetched: usize,
    deltas: usize,
    deltas_fetched: usize,
    index_bytes: u64,
    /// Frame and delta bytes fetched, gaps bridged by coalescing included.
    data_bytes: u64,
    data_ranges: u64,
    /// Image bytes taken from the active slot.
    local_bytes: u64,
    /// Every frame of the image: what a robot with nothing to reuse fetches.
    all_frames_bytes: u64,
}

/// The whole download.
#[derive(Debug, Serialize)]
struct Estimate {
    head_bytes: u64,
    index_bytes: u64,
    data_bytes: u64,
    /// Everything on the wire: head + indexes + data.
    bytes: u64,
    /// The head, the indexes, and the data ranges.
    ranges: u64,
    /// One request for the head, one for the indexes, then the data ranges in requests of up to 64.
    requests: u64,
    full_bundle_bytes: u64,
    /// Head + indexes + every frame: a robot that reuses nothing.
    every_frame_bytes: u64,
    images: Vec<ImageSize>,
}

/// Totals the images' plans (pure).
fn summarise(head_bytes: u64, full_bundle_bytes: u64, images: Vec<ImageSize>) -> Estimate {
    let index_bytes: u64 = images.iter().map(|i| i.index_bytes).sum();
    let data_bytes: u64 = images.iter().map(|i| i.data_bytes).sum();
    let data_ranges: u64 = images.iter().map(|i| i.data_ranges).sum();
    let all_frames: u64 = images.iter().map(|i| i.all_frames_bytes).sum();
    Estimate {
        head_bytes,
        index_bytes,
        data_bytes,
        bytes: head_bytes + index_bytes + data_bytes,
        ranges: 1 + images.len() as u64 + data_ranges,
        requests: 2 + data_ranges.div_ceil(RANGES_PER_REQUEST),
        full_bundle_bytes,
        every_frame_bytes: head_bytes + index_bytes + all_frames,
        images,
    }
}

/// One image's share, from its plan (pure).
fn image_size(
    image: &ImageEntry,
    index: &ChunkIndex,
    plan: &FetchPlan,
    on_base: bool,
) -> ImageSize {
    ImageSize {
        image: image.name.clone(),
        slot_class: image.slot_class.clone(),
        reuse: if on_base { "delta base" } else { "scanned" },
        chunks: index.chunks.len(),
        frames: index.frames.len(),
        frames_fetched: plan.frames.len(),
        deltas: index.deltas.len(),
        deltas_fetched: plan.deltas.len(),
        index_bytes: image.chunked().map_or(0, |c| c.index_size),
        data_bytes: plan.wire_bytes,
        data_ranges: plan.ranges.len() as u64,
        local_bytes: plan.local_bytes,
        all_frames_bytes: image.compressed_size,
    }
}

/// What a robot cutting its active slot (holding `old`'s image of that class) finds: digest -> first offset.
fn scan(
    old: &mut BundleFile,
    image: &ImageEntry,
    new: &ChunkIndex,
) -> Result<HashMap<[u8; 32], u64>> {
    let mut found = HashMap::new();
    if let Some(old_index) = old.index(image)?.filter(|i| i.params == new.params) {
        for (chunk, offset) in old_index.chunks.iter().zip(old_index.chunk_offsets()) {
            found.entry(chunk.sha256).or_insert(offset);
        }
        return Ok(found);
    }
    // Cut differently (or a full payload): decode it and cut it as the robot would.
    let path = old.path().to_path_buf();
    let mut decoder = zstd::stream::read::Decoder::new(old.payload(image)?)?;
    decoder.window_log_max(31)?;
    let cut = chunker::scan(decoder, new.params, None, |_| {})
        .with_context(|| format!("cannot decode image '{}' of {}", image.name, path.display()))?;
    let mut offset = 0u64;
    for chunk in &cut.chunks {
        found.entry(chunk.sha256).or_insert(offset);
        offset += u64::from(chunk.size);
    }
    Ok(found)
}

/// Plans NEW for a robot on OLD.
fn estimate(old: &mut BundleFile, new: &mut BundleFile) -> Result<Estimate> {
    let manifest = new.manifest.clone();
    let mut images = Vec::new();
    for image in &manifest.images {
        let Some(index) = new.index(image)? else {
            bail!(
                "{} is not chunked (image '{}' is a '{}' payload): a robot downloads the whole bundle, {}",
                new.path().display(),
                image.name,
                image.payload,
                human_bytes(new.len)
            );
        };
        let old_image = old
            .manifest
            .images
            .iter()
            .find(|i| i.slot_class == image.slot_class)
            .cloned();
        let on_base = old_image.is_some()
            && image
                .chunked()
                .and_then(|c| c.base.as_ref())
                .is_some_and(|b| b.bundle == old.bundle_id);
        let scanned = match &old_image {
            Some(old_image) if !on_base => Some(scan(old, old_image, &index)?),
            _ => None,
        };
        let have = Have {
            resumed_upto: 0,
            on_base,
            scanned: scanned.as_ref(),
        };
        let plan = plan_fetch(&index, &new.spans(image), &have, COALESCE_GAP);
        images.push(image_size(image, &index, &plan, on_base));
    }
    Ok(summarise(new.head_len, new.len, images))
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.1} %", part as f64 * 100.0 / whole.max(1) as f64)
}

pub fn run(args: Args) -> Result<()> {
    let mut old = BundleFile::open(&args.from)?;
    let mut new = BundleFile::open(&args.bundle)?;
    let estimate = estimate(&mut old, &mut new)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&estimate)?);
        return Ok(());
    }
    println!(
        "{} (version {}) for a robot on {} (version {}, bundle {}):",
        args.bundle.display(),
        new.manifest.version,
        args.from.display(),
        old.manifest.version,
        &old.bundle_id[..12]
    );
    for i in &estimate.images {
        let reuse = if i.reuse == "delta base" {
            format!(
                "on its delta base, {} of {} deltas",
                i.deltas_fetched, i.deltas
            )
        } else {
            "chunks found in the active slot".to_string()
        };
        println!(
            "  {} -> {}: {reuse}, {} of {} frames, {} from the active slot; {} in {} ranges",
            i.image,
            i.slot_class,
            i.frames_fetched,
            i.frames,
            human_bytes(i.local_bytes),
            human_bytes(i.data_bytes),
            i.data_ranges
        );
    }
    println!(
        "download: {} (head {} + index {} + data {}) in {} ranges, {} requests of up to {RANGES_PER_REQUEST} ranges",
        human_bytes(estimate.bytes),
        human_bytes(estimate.head_bytes),
        human_bytes(estimate.index_bytes),
        human_bytes(estimate.data_bytes),
        estimate.ranges,
        estimate.requests
    );
    println!(
        "  full bundle {}: {} of it",
        human_bytes(estimate.full_bundle_bytes),
        percent(estimate.bytes, estimate.full_bundle_bytes)
    );
    println!(
        "  every frame {}: {} of it",
        human_bytes(estimate.every_frame_bytes),
        percent(estimate.bytes, estimate.every_frame_bytes)
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
