//! Cutting the active slot into chunks with the new index's parameters, for a robot whose active slot does not
//! hold the delta base: whatever chunks the two releases share are then read locally instead of fetched. The cut
//! is the writer's own (`for_each_chunk`), so both sides find the same boundaries.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use ota_bundle_format::chunked::{keep_scanning, ChunkParams};
use ota_bundle_format::write::for_each_chunk;
use sha2::{Digest, Sha256};

/// Ends the cut early once [`keep_scanning`] says the slot holds nothing worth reading.
#[derive(Debug)]
struct NothingToReuse;

impl std::fmt::Display for NothingToReuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nothing to reuse")
    }
}

impl std::error::Error for NothingToReuse {}

/// Digest -> first offset in the active slot of each chunk of the first `len` bytes of `path` that `wanted`
/// (the new image's chunk digests) names. Empty when the first part of the slot shares no data with the new
/// image (a blank or unrelated slot): cutting all of it would only slow the install down.
pub fn scan(
    path: &Path,
    len: u64,
    params: ChunkParams,
    wanted: &HashSet<[u8; 32]>,
) -> io::Result<HashMap<[u8; 32], u64>> {
    let file = File::open(path)?;
    let mut found = HashMap::new();
    let (mut offset, mut shares_data) = (0u64, false);
    let result = for_each_chunk(file.take(len), params, |bytes| {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if wanted.contains(&digest) {
            found.entry(digest).or_insert(offset);
            shares_data |= bytes.iter().any(|&b| b != 0);
        }
        offset += bytes.len() as u64;
        if keep_scanning(offset, shares_data) {
            Ok(())
        } else {
            Err(io::Error::other(NothingToReuse))
        }
    });
    match result {
        Ok(_) => Ok(found),
        Err(e) if e.get_ref().is_some_and(|e| e.is::<NothingToReuse>()) => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use ota_bundle_format::chunked::{DEFAULT_PARAMS, SCAN_PROBE};

    use super::*;

    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefgh"[(x % 8) as usize]
            })
            .collect()
    }

    fn digests(data: &[u8]) -> HashSet<[u8; 32]> {
        let mut out = HashSet::new();
        for_each_chunk(data, DEFAULT_PARAMS, |b| {
            out.insert(Sha256::digest(b).into());
            Ok(())
        })
        .unwrap();
        out
    }

    /// A slot that shares data is cut to its end; a blank one stops at the probe, though its zeros match.
    #[test]
    fn a_blank_slot_is_given_up_after_the_probe_a_related_one_is_cut_whole() {
        let dir = tempfile::tempdir().unwrap();
        let len = SCAN_PROBE as usize + (8 << 20);
        let mut image = vec![0u8; len];
        let tail = text(4 << 20, 7);
        image[len - tail.len()..].copy_from_slice(&tail);
        let wanted = digests(&image);

        let blank = dir.path().join("blank");
        std::fs::write(&blank, vec![0u8; len]).unwrap();
        assert!(scan(&blank, len as u64, DEFAULT_PARAMS, &wanted)
            .unwrap()
            .is_empty());

        let related = dir.path().join("related");
        let mut slot = image.clone();
        slot[..1 << 20].copy_from_slice(&text(1 << 20, 3));
        slot[2 << 20..3 << 20].copy_from_slice(&image[len - (1 << 20)..]);
        std::fs::write(&related, &slot).unwrap();
        let found = scan(&related, len as u64, DEFAULT_PARAMS, &wanted).unwrap();
        let tail_chunk: [u8; 32] = {
            let mut last = [0u8; 32];
            for_each_chunk(&image[len - tail.len()..], DEFAULT_PARAMS, |b| {
                last = Sha256::digest(b).into();
                Ok(())
            })
            .unwrap();
            last
        };
        assert!(
            found.contains_key(&tail_chunk),
            "the tail past the probe was cut"
        );
    }
}
