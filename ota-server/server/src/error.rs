//! Domain errors: [`ServiceError`] is what the services return (the HTTP layer maps each kind to a status in
//! one place, `api::error`); [`StoreError`] is what storage backends return.

/// Why a service refused or failed a request. Messages are one line an operator or a robot can act on.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller could not be identified (unknown or revoked token, wrong enrollment secret).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (already enrolled, rollout aborted...).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (bad id, bad tag, interrupted upload).
    #[error("{0}")]
    Invalid(String),
    /// The request is well-formed but refused (bundle does not verify, bad stages, unknown bundle).
    #[error("{0}")]
    Rejected(String),
    /// The upload exceeds the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Too many device requests in flight: retry after the delay.
    #[error("{message}")]
    Busy {
        /// Seconds to wait.
        retry_after_secs: u64,
        /// Message.
        message: String,
    },
    /// The device polls faster than allowed: retry after the delay.
    #[error("{message}")]
    TooFast {
        /// Seconds to wait.
        retry_after_secs: u64,
        /// Message.
        message: String,
    },
    /// The robot waits for an operator to admit it (`425 Too Early`): ask again after the delay.
    #[error("{message}")]
    NotYet {
        /// Seconds to wait.
        retry_after_secs: u64,
        /// Message.
        message: String,
    },
    /// A local failure (file system, task); the details belong in the server log, not in the answer.
    #[error("{context}: {detail}")]
    Internal {
        /// What the server was doing ("writing the upload temp file").
        context: &'static str,
        /// The underlying error.
        detail: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// A local failure while doing `context`.
    pub fn internal(context: &'static str, err: impl std::fmt::Display) -> Self {
        ServiceError::Internal {
            context,
            detail: err.to_string(),
        }
    }
}

/// A storage backend failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no, or could not be reached.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    /// `--database` names no backend this server has.
    #[error("--database {0:?} is not a database URL: use postgres://USER@HOST:PORT/DATABASE or sqlite:PATH")]
    Url(String),
    /// A stored value does not decode (the database was edited by hand or by a newer server).
    #[error("corrupt database value in {what}: {detail}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The database schema is newer than this server.
    #[error("database schema version {found} is newer than this server understands ({supported}); upgrade ota-server")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The row that should be updated does not exist.
    #[error("{0} not found in the database")]
    Missing(String),
    /// A compare-and-set write lost: another replica changed the rollout since it was read (the caller reloads it
    /// and decides again).
    #[error("rollout {0} was changed by another server replica meanwhile; try again")]
    Stale(u64),
}
