//! systemd service notifications: `READY=1` once a service accepts work (`Type=notify`) and
//! `WATCHDOG=1` from its main loop (`WatchdogSec=`), so systemd restarts a hung process.
//! Every call is a no-op when the process was not started with `NOTIFY_SOCKET` (a shell, a
//! test, another init), so the services need no flag for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Tells systemd about readiness and liveness. Cheap to call often: [`Notifier::alive`] sends
/// at most one datagram per half watchdog period. `Sync`, so loops and progress callbacks on
/// other threads can share one.
#[derive(Debug)]
pub struct Notifier {
    /// How often to ping: half of `WATCHDOG_USEC`; `None` without a watchdog.
    period: Option<Duration>,
    origin: Instant,
    /// Milliseconds after `origin` of the last ping; `NEVER` before the first.
    last_ms: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl Notifier {
    /// The notifier systemd asked for: a watchdog when `WATCHDOG_USEC` is set for this process.
    pub fn from_env() -> Notifier {
        let mut usec = 0;
        let enabled = sd_notify::watchdog_enabled(false, &mut usec);
        Notifier::with_period(if enabled { ping_period(usec) } else { None })
    }

    /// A notifier pinging every `period` (`None`: readiness only).
    pub fn with_period(period: Option<Duration>) -> Notifier {
        Notifier {
            period,
            origin: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
        }
    }

    /// How often [`Notifier::alive`] pings; loops that sleep must wake at least this often.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    /// `READY=1` (and a first watchdog ping). An error means systemd will time the start out:
    /// worth one log line.
    pub fn ready(&self) -> std::io::Result<()> {
        sd_notify::notify(false, &[NotifyState::Ready])?;
        self.alive();
        Ok(())
    }

    /// `STOPPING=1`: the service is shutting down on purpose (no watchdog restart meanwhile).
    pub fn stopping(&self) {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    }

    /// `WATCHDOG=1` if a ping is due. Send errors are ignored: a lost ping is what the
    /// watchdog exists to notice.
    pub fn alive(&self) {
        let Some(period) = self.period else { return };
        let now = self.origin.elapsed();
        let last = match self.last_ms.load(Ordering::Relaxed) {
            NEVER => None,
            ms => Some(Duration::from_millis(ms)),
        };
        if due(last, now, period) {
            let ms = u64::try_from(now.as_millis()).unwrap_or(NEVER - 1);
            self.last_ms.store(ms, Ordering::Relaxed);
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        }
    }
}

/// The ping period for systemd's `WATCHDOG_USEC`: half of it, as sd_watchdog_enabled(3)
/// recommends; `None` for 0 (no watchdog).
pub fn ping_period(watchdog_usec: u64) -> Option<Duration> {
    (watchdog_usec > 0)
        .then(|| Duration::from_micros(watchdog_usec / 2).max(Duration::from_millis(1)))
}

/// Whether a ping is due at `now` after one at `last` (`None`: never pinged).
pub fn due(last: Option<Duration>, now: Duration, period: Duration) -> bool {
    match last {
        None => true,
        Some(last) => now.saturating_sub(last) >= period,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::net::UnixDatagram;

    proptest! {
        #[test]
        fn a_ping_is_due_exactly_when_a_period_passed(last in 0u64..1_000_000, gap in 0u64..1_000_000, period in 1u64..100_000) {
            let last = Duration::from_millis(last);
            let period = Duration::from_millis(period);
            let now = last + Duration::from_millis(gap);
            prop_assert_eq!(due(Some(last), now, period), now - last >= period);
            prop_assert!(due(None, now, period));
        }

        #[test]
        fn the_period_is_half_the_watchdog_and_never_zero(usec in 1u64..u64::MAX / 2) {
            let p = ping_period(usec).unwrap();
            prop_assert!(p > Duration::ZERO);
            prop_assert!(p <= Duration::from_micros(usec).max(Duration::from_millis(1)));
            prop_assert!(p >= Duration::from_micros(usec / 2));
        }
    }

    #[test]
    fn no_watchdog_without_watchdog_usec() {
        assert_eq!(ping_period(0), None);
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The one test that touches NOTIFY_SOCKET (process-global), so tests in parallel threads
    /// cannot race on it.
    #[test]
    fn sends_ready_and_rate_limited_watchdog_pings_to_notify_socket_and_nothing_without_it() {
        std::env::remove_var("NOTIFY_SOCKET");
        let quiet = Notifier::with_period(Some(Duration::from_millis(1)));
        quiet.ready().expect("no socket: a no-op, not an error");
        quiet.alive();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.set_nonblocking(false).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);

        let notifier = Notifier::with_period(Some(Duration::from_secs(3600)));
        notifier.ready().unwrap();
        assert_eq!(recv(&sock), "READY=1\n");
        assert_eq!(recv(&sock), "WATCHDOG=1\n", "ready pings the watchdog once");
        // Within the period: no more pings.
        notifier.alive();
        notifier.alive();
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            sock.recv(&mut buf).is_err(),
            "a ping before the period ended"
        );
        sock.set_nonblocking(false).unwrap();

        let fast = Notifier::with_period(Some(Duration::from_millis(1)));
        fast.alive();
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
        std::thread::sleep(Duration::from_millis(5));
        fast.alive();
        assert_eq!(recv(&sock), "WATCHDOG=1\n");

        // Without a watchdog period: readiness only.
        Notifier::with_period(None).alive();
        sock.set_nonblocking(true).unwrap();
        assert!(sock.recv(&mut buf).is_err(), "pinged without a watchdog");
        std::env::remove_var("NOTIFY_SOCKET");
    }
}
