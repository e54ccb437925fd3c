//! The range engine's memory budget: fetched inputs waiting to be decoded, and decoded pieces waiting to be
//! written in image order, each bounded by a byte budget whatever the frame size, so a robot decodes frames of
//! any size the format allows on all its cores and its anonymous memory stays well under 64 MiB.
//!
//! The decisions are two pure functions ([`may_take`], [`may_queue`]); [`Flow`] is the lock and condition
//! variable that the fetch thread, the workers and the writer wait on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::client::ClientError;

/// Fetched bytes held ahead of the decoders (frames, deltas): a few frames of a typical image.
pub const INPUT_BUDGET: u64 = 12 << 20;
/// Decoded bytes held ahead of the writer: most of a frame, so a second core decodes the next frame while the
/// writer takes the current one.
pub const OUTPUT_BUDGET: u64 = 12 << 20;
/// Decoders hand their output over in pieces of at most this size.
pub const PIECE: usize = 1 << 20;
/// What the unit the writer takes now may queue beyond the budget: units behind it may fill the budget while
/// they run ahead, and the head must still stream to the writer several pieces deep, not one piece at a time.
pub const HEAD_ALLOWANCE: u64 = 4 * PIECE as u64;

/// Whether `n` more input bytes may be held when `used` are (pure). Nothing held: always, so an input larger
/// than the budget is still taken, alone.
pub fn may_take(used: u64, n: u64, limit: u64) -> bool {
    used == 0 || used + n <= limit
}

/// Whether a piece of `len` bytes (at most [`PIECE`]) for a unit may be queued for the writer when `used` bytes
/// are queued in all (pure). The unit the writer waits for (`is_head`) may always queue up to
/// [`HEAD_ALLOWANCE`] of its own (`head_queued`), so it never waits on units behind it and the pipeline cannot
/// stall; every other unit waits for room in the budget. So at most `limit` plus the allowance is ever queued.
pub fn may_queue(used: u64, len: u64, limit: u64, is_head: bool, head_queued: u64) -> bool {
    used + len <= limit || (is_head && head_queued + len <= HEAD_ALLOWANCE)
}

/// What a worker hands the writer for one unit: pieces of output, then how the unit ended.
pub enum Out {
    /// The next bytes of the unit's output.
    Piece(Vec<u8>),
    /// The unit is done (or failed).
    End(Result<(), ClientError>),
}

#[derive(Default)]
struct State {
    inputs: u64,
    /// The unit the writer takes next.
    head: usize,
    /// Queued output bytes, all units.
    queued: u64,
    /// Queued output per unit.
    queues: BTreeMap<usize, (VecDeque<Out>, u64)>,
    stopped: bool,
    /// Most output bytes ever queued (tests).
    peak: u64,
}

/// The shared budget of one pipeline run.
pub struct Flow {
    state: Mutex<State>,
    changed: Condvar,
    input_limit: u64,
    output_limit: u64,
}

impl Flow {
    /// A flow with the given budgets ([`INPUT_BUDGET`], [`OUTPUT_BUDGET`]).
    pub fn new(input_limit: u64, output_limit: u64) -> Self {
        Flow {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            input_limit,
            output_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no thread panics holding the flow")
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .expect("no thread panics holding the flow")
    }

    /// Waits until `n` input bytes may be held and counts them; false once the run stopped.
    pub fn take_input(&self, n: u64) -> bool {
        let mut s = self.lock();
        while !s.stopped && !may_take(s.inputs, n, self.input_limit) {
            s = self.wait(s);
        }
        if s.stopped {
            return false;
        }
        s.inputs += n;
        true
    }

    /// `n` input bytes are no longer held.
    pub fn release_input(&self, n: u64) {
        let mut s = self.lock();
        s.inputs -= n.min(s.inputs);
        self.changed.notify_all();
    }

    /// Queues `out` for unit `seq`, waiting for room; false once the run stopped.
    pub fn push(&self, seq: usize, out: Out) -> bool {
        let len = match &out {
            Out::Piece(bytes) => bytes.len() as u64,
            Out::End(_) => 0,
        };
        let mut s = self.lock();
        loop {
            if s.stopped {
                return false;
            }
            let head_queued = s.queues.get(&s.head).map_or(0, |q| q.1);
            if len == 0 || may_queue(s.queued, len, self.output_limit, seq == s.head, head_queued) {
                break;
            }
            s = self.wait(s);
        }
        let queue = s.queues.entry(seq).or_default();
        queue.0.push_back(out);
        queue.1 += len;
        s.queued += len;
        s.peak = s.peak.max(s.queued);
        self.changed.notify_all();
        true
    }

    /// The writer: waits for the next output of unit `seq` (the head). After its `End`, the next unit is head.
    pub fn pop(&self, seq: usize) -> Out {
        let mut s = self.lock();
        s.head = seq;
        loop {
            if let Some(queue) = s.queues.get_mut(&seq) {
                if let Some(out) = queue.0.pop_front() {
                    let len = match &out {
                        Out::Piece(bytes) => bytes.len() as u64,
                        Out::End(_) => 0,
                    };
                    queue.1 -= len;
                    s.queued -= len;
                    if matches!(out, Out::End(_)) {
                        s.queues.remove(&seq);
                        s.head = seq + 1;
                    }
                    self.changed.notify_all();
                    return out;
                }
            }
            // The head changed (or a piece left): workers waiting for room may go on.
            self.changed.notify_all();
            s = self.wait(s);
        }
    }

    /// Ends the run early: every wait returns, pushes and takes fail.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// True once the run stopped.
    pub fn stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Most output bytes queued at once so far.
    pub fn peak(&self) -> u64 {
        self.lock().peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A simulated run with random piece sizes and a random schedule: the queued bytes never pass the
        /// budget plus the head's allowance, and the head can always go on, so every unit is written.
        #[test]
        fn queued_output_stays_in_budget_and_the_head_always_moves(
            units in proptest::collection::vec(proptest::collection::vec(1u64..=PIECE as u64, 0..20), 1..12),
            limit in (PIECE as u64)..(8 * PIECE as u64),
            schedule in proptest::collection::vec(any::<u16>(), 2000),
        ) {
            // Each unit's producer pushes its pieces in order; the writer pops the head's.
            let mut next_piece = vec![0usize; units.len()];
            let mut queues: Vec<VecDeque<u64>> = vec![VecDeque::new(); units.len()];
            let (mut used, mut head, mut peak) = (0u64, 0usize, 0u64);
            let mut steps = schedule.iter().cycle();
            let mut idle = 0;
            while head < units.len() {
                let pick = *steps.next().unwrap() as usize % (units.len() + 1);
                let mut moved = false;
                if pick == units.len() {
                    // The writer.
                    if let Some(len) = queues[head].pop_front() {
                        used -= len;
                        moved = true;
                    } else if next_piece[head] == units[head].len() {
                        head += 1;
                        moved = true;
                    }
                } else if pick >= head && next_piece[pick] < units[pick].len() {
                    let len = units[pick][next_piece[pick]];
                    let head_queued: u64 = queues[head].iter().sum();
                    if may_queue(used, len, limit, pick == head, head_queued) {
                        queues[pick].push_back(len);
                        next_piece[pick] += 1;
                        used += len;
                        peak = peak.max(used);
                        moved = true;
                    }
                }
                idle = if moved { 0 } else { idle + 1 };
                // Round robin when the random schedule idles, to tell a stall from bad luck.
                if idle > 4 * (units.len() + 1) {
                    let len_ok = |u: usize| next_piece[u] < units[u].len();
                    let head_queued: u64 = queues[head].iter().sum();
                    let can_write = !queues[head].is_empty() || next_piece[head] == units[head].len();
                    let head_can_push = len_ok(head)
                        && may_queue(used, units[head][next_piece[head]], limit, true, head_queued);
                    prop_assert!(can_write || head_can_push, "stalled at unit {}", head);
                    idle = 0;
                }
                prop_assert!(used <= limit + HEAD_ALLOWANCE);
            }
            prop_assert!(peak <= limit + HEAD_ALLOWANCE);
        }

        #[test]
        fn inputs_stay_in_budget_unless_one_alone_is_larger(
            used in 0u64..(32 << 20), n in 0u64..(32 << 20), limit in 1u64..(32 << 20),
        ) {
            let ok = may_take(used, n, limit);
            prop_assert_eq!(ok, used == 0 || used + n <= limit);
            if ok {
                prop_assert!(used + n <= limit || used == 0);
            }
        }
    }

    #[test]
    fn a_stopped_flow_releases_every_waiter() {
        let flow = Flow::new(10, 10);
        assert!(
            flow.take_input(100),
            "alone, an input larger than the budget is taken"
        );
        assert!(flow.push(1, Out::Piece(vec![0; 8])));
        std::thread::scope(|s| {
            // Both wait for room (whether they started waiting before the stop or not).
            let waiter = s.spawn(|| flow.take_input(1));
            let pusher = s.spawn(|| flow.push(1, Out::Piece(vec![0; 8])));
            flow.stop();
            assert!(!waiter.join().unwrap());
            assert!(!pusher.join().unwrap());
        });
    }
}
