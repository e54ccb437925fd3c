//! The chunk index codec: strict decode against limits taken from the input's first 32 bytes (what a manifest
//! would say), then encode → decode gives the same index and the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bundle_format::chunked::{ChunkIndex, IndexLimits};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let (head, bytes) = data.split_at(32);
    let word = |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    // Small limits are what real manifests hold; the top bit of a word makes a delta or base absent.
    let optional = |w: u64| (w >> 63 == 0).then_some(w);
    let limits = IndexLimits {
        image_size: word(0),
        compressed_size: word(1),
        delta_size: optional(word(2)),
        base_size: optional(word(3)),
    };
    let Ok(index) = ChunkIndex::decode(bytes, &limits) else {
        return;
    };
    let encoded = index.encode();
    assert_eq!(encoded, bytes, "decode accepted a non-canonical index");
    assert_eq!(
        ChunkIndex::decode(&encoded, &limits).expect("re-decodes"),
        index
    );
    assert_eq!(
        ChunkIndex::encoded_len(index.chunks.len(), index.frames.len(), index.deltas.len()),
        bytes.len() as u64
    );
    let _ = index.chunk_offsets();
    let _ = index.frame_spans();
    let _ = index.delta_offsets();
    let _ = index.frame_of_chunks();
});
