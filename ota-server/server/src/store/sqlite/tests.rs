//! The SQLite store: the backend-generic conformance suite ([`crate::store::conformance`]) on a file in a temp
//! dir, and what only SQLite has (its `user_version`, WAL, refusing a newer file).

use super::*;

fn target() -> Option<crate::store::conformance::Target> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    Some(crate::store::conformance::Target {
        open: Box::new(move || Box::new(SqliteStore::open(&path).unwrap())),
        _keep: Box::new(dir),
    })
}

crate::store::conformance::suite!(target());

#[test]
fn migrations_are_versioned_in_a_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let store = SqliteStore::open(&path).unwrap();
    let conn = store.conn();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SqliteStore::schema_version());
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(err.to_string().contains("upgrade ota-server"), "{err}");
}

#[test]
fn a_link_planted_at_the_database_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"").unwrap(); // an empty file is a database SQLite would happily create in
    let path = dir.path().join("db.sqlite");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    assert!(SqliteStore::open(&path).is_err());
    assert!(
        std::fs::read(&victim).unwrap().is_empty(),
        "the victim was written"
    );
}
