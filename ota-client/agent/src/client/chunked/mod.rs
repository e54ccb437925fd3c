//! The range engine: installs a chunked image from a bundle read by byte ranges (a file, or a server that
//! answers ranges), using what the robot already holds.
//!
//! Per image: fetch the index (its digest checked against the signed manifest), decide what the robot has
//! (the verified prefix of an interrupted try, from the download journal and re-hashed; the active slot when it
//! holds the delta base; else the chunks found by cutting the active slot), [`plan_fetch`], then run the
//! [`pipeline`]. Every byte is checked against the index before it reaches the slot, and with any byte not
//! decoded from a fetched frame the whole-image SHA-256 is checked at the end. Nothing here arms anything: the
//! caller records the slot as verified only after this returned `Ok`, then removes the download journal.

pub mod fetch;
pub mod flow;
pub mod journal;
pub mod pipeline;
pub mod ranged;
pub mod scan;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ota_bundle_format::chunked::{
    plan_fetch, ChunkIndex, ChunkSource, FetchPlan, Have, ImageSpans,
};
use ota_bundle_format::reader::verify_index;
use ota_bundle_format::{BundleError, ImageEntry};
use ota_client_core::resume::{self, DownloadJournal};
use ota_client_core::Slot;
use sha2::{Digest, Sha256};

pub use fetch::COALESCE_GAP;
use pipeline::{Inputs, Sink};

use super::{ClientError, Progress};
use crate::slotio::SlotWriter;
use crate::source::ranges::RangeSource;

/// A journal point is written after at least this much output past the previous one.
pub const JOURNAL_EVERY: u64 = 64 << 20;

/// One image to write by ranges.
pub struct ImageJob<'a> {
    /// The bundle's identity (manifest digest).
    pub bundle_id: &'a str,
    /// The image's manifest entry (chunked).
    pub image: &'a ImageEntry,
    /// Where its entries lie in the bundle file.
    pub spans: &'a ImageSpans,
    /// Slot class.
    pub class: &'a str,
    /// Target (standby) slot.
    pub slot: Slot,
    /// The target slot's device or file.
    pub standby: &'a Path,
    /// The active slot of the class and its capacity, if it can be read.
    pub active: Option<(&'a Path, u64)>,
    /// The robot's state records the active slot as holding the delta base bundle.
    pub on_base: bool,
    /// Where the bundle comes from (a path or URL), for messages.
    pub origin: &'a str,
    /// `<state_dir>/download.json`.
    pub journal: &'a Path,
    /// A journal point is written after this much output past the previous one ([`JOURNAL_EVERY`]).
    pub journal_every: u64,
}

/// What the engine did for one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Bytes fetched from the source (index included).
    pub fetched: u64,
    /// Image bytes read from the active slot.
    pub local_bytes: u64,
    /// Image bytes kept from an interrupted try.
    pub resumed_bytes: u64,
    /// Frames decoded.
    pub frames: usize,
    /// Deltas decoded.
    pub deltas: usize,
}

/// The calls back into the client: opening the slot writer, the power-cut checkpoints, slot errors.
pub trait Host {
    /// Opens the target slot for writing from image offset `offset` (wrapped as the streaming path wraps it).
    fn open_writer(&mut self, offset: u64) -> Result<Box<dyn SlotWriter>, ClientError>;
    /// A named checkpoint (tests cut the power there).
    fn checkpoint(&mut self, name: &str) -> Result<(), ClientError>;
    /// A slot write failure, as the streaming path reports it.
    fn slot_error(&self, detail: String) -> ClientError;
}

/// Writes one chunked image into the standby slot, reading the bundle from `source`.
pub fn write_image(
    job: &ImageJob,
    source: &mut dyn RangeSource,
    host: &mut dyn Host,
    progress: &mut dyn Progress,
) -> Result<ImageStats, ClientError> {
    let image = job.image;
    let index = fetch_index(job, source)?;
    let offsets = index.chunk_offsets();
    let image_sha = image.sha256_bytes()?;

    let journal = journal::load(job.journal);
    if let Some(j) = &journal {
        if resume::journal_is_stale(j, job.bundle_id) {
            journal::remove(job.journal)?;
        }
    }
    let (resumed_upto, hash) = resumed_prefix(job, &index, &offsets, journal.as_ref())?;

    let scanned = match job.active {
        Some((path, len)) if !job.on_base => {
            progress.phase(&format!(
                "looking for reusable chunks in the active slot {}",
                job.class
            ));
            let wanted = index.chunks.iter().map(|c| c.sha256).collect();
            Some(scan::scan(path, len, index.params, &wanted).map_err(|e| {
                ClientError::ActiveSlotUnreadable {
                    class: job.class.to_string(),
                    detail: e.to_string(),
                }
            })?)
        }
        _ => None,
    };
    let have = Have {
        resumed_upto,
        on_base: job.on_base && job.active.is_some(),
        scanned: scanned.as_ref(),
    };
    let plan = plan_fetch(&index, job.spans, &have, COALESCE_GAP);
    drop(scanned);
    progress.phase(&summary(job, &plan));

    let active = match job.active {
        Some((path, _)) if needs_active(&plan) => {
            Some(
                File::open(path).map_err(|e| ClientError::ActiveSlotUnreadable {
                    class: job.class.to_string(),
                    detail: e.to_string(),
                })?,
            )
        }
        _ => None,
    };
    let frames = index.frame_spans();
    let units = pipeline::units(
        &index,
        &plan,
        &offsets,
        &frames,
        job.spans.payload,
        job.spans.delta,
    );
    let inputs = Inputs {
        index: &index,
        sources: &plan.sources,
        frames: &frames,
        active: active.as_ref(),
        class: job.class,
        image: &image.name,
        origin: job.origin,
    };
    let writer = host.open_writer(resumed_upto)?;
    progress.bytes_written(resumed_upto);
    let mut sink = SlotSink {
        writer,
        host,
        progress,
        journal: DownloadJournal {
            bundle: job.bundle_id.to_string(),
            class: job.class.to_string(),
            slot: job.slot,
            image_sha256: image.sha256.clone(),
            verified_upto: resumed_upto,
            origin: job.origin.to_string(),
        },
        path: job.journal,
        every: job.journal_every,
    };
    let needs_hash = plan
        .sources
        .iter()
        .any(|s| !matches!(s, ChunkSource::Frame(_)));
    let (fetched, digest) = pipeline::run(
        &inputs,
        &units,
        source,
        &mut sink,
        needs_hash.then_some(hash),
    )?;
    sink.writer
        .sync()
        .map_err(|e| sink.host.slot_error(format!("syncing: {e}")))?;
    if let Some(digest) = digest {
        if digest != image_sha {
            return Err(ClientError::Bundle(BundleError::DigestMismatch {
                image: image.name.clone(),
                what: "uncompressed content",
                field: "sha256",
                expected: image.sha256.clone(),
                actual: hex::encode(digest),
            }));
        }
    }
    // The whole image is synced and verified: until the caller records it so, a restart keeps all of it.
    sink.journal_point(job.image.size)?;
    Ok(ImageStats {
        fetched: fetched + image.chunked().map_or(0, |c| c.index_size),
        local_bytes: plan.local_bytes,
        resumed_bytes: plan.resumed_bytes,
        frames: plan.frames.len(),
        deltas: plan.deltas.len(),
    })
}

/// Fetches the index and checks it against the manifest (size, digest, strict decode).
fn fetch_index(job: &ImageJob, source: &mut dyn RangeSource) -> Result<ChunkIndex, ClientError> {
    let Some(span) = job.spans.index else {
        return Err(
            BundleError::Usage(format!("image '{}' is not chunked", job.image.name)).into(),
        );
    };
    let bytes = fetch::fetch(source, job.origin, &[span])?.remove(0);
    Ok(verify_index(job.image, &bytes)?)
}

/// The verified prefix of an interrupted try: the journal's point, rounded down to a chunk boundary, then
/// re-hashed chunk by chunk from the standby slot (kept up to the first chunk that differs). Returns it and the
/// whole-image digest over it.
fn resumed_prefix(
    job: &ImageJob,
    index: &ChunkIndex,
    offsets: &[u64],
    journal: Option<&DownloadJournal>,
) -> Result<(u64, Sha256), ClientError> {
    let mut hash = Sha256::new();
    let point = resume::resume_point(
        journal,
        job.bundle_id,
        job.class,
        job.slot,
        &job.image.sha256,
    );
    let ends: Vec<u64> = offsets
        .iter()
        .zip(&index.chunks)
        .map(|(o, c)| o + u64::from(c.size))
        .collect();
    let whole = resume::whole_chunks_within(&ends, point.min(job.image.size));
    if whole == 0 {
        return Ok((0, hash));
    }
    let Ok(standby) = File::open(job.standby) else {
        return Ok((0, hash));
    };
    let mut upto = 0;
    let mut buf = Vec::new();
    for (i, c) in index.chunks[..whole].iter().enumerate() {
        buf.resize(c.size as usize, 0);
        if standby.read_exact_at(&mut buf, offsets[i]).is_err()
            || Sha256::digest(&buf).as_slice() != c.sha256
        {
            break;
        }
        hash.update(&buf);
        upto = ends[i];
    }
    Ok((upto, hash))
}

fn needs_active(plan: &FetchPlan) -> bool {
    plan.sources
        .iter()
        .any(|s| matches!(s, ChunkSource::Local { .. } | ChunkSource::Delta(_)))
}

fn summary(job: &ImageJob, plan: &FetchPlan) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    format!(
        "{}: fetching {:.1} MB from {} ({} frames, {} deltas), {:.1} MB from the active slot, {:.1} MB kept \
         from the interrupted try",
        job.image.name,
        mb(plan.wire_bytes),
        job.origin,
        plan.frames.len(),
        plan.deltas.len(),
        mb(plan.local_bytes),
        mb(plan.resumed_bytes)
    )
}

/// Writes the pipeline's output to the slot, and a journal point every [`JOURNAL_EVERY`] bytes.
struct SlotSink<'a> {
    writer: Box<dyn SlotWriter>,
    host: &'a mut dyn Host,
    progress: &'a mut dyn Progress,
    journal: DownloadJournal,
    path: &'a Path,
    every: u64,
}

impl Sink for SlotSink<'_> {
    fn write(&mut self, bytes: &[u8], end: u64) -> Result<(), ClientError> {
        self.writer
            .write_all(bytes)
            .map_err(|e| self.host.slot_error(format!("writing: {e}")))?;
        self.progress.bytes_written(bytes.len() as u64);
        if end - self.journal.verified_upto >= self.every {
            self.writer
                .sync()
                .map_err(|e| self.host.slot_error(format!("syncing: {e}")))?;
            self.journal_point(end)?;
        }
        Ok(())
    }
}

impl SlotSink<'_> {
    /// Records that the slot holds verified bytes up to `end` (synced by the caller).
    fn journal_point(&mut self, end: u64) -> Result<(), ClientError> {
        self.host.checkpoint("install:journal")?;
        self.journal.verified_upto = end;
        journal::save(self.path, &self.journal)
    }
}
