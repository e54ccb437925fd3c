//! Read-ahead for network sources: a thread keeps reading the download into a few large buffers while the
//! installer decodes, so the decoding thread never waits on the network stack's small hand-offs.
//!
//! An HTTP body arrives in pieces of a few KiB to a few hundred KiB, each handed over from the HTTP client's own
//! thread. Reading it directly on the decoding thread puts every hand-off (and every network hiccup) on the
//! install's critical path. Behind a [`ReadAhead`], the decoding thread takes whole 1 MiB buffers, and only blocks
//! when the network really is slower than decoding. Memory stays fixed: [`DEPTH`] buffers of [`BUFFER`] bytes.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// Size of each read-ahead buffer.
pub const BUFFER: usize = 1 << 20;
/// Buffers filled ahead of the reader.
pub const DEPTH: usize = 4;

enum Message {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// Reads `inner` on a background thread, up to [`DEPTH`] × [`BUFFER`] bytes ahead of the caller.
///
/// Errors of `inner` reach the caller in order, after the bytes read before them. Dropping the `ReadAhead` tells
/// the thread to stop at its next read; the thread is not joined, because it may be blocked in a network read
/// (which the source's own timeouts bound).
pub struct ReadAhead {
    rx: Receiver<Message>,
    recycle: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    finished: bool,
    stop: Arc<AtomicBool>,
}

impl ReadAhead {
    /// Starts reading `inner` ahead.
    pub fn new(inner: Box<dyn Read + Send>) -> io::Result<ReadAhead> {
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let (recycle, recycled) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("ota-read-ahead".into())
            .spawn(move || fill(inner, tx, recycled, thread_stop))?;
        Ok(ReadAhead {
            rx,
            recycle,
            current: Vec::new(),
            pos: 0,
            finished: false,
            stop,
        })
    }
}

/// The read-ahead thread: fills buffers until the end, an error, or the reader is gone.
fn fill(
    mut inner: Box<dyn Read + Send>,
    tx: SyncSender<Message>,
    recycled: Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
) {
    loop {
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(BUFFER, 0);
        let mut filled = 0;
        let mut outcome = None;
        while filled < BUFFER {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    outcome = Some(Message::End);
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outcome = Some(Message::Failed(e));
                    break;
                }
            }
        }
        if filled > 0 {
            buf.truncate(filled);
            if tx.send(Message::Data(buf)).is_err() {
                return;
            }
        }
        if let Some(last) = outcome {
            let _ = tx.send(last);
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.finished || out.is_empty() {
                return Ok(0);
            }
            let spent = std::mem::take(&mut self.current);
            if spent.capacity() > 0 {
                let _ = self.recycle.send(spent);
            }
            self.pos = 0;
            match self.rx.recv() {
                Ok(Message::Data(buf)) => self.current = buf,
                Ok(Message::End) => self.finished = true,
                Ok(Message::Failed(e)) => {
                    self.finished = true;
                    return Err(e);
                }
                Err(_) => {
                    self.finished = true;
                    return Err(io::Error::other("the read-ahead thread stopped"));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for len in [0, 1, BUFFER - 1, BUFFER, 3 * BUFFER + 12345] {
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
        let len = 2 * BUFFER + 5;
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
        let mut some = vec![0u8; 3 * BUFFER];
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
