//! Sites for the map over real HTTP: a plan is uploaded (PNG, its dimensions read from its header), listed,
//! served and replaced; robots reporting a position whose frame names the site are placed on it in pixels (off
//! the plan: clamped and flagged) and a moving robot's poll is an event; bad images, numbers and names are
//! refused with one line naming the problem; the size cap; unknown sites are 404.

use std::io::Write;

use crate::common::*;
use futures_util::StreamExt;
use ota_keys::SecretKey;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A real PNG (stored deflate blocks, so any decoder draws it): a light floor plan of `width`×`height` with a
/// grid every 50 px and a few dark walls.
pub(crate) fn plan_png(width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut raw = Vec::with_capacity((w * 3 + 1) * h);
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            let wall = (y.abs_diff(h / 3) < 4 && x < w * 2 / 3)
                || (x.abs_diff(w * 2 / 3) < 4 && y > h / 5)
                || x < 4
                || y < 4
                || x + 4 >= w
                || y + 4 >= h;
            let grid = x % 50 == 0 || y % 50 == 0;
            let rgb = if wall {
                [60, 66, 76]
            } else if grid {
                [214, 222, 232]
            } else {
                [246, 248, 251]
            };
            raw.extend_from_slice(&rgb);
        }
    }
    // zlib: header, stored blocks of at most 65535 bytes, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        png.write_all(kind).unwrap();
        png.write_all(data).unwrap();
        png.extend_from_slice(&crc.finalize().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    png
}

pub(crate) async fn upload(
    c: &reqwest::Client,
    s: &TestServer,
    query: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/api/sites?{query}")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// [`upload`] with a chunked body (no Content-Length), in pieces.
async fn upload_streamed(
    c: &reqwest::Client,
    s: &TestServer,
    query: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .post(s.url(&format!("/api/sites?{query}")))
        .bearer_auth(ADMIN)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// A poll reporting the robot at (`x`, `y`) metres in `frame`.
pub(crate) async fn poll_at(
    c: &reqwest::Client,
    s: &TestServer,
    token: &str,
    frame: &str,
    x: f64,
    y: f64,
) {
    let mut body = poll_body("1.0.0", COMPATIBLE);
    body.telemetry.position = Some(ota_protocol::device::Position {
        x,
        y,
        theta: None,
        frame: Some(frame.into()),
    });
    let r = c
        .post(s.url("/api/device/poll"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_site_plan_is_uploaded_served_and_its_robots_placed() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let png = plan_png(400, 200);

    let (status, site) = upload(
        &c,
        &server,
        "name=hall-a&scale=0.05&origin_x=10&origin_y=190",
        png.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{site}");
    assert_eq!(
        (
            &site["width"],
            &site["height"],
            &site["format"],
            &site["bytes"]
        ),
        (&json!(400), &json!(200), &json!("png"), &json!(png.len()))
    );
    let listed = admin_get(&c, &server, "/api/sites").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "hall-a");
    let r = c
        .get(server.url("/api/sites/hall-a/image"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);

    // Robots: one on the plan, one off it, one on another site, one without a frame.
    let on = enroll(&c, &server, "r-on", &[], COMPATIBLE).await;
    let off = enroll(&c, &server, "r-off", &[], COMPATIBLE).await;
    let elsewhere = enroll(&c, &server, "r-elsewhere", &[], COMPATIBLE).await;
    let nowhere = enroll(&c, &server, "r-nowhere", &[], COMPATIBLE).await;
    poll_at(&c, &server, &on, "hall-a", 1.0, 2.0).await;
    poll_at(&c, &server, &off, "hall-a", -100.0, 0.0).await;
    poll_at(&c, &server, &elsewhere, "dock", 1.0, 2.0).await;
    poll(&c, &server, &nowhere, "1.0.0").await;
    let placed = admin_get(&c, &server, "/api/sites/hall-a/robots").await;
    let robots = placed["robots"].as_array().unwrap();
    assert_eq!(robots.len(), 2, "{placed}");
    assert_eq!(placed["site"]["name"], "hall-a");
    // r-off sorts first: drawn on the left edge, flagged.
    assert_eq!(
        (
            &robots[0]["device_id"],
            &robots[0]["x"],
            &robots[0]["outside"]
        ),
        (&json!("r-off"), &json!(0.0), &json!(true))
    );
    // r-on: 1 m right of the origin (20 px), 2 m up (40 px).
    assert_eq!(
        (
            &robots[1]["device_id"],
            &robots[1]["x"],
            &robots[1]["y"],
            &robots[1]["outside"]
        ),
        (&json!("r-on"), &json!(30.0), &json!(150.0), &json!(false))
    );
    assert_eq!(robots[1]["version"], "1.0.0");

    // A robot that moves sends an event (so the map redraws); one that stands still does not.
    let events = c
        .get(server.url("/api/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let mut stream = events.bytes_stream();
    poll_at(&c, &server, &on, "hall-a", 1.01, 2.0).await; // noise: not an event
    poll_at(&c, &server, &elsewhere, "hall-a", 3.0, 2.0).await;
    let mut seen = String::new();
    while !seen.contains("r-elsewhere") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("a device_updated event for the robot that moved")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("\"r-on\""), "{seen}");
    let placed = admin_get(&c, &server, "/api/sites/hall-a/robots").await;
    assert_eq!(placed["robots"].as_array().unwrap().len(), 3, "{placed}");

    // Replaced by name (200), deleted (204), then unknown (404 naming it).
    let (status, site) = upload(&c, &server, "name=hall-a&scale=0.1", plan_png(100, 50)).await;
    assert_eq!(status, StatusCode::OK, "{site}");
    assert_eq!(
        (&site["width"], &site["origin_x"]),
        (&json!(100), &json!(0.0))
    );
    let r = c
        .delete(server.url("/api/sites/hall-a"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/sites/hall-a"),
        (reqwest::Method::GET, "/api/sites/hall-a/image"),
        (reqwest::Method::GET, "/api/sites/hall-a/robots"),
    ] {
        let r = c
            .request(method.clone(), server.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("no site 'hall-a'"),
            "{body}"
        );
    }
    assert_eq!(admin_get(&c, &server, "/api/sites").await, json!([]));
    server.stop().await;
}

#[tokio::test]
async fn bad_plans_are_refused_naming_the_problem() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let png = plan_png(40, 30);
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0; 40]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("name=a&scale=0.05", gif, 400, "neither a PNG nor a JPEG"),
        (
            "name=a&scale=0.05",
            png[..png.len() - 12].to_vec(),
            400,
            "truncated PNG",
        ),
        ("name=a&scale=0.05", Vec::new(), 400, "empty"),
        (
            "name=a&scale=0",
            png.clone(),
            400,
            "scale must be metres per pixel",
        ),
        (
            "name=a&scale=abc",
            png.clone(),
            400,
            "scale must be a number",
        ),
        ("name=a", png.clone(), 400, "name the site's scale"),
        ("scale=0.05", png.clone(), 400, "name the site's name"),
        (
            "name=a/b&scale=0.05",
            png.clone(),
            400,
            "site name may contain only",
        ),
        (
            "name=a&scale=1&origin_x=1e99",
            png.clone(),
            400,
            "origin_x must be",
        ),
        // Over the cap without a Content-Length: refused while reading.
        (
            "name=a&scale=0.05",
            vec![0x89; 10 * 1024 * 1024 + 1],
            413,
            "larger than 10 MiB",
        ),
    ];
    for (query, body, status, needle) in cases {
        let (got, answer) = if body.len() > 10 * 1024 * 1024 {
            upload_streamed(&c, &server, query, body).await
        } else {
            upload(&c, &server, query, body).await
        };
        let error = answer["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(got.as_u16(), status, "{query}: {answer}");
        assert!(error.contains(needle), "{query}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    // Over the cap by its Content-Length: answered before the body is read.
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        write!(
            sock,
            "POST /api/sites?name=a&scale=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut sock, &mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("larger than 10 MiB"),
        "{answer}"
    );
    assert_eq!(admin_get(&c, &server, "/api/sites").await, json!([]));
    // Reads need a token; a device may not upload.
    let r = c.get(server.url("/api/sites")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let token = enroll(&c, &server, "r1", &[], COMPATIBLE).await;
    let r = c
        .post(server.url("/api/sites?name=a&scale=1"))
        .bearer_auth(&token)
        .body(png)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}
