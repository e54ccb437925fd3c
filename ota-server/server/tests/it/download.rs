//! Bundle downloads with ranges: one range (206 + Content-Range), several (206 multipart/byteranges, parsed
//! back part by part against the file), 416 for what cannot be served, If-Range, HEAD, and both the admin
//! token and an offered device's token allowed.

use crate::common::*;
use ota_keys::SecretKey;
use reqwest::header::{
    HeaderMap, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
};
use reqwest::StatusCode;
use serde_json::json;

struct Setup {
    server: TestServer,
    c: reqwest::Client,
    url: String,
    bytes: Vec<u8>,
    etag: String,
    device: String,
    _dir: tempfile::TempDir,
}

/// A server with one published bundle offered to one device.
async fn setup() -> Setup {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let (_, published) = publish(&c, &server, bytes.clone()).await;
    let id = published["bundle_id"].as_str().unwrap().to_string();
    let device = enroll(&c, &server, "robot-a", &[("site", "w3")], COMPATIBLE).await;
    admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": id, "tags": {"site": "w3"}, "stages": [100]}),
    )
    .await;
    assert!(poll(&c, &server, &device, "1.0.0").await.update.is_some());
    Setup {
        url: server.url(&format!("/api/bundles/{id}/download")),
        server,
        c,
        bytes,
        etag: format!("\"{id}\""),
        device,
        _dir: dir,
    }
}

impl Setup {
    async fn get(&self, token: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut r = self.c.get(&self.url).bearer_auth(token);
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let h = resp.headers().clone();
        (status, h, resp.bytes().await.unwrap().to_vec())
    }
}

fn header(h: &HeaderMap, name: reqwest::header::HeaderName) -> &str {
    h.get(&name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

/// Splits a multipart/byteranges body into (Content-Range, bytes) parts, strictly.
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    let mut out = Vec::new();
    loop {
        let lead = if out.is_empty() { "" } else { "\r\n" };
        let close = format!("{lead}{delimiter}--\r\n");
        if rest == close.as_bytes() {
            return out;
        }
        let open = format!("{lead}{delimiter}\r\n");
        assert!(
            rest.starts_with(open.as_bytes()),
            "part {} opens",
            out.len()
        );
        rest = &rest[open.len()..];
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        rest = &rest[end + 4..];
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_string();
        let (a, b) = range
            .strip_prefix("bytes ")
            .unwrap()
            .split_once('/')
            .unwrap()
            .0
            .split_once('-')
            .unwrap();
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        out.push((range, rest[..len].to_vec()));
        rest = &rest[len..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_single_multiple_and_refused() {
    let s = setup().await;
    let total = s.bytes.len();

    // Whole file, with the validators on it; the device token works as the admin one.
    for token in [ADMIN, s.device.as_str()] {
        let (status, h, body) = s.get(token, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, s.bytes);
        assert_eq!(header(&h, ETAG), s.etag);
        assert_eq!(header(&h, ACCEPT_RANGES), "bytes");
        assert_eq!(header(&h, CONTENT_TYPE), "application/octet-stream");
    }

    // One range.
    let (status, h, body) = s.get(&s.device, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&h, CONTENT_RANGE),
        format!("bytes 1000-1999/{total}")
    );
    assert_eq!(header(&h, ETAG), s.etag);
    assert_eq!(body, &s.bytes[1000..2000]);
    let (_, _, body) = s.get(ADMIN, &[("range", "bytes=-100")]).await;
    assert_eq!(body, &s.bytes[total - 100..]);

    // Several ranges, in the order asked, with a matching If-Range.
    let asked = [
        (150_000usize, 150_099usize),
        (0, 0),
        (10, 4_009),
        (total - 7, total - 1),
    ];
    let spec: Vec<String> = asked.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    let range = format!("bytes={}", spec.join(","));
    let (status, h, body) = s
        .get(&s.device, &[("range", &range), ("if-range", &s.etag)])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&h, ETAG), s.etag);
    assert_eq!(header(&h, CONTENT_LENGTH), body.len().to_string());
    let got = parts(header(&h, CONTENT_TYPE), &body);
    assert_eq!(got.len(), asked.len());
    for ((cr, bytes), (a, b)) in got.iter().zip(asked) {
        assert_eq!(cr, &format!("bytes {a}-{b}/{total}"));
        assert_eq!(bytes, &s.bytes[a..=b]);
    }
    // A new boundary every time.
    let (_, h2, _) = s.get(&s.device, &[("range", &range)]).await;
    assert_ne!(header(&h2, CONTENT_TYPE), header(&h, CONTENT_TYPE));

    // 64 ranges are served, 65 are not.
    let ranges = |n: usize| {
        let v: Vec<String> = (0..n)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 4))
            .collect();
        format!("bytes={}", v.join(","))
    };
    let (status, h, body) = s.get(ADMIN, &[("range", &ranges(64))]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let got = parts(header(&h, CONTENT_TYPE), &body);
    assert_eq!(got.len(), 64);
    assert_eq!(got[63].1, &s.bytes[630..635]);

    // Refused: 416 with the length, an error body and the validators.
    for bad in [
        ranges(65),
        "bytes=0-99,50-60".to_string(),
        format!("bytes={total}-"),
        format!("bytes=0-9,{}-{}", total + 5, total + 9),
        "bytes=9-3".to_string(),
    ] {
        let (status, h, body) = s.get(&s.device, &[("range", &bad)]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        assert_eq!(header(&h, CONTENT_RANGE), format!("bytes */{total}"));
        assert_eq!(header(&h, ETAG), s.etag);
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains("range"),
            "{error}"
        );
    }

    // If-Range of another file: the whole (current) file with 200.
    for other in [
        "\"another-bundle\"",
        "W/\"x\"",
        "Sat, 05 Dec 2026 22:00:50 GMT",
    ] {
        let (status, h, body) = s
            .get(
                &s.device,
                &[("range", "bytes=0-9,20-29"), ("if-range", other)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{other}");
        assert!(h.get(CONTENT_RANGE).is_none());
        assert_eq!(body, s.bytes);
    }
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_the_headers_without_a_body_and_tokens_are_checked() {
    let s = setup().await;
    let total = s.bytes.len();
    for token in [ADMIN, s.device.as_str()] {
        let resp = s.c.head(&s.url).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers().clone();
        assert_eq!(header(&h, CONTENT_LENGTH), total.to_string());
        assert_eq!(header(&h, ETAG), s.etag);
        assert_eq!(header(&h, ACCEPT_RANGES), "bytes");
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let resp =
        s.c.head(&s.url)
            .bearer_auth(&s.device)
            .header("range", "bytes=5-14")
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(resp.headers(), CONTENT_RANGE),
        format!("bytes 5-14/{total}")
    );
    assert_eq!(header(resp.headers(), CONTENT_LENGTH), "10");

    // No token, a bad token, a device the bundle was not offered to.
    let (status, _, _) = s.get("not-a-token", &[("range", "bytes=0-0")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = s.c.get(&s.url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let other = enroll(&s.c, &s.server, "robot-b", &[("site", "w9")], COMPATIBLE).await;
    let (status, _, _) = s.get(&other, &[("range", "bytes=0-0")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.server.stop().await;
}
