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

#[cfg(test)]
mod tests {
    use ota_protocol::device::ReportStatus::{self, *};

    use super::*;
    use crate::store::{DeviceRecord, Store};

    fn commit(store: &SqliteStore, device: &str, n: usize, status: ReportStatus) {
        let id = format!("{device}-{n}");
        crate::store::alerts::conformance::report(store, device, &id, status, n as u64);
    }

    /// Each robot's last outcomes, newest first, at most the limit; progress reports and robots without an
    /// outcome are left out.
    #[test]
    fn recent_outcomes_skip_progress_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        for id in ["a", "b", "c"] {
            store
                .upsert_device(&DeviceRecord {
                    device_id: id.into(),
                    compatible: "acme".into(),
                    tags: Default::default(),
                    token_id: format!("t-{id}"),
                    token_hash: [1; 32],
                    token_expires_at: None,
                    enrolled_at: 1,
                    labels: Default::default(),
                    state: Default::default(),
                })
                .unwrap();
        }
        let a = [
            Success,
            Failure,
            Downloading,
            RolledBack,
            Installing,
            Failure,
            Success,
        ];
        for (n, s) in a.into_iter().enumerate() {
            commit(&store, "a", n, s);
        }
        commit(&store, "b", 0, Downloading);
        commit(&store, "c", 0, RolledBack);
        assert_eq!(
            store.recent_outcomes(3).unwrap(),
            vec![
                ("a".to_string(), vec![Success, Failure, RolledBack]),
                ("c".to_string(), vec![RolledBack]),
            ]
        );
    }
}
