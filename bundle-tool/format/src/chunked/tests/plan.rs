//! `plan_fetch` invariants over arbitrary indexes and arbitrary holdings.

use std::collections::HashMap;

use proptest::prelude::*;

use super::index::any_index;
use crate::chunked::{plan_fetch, ChunkIndex, ChunkSource, Have, ImageSpans, IndexLimits, Span};

fn spans_of(index: &ChunkIndex, limits: &IndexLimits) -> ImageSpans {
    let index_len = index.encode().len() as u64;
    let payload = Span {
        offset: 3072,
        len: limits.compressed_size,
    };
    ImageSpans {
        index: Some(Span {
            offset: 2048,
            len: index_len,
        }),
        payload,
        delta: limits.delta_size.map(|len| Span {
            offset: payload.end() + 1024,
            len,
        }),
    }
}

/// The spans a plan must cover: its frames' and deltas' bytes in the bundle file.
fn wanted(index: &ChunkIndex, spans: &ImageSpans, frames: &[usize], deltas: &[usize]) -> Vec<Span> {
    let frame_spans = index.frame_spans();
    let delta_offsets = index.delta_offsets();
    let mut out: Vec<Span> = frames
        .iter()
        .map(|&f| Span {
            offset: spans.payload.offset + frame_spans[f].payload_offset,
            len: frame_spans[f].compressed_size,
        })
        .collect();
    out.extend(deltas.iter().map(|&d| Span {
        offset: spans.delta.unwrap().offset + delta_offsets[d],
        len: u64::from(index.deltas[d].compressed_size),
    }));
    out
}

fn check_invariants(
    index: &ChunkIndex,
    spans: &ImageSpans,
    have: &Have,
    gap: u64,
) -> Result<crate::chunked::FetchPlan, TestCaseError> {
    let plan = plan_fetch(index, spans, have, gap);
    let offsets = index.chunk_offsets();
    let frame_of = index.frame_of_chunks();
    prop_assert_eq!(
        plan.sources.len(),
        index.chunks.len(),
        "one source per chunk"
    );
    let (mut frame_bytes, mut delta_bytes) = (0u64, 0u64);
    for (i, (source, chunk)) in plan.sources.iter().zip(&index.chunks).enumerate() {
        let end = offsets[i] + u64::from(chunk.size);
        prop_assert_eq!(
            *source == ChunkSource::Resumed,
            end <= have.resumed_upto,
            "chunk {} is Resumed exactly when inside the prefix",
            i
        );
        match *source {
            ChunkSource::Resumed => {}
            ChunkSource::Local { offset } => {
                if have.on_base && chunk.base_offset != crate::chunked::NO_BASE {
                    prop_assert_eq!(offset, chunk.base_offset);
                } else {
                    prop_assert_eq!(
                        Some(&offset),
                        have.scanned.and_then(|m| m.get(&chunk.sha256))
                    );
                }
                prop_assert!(
                    !plan.frames.contains(&frame_of[i]),
                    "a chunk of a fetched frame comes from it"
                );
            }
            ChunkSource::Delta(d) => {
                prop_assert!(have.on_base);
                prop_assert_eq!(index.deltas[d].chunk as usize, i);
                prop_assert!(plan.deltas.contains(&d));
                prop_assert!(!plan.frames.contains(&frame_of[i]));
                delta_bytes += u64::from(chunk.size);
            }
            ChunkSource::Frame(f) => {
                prop_assert_eq!(f, frame_of[i]);
                prop_assert!(plan.frames.contains(&f));
                frame_bytes += u64::from(chunk.size);
            }
        }
    }
    let image: u64 = index.chunks.iter().map(|c| u64::from(c.size)).sum();
    prop_assert_eq!(
        plan.local_bytes + plan.resumed_bytes + frame_bytes + delta_bytes,
        image
    );
    prop_assert!(plan.frames.windows(2).all(|w| w[0] < w[1]));
    prop_assert!(plan.deltas.windows(2).all(|w| w[0] < w[1]));
    // Every listed frame serves at least one chunk.
    for &f in &plan.frames {
        prop_assert!(plan.sources.contains(&ChunkSource::Frame(f)));
    }
    prop_assert_eq!(
        plan.wire_bytes,
        plan.ranges.iter().map(|r| r.len).sum::<u64>()
    );
    for pair in plan.ranges.windows(2) {
        prop_assert!(
            pair[0].end() < pair[1].offset,
            "ranges ascending and disjoint: {:?}",
            pair
        );
    }
    let wanted = wanted(index, spans, &plan.frames, &plan.deltas);
    for w in &wanted {
        prop_assert!(
            plan.ranges
                .iter()
                .any(|r| r.offset <= w.offset && w.end() <= r.end()),
            "{:?} is covered",
            w
        );
    }
    // Ranges hold nothing beyond the wanted spans and the gaps between them that coalescing bridged.
    for r in &plan.ranges {
        prop_assert!(
            wanted.iter().any(|w| w.offset == r.offset),
            "a range starts at a wanted span"
        );
        prop_assert!(
            wanted.iter().any(|w| w.end() == r.end()),
            "a range ends at a wanted span"
        );
    }
    if gap == 0 {
        let wanted_bytes: u64 = wanted.iter().map(|w| w.len).sum();
        prop_assert_eq!(
            plan.wire_bytes,
            wanted_bytes,
            "no gap bytes without coalescing"
        );
    }
    Ok(plan)
}

fn any_have() -> impl Strategy<Value = (u64, bool, Option<Vec<bool>>, u64)> {
    (
        any::<u64>(),
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<bool>(), 40)),
        prop_oneof![Just(0u64), 0u64..5000],
    )
}

proptest! {
    #[test]
    fn plans_keep_their_invariants(
        (index, limits) in any_index(),
        (resume_seed, on_base, scan, gap) in any_have(),
    ) {
        let spans = spans_of(&index, &limits);
        let resumed_upto = resume_seed % (limits.image_size + 1);
        let on_base = on_base && limits.base_size.is_some();
        let scanned: Option<HashMap<[u8; 32], u64>> = scan.map(|pick| {
            index
                .chunks
                .iter()
                .zip(pick)
                .enumerate()
                .filter(|(_, (_, p))| *p)
                .map(|(i, (c, _))| (c.sha256, i as u64 * 7919))
                .collect()
        });
        let have = Have { resumed_upto, on_base, scanned: scanned.as_ref() };
        check_invariants(&index, &spans, &have, gap)?;
    }

    #[test]
    fn nothing_held_fetches_every_frame((index, limits) in any_index(), gap in 0u64..5000) {
        let spans = spans_of(&index, &limits);
        let plan = check_invariants(&index, &spans, &Have::default(), gap)?;
        prop_assert_eq!(plan.frames, (0..index.frames.len()).collect::<Vec<_>>());
        prop_assert!(plan.deltas.is_empty());
        prop_assert_eq!(plan.ranges, vec![spans.payload], "the frames are the whole payload, one range");
        prop_assert_eq!(plan.local_bytes + plan.resumed_bytes, 0);
    }

    #[test]
    fn on_base_with_every_chunk_hinted_fetches_nothing((mut index, mut limits) in any_index()) {
        for (i, c) in index.chunks.iter_mut().enumerate() {
            c.base_offset = (i as u64 * 4096) % ((1 << 20) - 4096);
        }
        index.deltas.clear();
        limits.base_size = Some(1 << 20);
        limits.delta_size = Some(0);
        // The index stays valid.
        ChunkIndex::decode(&index.encode(), &limits).unwrap();
        let spans = spans_of(&index, &limits);
        let have = Have { on_base: true, ..Have::default() };
        let plan = check_invariants(&index, &spans, &have, 100)?;
        prop_assert_eq!(plan.wire_bytes, 0);
        prop_assert!(plan.ranges.is_empty());
        prop_assert_eq!(plan.local_bytes, limits.image_size);
    }

    #[test]
    fn a_full_resume_fetches_nothing((index, limits) in any_index()) {
        let spans = spans_of(&index, &limits);
        let have = Have { resumed_upto: limits.image_size, ..Have::default() };
        let plan = check_invariants(&index, &spans, &have, 0)?;
        prop_assert!(plan.ranges.is_empty());
        prop_assert_eq!(plan.resumed_bytes, limits.image_size);
    }
}

#[test]
fn on_base_uses_deltas_and_hints_and_fetches_only_them() {
    let (index, limits) = super::index::sample();
    let spans = spans_of(&index, &limits);
    let plan = plan_fetch(
        &index,
        &spans,
        &Have {
            on_base: true,
            ..Have::default()
        },
        0,
    );
    // Chunks 0 and 4 are in the base, 1 and 3 have deltas; chunk 2 has neither, so frame 1 (chunks 2-4) is
    // fetched and serves 3 and 4 as well.
    assert_eq!(
        plan.sources,
        vec![
            ChunkSource::Local { offset: 0 },
            ChunkSource::Delta(0),
            ChunkSource::Frame(1),
            ChunkSource::Frame(1),
            ChunkSource::Frame(1),
        ]
    );
    assert_eq!(plan.frames, vec![1]);
    assert_eq!(plan.deltas, vec![0]);
    assert_eq!(plan.wire_bytes, 900 + 100);
}

#[test]
fn a_slot_is_cut_past_the_probe_only_when_it_shares_data() {
    use crate::chunked::{keep_scanning, SCAN_PROBE};
    assert!(keep_scanning(0, false));
    assert!(keep_scanning(SCAN_PROBE - 1, false));
    assert!(!keep_scanning(SCAN_PROBE, false));
    assert!(keep_scanning(SCAN_PROBE, true));
    assert!(keep_scanning(u64::MAX, true));
}
