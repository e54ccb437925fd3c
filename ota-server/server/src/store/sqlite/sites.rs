//! The `sites` table on SQLite: one row per site, its plan image in a BLOB column read only when asked for.

use ota_protocol::sites::SiteInfo;
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;
use crate::error::StoreError;
use crate::store::sites::{format, SiteStore, COLUMNS};

fn from_row(row: &Row<'_>) -> Result<SiteInfo, StoreError> {
    Ok(SiteInfo {
        name: row.get(0)?,
        width: row.get::<_, i64>(1)? as u32,
        height: row.get::<_, i64>(2)? as u32,
        scale: row.get(3)?,
        origin_x: row.get(4)?,
        origin_y: row.get(5)?,
        format: format(&row.get::<_, String>(6)?)?,
        bytes: row.get::<_, i64>(7)? as u64,
        digest: row.get(8)?,
        uploaded_at: row.get::<_, i64>(9)? as u64,
    })
}

impl SiteStore for SqliteStore {
    fn put_site(&self, s: &SiteInfo, image: &[u8]) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existed = tx
            .query_row("SELECT 1 FROM sites WHERE name = ?1", [&s.name], |_| Ok(()))
            .optional()?
            .is_some();
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO sites ({COLUMNS}, image)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                s.name,
                i64::from(s.width),
                i64::from(s.height),
                s.scale,
                s.origin_x,
                s.origin_y,
                s.format.as_str(),
                s.bytes as i64,
                s.digest,
                s.uploaded_at as i64,
                image
            ],
        )?;
        tx.commit()?;
        Ok(existed)
    }

    fn sites(&self) -> Result<Vec<SiteInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM sites ORDER BY name"))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(from_row(row)?);
        }
        Ok(out)
    }

    fn site(&self, name: &str) -> Result<Option<SiteInfo>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM sites WHERE name = ?1"),
                [name],
                |row| Ok(from_row(row)),
            )
            .optional()?
            .transpose()
    }

    fn site_image(&self, name: &str) -> Result<Option<(SiteInfo, Vec<u8>)>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS}, image FROM sites WHERE name = ?1"),
                [name],
                |row| Ok(from_row(row).and_then(|s| Ok((s, row.get::<_, Vec<u8>>(10)?)))),
            )
            .optional()?
            .transpose()
    }

    fn delete_site(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM sites WHERE name = ?1", [name])?
            > 0)
    }
}
