//! The fleet's trust chain: `POST /api/trust/chain` (and `ota-server trust publish`) appends only the next link,
//! `GET /api/trust/chain?after=N` serves it without authentication, polls announce the newest version, and
//! uploads are checked against the newest root.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use ota_keys::{SecretKey, SignedTrustRoot, TrustRoot};
use ota_protocol::device::TrustChain;
use reqwest::StatusCode;
use serde_json::Value;

fn root(version: u64, key: &SecretKey, signers: &[&SecretKey]) -> SignedTrustRoot {
    let mut signed =
        SignedTrustRoot::new(TrustRoot::new(version, 1, vec![key.public_key()]).unwrap());
    for s in signers {
        signed.sign(s);
    }
    signed
}

async fn publish_root(
    c: &reqwest::Client,
    s: &TestServer,
    root: &SignedTrustRoot,
) -> (StatusCode, Value) {
    admin_post(
        c,
        s,
        "/api/trust/chain",
        serde_json::to_value(root).unwrap(),
    )
    .await
}

async fn chain(c: &reqwest::Client, s: &TestServer, query: &str) -> (StatusCode, Value) {
    let r = c
        .get(s.url(&format!("/api/trust/chain{query}")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_appends_only_the_next_link_and_robots_read_the_chain() {
    let [k1, k2, k3] = [(); 3].map(|_| SecretKey::generate());
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&k1], 1))).await;
    let c = client();
    let token = enroll(&c, &server, "robot-1", &[], COMPATIBLE).await;

    // Nothing published: an empty chain, and polls carry no version (the answer is as before).
    let (status, body) = chain(&c, &server, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"newest": null, "roots": []}));
    assert_eq!(poll(&c, &server, &token, "1.0.0").await.trust_version, None);

    // Refused: signed by the old key only, by the new key only, or skipping a version.
    for (bad, why) in [
        (root(2, &k2, &[&k1]), "not signed by enough of its own keys"),
        (
            root(2, &k2, &[&k2]),
            "not signed by enough keys of the current trust root",
        ),
        (root(3, &k3, &[&k1, &k3]), "exactly one version newer"),
    ] {
        let (status, body) = publish_root(&c, &server, &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("does not chain from the newest published root (version 1)"),
            "{error}"
        );
        assert!(error.contains(why), "{error}");
    }
    let (status, body) = admin_post(
        &c,
        &server,
        "/api/trust/chain",
        serde_json::json!({"type": "bundle"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The next link: 201, then 200 for a retry.
    let v2 = root(2, &k2, &[&k1, &k2]);
    let (status, body) = publish_root(&c, &server, &v2).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["newest"], 2);
    assert_eq!(publish_root(&c, &server, &v2).await.0, StatusCode::OK);

    // Public, filtered by version, each root as its trust root file.
    let (status, body) = chain(&c, &server, "?after=1").await;
    assert_eq!(status, StatusCode::OK);
    let answer: TrustChain = serde_json::from_value(body).unwrap();
    assert_eq!(answer.newest, Some(2));
    let roots: Vec<SignedTrustRoot> = answer
        .roots
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(
        ota_keys::chain::walk(&trust(&[&k1], 1), &roots).unwrap(),
        v2.signed
    );
    assert_eq!(
        chain(&c, &server, "?after=2").await.1["roots"],
        serde_json::json!([])
    );
    let (status, body) = chain(&c, &server, "?after=two").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("after must be"),
        "{body}"
    );

    // Polls announce it; only admins publish.
    assert_eq!(
        poll(&c, &server, &token, "1.0.0").await.trust_version,
        Some(2)
    );
    let r = c
        .post(server.url("/api/trust/chain"))
        .bearer_auth(&token)
        .json(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(server.url("/api/trust/chain"))
        .json(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Uploads are checked against the newest root: version 2's key, not version 1's.
    assert_eq!(
        publish(&c, &server, bundle(&[&k1], "1.1.0", COMPATIBLE))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        publish(&c, &server, bundle(&[&k2], "1.1.0", COMPATIBLE))
            .await
            .0,
        StatusCode::CREATED
    );

    // The command line: `ota-server trust publish` and `trust chain`.
    let files = tempfile::tempdir().unwrap();
    let v3 = files.path().join("root-v3.json");
    let bad = files.path().join("bad.json");
    std::fs::write(&v3, root(3, &k3, &[&k2, &k3]).to_json_pretty()).unwrap();
    std::fs::write(&bad, root(4, &k1, &[&k1]).to_json_pretty()).unwrap();
    let base = server.base.clone();
    let run = move |args: Vec<String>| {
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(PathBuf::from(env!("CARGO_BIN_EXE_ota-server")))
                    .args(args)
                    .args(["--server", base.as_str(), "--token", ADMIN])
                    .env_remove("OTA_ADMIN_TOKEN")
                    .env_remove("OTA_SERVER_URL")
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let arg = |p: &PathBuf| p.display().to_string();
    let out = run(vec!["trust".into(), "publish".into(), arg(&v3)]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("trust chain at version 3"));
    let out = run(vec!["trust".into(), "publish".into(), arg(&bad)]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not chain from the newest published root (version 3)"),
        "{stderr}"
    );
    let out = run(vec![
        "trust".into(),
        "chain".into(),
        "--after".into(),
        "1".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("version 2: 1 of 1 keys") && stdout.contains("version 3: 1 of 1 keys"),
        "{stdout}"
    );
    server.stop().await;
}
