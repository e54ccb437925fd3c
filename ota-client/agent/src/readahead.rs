//! Read-ahead for network sources: a thread keeps reading the download into a bounded buffer while the installer
//! decodes, so the decoding thread never waits on the network stack's small hand-offs.
//!
//! An HTTP body arrives in pieces of a few KiB to a few hundred KiB, each handed over from the HTTP client's own
//! thread. Reading it directly on the decoding thread puts every hand-off (and every network hiccup) on the
//! install's critical path. Behind a [`ReadAhead`], the decoding thread takes whatever has arrived (up to
//! [`CAPACITY`] bytes ahead), and only blocks when nothing has: bytes are passed on as soon as they arrive, never
//! held back to fill a buffer. Memory stays fixed: [`CAPACITY`] plus one [`PIECE`].

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes read ahead of the reader at most.
pub const CAPACITY: usize = 4 << 20;
/// Largest single read from the source.
pub const PIECE: usize = 256 << 10;

/// What the two threads share.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    bytes: VecDeque<u8>,
    /// How the source ended, once it has (taken by the reader when it gets there).
    end: Option<io::Result<()>>,
    /// The reader was dropped: the thread stops.
    reader_gone: bool,
    /// Who sleeps on the condition variable (only they need waking: most hand-offs wake nobody).
    reader_waiting: bool,
    filler_waiting: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bytes behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads `inner` on a background thread, up to [`CAPACITY`] bytes ahead of the caller.
///
/// Errors of `inner` reach the caller in order, after the bytes read before them. Dropping the `ReadAhead` tells
/// the thread to stop; the thread is not joined, because it may be blocked in a network read (which the
/// source's own timeouts bound), and it exits as soon as that read returns.
pub struct ReadAhead {
    shared: Arc<Shared>,
    finished: bool,
}

impl ReadAhead {
    /// Starts reading `inner` ahead.
    pub fn new(inner: Box<dyn Read + Send>) -> io::Result<ReadAhead> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let filler = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ota-read-ahead".into())
            .spawn(move || fill(inner, &filler))?;
        Ok(ReadAhead {
            shared,
            finished: false,
        })
    }
}

/// The read-ahead thread: reads until the end, an error, or the reader is gone.
fn fill(mut inner: Box<dyn Read + Send>, shared: &Shared) {
    let mut piece = vec![0u8; PIECE];
    loop {
        let end = match inner.read(&mut piece) {
            Ok(0) => Some(Ok(())),
            Ok(n) => {
                let mut state = shared.lock();
                while !state.reader_gone && state.bytes.len() + n > CAPACITY {
                    state.filler_waiting = true;
                    state = shared.wait(state);
                    state.filler_waiting = false;
                }
                if state.reader_gone {
                    return;
                }
                state.bytes.extend(&piece[..n]);
                if state.reader_waiting {
                    shared.changed.notify_all();
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Err(e)),
        };
        if let Some(end) = end {
            shared.lock().end = Some(end);
            shared.changed.notify_all();
            return;
        }
        if shared.lock().reader_gone {
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.finished {
            return Ok(0);
        }
        let mut state = self.shared.lock();
        loop {
            if !state.bytes.is_empty() {
                // `VecDeque<u8>`'s own `Read` copies out of both halves of the ring and drains them.
                let n = state.bytes.read(out)?;
                if state.filler_waiting {
                    self.shared.changed.notify_all();
                }
                return Ok(n);
            }
            match state.end.take() {
                Some(Ok(())) => {
                    self.finished = true;
                    return Ok(0);
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Err(e);
                }
                None => {
                    state.reader_waiting = true;
                    state = self.shared.wait(state);
                    state.reader_waiting = false;
                }
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Hands out its data in odd-sized pieces, then fails or ends.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        fail_at_end: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return if self.fail_at_end {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "stalled"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(7919).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 256) as u8).collect()
    }

    #[test]
    fn every_byte_arrives_in_order() {
        for len in [0, 1, PIECE - 1, PIECE, 3 * PIECE + 12345] {
            let source = Trickle {
                data: data(len),
                pos: 0,
                fail_at_end: false,
            };
            let mut r = ReadAhead::new(Box::new(source)).unwrap();
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == data(len), "len {len}");
            assert_eq!(r.read(&mut [0u8; 10]).unwrap(), 0, "stays at the end");
        }
    }

    #[test]
    fn an_error_comes_after_the_bytes_before_it() {
        let len = 2 * PIECE + 5;
        let source = Trickle {
            data: data(len),
            pos: 0,
            fail_at_end: true,
        };
        let mut r = ReadAhead::new(Box::new(source)).unwrap();
        let mut back = vec![0u8; len];
        r.read_exact(&mut back).unwrap();
        assert!(back == data(len));
        let err = r.read(&mut [0u8; 10]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "stalled");
    }

    #[test]
    fn bytes_are_passed_on_while_the_source_is_still_waiting() {
        /// Hands out 100 bytes, then blocks until released, then ends.
        struct Slow(std::sync::mpsc::Receiver<()>, bool);
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if !self.1 {
                    self.1 = true;
                    buf[..100].fill(7);
                    return Ok(100);
                }
                let _ = self.0.recv();
                Ok(0)
            }
        }
        let (release, wait) = std::sync::mpsc::channel();
        let mut r = ReadAhead::new(Box::new(Slow(wait, false))).unwrap();
        let mut first = [0u8; 4096];
        // Returns while the source is blocked: the 100 bytes are not held back to fill a buffer.
        assert_eq!(r.read(&mut first).unwrap(), 100);
        assert!(first[..100].iter().all(|&b| b == 7));
        release.send(()).unwrap();
        assert_eq!(r.read(&mut first).unwrap(), 0);
    }

    #[test]
    fn dropping_the_reader_stops_the_thread() {
        struct Endless(Arc<AtomicBool>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(1);
                Ok(buf.len())
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let mut r = ReadAhead::new(Box::new(Endless(Arc::clone(&dropped)))).unwrap();
        let mut some = vec![0u8; 3 * PIECE];
        r.read_exact(&mut some).unwrap();
        drop(r);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dropped.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread kept reading"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
