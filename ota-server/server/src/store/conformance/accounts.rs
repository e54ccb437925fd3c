//! The [`crate::store::accounts::AccountStore`] checks of the conformance suite.

use super::Target;
use crate::store::accounts::{ApiTokenRecord, AuditRecord, SessionRecord, UserRecord};
use crate::tokens::Role;

fn user(name: &str, role: Role) -> UserRecord {
    UserRecord {
        name: name.into(),
        role,
        password_hash: format!("$argon2id$hash-of-{name}"),
        created_at: 7,
    }
}

/// Users, sessions, API tokens and audit rows round trip; a user's sessions and tokens go with them; a new
/// password ends the sessions; ended sessions are swept when a new one starts; the trail pages newest first.
pub fn users_sessions_tokens_and_audit_round_trip(t: &Target) {
    let store = (t.open)();
    assert!(!store.has_users().unwrap());
    assert!(store.add_user(&user("ana", Role::Admin)).unwrap());
    assert!(
        !store.add_user(&user("ana", Role::Viewer)).unwrap(),
        "names are unique"
    );
    assert!(store.add_user(&user("bo", Role::Viewer)).unwrap());
    assert!(store.has_users().unwrap());
    assert_eq!(store.user("ana").unwrap(), Some(user("ana", Role::Admin)));
    assert!(store.set_role("bo", Role::Operator).unwrap());
    assert!(!store.set_role("nobody", Role::Operator).unwrap());
    let names: Vec<(String, Role)> = store
        .users()
        .unwrap()
        .into_iter()
        .map(|u| (u.name, u.role))
        .collect();
    assert_eq!(
        names,
        [("ana".into(), Role::Admin), ("bo".into(), Role::Operator)]
    );

    let session = |hash: u8, user: &str, at: u64| SessionRecord {
        token_hash: [hash; 32],
        user: user.into(),
        created_at: at,
        last_used: at,
    };
    store.create_session(&session(1, "bo", 100), 0, 0).unwrap();
    store.create_session(&session(2, "ana", 100), 0, 0).unwrap();
    assert_eq!(
        store.session(&[1; 32]).unwrap(),
        Some((session(1, "bo", 100), Role::Operator))
    );
    store.touch_session(&[1; 32], 150).unwrap();
    store.touch_session(&[1; 32], 120).unwrap();
    assert_eq!(
        store.session(&[1; 32]).unwrap().unwrap().0.last_used,
        150,
        "a use never goes back"
    );
    // A new sign-in sweeps sessions idle since before 140 (ana's).
    store
        .create_session(&session(3, "ana", 200), 140, 0)
        .unwrap();
    assert_eq!(store.session(&[2; 32]).unwrap(), None);
    assert!(store.session(&[1; 32]).unwrap().is_some());
    assert!(store.end_session(&[3; 32]).unwrap());
    assert!(!store.end_session(&[3; 32]).unwrap());
    assert!(store.set_password("bo", "$argon2id$new").unwrap());
    assert_eq!(
        store.user("bo").unwrap().unwrap().password_hash,
        "$argon2id$new"
    );
    assert_eq!(
        store.session(&[1; 32]).unwrap(),
        None,
        "a new password ends the sessions"
    );

    let token = ApiTokenRecord {
        id: "00aa".into(),
        user: "bo".into(),
        name: "ci".into(),
        token_hash: [9; 32],
        created_at: 300,
        last_used: None,
        expires_at: Some(900),
    };
    store.create_api_token(&token).unwrap();
    assert_eq!(
        store.api_token(&[9; 32]).unwrap(),
        Some((token.clone(), Role::Operator))
    );
    store.touch_api_token(&[9; 32], 310).unwrap();
    assert_eq!(store.api_tokens("bo").unwrap()[0].last_used, Some(310));
    assert!(store.api_tokens("ana").unwrap().is_empty());
    assert!(
        !store.revoke_api_token("ana", "00aa").unwrap(),
        "only the owner revokes"
    );
    assert!(store.revoke_api_token("bo", "00aa").unwrap());
    assert_eq!(store.api_token(&[9; 32]).unwrap(), None);

    store.create_api_token(&token).unwrap();
    store.create_session(&session(4, "bo", 400), 0, 0).unwrap();
    assert!(store.remove_user("bo").unwrap());
    assert!(!store.remove_user("bo").unwrap());
    assert_eq!(
        store.session(&[4; 32]).unwrap(),
        None,
        "sessions go with the user"
    );
    assert_eq!(
        store.api_token(&[9; 32]).unwrap(),
        None,
        "tokens go with the user"
    );

    let row = |i: u64| AuditRecord {
        id: 0,
        at: 1000 + i,
        user: "ana".into(),
        action: format!("POST /api/rollouts/{i}/pause"),
        target: format!("rollout_id={i}"),
        address: "192.0.2.1".into(),
        status: 200,
    };
    let ids: Vec<u64> = (0..5)
        .map(|i| store.append_audit(&row(i)).unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let page = store.audit(None, 2).unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(
        page[0],
        AuditRecord {
            id: ids[4],
            ..row(4)
        }
    );
    let rest = store.audit(Some(page[1].id), 10).unwrap();
    assert_eq!(
        rest.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[2], ids[1], ids[0]]
    );
    drop(store);
    let again = (t.open)();
    assert_eq!(
        again.audit(None, 10).unwrap().len(),
        5,
        "the trail survives a reopen"
    );
    assert_eq!(again.user("ana").unwrap(), Some(user("ana", Role::Admin)));
}
