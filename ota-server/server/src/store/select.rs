//! Which backend a server runs on, from one URL (`--database`, the `database` config key): nothing or
//! `sqlite:PATH` for the embedded file, `postgres://...` for a shared PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::Store;
use crate::error::StoreError;

/// The SQLite file of a data directory when no URL is given (where servers have always kept it).
pub const DEFAULT_SQLITE_FILE: &str = "ota.sqlite";

/// A chosen backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl Backend {
    /// Decides the backend (no I/O): `None` or empty is `data_dir/ota.sqlite`; `sqlite:PATH` (or
    /// `sqlite://PATH`) is that file, relative to `data_dir` unless absolute; `postgres://` and
    /// `postgresql://` URLs are PostgreSQL.
    pub fn from_url(url: Option<&str>, data_dir: &Path) -> Result<Backend, StoreError> {
        let url = url.map(str::trim).unwrap_or_default();
        if url.is_empty() {
            return Ok(Backend::Sqlite(data_dir.join(DEFAULT_SQLITE_FILE)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.is_empty() {
                return Ok(Backend::Sqlite(data_dir.join(path)));
            }
        }
        Err(StoreError::Url(redact(url)))
    }

    /// What to name in logs and errors (no password).
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite(path) => format!("SQLite database {}", path.display()),
            Backend::Postgres(url) => format!("PostgreSQL database {}", redact(url)),
        }
    }
}

/// Opens the store `url` names ([`Backend::from_url`]), creating and migrating its schema as needed.
pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match Backend::from_url(url, data_dir)? {
        Backend::Sqlite(path) => Arc::new(SqliteStore::open(&path)?),
        Backend::Postgres(url) => Arc::new(PostgresStore::open(&url)?),
    })
}

/// `url` without its password (`postgres://user:secret@host/db` -> `postgres://user:***@host/db`), for logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = rest[..at].find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end],
        &rest[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls_choose_the_backend() {
        let dir = Path::new("/var/lib/ota-server");
        assert_eq!(
            Backend::from_url(None, dir).unwrap(),
            Backend::Sqlite(dir.join("ota.sqlite"))
        );
        assert_eq!(
            Backend::from_url(Some("sqlite:other.db"), dir).unwrap(),
            Backend::Sqlite(dir.join("other.db"))
        );
        assert_eq!(
            Backend::from_url(Some("sqlite:///srv/x.db"), dir).unwrap(),
            Backend::Sqlite("/srv/x.db".into())
        );
        let pg = "postgres://ota@db:5432/ota";
        assert_eq!(
            Backend::from_url(Some(pg), dir).unwrap(),
            Backend::Postgres(pg.into())
        );
        let err = Backend::from_url(Some("mysql://u:hunter2@h/d"), dir).unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ota:s3cret@db:5432/ota?sslmode=disable"),
            "postgres://ota:***@db:5432/ota?sslmode=disable"
        );
        assert_eq!(redact("postgres://ota@db/ota"), "postgres://ota@db/ota");
        assert_eq!(redact("postgres://db/ota"), "postgres://db/ota");
    }

    proptest! {
        #[test]
        fn a_password_never_survives_redaction(
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9!#$%^&*()]{1,16}",
            host in "[a-z]{1,8}",
        ) {
            let url = format!("postgres://{user}:{password}@{host}:5432/ota");
            let shown = redact(&url);
            prop_assert!(!shown.contains(&format!(":{password}@")), "{}", shown);
            prop_assert_eq!(shown, format!("postgres://{user}:***@{host}:5432/ota"));
        }
    }
}
