//! The `sites` table on PostgreSQL: the same rows as on SQLite, the plan image in a BYTEA column. The queries
//! are [`Tables`]'; [`PostgresStore`] runs each through [`super::off_runtime`] like every other store call.

use ota_protocol::sites::SiteInfo;
use postgres::Row;

use super::{off_runtime, PostgresStore, Tables};
use crate::error::StoreError;
use crate::store::sites::{format, SiteStore, COLUMNS};

fn from_row(row: &Row) -> Result<SiteInfo, StoreError> {
    Ok(SiteInfo {
        name: row.get(0),
        width: row.get::<_, i64>(1) as u32,
        height: row.get::<_, i64>(2) as u32,
        scale: row.get(3),
        origin_x: row.get(4),
        origin_y: row.get(5),
        format: format(row.get(6))?,
        bytes: row.get::<_, i64>(7) as u64,
        digest: row.get(8),
        uploaded_at: row.get::<_, i64>(9) as u64,
    })
}

impl SiteStore for Tables {
    fn put_site(&self, s: &SiteInfo, image: &[u8]) -> Result<bool, StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let existed = tx
            .query_opt("SELECT 1 FROM sites WHERE name = $1 FOR UPDATE", &[&s.name])?
            .is_some();
        tx.execute(
            &format!(
                "INSERT INTO sites ({COLUMNS}, image)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (name) DO UPDATE SET width = EXCLUDED.width, height = EXCLUDED.height,
                     scale = EXCLUDED.scale, origin_x = EXCLUDED.origin_x, origin_y = EXCLUDED.origin_y,
                     format = EXCLUDED.format, bytes = EXCLUDED.bytes, digest = EXCLUDED.digest,
                     uploaded_at = EXCLUDED.uploaded_at, image = EXCLUDED.image"
            ),
            &[
                &s.name,
                &i64::from(s.width),
                &i64::from(s.height),
                &s.scale,
                &s.origin_x,
                &s.origin_y,
                &s.format.as_str(),
                &(s.bytes as i64),
                &s.digest,
                &(s.uploaded_at as i64),
                &image,
            ],
        )?;
        tx.commit()?;
        Ok(existed)
    }

    fn sites(&self) -> Result<Vec<SiteInfo>, StoreError> {
        self.pool
            .get()?
            .query(&format!("SELECT {COLUMNS} FROM sites ORDER BY name"), &[])?
            .iter()
            .map(from_row)
            .collect()
    }

    fn site(&self, name: &str) -> Result<Option<SiteInfo>, StoreError> {
        self.pool
            .get()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM sites WHERE name = $1"),
                &[&name],
            )?
            .map(|row| from_row(&row))
            .transpose()
    }

    fn site_image(&self, name: &str) -> Result<Option<(SiteInfo, Vec<u8>)>, StoreError> {
        self.pool
            .get()?
            .query_opt(
                &format!("SELECT {COLUMNS}, image FROM sites WHERE name = $1"),
                &[&name],
            )?
            .map(|row| Ok((from_row(&row)?, row.get::<_, Vec<u8>>(10))))
            .transpose()
    }

    fn delete_site(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .pool
            .get()?
            .execute("DELETE FROM sites WHERE name = $1", &[&name])?
            > 0)
    }
}

impl SiteStore for PostgresStore {
    fn put_site(&self, site: &SiteInfo, image: &[u8]) -> Result<bool, StoreError> {
        off_runtime(|| self.tables.put_site(site, image))
    }

    fn sites(&self) -> Result<Vec<SiteInfo>, StoreError> {
        off_runtime(|| self.tables.sites())
    }

    fn site(&self, name: &str) -> Result<Option<SiteInfo>, StoreError> {
        off_runtime(|| self.tables.site(name))
    }

    fn site_image(&self, name: &str) -> Result<Option<(SiteInfo, Vec<u8>)>, StoreError> {
        off_runtime(|| self.tables.site_image(name))
    }

    fn delete_site(&self, name: &str) -> Result<bool, StoreError> {
        off_runtime(|| self.tables.delete_site(name))
    }
}
