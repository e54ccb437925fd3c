//! Which bytes a robot fetches for a chunked image, given what it already holds: the written part of an
//! interrupted try, its active slot when that slot holds the delta base, or chunks found by cutting its active
//! slot. Pure, so the client and `ota-bundle download-size` decide alike.

use std::collections::HashMap;

use super::index::{ChunkIndex, NO_BASE};
use super::layout::{ImageSpans, Span};

/// Ranges closer than this are fetched as one: the gap's bytes cost less than another multipart part's headers
/// or another round trip. The client and `ota-bundle download-size` both plan with it.
pub const COALESCE_GAP: u64 = 4096;
/// At most this many ranges in one HTTP request (the server's multi-range limit).
pub const RANGES_PER_REQUEST: usize = 64;

/// How much of its active slot a robot off the delta base cuts before it decides the slot is worth cutting.
pub const SCAN_PROBE: u64 = 64 << 20;

/// Whether to go on cutting the active slot after `scanned` bytes: a slot whose first [`SCAN_PROBE`] bytes share
/// no data (chunks that are not all zeros) with the new image is blank or unrelated, and cutting the rest would
/// cost a robot with nothing to reuse a second pass over its slot.
pub fn keep_scanning(scanned: u64, shares_data: bool) -> bool {
    shares_data || scanned < SCAN_PROBE
}

/// Where one chunk of the new image comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSource {
    /// Already in the standby slot, written and verified by an interrupted try of this bundle.
    Resumed,
    /// The active slot holds these bytes at `offset`.
    Local {
        /// Offset in the active slot.
        offset: u64,
    },
    /// Decoded from delta record `n` against the active slot.
    Delta(usize),
    /// Decoded from frame `n`.
    Frame(usize),
}

/// What the robot holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Have<'a> {
    /// The standby slot holds verified bytes of this image up to here.
    pub resumed_upto: u64,
    /// The active slot holds the delta base (the robot recorded its bundle id).
    pub on_base: bool,
    /// Chunks found by cutting the active slot (digest -> offset), for robots not on the base.
    pub scanned: Option<&'a HashMap<[u8; 32], u64>>,
}

/// The decision for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPlan {
    /// One source per chunk, in image order.
    pub sources: Vec<ChunkSource>,
    /// Frames to fetch, ascending.
    pub frames: Vec<usize>,
    /// Deltas to fetch, ascending.
    pub deltas: Vec<usize>,
    /// Byte ranges of the bundle file to fetch: ascending, neighbours closer than the gap merged.
    pub ranges: Vec<Span>,
    /// Bytes those ranges hold.
    pub wire_bytes: u64,
    /// Image bytes read from the active slot.
    pub local_bytes: u64,
    /// Image bytes kept from the interrupted try.
    pub resumed_bytes: u64,
}

/// Plans one image. `coalesce_gap`: ranges closer than this are fetched as one (the gap's bytes cost less than
/// another part's headers or another round trip).
pub fn plan_fetch(
    index: &ChunkIndex,
    spans: &ImageSpans,
    have: &Have,
    coalesce_gap: u64,
) -> FetchPlan {
    let offsets = index.chunk_offsets();
    let frame_of = index.frame_of_chunks();
    let delta_of: HashMap<usize, usize> = index
        .deltas
        .iter()
        .enumerate()
        .map(|(i, d)| (d.chunk as usize, i))
        .collect();
    let mut sources: Vec<ChunkSource> = index
        .chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if offsets[i] + u64::from(c.size) <= have.resumed_upto {
                return ChunkSource::Resumed;
            }
            if have.on_base && c.base_offset != NO_BASE {
                return ChunkSource::Local {
                    offset: c.base_offset,
                };
            }
            if let Some(&offset) = have.scanned.and_then(|m| m.get(&c.sha256)) {
                return ChunkSource::Local { offset };
            }
            match delta_of.get(&i) {
                Some(&d) if have.on_base => ChunkSource::Delta(d),
                _ => ChunkSource::Frame(frame_of[i]),
            }
        })
        .collect();
    let mut needed = vec![false; index.frames.len()];
    for s in &sources {
        if let ChunkSource::Frame(f) = s {
            needed[*f] = true;
        }
    }
    // A frame fetched anyway serves all its chunks not already in the standby slot.
    for (i, s) in sources.iter_mut().enumerate() {
        if *s != ChunkSource::Resumed && needed[frame_of[i]] {
            *s = ChunkSource::Frame(frame_of[i]);
        }
    }
    let frames: Vec<usize> = (0..needed.len()).filter(|&f| needed[f]).collect();
    let deltas: Vec<usize> = sources
        .iter()
        .filter_map(|s| match s {
            ChunkSource::Delta(d) => Some(*d),
            _ => None,
        })
        .collect();
    let frame_spans = index.frame_spans();
    let delta_offsets = index.delta_offsets();
    let mut wanted: Vec<Span> = frames
        .iter()
        .map(|&f| Span {
            offset: spans.payload.offset + frame_spans[f].payload_offset,
            len: frame_spans[f].compressed_size,
        })
        .collect();
    if let Some(delta) = spans.delta {
        wanted.extend(deltas.iter().map(|&d| Span {
            offset: delta.offset + delta_offsets[d],
            len: u64::from(index.deltas[d].compressed_size),
        }));
    }
    wanted.sort();
    let ranges = coalesce(&wanted, coalesce_gap);
    let size_of = |want: fn(&ChunkSource) -> bool| -> u64 {
        sources
            .iter()
            .zip(&index.chunks)
            .filter(|(s, _)| want(s))
            .map(|(_, c)| u64::from(c.size))
            .sum()
    };
    FetchPlan {
        wire_bytes: ranges.iter().map(|r| r.len).sum(),
        local_bytes: size_of(|s| matches!(s, ChunkSource::Local { .. })),
        resumed_bytes: size_of(|s| matches!(s, ChunkSource::Resumed)),
        sources,
        frames,
        deltas,
        ranges,
    }
}

/// Merges ascending spans whose gap is at most `gap`.
pub fn coalesce(spans: &[Span], gap: u64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.offset <= last.end() + gap => {
                let end = last.end().max(s.end());
                last.len = end - last.offset;
            }
            _ => out.push(*s),
        }
    }
    out
}
