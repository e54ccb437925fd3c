//! Keeping systemd's watchdog fed (`WatchdogSec=` in ota-client.service) from the loop's own
//! progress, so a daemon stuck in one step is restarted while long sleeps and long downloads
//! are not mistaken for a hang.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ota_client_core::Slot;
use ota_packaging::Notifier;

use super::clock::Clock;
use crate::client::Progress;

/// Sleeps `d` like [`Clock::sleep`], waking every watchdog period to ping. Without a watchdog
/// this is one `clock.sleep`, so virtual-clock tests see the same sleeps as before.
pub(super) fn sleep(clock: &dyn Clock, d: Duration, cancel: &AtomicBool, dog: &Notifier) -> bool {
    let Some(period) = dog.period() else {
        return clock.sleep(d, cancel);
    };
    let mut left = d;
    loop {
        let step = left.min(period);
        if !clock.sleep(step, cancel) {
            return false;
        }
        dog.alive();
        left -= step;
        if left.is_zero() {
            return true;
        }
    }
}

/// An install's progress that also pings the watchdog: bytes arriving is the daemon's sign of
/// life during a download that may take hours.
pub(super) struct Watched<'a, P> {
    pub(super) inner: &'a mut P,
    pub(super) dog: &'a Notifier,
}

impl<P: Progress> Progress for Watched<'_, P> {
    fn phase(&mut self, message: &str) {
        self.dog.alive();
        self.inner.phase(message);
    }
    fn image_started(&mut self, image: &str, class: &str, slot: Slot, size: u64) {
        self.dog.alive();
        self.inner.image_started(image, class, slot, size);
    }
    fn bytes_written(&mut self, n: u64) {
        self.dog.alive();
        self.inner.bytes_written(n);
    }
    fn image_finished(&mut self) {
        self.dog.alive();
        self.inner.image_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Default)]
    struct Recording(Mutex<Vec<Duration>>);

    impl Clock for Recording {
        fn now(&self) -> Instant {
            Instant::now()
        }
        fn sleep(&self, d: Duration, _: &AtomicBool) -> bool {
            self.0.lock().unwrap().push(d);
            true
        }
        fn random(&self) -> u64 {
            4
        }
    }

    #[test]
    fn a_long_sleep_wakes_every_watchdog_period_and_sleeps_the_whole_time() {
        let clock = Recording::default();
        let dog = Notifier::with_period(Some(Duration::from_secs(3)));
        assert!(sleep(
            &clock,
            Duration::from_secs(10),
            &AtomicBool::new(false),
            &dog
        ));
        let secs: Vec<u64> = clock
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(secs, [3, 3, 3, 1]);
    }

    #[test]
    fn without_a_watchdog_a_sleep_is_one_sleep() {
        let clock = Recording::default();
        let dog = Notifier::with_period(None);
        assert!(sleep(
            &clock,
            Duration::from_secs(10),
            &AtomicBool::new(false),
            &dog
        ));
        assert_eq!(*clock.0.lock().unwrap(), [Duration::from_secs(10)]);
    }

    #[test]
    fn a_cancelled_slice_ends_the_sleep() {
        struct Cancelled;
        impl Clock for Cancelled {
            fn now(&self) -> Instant {
                Instant::now()
            }
            fn sleep(&self, _: Duration, _: &AtomicBool) -> bool {
                false
            }
            fn random(&self) -> u64 {
                4
            }
        }
        let dog = Notifier::with_period(Some(Duration::from_secs(1)));
        assert!(!sleep(
            &Cancelled,
            Duration::from_secs(10),
            &AtomicBool::new(true),
            &dog
        ));
    }
}
