//! Bundles in a real S3-compatible store (the test kit's s3s-fs): publish puts the verified bundle under
//! `PREFIX/<id>` and keeps nothing in the data directory; downloads through the server serve the whole object,
//! one range and several; `--presign-downloads` answers 307 to a presigned URL that serves the object and its
//! ranges without the server's token; a put the store refuses publishes nothing; delete and orphans.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_server::bundle_store::{BundleStoreRef, StoreSpec};
use ota_server::server::Settings;
use ota_testkit::s3::S3Server;
use reqwest::StatusCode;
use serde_json::json;

/// `settings` with bundles in `s3`'s bucket under `prefix`, with the given secret key.
fn on_s3(mut s: Settings, s3: &S3Server, prefix: &str, secret: &str) -> Settings {
    let StoreSpec::S3(mut spec) = StoreSpec::parse(&s3.bundle_store_url(prefix)).unwrap() else {
        panic!("an s3 URL")
    };
    spec.access_key_id = Some(s3.access_key_id.clone());
    spec.secret_access_key = Some(secret.to_string());
    s.config.bundle_store = BundleStoreRef::open(&StoreSpec::S3(spec), &s.config.data_dir).unwrap();
    s
}

async fn get(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> reqwest::Response {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(range) = range {
        r = r.header("range", range);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn published_bundles_live_in_the_bucket_and_download_through_the_server() {
    let Some(s3) = S3Server::start() else { return };
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let settings = on_s3(
        settings(dir.path(), &trust(&[&key], 1)),
        &s3,
        "fleet/a",
        &s3.secret_access_key,
    );
    let server = TestServer::start(settings).await;
    let c = client();
    let bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let (status, published) = publish(&c, &server, bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let id = published["bundle_id"].as_str().unwrap().to_string();
    assert_eq!(s3.objects(), vec![format!("fleet/a/{id}")]);
    assert!(s3.object(&format!("fleet/a/{id}")).unwrap() == bytes);
    assert!(server.blob_files().is_empty() && server.tmp_files().is_empty());
    // The same bundle again: deduplicated, still one object.
    let (_, again) = publish(&c, &server, bytes.clone()).await;
    assert_eq!(again["deduplicated"], json!(true));
    assert_eq!(s3.objects().len(), 1);

    let url = server.url(&format!("/api/bundles/{id}/download"));
    let whole = get(&c, &url, Some(ADMIN), None).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["etag"], format!("\"{id}\"").as_str());
    assert!(whole.bytes().await.unwrap() == bytes);
    let one = get(&c, &url, Some(ADMIN), Some("bytes=1000-1999")).await;
    assert_eq!(one.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        one.headers()["content-range"],
        format!("bytes 1000-1999/{}", bytes.len()).as_str()
    );
    assert!(one.bytes().await.unwrap() == bytes[1000..2000]);
    let several = get(&c, &url, Some(ADMIN), Some("bytes=5000-5009,10-19")).await;
    assert_eq!(several.status(), StatusCode::PARTIAL_CONTENT);
    let body = several.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!("Content-Range: bytes 5000-5009/{}", bytes.len())),
        "{text}"
    );
    let first = text.find("Content-Range: bytes 5000").unwrap();
    let second = text.find("Content-Range: bytes 10-19").unwrap();
    assert!(first < second, "parts in the order asked");
    server.stop().await;
}

#[tokio::test]
async fn presigned_downloads_redirect_to_the_store_and_serve_ranges() {
    let Some(s3) = S3Server::start() else { return };
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = on_s3(
        settings(dir.path(), &trust(&[&key], 1)),
        &s3,
        "",
        &s3.secret_access_key,
    );
    settings.config.presign_downloads = Some(Duration::from_secs(300));
    let server = TestServer::start(settings).await;
    let c = client();
    let bytes = bundle(&[&key], "2.1.0", COMPATIBLE);
    let (_, published) = publish(&c, &server, bytes.clone()).await;
    let id = published["bundle_id"].as_str().unwrap().to_string();
    let url = server.url(&format!("/api/bundles/{id}/download"));

    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = get(&no_follow, &url, Some(ADMIN), None).await;
    assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&s3.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    // Still authorised first: no token, no redirect.
    let refused = get(&no_follow, &url, None, None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // The presigned URL alone serves the object and a range.
    let direct = get(&no_follow, &location, None, None).await;
    assert_eq!(direct.status(), StatusCode::OK);
    assert!(direct.bytes().await.unwrap() == bytes);
    // Followed the way robots do (reqwest drops the bearer token for the store's other port).
    let ranged = get(&c, &url, Some(ADMIN), Some("bytes=100-199")).await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert!(ranged.bytes().await.unwrap() == bytes[100..200]);
    server.stop().await;
}

#[tokio::test]
async fn a_put_the_store_refuses_publishes_nothing() {
    let Some(s3) = S3Server::start() else { return };
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let settings = on_s3(
        settings(dir.path(), &trust(&[&key], 1)),
        &s3,
        "",
        "not-the-secret-key",
    );
    let server = TestServer::start(settings).await;
    let c = client();
    let (status, body) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("storing the upload"),
        "{body}"
    );
    assert_eq!(admin_get(&c, &server, "/api/bundles").await, json!([]));
    assert!(s3.objects().is_empty(), "{:?}", s3.objects());
    assert!(server.tmp_files().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_store_deletes_lists_and_streams_ranges_of_large_multipart_objects() {
    let Some(s3) = S3Server::start() else { return };
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    // Larger than one multipart part: the put is a multipart upload.
    let rootfs = ota_testkit::robot::noise(3, ota_server::bundle_store::s3::PART + (1 << 20));
    let bytes = ota_testkit::robot::try_bundle_signed_by(
        &[&key],
        "3.0.0",
        COMPATIBLE,
        &[("rootfs", rootfs)],
    )
    .unwrap();
    let settings = on_s3(
        settings(dir.path(), &trust(&[&key], 1)),
        &s3,
        "big",
        &s3.secret_access_key,
    );
    let store = settings.config.bundle_store.clone();
    let server = TestServer::start(settings).await;
    let c = client();
    let (status, published) = publish(&c, &server, bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let id = published["bundle_id"].as_str().unwrap().to_string();
    assert!(s3.object(&format!("big/{id}")).unwrap() == bytes);
    let tail = format!("bytes={}-", bytes.len() - 10);
    let r = get(
        &c,
        &server.url(&format!("/api/bundles/{id}/download")),
        Some(ADMIN),
        Some(&tail),
    )
    .await;
    assert!(r.bytes().await.unwrap() == bytes[bytes.len() - 10..]);

    let listed = store.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        vec![id.clone()]
    );
    assert!(store.exists(&id).await.unwrap());
    store.delete(&id).await.unwrap();
    assert!(!store.exists(&id).await.unwrap());
    assert!(s3.objects().is_empty());
    store.delete(&id).await.unwrap(); // absent is fine
    let _: Arc<dyn ota_server::bundle_store::BundleStore> = store.0.clone();
    server.stop().await;
}
