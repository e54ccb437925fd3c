//! Chunked payloads: the image cut into content-defined chunks, grouped into independently compressed frames,
//! described by a binary index whose digest the manifest signs, with optional deltas against a named base release.
//!
//! A robot that already holds most of an image (its active slot of the same class, or the written part of an
//! interrupted try) fetches only the frames or deltas it lacks, by byte range, and checks every byte against the
//! index before it reaches the slot. A robot with nothing to reuse reads the frames front to back as from any
//! bundle, decoding them on all its cores.
//!
//! Everything here is pure: [`index`] is the index codec, [`layout`] where each entry lies in the bundle file,
//! [`plan`] which ranges a robot fetches given what it holds.

pub mod index;
pub mod layout;
pub mod plan;

pub use index::{
    ChunkIndex, ChunkParams, ChunkRecord, DeltaRecord, FrameRecord, FrameSpan, IndexLimits,
    DEFAULT_PARAMS, FRAME_WINDOW_LOG_MAX, HEADER_LEN, MAX_FRAME_RAW, MAX_INDEX, MAX_REF, NO_BASE,
};
pub use layout::{BundleLayout, ImageSpans, Span};
pub use plan::{
    keep_scanning, plan_fetch, ChunkSource, FetchPlan, Have, COALESCE_GAP, RANGES_PER_REQUEST,
    SCAN_PROBE,
};

#[cfg(test)]
pub(crate) mod tests;
