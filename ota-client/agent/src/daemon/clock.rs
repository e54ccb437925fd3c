//! Time and randomness, injectable so tests and demos run many robots fast.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::random::random_u64;

/// Time and randomness of the daemon.
pub trait Clock: Send + Sync {
    /// A monotonic now.
    fn now(&self) -> Instant;
    /// Sleeps `d`, returning early (with `false`) once `cancel` is set.
    fn sleep(&self, d: Duration, cancel: &AtomicBool) -> bool;
    /// A random number (jitter, new ids).
    fn random(&self) -> u64;
}

/// Real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration, cancel: &AtomicBool) -> bool {
        let until = Instant::now() + d;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    fn random(&self) -> u64 {
        random_u64()
    }
}

/// Real time with every sleep scaled by a factor (0.01: a 5-minute backoff takes 3 s).
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock(pub f64);

impl Clock for ScaledClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration, cancel: &AtomicBool) -> bool {
        SystemClock.sleep(d.mul_f64(self.0.max(0.0)), cancel)
    }

    fn random(&self) -> u64 {
        random_u64()
    }
}
