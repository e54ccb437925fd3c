//! Simulated power cuts, shared by the power-cut tests: a [`Cut`] gives a client hooks that stop it at
//! the n-th named checkpoint, or after its slot writers wrote n bytes (then every later write and sync
//! fails, as after the power went).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ota_client::slotio::SlotWriter;
use ota_client::Hooks;
use ota_testkit::robot::Robot;

/// Cut after this many checkpoints (`None`: record them all).
#[derive(Clone)]
pub struct Cut {
    pub at: Option<usize>,
    pub seen: Arc<AtomicUsize>,
    pub names: Arc<Mutex<Vec<String>>>,
    pub dead: Arc<AtomicBool>,
    /// Stop writing slots after this many bytes (per writer).
    pub write_limit: Option<u64>,
}

impl Cut {
    pub fn new(at: Option<usize>, write_limit: Option<u64>) -> Cut {
        Cut {
            at,
            seen: Arc::default(),
            names: Arc::default(),
            dead: Arc::default(),
            write_limit,
        }
    }

    pub fn hooks(&self) -> Hooks {
        let me = self.clone();
        let crash_at = Arc::new(move |name: &str| {
            if me.dead.load(Ordering::SeqCst) {
                return true;
            }
            let n = me.seen.fetch_add(1, Ordering::SeqCst);
            me.names.lock().unwrap().push(name.to_string());
            if me.at == Some(n) {
                me.dead.store(true, Ordering::SeqCst);
            }
            me.dead.load(Ordering::SeqCst)
        });
        let wrap_writer = self.write_limit.map(|limit| {
            let dead = Arc::clone(&self.dead);
            Arc::new(move |inner: Box<dyn SlotWriter>| -> Box<dyn SlotWriter> {
                Box::new(CutWriter {
                    inner,
                    left: limit,
                    dead: Arc::clone(&dead),
                })
            }) as Arc<dyn Fn(Box<dyn SlotWriter>) -> Box<dyn SlotWriter> + Send + Sync>
        });
        Hooks {
            crash_at: Some(crash_at),
            wrap_writer,
        }
    }

    pub fn fired(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// Writes the first `left` bytes, then the power is gone.
struct CutWriter {
    inner: Box<dyn SlotWriter>,
    left: u64,
    dead: Arc<AtomicBool>,
}

impl Write for CutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.dead.load(Ordering::SeqCst) || self.left == 0 {
            self.dead.store(true, Ordering::SeqCst);
            return Err(io::Error::other("power cut"));
        }
        let n = buf.len().min(self.left as usize);
        let n = self.inner.write(&buf[..n])?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SlotWriter for CutWriter {
    fn sync(&mut self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("power cut"));
        }
        self.inner.sync()
    }
}

/// Reboots until the client has nothing left to finish (no trial, nothing pending, booted = primary),
/// running `confirm` after every boot as the boot service would. `check_boot` runs after every boot and
/// every confirm: it asserts that the slot booted holds a complete image (a failure there is a brick).
pub fn settle(r: &Robot, context: &str, check_boot: &dyn Fn(&Robot, &str)) {
    r.set_healthy(true);
    for round in 0..6 {
        r.reboot();
        check_boot(r, &format!("{context}, reboot {round}"));
        let res = r.client().confirm();
        check_boot(r, &format!("{context}, after confirm {round}"));
        let st = r.status();
        if res.is_ok()
            && st.trial.is_none()
            && st.pending_trial.is_none()
            && st.live_trial.is_none()
            && st.booted == st.primary
        {
            break;
        }
        assert!(
            round < 5,
            "{context}: the client never settled: {res:?} {st:?}"
        );
    }
}
