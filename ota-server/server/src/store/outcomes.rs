//! What the health rule ([`crate::device_health`]) needs from the store at start: each robot's last outcome
//! reports. Every [`super::Store`] is an [`OutcomeStore`]; each backend implements it in its `outcomes.rs`
//! with [`RECENT_OUTCOMES`] (one scan of the reports, not a query per robot).

use ota_protocol::device::ReportStatus;

use crate::error::StoreError;

/// Each device's last `limit` outcome reports (newest first): the query both backends run, with their own
/// placeholder for the limit in place of `{limit}`.
pub const RECENT_OUTCOMES: &str = "SELECT device_id, status FROM (
        SELECT device_id, status, ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY id DESC) AS n
        FROM reports WHERE status IN ('success', 'failure', 'rolled_back')
    ) AS recent WHERE n <= {limit} ORDER BY device_id, n";

/// Outcome reports for the health rule.
pub trait OutcomeStore {
    /// Each device's last `limit` outcome reports (success, failure, rolled back), newest first; devices
    /// without any are left out.
    fn recent_outcomes(&self, limit: usize)
        -> Result<Vec<(String, Vec<ReportStatus>)>, StoreError>;
}

/// Groups `(device, status)` rows, sorted by device then newest first.
pub fn group(
    rows: impl IntoIterator<Item = Result<(String, ReportStatus), StoreError>>,
) -> Result<Vec<(String, Vec<ReportStatus>)>, StoreError> {
    let mut out: Vec<(String, Vec<ReportStatus>)> = Vec::new();
    for row in rows {
        let (device, status) = row?;
        match out.last_mut() {
            Some((last, list)) if *last == device => list.push(status),
            _ => out.push((device, vec![status])),
        }
    }
    Ok(out)
}
