//! What one robot may cost the server: how many telemetry metrics a poll may carry (the history keeps that many
//! series per robot, [`crate::history::MAX_METRICS`]), and how often it may report (a token bucket on a clock
//! the caller passes in). The sizes of each field are wire rules ([`ota_protocol::validate`]); the JSON body
//! limit (`Config::max_json_bytes`) bounds a request as a whole. Pure.

use ota_protocol::device::Telemetry;

pub use crate::history::MAX_METRICS;

/// Reports a robot may send at once (an install sends ~25 progress reports per image, and retries).
pub const REPORT_BURST: u64 = 120;
/// One more report is allowed every this many milliseconds, up to [`REPORT_BURST`].
pub const REPORT_REFILL_MS: u64 = 5_000;

/// A request over one of these limits; the message names the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A poll carries more metrics than the history keeps.
    #[error(
        "telemetry carries {got} metrics; at most {MAX_METRICS} are kept per robot (limit: telemetry metrics \
         per robot), send fewer"
    )]
    TooManyMetrics {
        /// How many it carried.
        got: usize,
    },
    /// Reports come faster than [`REPORT_BURST`] at once or one per [`REPORT_REFILL_MS`].
    #[error(
        "too many reports from this robot (limit: {REPORT_BURST} at once, then one every {} s); retry in \
         {retry_after_secs} s",
        REPORT_REFILL_MS / 1000
    )]
    ReportRate {
        /// When the next report will be accepted.
        retry_after_secs: u64,
    },
}

impl From<LimitError> for crate::error::ServiceError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::TooManyMetrics { .. } => {
                crate::error::ServiceError::TooLarge(e.to_string())
            }
            LimitError::ReportRate { retry_after_secs } => crate::error::ServiceError::TooFast {
                retry_after_secs,
                message: e.to_string(),
            },
        }
    }
}

/// A poll's telemetry against the per-robot limits.
pub fn telemetry(t: &Telemetry) -> Result<(), LimitError> {
    if t.metrics.len() > MAX_METRICS {
        return Err(LimitError::TooManyMetrics {
            got: t.metrics.len(),
        });
    }
    Ok(())
}

/// Thousandths of a report, so refills need no floating point.
const MILLI: u64 = 1000;

/// A robot's report allowance: starts full, refills one report per [`REPORT_REFILL_MS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBucket {
    milli_tokens: u64,
    last_ms: Option<u64>,
}

impl Default for ReportBucket {
    fn default() -> Self {
        ReportBucket {
            milli_tokens: REPORT_BURST * MILLI,
            last_ms: None,
        }
    }
}

impl ReportBucket {
    /// Takes one report at `now_ms` (any monotonic milliseconds), or says when to retry. A clock that goes
    /// backwards refills nothing.
    pub fn take(&mut self, now_ms: u64) -> Result<(), LimitError> {
        let elapsed = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.last_ms = Some(self.last_ms.map_or(now_ms, |last| last.max(now_ms)));
        let refill = elapsed.saturating_mul(MILLI) / REPORT_REFILL_MS;
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(refill)
            .min(REPORT_BURST * MILLI);
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            return Ok(());
        }
        let missing_ms = (MILLI - self.milli_tokens) * REPORT_REFILL_MS / MILLI;
        Err(LimitError::ReportRate {
            retry_after_secs: missing_ms.div_ceil(1000).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_then_one_per_refill() {
        let mut b = ReportBucket::default();
        for _ in 0..REPORT_BURST {
            b.take(0).unwrap();
        }
        let refused = b.take(0).unwrap_err();
        assert_eq!(
            refused,
            LimitError::ReportRate {
                retry_after_secs: REPORT_REFILL_MS / 1000
            }
        );
        assert!(
            refused.to_string().contains("limit: 120 at once"),
            "{refused}"
        );
        b.take(REPORT_REFILL_MS).unwrap();
        assert!(b.take(REPORT_REFILL_MS).is_err());
    }

    #[test]
    fn too_many_metrics_name_the_limit() {
        let mut t = Telemetry::default();
        for i in 0..=MAX_METRICS {
            t.metrics.insert(format!("m{i}"), 1.0);
        }
        let e = telemetry(&t).unwrap_err();
        assert!(e.to_string().contains("at most 64"), "{e}");
        t.metrics.pop_first();
        assert_eq!(telemetry(&t), Ok(()));
    }

    proptest! {
        /// However reports are spaced, no more are accepted than the burst plus one per refill period, and a
        /// robot that waits the refill period is always accepted.
        #[test]
        fn never_more_than_burst_plus_refill(gaps in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut b = ReportBucket::default();
            let (mut now, mut accepted) = (0u64, 0u64);
            for gap in gaps {
                now += gap;
                if b.take(now).is_ok() {
                    accepted += 1;
                }
                prop_assert!(accepted <= REPORT_BURST + now / REPORT_REFILL_MS);
            }
            prop_assert!(b.take(now + REPORT_REFILL_MS).is_ok());
        }

        /// A clock that jumps backwards never adds reports.
        #[test]
        fn a_backwards_clock_refills_nothing(back in 0u64..1_000_000) {
            let mut b = ReportBucket::default();
            for _ in 0..REPORT_BURST {
                b.take(1_000_000).unwrap();
            }
            prop_assert!(b.take(1_000_000 - back).is_err());
        }
    }
}
