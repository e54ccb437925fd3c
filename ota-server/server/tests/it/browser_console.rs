//! The console in a real headless Chromium against a real server (10,000 robots written to the store before it
//! starts, three real ones enrolled over the API): the first page renders in < 2 s; every column sorts as the
//! API sorts; every action is done by clicking (create a rollout with a filter, stages and a guard, pause,
//! resume, next stage, retry failed, abort after a confirmation, edit a robot's tags and group, revert a group,
//! decommission) and checked through the API afterwards; drill-down rollout → its robots → robot → back; a
//! report reaches the screen in < 1 s (measured and printed; the assertion is generous); stored text with
//! markup renders as text; at phone width the robot view is a full-screen sheet and the table scrolls
//! sideways; a viewer sees no action buttons and the API refuses them. Screenshots of the fleet, rollout and
//! robot views: `fleet`, `rollout`, `robot` (see `Session::save_screenshot`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::browser::{open, Session, PATIENCE};
use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::DeviceLabels;
use ota_server::store::{DeviceRecord, DeviceState};
use serde_json::{json, Value};

const BULK: usize = 10_000;
const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\"><b>bold</b>";

/// 10,000 robots straight into the store (the fast path: enrolling them over the API would take minutes).
fn seed_store(data_dir: &std::path::Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = ota_server::store::open(None, data_dir).expect("open the store");
    let started = Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..BULK {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
        store
            .upsert_device(&DeviceRecord {
                device_id: format!("zz-bulk-{i:05}"),
                compatible: COMPATIBLE.into(),
                tags: BTreeMap::from([("site".to_string(), format!("s{}", i % 7))]),
                token_id: format!("bulk{i:08}"),
                token_hash: hash,
                token_expires_at: None,
                enrolled_at: 1_700_000_000 + i as u64,
                labels: DeviceLabels::default(),
                state: DeviceState {
                    current_version: Some(semver::Version::new(1, (i % 3) as u64, 0)),
                    // Seen lately: a live fleet (robots unseen for days would each raise an alert).
                    last_seen: Some(now - (i % 600) as u64),
                    ..DeviceState::default()
                },
            })
            .unwrap();
    }
    println!(
        "seeded {BULK} robots into the store in {:?}",
        started.elapsed()
    );
}

/// The ids of the rows on the page, in order.
const ROW_IDS: &str =
    "return [...document.querySelectorAll('#device-rows tr')].map(r => r.getAttribute('data-device-id'))";

async fn api(
    c: &reqwest::Client,
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let r = c
        .request(method, server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Types `text` into the filter and waits for exactly `expect` (`None`: a full first page).
async fn filter(session: &Session, text: &str, expect: Option<&[&str]>) {
    session.clear("#filter").await;
    session
        .type_into("#filter", if text.is_empty() { " " } else { text })
        .await;
    let want = expect.map(|e| json!(e));
    session
        .wait_for(
            &format!("rows for filter {text:?}"),
            PATIENCE,
            ROW_IDS,
            json!([]),
            |v| match &want {
                Some(w) => v == w,
                None => v.as_array().is_some_and(|a| a.len() == 50),
            },
        )
        .await;
}

async fn click_action(session: &Session, action: &str) {
    session
        .click_when_there(&format!("button[data-action=\"{action}\"]"))
        .await;
}

async fn rollout_state(c: &reqwest::Client, server: &TestServer, id: u64) -> Value {
    admin_get(c, server, &format!("/api/rollouts/{id}")).await["rollout"].clone()
}

/// Polls the API until `pred` holds for the rollout (a click's request is asynchronous).
async fn until_rollout(
    c: &reqwest::Client,
    server: &TestServer,
    id: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = rollout_state(c, server, id).await;
        if pred(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "rollout {id}: {what}; now {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_acts_by_clicking_at_fleet_scale() {
    if !ota_testkit::tools::require_all(&["chromium", "chromedriver"]) {
        return;
    }
    // The data dir on tmpfs where there is one: 10,000 store writes without a disk flush each.
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let key = SecretKey::generate();
    let data = tmp.path().join("data");
    seed_store(&data);
    let server = TestServer::start(settings(&data, &trust(&[&key], 1))).await;
    let c = client();

    let a = enroll(&c, &server, "robot-a", &[("site", "alpha")], COMPATIBLE).await;
    let b = enroll(&c, &server, "robot-b", &[("site", "beta")], COMPATIBLE).await;
    let _evil = enroll(&c, &server, "robot-c", &[("site", HOSTILE)], COMPATIBLE).await;
    for t in [&a, &b] {
        poll(&c, &server, t, "1.0.0").await;
    }
    let (_, old) = publish(&c, &server, bundle(&[&key], "1.0.0", COMPATIBLE)).await;
    let (_, new) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let old_id = old["bundle_id"].as_str().unwrap().to_string();
    let new_id = new["bundle_id"].as_str().unwrap().to_string();

    let (driver, session) = open(tmp.path()).await;

    // First page of 10,003 robots.
    let started = Instant::now();
    session
        .goto(&format!("{}/#token={ADMIN}", server.base))
        .await;
    let (v, _) = session
        .wait_for("the first page", PATIENCE, ROW_IDS, json!([]), |v| {
            v.as_array().is_some_and(|a| a.len() == 50)
        })
        .await;
    let first_page = started.elapsed();
    let in_page = session
        .js("return window.__fleetRenderedMs", json!([]))
        .await;
    println!("10,003 robots: first page rendered {first_page:?} after navigation (request + render in the page: {in_page} ms)");
    let asked = Instant::now();
    admin_get(
        &c,
        &server,
        "/api/devices?page=1&per_page=50&sort=last_seen&order=desc",
    )
    .await;
    println!(
        "GET /api/devices?page=1 (10,003 robots, sorted by last seen): {:?}",
        asked.elapsed()
    );
    assert_eq!(v[0], json!("robot-a"));
    let count = session
        .js(
            "return document.getElementById('fleet-count').textContent",
            json!([]),
        )
        .await;
    assert_eq!(count, json!("10003 devices"));

    // Every column sorts as the API sorts, both ways.
    for key in [
        "device",
        "compatible",
        "tags",
        "version",
        "slot",
        "last_seen",
        "status",
        "battery",
        "health",
        "maintenance",
    ] {
        // The device column is the current sort: its first click turns it around.
        let orders = if key == "device" {
            ["desc", "asc"]
        } else {
            ["asc", "desc"]
        };
        for order in orders {
            session
                .click(&format!("th[data-sort=\"{key}\"] button"))
                .await;
            let page = admin_get(
                &c,
                &server,
                &format!("/api/devices?page=1&per_page=50&sort={key}&order={order}"),
            )
            .await;
            let want: Vec<Value> = page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["device_id"].clone())
                .collect();
            let want = Value::Array(want);
            session
                .wait_for(&format!("sorted by {key} {order}"), PATIENCE,
                    "const th = document.querySelector(`th[data-sort=\"${arguments[0]}\"]`);
                     return [th.getAttribute('aria-sort'), [...document.querySelectorAll('#device-rows tr')].map(r => r.getAttribute('data-device-id'))]",
                    json!([key]),
                    |v| v[0] == json!(if order == "asc" { "ascending" } else { "descending" }) && v[1] == want)
                .await;
        }
    }
    session.click("th[data-sort=\"device\"] button").await; // back to device ascending
    session.save_screenshot("fleet").await;

    // Stored text is text.
    filter(&session, "robot-c", Some(&["robot-c"])).await;
    let escaped = session
        .js("const row = document.querySelector('tr[data-device-id=\"robot-c\"]');
             return [row.querySelector('td.col-tags').textContent, row.querySelectorAll('img, b').length,
                     document.querySelectorAll('main img').length, window.__pwned === undefined]", json!([]))
        .await;
    assert_eq!(escaped, json!([format!("site={HOSTILE}"), 0, 0, true]));
    filter(&session, "", None).await;

    // Create a rollout by clicking: filter by tag, two stages, a guard.
    session.click("#new-rollout").await;
    session
        .click_when_there(&format!("#f-bundle option[value=\"{new_id}\"]"))
        .await;
    session
        .type_into("#f-name", "2.0.0 to alpha <i>now</i>")
        .await;
    session.type_into("#f-tags", "site=alpha").await;
    session.clear("#f-stages").await;
    session.type_into("#f-stages", "50,100").await;
    session.click("#f-add-window").await;
    session.click(".window-row .w-day[value=\"sat\"]").await;
    session.type_into("#f-timezone", "Europe/Berlin").await;
    session.click("#f-add-guard").await;
    session
        .type_into(".guard-row .g-metric", "inference_latency_ms")
        .await;
    session.type_into(".guard-row .g-value", "25").await;
    session.click("#f-submit").await;
    let (hash, _) = session
        .wait_for(
            "the new rollout's view",
            PATIENCE,
            "return location.hash",
            json!([]),
            |v| v.as_str().is_some_and(|h| h.starts_with("#/rollout/")),
        )
        .await;
    let rid: u64 = hash
        .as_str()
        .unwrap()
        .trim_start_matches("#/rollout/")
        .parse()
        .unwrap();
    let r = rollout_state(&c, &server, rid).await;
    assert_eq!(r["name"], json!("2.0.0 to alpha <i>now</i>"));
    assert_eq!(r["bundle_id"], json!(new_id));
    assert_eq!(r["filter"]["tags"], json!({"site": "alpha"}));
    assert_eq!(r["stages"], json!([50, 100]));
    assert_eq!(
        r["schedule"]["windows"],
        json!([{"days": ["sat"], "start": "01:00", "end": "05:00"}])
    );
    assert_eq!(r["schedule"]["timezone"], json!("Europe/Berlin"));
    assert_eq!(r["guards"][0]["metric"], json!("inference_latency_ms"));
    assert_eq!(r["guards"][0]["max_increase_percent"], json!(25.0));
    let title = session
        .js(
            "return document.getElementById('rollout-title').textContent",
            json!([rid]),
        )
        .await;
    assert_eq!(
        title,
        json!(format!("#{rid} 2.0.0 to alpha <i>now</i>")),
        "the name is text"
    );

    // Drill down: the rollout's robots → a robot → back to the rollout.
    session
        .wait_for("the rollout's robots", PATIENCE, ROW_IDS, json!([]), |v| {
            *v == json!(["robot-a"])
        })
        .await;
    session
        .click("tr[data-device-id=\"robot-a\"] button.device-link")
        .await;
    session
        .wait_for("robot-a's view", PATIENCE,
            "return !document.getElementById('detail').hidden && document.getElementById('detail-title').textContent",
            json!([]), |v| v == "robot-a")
        .await;
    session.click("#detail-close").await;
    session
        .wait_for(
            "back at the rollout",
            PATIENCE,
            "return location.hash",
            json!([]),
            |v| *v == json!(format!("#/rollout/{rid}")),
        )
        .await;
    session.save_screenshot("rollout").await;

    // Pause, resume, next stage.
    click_action(&session, "pause").await;
    until_rollout(&c, &server, rid, "paused", |r| r["state"] == "paused").await;
    click_action(&session, "resume").await;
    until_rollout(&c, &server, rid, "active again", |r| r["state"] == "active").await;
    click_action(&session, "next").await;
    until_rollout(&c, &server, rid, "in stage 2", |r| r["current_stage"] == 1).await;

    // Retry failed: robot-a takes the offer and fails; the retry offers it again.
    assert!(
        poll(&c, &server, &a, "1.0.0").await.update.is_some(),
        "robot-a is offered 2.0.0"
    );
    let (status, _) = report(
        &c,
        &server,
        &a,
        &report_body("a-1", rid, ReportStatus::Failure),
    )
    .await;
    assert!(status.is_success());
    until_rollout(&c, &server, rid, "robot-a's failure counted", |r| {
        r["counts"]["failed"] == 1
    })
    .await;
    click_action(&session, "retry").await;
    until_rollout(&c, &server, rid, "the failure retried", |r| {
        r["counts"]["failed"] == 0
    })
    .await;

    // A report reaches the screen in under a second.
    filter(&session, "robot-a", Some(&["robot-a"])).await;
    let sent = Instant::now();
    let (status, _) = report(
        &c,
        &server,
        &a,
        &report_body("a-2", rid, ReportStatus::Downloading),
    )
    .await;
    assert!(status.is_success());
    let (_, took) = session
        .wait_for("robot-a downloading", PATIENCE,
            "const r = document.querySelector('tr[data-device-id=\"robot-a\"]'); return r && r.getAttribute('data-status')",
            json!([]), |v| v == "downloading")
        .await;
    println!(
        "report → screen: {took:?} after the report's answer ({:?} after sending it)",
        sent.elapsed()
    );

    // Abort asks first: cancel keeps it (the dialog closes, nothing is sent), confirm aborts.
    let before = rollout_state(&c, &server, rid).await["state"].clone();
    click_action(&session, "abort").await;
    session.click_when_there("#confirm-cancel").await;
    session
        .wait_for(
            "the dialog to close",
            PATIENCE,
            "return document.getElementById('confirm-dialog') === null",
            json!([]),
            |v| v == true,
        )
        .await;
    assert_eq!(rollout_state(&c, &server, rid).await["state"], before);
    click_action(&session, "abort").await;
    session.click_when_there("#confirm-ok").await;
    until_rollout(&c, &server, rid, "aborted", |r| r["state"] == "aborted").await;

    // A robot's tags and group, edited in its view.
    session
        .goto(&format!("{}/#/robot/robot-b", server.base))
        .await;
    click_action(&session, "edit-labels").await;
    session
        .type_into("#labels-tags", &format!("zone={HOSTILE}"))
        .await;
    session.type_into("#labels-group", "line-2").await;
    session.click("#labels-save").await;
    let deadline = Instant::now() + PATIENCE;
    let device = loop {
        let d = admin_get(&c, &server, "/api/devices/robot-b").await;
        if d["device"]["group"] == "line-2" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(device["device"]["group"], json!("line-2"));
    assert_eq!(device["device"]["labels"], json!({"zone": HOSTILE}));
    session
        .wait_for("the operator tags shown as text", PATIENCE,
            "const d = document.getElementById('detail'); return [d.textContent.includes(arguments[0]), d.querySelectorAll('img, b').length]",
            json!([format!("zone={HOSTILE}")]), |v| *v == json!([true, 0]))
        .await;
    session.save_screenshot("robot").await;

    // Revert group line-2 to 1.0.0: asks first.
    session.goto(&format!("{}/#/", server.base)).await;
    session.click_when_there("#new-revert").await;
    session
        .click_when_there(&format!("#f-bundle option[value=\"{old_id}\"]"))
        .await;
    session.type_into("#f-group", "line-2").await;
    session.click("#f-submit").await;
    session.click_when_there("#confirm-ok").await;
    let (hash, _) = session
        .wait_for(
            "the revert's view",
            PATIENCE,
            "return location.hash",
            json!([]),
            |v| {
                v.as_str()
                    .is_some_and(|h| h.starts_with("#/rollout/") && h != format!("#/rollout/{rid}"))
            },
        )
        .await;
    let revert_id: u64 = hash
        .as_str()
        .unwrap()
        .trim_start_matches("#/rollout/")
        .parse()
        .unwrap();
    let r = rollout_state(&c, &server, revert_id).await;
    assert_eq!(
        (
            r["revert"].clone(),
            r["filter"]["group"].clone(),
            r["bundle_id"].clone()
        ),
        (json!(true), json!("line-2"), json!(old_id))
    );

    // Decommission robot-c after a confirmation.
    session
        .goto(&format!("{}/#/robot/robot-c", server.base))
        .await;
    click_action(&session, "decommission").await;
    session.click_when_there("#confirm-ok").await;
    let deadline = Instant::now() + PATIENCE;
    while api(
        &c,
        &server,
        reqwest::Method::GET,
        "/api/devices/robot-c",
        ADMIN,
    )
    .await
    .0 != 404
    {
        assert!(Instant::now() < deadline, "robot-c is still enrolled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phone width: the robot view is a full-screen sheet with a back button; the table scrolls sideways.
    session.viewport(390, 800).await;
    session
        .goto(&format!("{}/#/robot/robot-a", server.base))
        .await;
    let (sheet, _) = session
        .wait_for("the robot sheet", PATIENCE,
            "const d = document.getElementById('detail'); if (d.hidden) return null;
             const r = d.getBoundingClientRect(); const back = document.getElementById('detail-close').getBoundingClientRect();
             return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height), back.width > 0]",
            json!([]), |v| !v.is_null())
        .await;
    assert_eq!(
        sheet,
        json!([0, 0, 390, 800, true]),
        "the robot view covers the phone's screen"
    );
    session.click("#detail-close").await;
    session
        .wait_for(
            "the sheet to close",
            PATIENCE,
            "return document.getElementById('detail').hidden",
            json!([]),
            |v| v == true,
        )
        .await;
    session.goto(&format!("{}/#/", server.base)).await;
    let (scroll, _) = session
        .wait_for("the table at phone width", PATIENCE,
            "const s = document.querySelector('.table-scroll'); const d = document.getElementById('detail');
             return d.hidden && document.querySelectorAll('#device-rows tr').length > 0 ? [s.scrollWidth > s.clientWidth, document.documentElement.scrollWidth <= 390] : null",
            json!([]), |v| !v.is_null())
        .await;
    assert_eq!(
        scroll,
        json!([true, true]),
        "the table scrolls inside its box, the page does not"
    );
    session.viewport(1280, 800).await;

    // A viewer sees no action buttons, and the API refuses the actions.
    // (The first user ends the bootstrap admin token: this comes last.)
    let (status, body) = admin_post(
        &c,
        &server,
        "/api/users",
        json!({"name": "vic", "role": "viewer", "password": "correct horse battery staple"}),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{body}");
    let login: Value = c
        .post(server.url("/api/login"))
        .json(&json!({"username": "vic", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer = login["token"]
        .as_str()
        .expect("a session token")
        .to_string();
    session
        .goto(&format!("{}/?viewer#token={viewer}", server.base))
        .await;
    session
        .wait_for("the viewer's fleet", PATIENCE, ROW_IDS, json!([]), |v| {
            v.as_array().is_some_and(|a| a.len() == 50)
        })
        .await;
    session
        .goto(&format!("{}/?viewer#/rollout/{rid}", server.base))
        .await;
    session
        .wait_for(
            "the rollout as a viewer",
            PATIENCE,
            "const t = document.getElementById('rollout-title'); return t && t.textContent",
            json!([]),
            |v| {
                v.as_str()
                    .is_some_and(|t| t.starts_with(&format!("#{rid}")))
            },
        )
        .await;
    session
        .goto(&format!("{}/?viewer#/robot/robot-a", server.base))
        .await;
    session
        .wait_for("robot-a as a viewer", PATIENCE,
            "return document.getElementById('detail-title') && document.getElementById('detail-title').textContent", json!([]), |v| v == "robot-a")
        .await;
    let buttons = session
        .js("return [document.querySelectorAll('button[data-action], #new-rollout, #new-revert').length, document.body.dataset.role]", json!([]))
        .await;
    assert_eq!(
        buttons,
        json!([0, "viewer"]),
        "a viewer sees no action buttons"
    );
    let (status, _) = api(
        &c,
        &server,
        reqwest::Method::POST,
        &format!("/api/rollouts/{revert_id}/pause"),
        &viewer,
    )
    .await;
    assert_eq!(status, 403, "the API refuses a viewer's action");
    let (status, _) = api(
        &c,
        &server,
        reqwest::Method::DELETE,
        "/api/devices/robot-a",
        &viewer,
    )
    .await;
    assert_eq!(status, 403);

    session.close().await;
    drop(driver);
    server.stop().await;
}
