//! `ota-server devices label`, `groups set|list`, `rollout create` with aim options, `rollout next|retry|revert`
//! against a real server (the admin CLI goes through the typed ApiClient).

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus;
use serde_json::Value;

async fn cli(base: &str, args: &[&str]) -> Output {
    let program = PathBuf::from(env!("CARGO_BIN_EXE_ota-server"));
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend([
        "--server".into(),
        base.into(),
        "--token".into(),
        ADMIN.into(),
    ]);
    tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(all)
            .env_remove("OTA_SERVER_TOKEN")
            .env_remove("OTA_SERVER_URL")
            .arg("--json")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn json_of(base: &str, args: &[&str]) -> Value {
    let out = cli(base, args).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_aim_time_and_revert_from_the_command_line() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let base = server.base.clone();
    let (_, old) = publish(&c, &server, bundle(&[&key], "1.0.0", COMPATIBLE)).await;
    let (_, new) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let tokens = [
        enroll(&c, &server, "r1", &[], COMPATIBLE).await,
        enroll(&c, &server, "r2", &[], COMPATIBLE).await,
    ];
    for t in &tokens {
        poll(&c, &server, t, "1.0.0").await;
    }

    let info = json_of(
        &base,
        &[
            "devices", "label", "r1", "--tag", "row=7", "--group", "night",
        ],
    )
    .await;
    assert_eq!(
        (info["group"].as_str(), info["labels"]["row"].as_str()),
        (Some("night"), Some("7"))
    );
    json_of(&base, &["devices", "label", "r2", "--group", "night"]).await;
    let group = json_of(
        &base,
        &[
            "groups",
            "set",
            "night",
            "--window",
            "mon-fri@22:00-06:00",
            "--timezone",
            "Europe/Berlin",
        ],
    )
    .await;
    assert_eq!(group["devices"], 2);
    assert_eq!(
        group["settings"]["schedule"]["windows"][0]["days"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let groups = json_of(&base, &["groups", "list"]).await;
    assert_eq!(groups[0]["name"], "night");
    let out = cli(
        &base,
        &["groups", "set", "night", "--window", "someday@10:00-11:00"],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("someday"));

    let bundle_id = new["bundle_id"].as_str().unwrap();
    let created = json_of(
        &base,
        &[
            "rollout",
            "create",
            "--bundle",
            bundle_id,
            "--stages",
            "50,100",
            "--group",
            "night",
            "--filter-tag",
            "row=7",
            "--versions",
            ">=1.0, <2",
            "--soak",
            "30m",
            "--deadline",
            "2h",
            "--window",
            "sat@00:00-24:00",
            "--timezone",
            "UTC",
            "--require-confirmation",
            "--failure-threshold",
            "1",
        ],
    )
    .await;
    let id = created["rollout_id"].as_u64().unwrap().to_string();
    assert_eq!(created["counts"]["targeted"], 1, "only r1 carries row=7");
    assert_eq!(created["filter"]["group"], "night");
    assert_eq!(created["rules"]["soak_secs"], 1800);
    assert_eq!(created["rules"]["deadline_secs"], 7200);
    assert_eq!(created["require_confirmation"], true);
    assert_eq!(created["schedule"]["windows"][0]["days"][0], "sat");

    let rid = created["rollout_id"].as_u64().unwrap();
    report(
        &c,
        &server,
        &tokens[0],
        &report_body("f1", rid, ReportStatus::Failure),
    )
    .await;
    let retried = json_of(&base, &["rollout", "retry", &id]).await;
    assert_eq!(retried["counts"]["failed"], 0);
    assert_eq!(retried["counts"]["pending"], 1);
    // The first stage is soaking (30 minutes): `next` starts the last stage now; there is none after it.
    let next = json_of(&base, &["rollout", "next", &id]).await;
    assert_eq!(next["current_stage"], 1);
    let out = cli(&base, &["rollout", "next", &id]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last stage"));

    let out = cli(
        &base,
        &[
            "rollout",
            "revert",
            "--to",
            old["bundle_id"].as_str().unwrap(),
        ],
    )
    .await;
    assert!(!out.status.success(), "a revert names whom it takes back");
    // Both robots report 2.0.0 now: the revert to 1.0.0 targets the group.
    for t in &tokens {
        poll(&c, &server, t, "2.0.0").await;
    }
    let revert = json_of(
        &base,
        &[
            "rollout",
            "revert",
            "--group",
            "night",
            "--to",
            old["bundle_id"].as_str().unwrap(),
            "--stages",
            "100",
        ],
    )
    .await;
    assert_eq!(revert["revert"], true);
    assert_eq!(revert["counts"]["targeted"], 2);
    let offer = poll(&c, &server, &tokens[1], "2.0.0").await.update.unwrap();
    assert!(offer.revert);
    assert_eq!(offer.version.to_string(), "1.0.0");
    server.stop().await;
}
