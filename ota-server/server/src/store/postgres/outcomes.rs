//! [`OutcomeStore`] on PostgreSQL.

use ota_protocol::device::ReportStatus;

use super::{off_runtime, PostgresStore};
use crate::error::StoreError;
use crate::store::codec::status;
use crate::store::outcomes::{group, OutcomeStore, RECENT_OUTCOMES};

impl OutcomeStore for super::Tables {
    fn recent_outcomes(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Vec<ReportStatus>)>, StoreError> {
        let mut client = self.pool.get()?;
        let rows = client.query(
            &RECENT_OUTCOMES.replace("{limit}", "$1"),
            &[&(limit as i64)],
        )?;
        group(rows.iter().map(|row| {
            Ok((
                row.get::<_, String>(0),
                status("reports.status", &row.get::<_, String>(1))?,
            ))
        }))
    }
}

/// Through [`off_runtime`], like every store call.
impl OutcomeStore for PostgresStore {
    fn recent_outcomes(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Vec<ReportStatus>)>, StoreError> {
        off_runtime(|| self.tables.recent_outcomes(limit))
    }
}
