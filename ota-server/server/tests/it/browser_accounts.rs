//! Accounts in a real headless Chromium: an admin signs in with user name and password, adds an operator and a
//! viewer and creates an API token (shown once) from `#/admin`; the viewer sees no action buttons where the
//! operator does, and the API refuses the viewer's change (403); signing out ends the session (its token is
//! refused afterwards); the audit trail on the page names who did what. Screenshot of the admin view:
//! `admin` (see `Session::save_screenshot`).
//!
//! Needs `chromium` and `chromedriver` (`scripts/install-deps.sh browser`): fails under CI without them, prints
//! SKIPPED elsewhere.

use std::time::Duration;

use crate::browser::{open, Session};
use crate::common::*;
use ota_keys::SecretKey;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PASSWORD: &str = "a long enough password";
const NEW_PASSWORD: &str = "a new and long password";

/// `POST /api/login`'s status.
async fn login(c: &reqwest::Client, server: &TestServer, name: &str, password: &str) -> StatusCode {
    c.post(server.url("/api/login"))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}
const WAIT: Duration = Duration::from_secs(10);

async fn sign_in(session: &Session, name: &str) {
    session
        .wait_for(
            "the sign-in form",
            WAIT,
            "const f = document.getElementById('password-form'); return !!f && !document.getElementById('login').hidden",
            json!([]),
            |v| v == true,
        )
        .await;
    session
        .js(
            "document.getElementById('username').value = ''; document.getElementById('password').value = ''",
            json!([]),
        )
        .await;
    session.type_into("#username", name).await;
    session.type_into("#password", PASSWORD).await;
    session.click("#password-submit").await;
    session
        .wait_for(
            "signed in",
            WAIT,
            "return document.getElementById('whoami').textContent",
            json!([]),
            |v| v.as_str().is_some_and(|t| t.starts_with(name)),
        )
        .await;
}

async fn sign_out(session: &Session) {
    session.click("#logout").await;
    session
        .wait_for(
            "the sign-in form after signing out",
            WAIT,
            "return !document.getElementById('login').hidden",
            json!([]),
            |v| v == true,
        )
        .await;
}

async fn token_of(session: &Session) -> String {
    session
        .js(
            "return sessionStorage.getItem('ota-admin-token')",
            json!([]),
        )
        .await
        .as_str()
        .expect("a session token in sessionStorage")
        .to_string()
}

/// `[shown, action buttons]` of a robot's detail view.
const ROBOT_ACTIONS: &str = r#"
const d = document.getElementById('detail');
const shown = !!d && !d.hidden && d.textContent.includes(arguments[0]);
return [shown, document.querySelectorAll('[data-action]').length];
"#;

async fn add_user_in_page(session: &Session, name: &str, role: &str) {
    session.type_into("#new-user-name", name).await;
    session.type_into("#new-user-password", PASSWORD).await;
    session
        .js(
            "document.getElementById('new-user-role').value = arguments[0]",
            json!([role]),
        )
        .await;
    session.click("#add-user").await;
    session
        .wait_for(
            "the new user's row",
            WAIT,
            "const r = document.querySelector(`tr[data-user-row=\"${arguments[0]}\"] select`); return r && r.value",
            json!([name]),
            |v| v == role,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_roles_tokens_and_audit_in_the_browser() {
    if !ota_testkit::tools::require_all(&["chromium", "chromedriver"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let server = TestServer::start(settings(&tmp.path().join("data"), &trust(&[&key], 1))).await;
    let c = client();
    let robot = enroll(&c, &server, "robot-0007", &[("site", "w3")], COMPATIBLE).await;
    poll(&c, &server, &robot, "1.0.0").await;
    // The first admin, with the bootstrap token (what `ota-server users add` does).
    let (status, body) = admin_post(
        &c,
        &server,
        "/api/users",
        json!({"name": "ada", "role": "admin", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (_driver, session) = open(tmp.path()).await;
    session.viewport(1280, 1100).await;
    session.goto(&format!("{}/", server.base)).await;
    sign_in(&session, "ada").await;
    session.goto(&format!("{}/#/admin", server.base)).await;
    session
        .wait_for(
            "the users table",
            WAIT,
            "return document.querySelectorAll('#users-table tbody tr').length",
            json!([]),
            |v| v == 1,
        )
        .await;
    add_user_in_page(&session, "otto", "operator").await;
    add_user_in_page(&session, "vic", "viewer").await;

    // An API token: its secret is shown once, and it works as ada.
    session.type_into("#new-token-name", "ci").await;
    session.click("#create-token").await;
    let (secret, _) = session
        .wait_for(
            "the new token's secret",
            WAIT,
            "const s = document.getElementById('new-token-secret'); return s && s.textContent",
            json!([]),
            |v| v.as_str().is_some_and(|t| t.starts_with("ota-u.")),
        )
        .await;
    let me: Value = c
        .get(server.url("/api/me"))
        .bearer_auth(secret.as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "ada");
    session
        .wait_for(
            "the token's row and the audit rows",
            WAIT,
            "return [document.querySelectorAll('#tokens-table tbody tr').length, document.querySelectorAll('#audit-table tbody tr').length]",
            json!([]),
            |v| v[0] == 1 && v[1].as_u64().unwrap_or(0) >= 4,
        )
        .await;
    assert_eq!(session.save_screenshot("admin").await, (1280, 1100));

    // Signing out ends the session on the server too.
    let ada = token_of(&session).await;
    sign_out(&session).await;
    let r = c
        .get(server.url("/api/me"))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The operator sees the robot's action buttons; the viewer sees none, and the API refuses its change.
    for (name, actions) in [("otto", true), ("vic", false)] {
        sign_in(&session, name).await;
        session
            .goto(&format!("{}/#/robot/robot-0007", server.base))
            .await;
        let (v, _) = session
            .wait_for(
                "the robot's detail",
                WAIT,
                ROBOT_ACTIONS,
                json!(["robot-0007"]),
                |v| v[0] == true && (!actions || v[1].as_u64().unwrap_or(0) > 0),
            )
            .await;
        if !actions {
            assert_eq!(v[1], json!(0), "a viewer sees no action buttons");
            let hidden = session
                .js(
                    "return document.getElementById('admin-link').hidden",
                    json!([]),
                )
                .await;
            assert_eq!(hidden, json!(true));
            let token = token_of(&session).await;
            let r = c
                .delete(server.url("/api/devices/robot-0007"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            let body: Value = r.json().await.unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("needs the operator role"),
                "{body}"
            );
            // Even a viewer changes their own password, by giving the current one; the page stays signed in
            // on the new session the answer carries.
            session.goto(&format!("{}/#/admin", server.base)).await;
            session.click_when_there("#current-password").await;
            session.type_into("#current-password", PASSWORD).await;
            session.type_into("#new-password", NEW_PASSWORD).await;
            session.type_into("#new-password-again", NEW_PASSWORD).await;
            session.click("#change-password").await;
            session
                .wait_for(
                    "the new session",
                    WAIT,
                    "return sessionStorage.getItem('ota-admin-token')",
                    json!([]),
                    |v| v.as_str().is_some_and(|t| t != token),
                )
                .await;
            assert_eq!(
                login(&c, &server, name, PASSWORD).await,
                StatusCode::UNAUTHORIZED,
                "the old password is refused"
            );
            assert_eq!(login(&c, &server, name, NEW_PASSWORD).await, StatusCode::OK);
            let me = c
                .get(server.url("/api/me"))
                .bearer_auth(token_of(&session).await)
                .send()
                .await
                .unwrap();
            assert_eq!(me.status(), StatusCode::OK, "the page's new session works");
        }
        sign_out(&session).await;
    }

    // The audit trail on the page names who did what, the viewer's refused attempt included.
    sign_in(&session, "ada").await;
    session.goto(&format!("{}/#/admin", server.base)).await;
    let (rows, _) = session
        .wait_for(
            "the audit trail",
            WAIT,
            "return [...document.querySelectorAll('#audit-table tbody tr')].map(r => [r.querySelector('.audit-user').textContent, r.querySelector('.audit-action').textContent, r.lastChild.textContent])",
            json!([]),
            |v| v.as_array().is_some_and(|a| a.iter().any(|r| r[0] == "vic")),
        )
        .await;
    let rows = rows.as_array().unwrap();
    let has = |user: &str, action: &str, status: &str| {
        rows.iter()
            .any(|r| r[0] == user && r[1] == action && r[2] == status)
    };
    assert!(has("ada", "POST /api/users", "201"), "{rows:?}");
    assert!(has("ada", "POST /api/tokens", "201"), "{rows:?}");
    assert!(has("ada", "POST /api/logout", "204"), "{rows:?}");
    assert!(
        has("vic", "DELETE /api/devices/{device_id}", "403"),
        "{rows:?}"
    );
    assert!(has("otto", "POST /api/login", "200"), "{rows:?}");
    assert!(has("vic", "PUT /api/me/password", "200"), "{rows:?}");
    session.close().await;
    server.stop().await;
}
