//! The PostgreSQL store: the backend-generic conformance suite ([`crate::store::conformance`]) on a fresh
//! database of the test kit's throwaway cluster, and what only PostgreSQL has (the `schema_version` table,
//! replicas migrating at once, an unreachable server, `PGPASSWORD`).

use super::*;

fn target() -> Option<crate::store::conformance::Target> {
    let db = ota_testkit::postgres::fresh_database()?;
    let url = db.url().to_string();
    Some(crate::store::conformance::Target {
        open: Box::new(move || Box::new(PostgresStore::open(&url).unwrap())),
        _keep: Box::new(db),
    })
}

crate::store::conformance::suite!(target());

#[test]
fn the_schema_version_is_recorded_and_a_newer_one_is_refused() {
    let Some(db) = ota_testkit::postgres::fresh_database() else {
        return;
    };
    drop(PostgresStore::open(db.url()).unwrap());
    drop(PostgresStore::open(db.url()).unwrap());
    let cluster = db.cluster();
    let version = cluster
        .psql(db.name(), "SELECT version FROM schema_version")
        .unwrap();
    assert_eq!(version.trim(), migrations::latest().to_string());
    cluster
        .psql(db.name(), "UPDATE schema_version SET version = 99")
        .unwrap();
    let err = PostgresStore::open(db.url()).err().unwrap();
    assert!(err.to_string().contains("upgrade ota-server"), "{err}");
}

#[test]
fn replicas_starting_at_once_migrate_once() {
    let Some(db) = ota_testkit::postgres::fresh_database() else {
        return;
    };
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url().to_string();
            std::thread::spawn(move || PostgresStore::open(&url).map(drop))
        })
        .collect();
    for o in opened {
        o.join().unwrap().unwrap();
    }
    let rows = db
        .cluster()
        .psql(db.name(), "SELECT count(*) FROM schema_version")
        .unwrap();
    assert_eq!(rows.trim(), "1");
}

#[test]
fn an_unreachable_server_is_named_and_the_password_comes_from_the_url() {
    // Nothing listens on port 1: the error says PostgreSQL could not be reached.
    let err = PostgresStore::open("postgres://ota:pw@127.0.0.1:1/ota")
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.starts_with("PostgreSQL:"), "{text}");
    assert!(!text.contains(":pw@"), "{text}");
}

#[test]
fn the_password_comes_from_the_url_else_from_pgpassword() {
    let from_env = connect_config("postgres://ota@db:5432/ota", Some("env".into())).unwrap();
    assert_eq!(from_env.get_password(), Some(&b"env"[..]));
    let from_url = connect_config("postgres://ota:url@db/ota", Some("env".into())).unwrap();
    assert_eq!(from_url.get_password(), Some(&b"url"[..]));
    let none = connect_config("postgres://ota@db/ota", None).unwrap();
    assert_eq!(none.get_password(), None);
    assert_eq!(none.get_user(), Some("ota"));
    assert!(connect_config("postgres://ota@db:notaport/ota", None).is_err());
}
