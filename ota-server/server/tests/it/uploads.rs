//! Uploads: tampered, wrongly signed, under-signed, oversized and interrupted uploads are refused and leave no
//! file and no database row; good ones are stored once (dedup) under their SHA-256.

use std::io::Write;
use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_server::store::sqlite::SqliteStore;
use ota_server::store::Store;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

async fn assert_nothing_left(server: &TestServer) {
    let c = client();
    eventually("temp files to disappear", || server.tmp_files().is_empty()).await;
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    assert_eq!(
        admin_get(&c, server, "/api/bundles").await,
        serde_json::json!([])
    );
}

fn db_bundle_rows(data_dir: &std::path::Path) -> usize {
    SqliteStore::open(&data_dir.join("ota.sqlite"))
        .unwrap()
        .load()
        .unwrap()
        .bundles
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bundles_are_refused_with_a_clear_error_and_leave_nothing() {
    let (k1, k2, stranger) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&k1, &k2], 2))).await;
    let c = client();

    let good = bundle(&[&k1, &k2], "2.0.0", COMPATIBLE);
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let cases = [
        ("one flipped payload byte", flipped),
        (
            "signed by an unknown key",
            bundle(&[&stranger], "2.0.0", COMPATIBLE),
        ),
        (
            "below the signature threshold",
            bundle(&[&k1], "2.0.0", COMPATIBLE),
        ),
        ("truncated", good[..good.len() - 2048].to_vec()),
        ("trailing garbage", [good.clone(), vec![1u8; 512]].concat()),
        ("not a bundle", b"hello".to_vec()),
    ];
    for (what, bytes) in cases {
        let (status, body) = publish(&c, &server, bytes).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.starts_with("bundle rejected: "), "{what}: {msg}");
        assert_nothing_left(&server).await;
    }

    // The good one is accepted once, stored under its SHA-256, and deduplicated after.
    let (status, body) = publish(&c, &server, good.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sha = hex::encode(Sha256::digest(&good));
    assert_eq!(body["bundle_id"], sha.as_str());
    let (status, body) = publish(&c, &server, good.clone()).await;
    assert_eq!(
        (status, body["deduplicated"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    assert_eq!(
        server.blob_files(),
        vec![dir.path().join("blobs").join(&sha)]
    );
    assert_eq!(
        std::fs::read(dir.path().join("blobs").join(&sha)).unwrap(),
        good
    );
    let list = admin_get(&c, &server, "/api/bundles").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["images"][0]["slot_class"], "rootfs");
    let one = admin_get(&c, &server, &format!("/api/bundles/{sha}")).await;
    assert_eq!(one["version"], "2.0.0");
    server.stop().await;
    assert_eq!(db_bundle_rows(dir.path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatible_allow_list_and_size_limit() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    s.config.allowed_compatible = vec![COMPATIBLE.into()];
    s.config.max_upload_bytes = 100_000;
    let server = TestServer::start(s).await;
    let c = client();
    let (status, body) =
        publish(&c, &server, bundle(&[&key], "2.0.0", "someone-elses-robot")).await;
    // The bundle is ~200 kB: the size limit answers first.
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("--max-upload-bytes"));
    // Without Content-Length (chunked), the limit is enforced while streaming. A raw socket
    // sends a little more than the limit and then waits (an HTTP client that kept writing would
    // race the server's close and could see a reset instead of the answer).
    let bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            sock,
            "POST /api/bundles HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        // The server may answer and close before the last chunks: then a write fails, which is fine.
        let _ = bytes[..110_000].chunks(8192).try_for_each(|chunk| {
            write!(sock, "{:x}\r\n", chunk.len())?;
            sock.write_all(chunk)?;
            sock.write_all(b"\r\n")
        });
        // Everything the server sent before it closed (a reset after it still ends the read).
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut sock, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("--max-upload-bytes"),
        "{answer}"
    );
    assert_nothing_left(&server).await;
    server.stop().await;

    let mut s = settings(dir.path(), &trust(&[&key], 1));
    s.config.allowed_compatible = vec![COMPATIBLE.into()];
    let server = TestServer::start(s).await;
    let (status, body) =
        publish(&c, &server, bundle(&[&key], "2.0.0", "someone-elses-robot")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--allowed-compatible"),
        "{body}"
    );
    assert_nothing_left(&server).await;
    let (status, _) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    assert_eq!(status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_leaves_nothing() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let addr = server.addr;
    let half = bytes.len() / 2;
    let len = bytes.len();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    write!(
        sock,
        "POST /api/bundles HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    sock.write_all(&bytes[..half]).unwrap();
    sock.flush().unwrap();
    // The upload is under way: a temp file is growing in the data dir.
    eventually("the upload to be staged", || !server.tmp_files().is_empty()).await;
    drop(sock);
    assert_nothing_left(&server).await;
    server.stop().await;
    assert_eq!(db_bundle_rows(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crash_are_swept_at_start() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    server.stop().await;
    std::fs::write(dir.path().join("tmp").join("upload-crashed"), b"partial").unwrap();
    std::fs::write(
        dir.path().join("blobs").join("ab".repeat(32)),
        b"renamed but no row",
    )
    .unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    assert!(server.tmp_files().is_empty());
    assert!(server.blob_files().is_empty());
    server.stop().await;
}
