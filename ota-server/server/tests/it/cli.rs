//! The command-line tools end to end against a real server: `ota-bundle publish` (bundle-tool) and
//! `ota-server rollout ...` / `ota-server devices ...`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use ota_keys::SecretKey;

/// `ota-bundle` lives in another package, so Cargo does not build it for this package's tests: build it (a
/// no-op when it is up to date, as after `cargo test --workspace`) into the same target directory. Cargo releases
/// the target directory lock before it runs tests, so this does not wait on the outer `cargo test`.
pub(crate) fn ota_bundle() -> PathBuf {
    let server_bin = PathBuf::from(env!("CARGO_BIN_EXE_ota-server"));
    let profile_dir = server_bin.parent().unwrap();
    let target = profile_dir.parent().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "ota-bundle-tool",
        "--bin",
        "ota-bundle",
        "--target-dir",
    ])
    .arg(target)
    .current_dir(&workspace);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for ota-bundle");
    assert!(status.success(), "building ota-bundle failed");
    server_bin.with_file_name("ota-bundle")
}

async fn run(
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("OTA_ADMIN_TOKEN")
            .env_remove("OTA_SERVER_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_manage_rollouts_from_the_command_line() {
    let tool = tokio::task::spawn_blocking(ota_bundle).await.unwrap();
    let server_cli = PathBuf::from(env!("CARGO_BIN_EXE_ota-server"));
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("good.otab");
    let bytes = bundle(&[&key], "3.1.0", COMPATIBLE);
    std::fs::write(&good, &bytes).unwrap();
    let bad = files.path().join("bad.otab");
    std::fs::write(&bad, bundle(&[&SecretKey::generate()], "3.1.0", COMPATIBLE)).unwrap();
    let base = server.base.clone();
    let publish_args = |token: &str, file: &Path| {
        vec![
            "publish".into(),
            "--server".into(),
            base.clone(),
            "--token".into(),
            token.into(),
            file.display().to_string(),
        ]
    };

    let out = run(tool.clone(), publish_args(ADMIN, &good), vec![]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert!(
        stdout.contains(&sha) && stdout.contains("3.1.0") && stdout.starts_with("PUBLISHED"),
        "{stdout}"
    );
    let out = run(tool.clone(), publish_args(ADMIN, &good), vec![]).await;
    assert!(text(&out).0.starts_with("ALREADY PUBLISHED"));
    // --json prints the API's answer; the server URL and token come from the variables ota-server uses too.
    let out = run(
        tool.clone(),
        vec![
            "publish".into(),
            "--json".into(),
            good.display().to_string(),
        ],
        vec![
            ("OTA_SERVER_URL", base.clone().leak()),
            ("OTA_ADMIN_TOKEN", ADMIN),
        ],
    )
    .await;
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&out)));
    assert_eq!(answer["bundle_id"], sha.as_str());
    assert_eq!(answer["deduplicated"], true);
    let out = run(tool.clone(), publish_args(ADMIN, &bad), vec![]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("422") && stderr.contains("bundle rejected"),
        "{stderr}"
    );
    let out = run(tool.clone(), publish_args("wrong-token", &good), vec![]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("unknown or revoked token"),
        "{}",
        text(&out).1
    );
    let out = run(
        tool.clone(),
        publish_args(ADMIN, &files.path().join("missing.otab")),
        vec![],
    )
    .await;
    assert!(!out.status.success() && text(&out).1.contains("missing.otab"));

    let remote = |cmd: &[&str]| {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(["--server".to_string(), base.clone()]);
        v
    };
    let token_env = vec![("OTA_ADMIN_TOKEN", ADMIN)];
    for (list, none) in [
        (["rollout", "list"], "no rollouts\n"),
        (["devices", "list"], "no devices enrolled\n"),
    ] {
        let out = run(server_cli.clone(), remote(&list), token_env.clone()).await;
        assert!(out.status.success());
        assert_eq!(text(&out).0, none);
    }

    let c = client();
    for i in 0..4 {
        let token = enroll(
            &c,
            &server,
            &format!("robot-{i}"),
            &[("site", "w3")],
            COMPATIBLE,
        )
        .await;
        if i == 0 {
            poll(&c, &server, &token, "1.0.0").await;
        }
    }
    let out = run(
        server_cli.clone(),
        remote(&[
            "rollout",
            "create",
            "--bundle",
            &sha,
            "--tag",
            "site=w3",
            "--stages",
            "50,100",
            "--name",
            "cli rollout",
        ]),
        token_env.clone(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("created rollout") && stdout.contains("targeted 4 offered 2"),
        "{stdout}"
    );
    for (cmd, expect) in [
        ("pause", "paused"),
        ("resume", "active"),
        ("abort", "aborted"),
    ] {
        let out = run(
            server_cli.clone(),
            remote(&["rollout", cmd, "1"]),
            token_env.clone(),
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{cmd}: {stderr}");
        assert!(stdout.contains(expect), "{cmd}: {stdout}");
    }
    let out = run(
        server_cli.clone(),
        remote(&["rollout", "list", "--json"]),
        token_env.clone(),
    )
    .await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["state"], "aborted");
    assert_eq!(list[0]["name"], "cli rollout");
    let out = run(
        server_cli.clone(),
        remote(&["rollout", "show", "1"]),
        token_env.clone(),
    )
    .await;
    assert_eq!(text(&out).0.lines().count(), 5, "{}", text(&out).0);
    let out = run(
        server_cli.clone(),
        remote(&["rollout", "pause", "99"]),
        token_env.clone(),
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no rollout 99"), "{}", text(&out).1);
    let out = run(
        server_cli.clone(),
        remote(&["devices", "list"]),
        token_env.clone(),
    )
    .await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("robot-")).count(),
        4,
        "{stdout}"
    );
    // Times are RFC 3339 in UTC in the text, Unix seconds only in --json.
    let robot0 = stdout.lines().find(|l| l.starts_with("robot-0")).unwrap();
    assert!(
        robot0.contains("last seen 20") && robot0.contains("Z "),
        "{stdout}"
    );
    let out = run(
        server_cli.clone(),
        remote(&["devices", "show", "robot-0"]),
        token_env.clone(),
    )
    .await;
    assert!(out.status.success() && text(&out).0.contains("site=w3"));
    let out = run(
        server_cli.clone(),
        remote(&["devices", "list"]),
        vec![("OTA_ADMIN_TOKEN", "bad")],
    )
    .await;
    assert!(!out.status.success() && text(&out).1.contains("401"));
    server.stop().await;
}
