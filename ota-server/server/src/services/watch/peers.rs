//! Which of the other replicas' stored polls the replica judging the guards reads at a tick: the whole baseline
//! window the first time, then only what is newer than its last read. A poll is stored by the replica that took
//! it within a second (its write-behind flush), stamped with that replica's clock, so each read reaches back
//! [`SLACK_SECS`] before the last one: a poll flushed late, or stamped by a clock a little behind, is still
//! heard. Reading a poll twice is harmless (the recorder ignores a sample it holds). Pure.

/// How far before the last read each read reaches back (the flush period, plus clocks a few seconds apart).
pub const SLACK_SECS: u64 = 10;

/// The oldest `last_seen` to read at `now`, after a last read at `last` (`None`: never, or lost): never older
/// than the baseline window `window_secs`, which is all the guards look at.
pub fn read_since(last: Option<u64>, now: u64, window_secs: u64) -> u64 {
    let window = now.saturating_sub(window_secs);
    match last {
        Some(last) if last <= now => last.saturating_sub(SLACK_SECS).max(window),
        // A clock that went back: read the window again rather than trust the cursor.
        _ => window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const WINDOW: u64 = 600;

    /// A store of the devices' last polls: (device, last_seen, the time its flush made it visible).
    #[derive(Default)]
    struct Store(Vec<(u8, u64, u64)>);

    impl Store {
        /// What `telemetry_since(since)` answers at `now`: each device's last visible poll seen at or after
        /// `since`.
        fn since(&self, since: u64, now: u64) -> BTreeMap<u8, u64> {
            let mut last = BTreeMap::new();
            for &(device, seen, visible) in &self.0 {
                if visible <= now {
                    let e = last.entry(device).or_insert(0);
                    *e = (*e).max(seen);
                }
            }
            last.retain(|_, seen| *seen >= since);
            last
        }
    }

    proptest! {
        /// Over any polls (flushed up to the slack late) and ticks, reading incrementally leaves the recorder
        /// with every device's newest poll in the window, exactly what reading the whole window each tick gives.
        #[test]
        fn incremental_reads_hear_what_full_reads_hear(
            polls in proptest::collection::vec((0u8..5, 0u64..2000, 0u64..=SLACK_SECS), 0..80),
            ticks in proptest::collection::vec(1u64..120, 1..40),
        ) {
            let store = Store(polls.iter().map(|&(d, t, late)| (d, t, t + late)).collect());
            let (mut now, mut last) = (0u64, None);
            let mut heard: BTreeMap<u8, u64> = BTreeMap::new();
            for step in ticks {
                now += step;
                for (d, seen) in store.since(read_since(last, now, WINDOW), now) {
                    let e = heard.entry(d).or_insert(0);
                    *e = (*e).max(seen);
                }
                last = Some(now);
                for (d, seen) in store.since(now.saturating_sub(WINDOW), now) {
                    prop_assert_eq!(heard.get(&d), Some(&seen), "device {} at {}", d, now);
                }
            }
        }
    }

    #[test]
    fn first_read_and_a_clock_gone_back_read_the_window() {
        assert_eq!(read_since(None, 1000, WINDOW), 400);
        assert_eq!(read_since(Some(990), 1000, WINDOW), 980);
        assert_eq!(
            read_since(Some(100), 1000, WINDOW),
            400,
            "never older than the window"
        );
        assert_eq!(read_since(Some(2000), 1000, WINDOW), 400);
        assert_eq!(read_since(None, 5, WINDOW), 0);
    }
}
