//! Cutting the active slot into chunks with the new index's parameters, for a robot whose active slot does not
//! hold the delta base: whatever chunks the two releases share are then read locally instead of fetched.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use fastcdc::v2020::{Normalization, StreamCDC};
use ota_bundle_format::chunked::ChunkParams;
use sha2::{Digest, Sha256};

/// Chunk digest -> first offset in the active slot, for the first `len` bytes of `path`.
pub fn scan(path: &Path, len: u64, params: ChunkParams) -> io::Result<HashMap<[u8; 32], u64>> {
    let file = File::open(path)?;
    let reader = BufReader::with_capacity(1 << 20, file.take(len));
    let chunker = StreamCDC::with_level(
        reader,
        params.min,
        params.avg,
        params.max,
        Normalization::Level1,
    );
    let mut found = HashMap::new();
    for chunk in chunker {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        let digest: [u8; 32] = Sha256::digest(&chunk.data).into();
        found.entry(digest).or_insert(chunk.offset);
    }
    Ok(found)
}
