//! Operator accounts over HTTP: the role each route of the table declares is the role it enforces, every change
//! leaves one audit row with its author's name, sessions end at logout, API tokens work until revoked, the
//! bootstrap admin token stops when the first user exists, failed sign-ins are limited, and `ota-server users`
//! manages users with the password on standard input. A user changes their own password only by giving the
//! current one.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;
use ota_keys::SecretKey;
use ota_server::api::routes::{Route, ROUTES};
use ota_server::tokens::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PASSWORD: &str = "a long enough password";

async fn call(
    c: &reqwest::Client,
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = c.request(method, s.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn add_user(c: &reqwest::Client, s: &TestServer, token: &str, name: &str, role: &str) {
    let (status, body) = call(
        c,
        s,
        Method::POST,
        "/api/users",
        token,
        Some(json!({"name": name, "role": role, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn login(
    c: &reqwest::Client,
    s: &TestServer,
    name: &str,
    password: &str,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url("/api/login"))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn session(c: &reqwest::Client, s: &TestServer, name: &str) -> String {
    let (status, body) = login(c, s, name, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["name"], name);
    assert!(body["expires_at"].as_u64().unwrap() > 0);
    body["token"].as_str().unwrap().to_string()
}

/// Asserts an answer's status and that its one-line error says `text`.
fn refused((status, body): (StatusCode, Value), want: StatusCode, text: &str) {
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        status == want && error.contains(text) && !error.contains('\n'),
        "{status} {body}"
    );
}

/// A new API token of the user whose session `token` is: `(secret, id)`.
async fn create_token(
    c: &reqwest::Client,
    s: &TestServer,
    token: &str,
    name: &str,
) -> (String, String) {
    let (status, created) = call(
        c,
        s,
        Method::POST,
        "/api/tokens",
        token,
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_string();
    (secret, created["info"]["id"].as_str().unwrap().to_string())
}

fn method_of(route: &Route) -> Method {
    Method::from_bytes(route.doc.method.as_str().to_uppercase().as_bytes()).unwrap()
}

const VARS: &[(&str, &str)] = &[
    (
        "bundle_id",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    ("rollout_id", "999"),
    ("device_id", "no-such-robot"),
    ("name", "no-such-name"),
    ("token_id", "0000000000000000"),
    ("site", "no-such-site"),
    ("alert_id", "999"),
    ("path", "no-such-file"),
    ("id", "999"),
];

/// The routes a viewer may change: their own session, password and API tokens.
const SELF_SERVICE: &[&str] = &[
    "POST /api/logout",
    "PUT /api/me/password",
    "POST /api/tokens",
    "DELETE /api/tokens/{token_id}",
];

fn label(route: &Route) -> String {
    format!(
        "{} {}",
        route.doc.method.as_str().to_uppercase(),
        route.doc.path
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_enforces_the_role_it_declares_and_every_change_is_audited() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let (status, me) = call(&c, &server, Method::GET, "/api/me", ADMIN, None).await;
    assert_eq!(
        (status, &me),
        (
            StatusCode::OK,
            &json!({"name": "admin-token", "role": "admin"})
        )
    );
    add_user(&c, &server, ADMIN, "ana", "admin").await;
    // The first user ends the bootstrap token, with a message naming the command that adds users.
    let (status, body) = call(&c, &server, Method::GET, "/api/devices", ADMIN, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ota-server users add"),
        "{body}"
    );
    let ana = session(&c, &server, "ana").await;
    add_user(&c, &server, &ana, "oskar", "operator").await;
    add_user(&c, &server, &ana, "vera", "viewer").await;
    let oskar = session(&c, &server, "oskar").await;
    let vera = session(&c, &server, "vera").await;

    // Every mutating route needs more than a viewer, except the caller's own session and tokens.
    for route in ROUTES {
        let Some(needed) = route.doc.auth.role() else {
            continue;
        };
        if route.doc.method != ota_server::openapi::Verb::Get {
            assert!(
                needed > Role::Viewer || SELF_SERVICE.contains(&label(route).as_str()),
                "{} changes something but a viewer may call it",
                label(route)
            );
        }
        for (token, role) in [(&vera, Role::Viewer), (&oskar, Role::Operator)] {
            if role.allows(needed) {
                continue;
            }
            let path = concrete(route.doc.path, VARS);
            let (status, body) =
                call(&c, &server, method_of(route), &path, token, Some(json!({}))).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{} as {role}: {body}",
                label(route)
            );
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains(&format!("needs the {needed} role")) && !error.contains('\n'),
                "{}: {error}",
                label(route)
            );
        }
    }

    // Every change by a user leaves one audit row naming them (refused or not), the sign-out last.
    let (_, page) = call(
        &c,
        &server,
        Method::GET,
        "/api/audit?limit=1000",
        &ana,
        None,
    )
    .await;
    let before = page["entries"].as_array().unwrap().len();
    let mut changes = Vec::new();
    for route in ROUTES.iter().filter(|r| r.doc.auth.role().is_some()) {
        if route.doc.method == ota_server::openapi::Verb::Get || label(route) == "POST /api/logout"
        {
            continue;
        }
        let path = concrete(route.doc.path, VARS);
        let (status, body) =
            call(&c, &server, method_of(route), &path, &ana, Some(json!({}))).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{}: {body}", label(route));
        changes.push(format!(
            "{} {}",
            route.doc.method.as_str().to_uppercase(),
            route.doc.path
        ));
    }
    let (status, _) = call(&c, &server, Method::POST, "/api/logout", &ana, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    changes.push("POST /api/logout".into());
    let ana = session(&c, &server, "ana").await;
    let (_, page) = call(
        &c,
        &server,
        Method::GET,
        "/api/audit?limit=1000",
        &ana,
        None,
    )
    .await;
    let entries = page["entries"].as_array().unwrap();
    // The new rows: the changes, and the sign-in after the sign-out (newest first).
    let new: Vec<&Value> = entries[..entries.len() - before].iter().collect();
    assert_eq!(new.len(), changes.len() + 1, "{new:#?}");
    assert_eq!(new[0]["action"], "POST /api/login");
    assert_eq!(new[0]["target"], "ana");
    let mut actions: Vec<&str> = new[1..]
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        changes.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for e in &new {
        assert_eq!(e["user"], "ana", "{e}");
        assert_eq!(e["address"], "127.0.0.1", "{e}");
    }
    let viewer_refused = entries
        .iter()
        .any(|e| e["user"] == "vera" && e["status"] == 403);
    assert!(viewer_refused, "a refused change is in the trail too");
    let ids: Vec<u64> = entries.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    // Paging: two at a time, then the rest from next_before.
    let (_, first) = call(&c, &server, Method::GET, "/api/audit?limit=2", &ana, None).await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let next = first["next_before"].as_u64().unwrap();
    let (_, second) = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/audit?limit=2&before={next}"),
        &ana,
        None,
    )
    .await;
    assert_eq!(second["entries"][0]["id"].as_u64().unwrap(), ids[2]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_logout_api_tokens_until_revoked_and_sign_ins_are_limited() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    add_user(&c, &server, ADMIN, "ana", "admin").await;
    let ana = session(&c, &server, "ana").await;
    let (status, me) = call(&c, &server, Method::GET, "/api/me", &ana, None).await;
    assert_eq!(
        (status, &me),
        (StatusCode::OK, &json!({"name": "ana", "role": "admin"}))
    );

    // An API token: shown once, works, listed without its secret, refused once revoked.
    let (token, id) = create_token(&c, &server, &ana, "ci").await;
    let (status, me) = call(&c, &server, Method::GET, "/api/me", &token, None).await;
    assert_eq!((status, me["name"].as_str()), (StatusCode::OK, Some("ana")));
    let (_, list) = call(&c, &server, Method::GET, "/api/tokens", &ana, None).await;
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0]["last_used"].as_u64().is_some(), "{list}");
    assert!(
        !list.to_string().contains(&token),
        "the secret is never listed"
    );
    let (status, _) = call(
        &c,
        &server,
        Method::DELETE,
        &format!("/api/tokens/{id}"),
        &ana,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&c, &server, Method::GET, "/api/me", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Logout ends the session: the token is refused afterwards; an API token cannot "log out".
    let (status, _) = call(&c, &server, Method::POST, "/api/logout", &ana, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(&c, &server, Method::GET, "/api/me", &ana, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The last admin stays; a role change takes effect at once.
    let ana = session(&c, &server, "ana").await;
    let (status, body) = call(
        &c,
        &server,
        Method::PUT,
        "/api/users/ana/role",
        &ana,
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = call(&c, &server, Method::DELETE, "/api/users/ana", &ana, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    add_user(&c, &server, &ana, "bo", "operator").await;
    let bo = session(&c, &server, "bo").await;
    let (status, _) = call(
        &c,
        &server,
        Method::PUT,
        "/api/users/bo/role",
        &ana,
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, me) = call(&c, &server, Method::GET, "/api/me", &bo, None).await;
    assert_eq!(me["role"], "viewer");
    // A new password ends the user's sessions.
    let (status, _) = call(
        &c,
        &server,
        Method::PUT,
        "/api/users/bo/password",
        &ana,
        Some(json!({"password": "another long password"})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&c, &server, Method::GET, "/api/me", &bo, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Five wrong passwords, then the pair waits (429 with Retry-After) even for the right one; another user
    // is not affected. Unknown users get the same answer as a wrong password.
    for _ in 0..5 {
        let (status, body) = login(&c, &server, "bo", "wrong password!!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "wrong user name or password");
    }
    let (status, body) = login(&c, &server, "bo", "another long password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("too many failed sign-ins"));
    session(&c, &server, "ana").await;
    let (status, body) = login(&c, &server, "nobody", PASSWORD).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("wrong user name or password")
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_change_their_own_password_by_giving_the_current_one() {
    const NEW: &str = "a new and long password";
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let change = |token: String, current: &str, new: &str| {
        let body = json!({"current": current, "password": new});
        let (c, server) = (c.clone(), &server);
        async move {
            call(
                &c,
                server,
                Method::PUT,
                "/api/me/password",
                &token,
                Some(body),
            )
            .await
        }
    };
    // The bootstrap token has no password to change.
    refused(
        change(ADMIN.into(), PASSWORD, NEW).await,
        StatusCode::CONFLICT,
        "ota-server users add",
    );

    add_user(&c, &server, ADMIN, "root", "admin").await;
    let root = session(&c, &server, "root").await;
    add_user(&c, &server, &root, "ana", "operator").await;
    let (first, second) = (
        session(&c, &server, "ana").await,
        session(&c, &server, "ana").await,
    );
    let (api_token, _) = create_token(&c, &server, &first, "ci").await;

    // A wrong current password changes nothing: 403 (the session stays; a console signs out on 401 only).
    let (status, body) = change(first.clone(), "not the password", NEW).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("the current password is wrong; nothing changed")
        )
    );
    refused(
        change(first.clone(), PASSWORD, "short").await,
        StatusCode::BAD_REQUEST,
        "at least 12 characters",
    );
    assert_eq!(login(&c, &server, "ana", PASSWORD).await.0, StatusCode::OK);

    // The right one: every session ends, the answer is a new one; API tokens keep working.
    let (status, fresh) = change(first.clone(), PASSWORD, NEW).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_eq!(fresh["user"], json!({"name": "ana", "role": "operator"}));
    let fresh = fresh["token"].as_str().unwrap().to_string();
    for (token, want) in [
        (&first, StatusCode::UNAUTHORIZED),
        (&second, StatusCode::UNAUTHORIZED),
        (&fresh, StatusCode::OK),
        (&api_token, StatusCode::OK),
    ] {
        let (status, body) = call(&c, &server, Method::GET, "/api/me", token, None).await;
        assert_eq!(status, want, "{body}");
    }
    assert_eq!(
        login(&c, &server, "ana", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&c, &server, "ana", NEW).await.0, StatusCode::OK);

    // Wrong current passwords count like failed sign-ins: after five, even the right one waits.
    for _ in 0..5 {
        assert_eq!(
            change(api_token.clone(), "not the password", PASSWORD)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }
    refused(
        change(api_token.clone(), NEW, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too many wrong passwords",
    );

    // Each attempt is in the audit trail under ana's name, with its answer.
    let (_, page) = call(
        &c,
        &server,
        Method::GET,
        "/api/audit?limit=1000",
        &root,
        None,
    )
    .await;
    let mine: Vec<u64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["user"] == "ana" && e["action"] == "PUT /api/me/password")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        mine,
        [429, 403, 403, 403, 403, 403, 200, 400, 403],
        "newest first: {page}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_from_the_command_line_with_the_password_on_stdin() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let url = server.url("");
    let run = move |args: &[&str], token: &str, stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota-server"))
            .args(args)
            .args(["--server", url.trim_end_matches('/'), "--token", token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || {
            run(
                &["users", "add", "ana", "--role", "admin"],
                ADMIN,
                &format!("{PASSWORD}\n"),
            )
        }
    })
    .await
    .unwrap();
    assert!(out.0, "{out:?}");
    assert!(out.1.contains("ana  admin"), "{out:?}");
    let c = client();
    let ana = session(&c, &server, "ana").await;
    let out = tokio::task::spawn_blocking({
        let (run, ana) = (run.clone(), ana.clone());
        move || {
            let token = run(&["users", "token", "create", "laptop"], &ana, "");
            let secret = token.1.trim().to_string();
            let added = run(&["users", "add", "vera"], &secret, &format!("{PASSWORD}\n"));
            let role = run(&["users", "set-role", "vera", "operator"], &secret, "");
            let listed = run(&["users", "list"], &secret, "");
            let short = run(&["users", "passwd", "vera"], &secret, "short\n");
            let removed = run(&["users", "remove", "vera"], &secret, "");
            let tokens = run(&["users", "token", "list"], &secret, "");
            let wrong = run(
                &["users", "change-password"],
                &secret,
                "not the password\na new and long password\n",
            );
            let changed = run(
                &["users", "change-password"],
                &secret,
                &format!("{PASSWORD}\na new and long password\n"),
            );
            let refused = run(&["users", "list"], ADMIN, "");
            (
                token, added, role, listed, short, removed, tokens, wrong, changed, refused,
            )
        }
    })
    .await
    .unwrap();
    let (token, added, role, listed, short, removed, tokens, wrong, changed, refused) = out;
    assert!(
        !wrong.0
            && wrong.2.contains("the current password is wrong")
            && wrong.2.trim().lines().count() == 1,
        "{wrong:?}"
    );
    assert!(
        changed.0 && changed.1.contains("password of ana changed"),
        "{changed:?}"
    );
    let c = client();
    assert_eq!(
        login(&c, &server, "ana", "a new and long password").await.0,
        StatusCode::OK
    );
    assert!(
        token.0 && token.1.trim().starts_with("ota-u.") && token.2.contains("shown once"),
        "{token:?}"
    );
    assert!(
        added.0 && role.0 && role.1.contains("vera  operator"),
        "{added:?} {role:?}"
    );
    assert!(
        listed.1.contains("ana  admin") && listed.1.contains("vera  operator"),
        "{listed:?}"
    );
    assert!(
        !short.0 && short.2.contains("at least 12 characters"),
        "{short:?}"
    );
    assert!(removed.0, "{removed:?}");
    assert!(
        tokens.1.contains("laptop") && !tokens.1.contains("ota-u."),
        "{tokens:?}"
    );
    assert!(
        !refused.0 && refused.2.contains("ota-server users add"),
        "{refused:?}"
    );
    server.stop().await;
}
