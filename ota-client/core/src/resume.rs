//! Resuming an interrupted download: what part of the standby slot a restarted install may keep.
//!
//! While a chunked image is written, the agent persists a [`DownloadJournal`] every so often (after the slot was
//! synced). A restarted install keeps the journal's prefix only if it describes exactly the same write: the same
//! bundle, class, slot and image. Everything else starts at byte 0. The agent still re-verifies the prefix (chunk
//! digests) before it uses it: the journal says where to look, never what the bytes are.

use serde::{Deserialize, Serialize};

use crate::slot::Slot;

/// Progress of one image write, as persisted in `<state_dir>/download.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadJournal {
    /// The bundle's identity (SHA-256 of its signed manifest).
    pub bundle: String,
    /// Slot class written.
    pub class: String,
    /// Slot written.
    pub slot: Slot,
    /// SHA-256 (hex) of the whole image being written.
    pub image_sha256: String,
    /// The slot holds verified bytes of the image up to here, synced before the journal was written.
    pub verified_upto: u64,
    /// Where the bundle was read from (a path or URL): a restarted install from the same place reads it by
    /// ranges from its first request, since the bundle is known to be chunked.
    #[serde(default)]
    pub origin: String,
}

/// How many bytes of the standby slot a write of `image_sha256` from `bundle` into `class`/`slot` may keep:
/// the journal's `verified_upto` when it describes this very write, else 0.
pub fn resume_point(
    journal: Option<&DownloadJournal>,
    bundle: &str,
    class: &str,
    slot: Slot,
    image_sha256: &str,
) -> u64 {
    match journal {
        Some(j)
            if j.bundle == bundle
                && j.class == class
                && j.slot == slot
                && j.image_sha256.eq_ignore_ascii_case(image_sha256) =>
        {
            j.verified_upto
        }
        _ => 0,
    }
}

/// Whether an install from `origin` should read by ranges from its first request: the journal says an
/// interrupted write of a chunked bundle from there can be continued.
pub fn resumes_from(journal: Option<&DownloadJournal>, origin: &str) -> bool {
    journal.is_some_and(|j| !j.origin.is_empty() && j.origin == origin && j.verified_upto > 0)
}

/// Whether a journal must be removed when `bundle` starts writing: it belongs to another bundle, whose
/// progress the new write is about to overwrite.
pub fn journal_is_stale(journal: &DownloadJournal, bundle: &str) -> bool {
    journal.bundle != bundle
}

/// How many whole chunks lie inside a prefix of `upto` bytes, given each chunk's end offset (ascending):
/// a resumed prefix is used only up to a chunk boundary, since only whole chunks can be re-verified.
pub fn whole_chunks_within(chunk_ends: &[u64], upto: u64) -> usize {
    chunk_ends.partition_point(|&end| end <= upto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn journal() -> DownloadJournal {
        DownloadJournal {
            bundle: "b1".into(),
            class: "rootfs".into(),
            slot: Slot::B,
            image_sha256: "ab".repeat(32),
            verified_upto: 64 << 20,
            origin: "https://server/b1".into(),
        }
    }

    #[test]
    fn only_the_same_write_resumes() {
        let j = journal();
        let sha = "ab".repeat(32);
        assert_eq!(
            resume_point(Some(&j), "b1", "rootfs", Slot::B, &sha),
            64 << 20
        );
        assert_eq!(
            resume_point(Some(&j), "b1", "rootfs", Slot::B, &sha.to_uppercase()),
            64 << 20
        );
        assert_eq!(resume_point(None, "b1", "rootfs", Slot::B, &sha), 0);
        assert_eq!(resume_point(Some(&j), "b2", "rootfs", Slot::B, &sha), 0);
        assert_eq!(resume_point(Some(&j), "b1", "model", Slot::B, &sha), 0);
        assert_eq!(resume_point(Some(&j), "b1", "rootfs", Slot::A, &sha), 0);
        assert_eq!(
            resume_point(Some(&j), "b1", "rootfs", Slot::B, &"cd".repeat(32)),
            0
        );
        assert!(resumes_from(Some(&j), "https://server/b1"));
        assert!(!resumes_from(Some(&j), "https://server/b2"));
        assert!(!resumes_from(None, "https://server/b1"));
        let old: DownloadJournal = serde_json::from_str(
            r#"{"bundle":"b1","class":"rootfs","slot":"B","image_sha256":"ab","verified_upto":5}"#,
        )
        .unwrap();
        assert!(
            !resumes_from(Some(&old), ""),
            "a journal without an origin names none"
        );
        assert!(journal_is_stale(&j, "b2"));
        assert!(!journal_is_stale(&j, "b1"));
    }

    #[test]
    fn the_journal_round_trips_as_json() {
        let j = journal();
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<DownloadJournal>(&text).unwrap(), j);
    }

    #[test]
    fn whole_chunks_stop_at_the_last_boundary() {
        let ends = [10, 20, 35];
        assert_eq!(whole_chunks_within(&ends, 0), 0);
        assert_eq!(whole_chunks_within(&ends, 9), 0);
        assert_eq!(whole_chunks_within(&ends, 10), 1);
        assert_eq!(whole_chunks_within(&ends, 34), 2);
        assert_eq!(whole_chunks_within(&ends, 35), 3);
        assert_eq!(whole_chunks_within(&ends, u64::MAX), 3);
    }

    fn arb_journal() -> impl Strategy<Value = DownloadJournal> {
        (
            "[ab]{1,2}",
            "[xy]{1,2}",
            any::<bool>(),
            "[0-9a-f]{2}",
            any::<u64>(),
        )
            .prop_map(
                |(bundle, class, a, image_sha256, verified_upto)| DownloadJournal {
                    bundle,
                    class,
                    slot: if a { Slot::A } else { Slot::B },
                    image_sha256,
                    verified_upto,
                    origin: String::new(),
                },
            )
    }

    proptest! {
        /// A prefix is kept exactly when every field names this write; never more than the journal says.
        #[test]
        fn resume_point_is_all_or_nothing(j in arb_journal(), asked in arb_journal(), some in any::<bool>()) {
            let journal = some.then_some(&j);
            let got = resume_point(journal, &asked.bundle, &asked.class, asked.slot, &asked.image_sha256);
            let same = some
                && j.bundle == asked.bundle
                && j.class == asked.class
                && j.slot == asked.slot
                && j.image_sha256 == asked.image_sha256;
            prop_assert_eq!(got, if same { j.verified_upto } else { 0 });
            prop_assert_eq!(journal_is_stale(&j, &asked.bundle), j.bundle != asked.bundle);
        }

        /// The chunks counted all end inside the prefix, and the next one does not.
        #[test]
        fn whole_chunks_are_inside(sizes in proptest::collection::vec(1u64..100, 0..20), upto in 0u64..2500) {
            let ends: Vec<u64> = sizes.iter().scan(0, |at, s| { *at += s; Some(*at) }).collect();
            let n = whole_chunks_within(&ends, upto);
            prop_assert!(ends[..n].iter().all(|&e| e <= upto));
            if let Some(&next) = ends.get(n) {
                prop_assert!(next > upto);
            }
        }
    }
}
