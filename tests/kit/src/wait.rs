//! Bounded waits: poll a condition until it holds or a deadline passes. Tests wait for the event they expect
//! instead of sleeping a fixed time and hoping it happened (or did not).

use std::time::{Duration, Instant};

/// How often a condition is checked.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// Calls `probe` every [`INTERVAL`] until it returns `Ok(Some(value))` (then `Ok(Some(value))`), an error
/// (returned at once) or `timeout` passes (then `Ok(None)`). `probe` runs at least once.
pub fn poll<T, E>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(INTERVAL);
    }
}

/// Waits until `done` holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let held = poll(timeout, || Ok::<_, ()>(done().then_some(()))).unwrap_or(None);
    assert!(
        held.is_some(),
        "timed out after {:.1} s waiting for {what}",
        timeout.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_first_value_errors_at_once_and_none_at_the_deadline() {
        let mut n = 0;
        let got = poll(Duration::from_secs(5), || {
            n += 1;
            Ok::<_, ()>((n == 3).then_some(n))
        });
        assert_eq!(got, Ok(Some(3)));
        assert_eq!(
            poll(Duration::from_secs(5), || Err::<Option<()>, _>("broken")),
            Err("broken")
        );
        let start = Instant::now();
        assert_eq!(
            poll(Duration::ZERO, || Ok::<Option<()>, ()>(None)),
            Ok(None)
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_for_names_what_it_waited_for() {
        wait_for("the impossible", Duration::ZERO, || false);
    }
}
