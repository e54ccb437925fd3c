//! [`OutcomeStore`] on SQLite.

use ota_protocol::device::ReportStatus;

use super::SqliteStore;
use crate::error::StoreError;
use crate::store::codec::status;
use crate::store::outcomes::{group, OutcomeStore, RECENT_OUTCOMES};

impl OutcomeStore for SqliteStore {
    fn recent_outcomes(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Vec<ReportStatus>)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&RECENT_OUTCOMES.replace("{limit}", "?1"))?;
        let mut rows = stmt.query([limit as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(Ok((
                row.get::<_, String>(0)?,
                status("reports.status", &row.get::<_, String>(1)?)?,
            )));
        }
        group(out)
    }
}
