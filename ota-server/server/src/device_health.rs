//! The health rule the console shows per robot (pure): failures and roll-backs among the robot's last
//! [`WINDOW`] *outcome* reports (success, failure, rolled back). Progress reports (downloading, installing,
//! rebooting) are not outcomes: counting them let a retry's progress push earlier failures out of the window,
//! so a robot that rolled back twice in a row showed only "last failed".
//!
//! `bad` at [`BAD_THRESHOLD`] or more bad outcomes in the window; `warn` when only the latest outcome is bad;
//! `ok` otherwise (a success after failures clears `warn`, not `bad`, until the failures leave the window).

use std::collections::VecDeque;

use ota_protocol::admin::{DeviceHealth, HealthLevel};
use ota_protocol::device::ReportStatus;

/// Outcome reports the rule looks at.
pub const WINDOW: usize = 5;
/// Bad outcomes in the window that flag a robot `bad`.
pub const BAD_THRESHOLD: usize = 2;

/// Whether a report says how an update ended (rather than how far it got).
pub fn is_outcome(status: ReportStatus) -> bool {
    matches!(
        status,
        ReportStatus::Success | ReportStatus::Failure | ReportStatus::RolledBack
    )
}

/// A robot's last outcomes, newest first, at most [`WINDOW`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes(VecDeque<ReportStatus>);

impl Outcomes {
    /// From statuses newest first (progress reports are skipped).
    pub fn from_newest_first(statuses: impl IntoIterator<Item = ReportStatus>) -> Outcomes {
        Outcomes(
            statuses
                .into_iter()
                .filter(|s| is_outcome(*s))
                .take(WINDOW)
                .collect(),
        )
    }

    /// Adds a new report's status (a progress report changes nothing).
    pub fn push(&mut self, status: ReportStatus) {
        if is_outcome(status) {
            self.0.push_front(status);
            self.0.truncate(WINDOW);
        }
    }

    /// The verdict.
    pub fn health(&self) -> DeviceHealth {
        let failures = self.count(ReportStatus::Failure);
        let rollbacks = self.count(ReportStatus::RolledBack);
        let latest_bad = self.0.front().is_some_and(|s| *s != ReportStatus::Success);
        let level = if usize::from(failures + rollbacks) >= BAD_THRESHOLD {
            HealthLevel::Bad
        } else if latest_bad {
            HealthLevel::Warn
        } else {
            HealthLevel::Ok
        };
        DeviceHealth {
            level,
            failures,
            rollbacks,
            outcomes: self.0.len() as u8,
        }
    }

    fn count(&self, status: ReportStatus) -> u8 {
        self.0.iter().filter(|s| **s == status).count() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ReportStatus::*;

    fn level(newest_first: &[ReportStatus]) -> HealthLevel {
        Outcomes::from_newest_first(newest_first.iter().copied())
            .health()
            .level
    }

    #[test]
    fn progress_reports_do_not_push_failures_out() {
        // Newest first: two roll-backs, each after a retry's progress reports.
        let reports = [
            RolledBack,
            Rebooting,
            Installing,
            Downloading,
            RolledBack,
            Rebooting,
            Installing,
        ];
        let h = Outcomes::from_newest_first(reports).health();
        assert_eq!(h.level, HealthLevel::Bad);
        assert_eq!((h.failures, h.rollbacks, h.outcomes), (0, 2, 2));
    }

    #[test]
    fn the_levels() {
        assert_eq!(level(&[]), HealthLevel::Ok);
        assert_eq!(level(&[Downloading]), HealthLevel::Ok);
        assert_eq!(level(&[Failure]), HealthLevel::Warn);
        assert_eq!(level(&[Downloading, Failure]), HealthLevel::Warn);
        assert_eq!(level(&[Success, Failure]), HealthLevel::Ok);
        assert_eq!(level(&[RolledBack, Failure]), HealthLevel::Bad);
        assert_eq!(level(&[Success, RolledBack, Failure]), HealthLevel::Bad);
        // Out of the window: five successes after them.
        let old = [
            Success, Success, Success, Success, Success, Failure, Failure,
        ];
        assert_eq!(level(&old), HealthLevel::Ok);
    }

    fn status() -> impl Strategy<Value = ReportStatus> {
        prop::sample::select(vec![
            Downloading,
            Installing,
            Rebooting,
            Success,
            Failure,
            RolledBack,
        ])
    }

    proptest! {
        /// Pushing reports one by one (oldest first) agrees with building from the list newest first, and the
        /// verdict only ever depends on the outcomes.
        #[test]
        fn push_agrees_with_the_list(reports in prop::collection::vec(status(), 0..30)) {
            let mut pushed = Outcomes::default();
            for s in &reports {
                pushed.push(*s);
            }
            let listed = Outcomes::from_newest_first(reports.iter().rev().copied());
            prop_assert_eq!(&pushed, &listed);
            let outcomes: Vec<_> = reports.iter().rev().copied().filter(|s| is_outcome(*s)).collect();
            prop_assert_eq!(listed.health(), Outcomes::from_newest_first(outcomes.iter().copied()).health());
        }

        /// The counts add up, and `bad` exactly when the window holds enough bad outcomes.
        #[test]
        fn counts_and_levels(reports in prop::collection::vec(status(), 0..30)) {
            let h = Outcomes::from_newest_first(reports.iter().copied()).health();
            let window: Vec<_> = reports.iter().copied().filter(|s| is_outcome(*s)).take(WINDOW).collect();
            let bad = window.iter().filter(|s| **s != Success).count();
            prop_assert_eq!(usize::from(h.outcomes), window.len());
            prop_assert_eq!(usize::from(h.failures + h.rollbacks), bad);
            prop_assert_eq!(h.level == HealthLevel::Bad, bad >= BAD_THRESHOLD);
            if h.level == HealthLevel::Warn {
                prop_assert!(window[0] != Success);
            }
        }
    }
}
