//! SHA-256 on a thread of its own, for pipelines whose main thread is busy with zstd.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use sha2::{Digest, Sha256};

/// The sending end of a [`spawn`]ed hasher.
pub(crate) struct HashFeed {
    /// Buffers to hash, in order. Dropping it ends the input.
    pub to_hasher: SyncSender<Vec<u8>>,
    /// Buffers handed back once hashed, for reuse (so the pipeline allocates only while it fills).
    pub recycled: Receiver<Vec<u8>>,
}

/// Starts a thread on `scope` that hashes the buffers sent through the returned feed, at most `queue` of them
/// waiting, and returns the digest once the feed's sender is dropped.
pub(crate) fn spawn<'scope>(
    scope: &'scope Scope<'scope, '_>,
    queue: usize,
) -> (HashFeed, ScopedJoinHandle<'scope, [u8; 32]>) {
    let (to_hasher, pieces) = mpsc::sync_channel::<Vec<u8>>(queue);
    let (give_back, recycled) = mpsc::channel::<Vec<u8>>();
    let handle = scope.spawn(move || {
        let mut hasher = Sha256::new();
        for piece in pieces {
            hasher.update(&piece);
            // The feeding side may be gone already; then the buffer is simply dropped.
            let _ = give_back.send(piece);
        }
        <[u8; 32]>::from(hasher.finalize())
    });
    (
        HashFeed {
            to_hasher,
            recycled,
        },
        handle,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_pieces_in_order_and_hands_every_buffer_back() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let pieces = data.chunks(7_777).count();
        let (digest, reused, returned) = std::thread::scope(|scope| {
            let (feed, hasher) = spawn(scope, 2);
            let mut reused = 0;
            for piece in data.chunks(7_777) {
                let mut buf = match feed.recycled.try_recv() {
                    Ok(buf) => {
                        reused += 1;
                        buf
                    }
                    Err(_) => Vec::new(),
                };
                buf.clear();
                buf.extend_from_slice(piece);
                feed.to_hasher.send(buf).unwrap();
            }
            drop(feed.to_hasher);
            let digest = hasher.join().unwrap();
            (digest, reused, feed.recycled.try_iter().count())
        });
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(reused + returned, pieces, "every buffer came back once");
    }
}
