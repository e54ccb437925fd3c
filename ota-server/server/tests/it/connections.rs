//! The connection layer on real loopback sockets: slow, idle and half-sent connections are closed after their
//! timeouts, a client that stops reading is dropped, and idle connections past the cap make room for a robot.

use std::time::{Duration, Instant};

use crate::common::*;
use ota_keys::SecretKey;
use ota_server::listener::ConnectionLimits;
use ota_server::server::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn with_limits(dir: &std::path::Path, limits: ConnectionLimits) -> Settings {
    let mut s = settings(dir, &trust(&[&SecretKey::generate()], 1));
    s.config.connections = limits;
    s
}

fn short(header_secs: u64) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(header_secs),
        body_read_timeout: Duration::from_secs(1),
        send_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    }
}

/// Reads until the server closes the connection (EOF or reset); `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(with_limits(dir.path(), short(2))).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    // One byte a second of a request head that would take ~40 s to finish.
    let writer = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: ota.test\r\nX: y\r\n\r\n" {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(8), read.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the half-sent request was not cut off: {closed:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed too early"
    );
    writer.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_and_half_sent_bodies_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(with_limits(dir.path(), short(1))).await;

    // Kept alive after an answer, then silent: closed after the header timeout.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: ota.test\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // A body that stops after 10 of its 100 bytes: answered and closed after the body timeout.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(
        b"POST /api/devices/enroll HTTP/1.1\r\nHost: ota.test\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"device_i",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let got = closed_within(&mut half, Duration::from_secs(5))
        .await
        .expect("a stalled request body is cut off");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let text = String::from_utf8_lossy(&got);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let signing = SecretKey::generate();
    let mut s = settings(dir.path(), &trust(&[&signing], 1));
    s.config.connections = short(30);
    let server = TestServer::start(s).await;
    let rootfs = ota_testkit::robot::noise(7, 32 << 20);
    let bytes = ota_testkit::robot::try_bundle_signed_by(
        &[&signing],
        "1.0.0",
        COMPATIBLE,
        &[("rootfs", rootfs)],
    )
    .unwrap();
    let size = bytes.len();
    let (status, published) = publish(&client(), &server, bytes).await;
    assert!(status.is_success(), "{published}");
    let id = published["bundle_id"].as_str().unwrap().to_string();

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/bundles/{id}/download HTTP/1.1\r\nHost: ota.test\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read nothing for longer than the send timeout, then everything that is left.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = closed_within(&mut stream, Duration::from_secs(20))
        .await
        .expect("the connection ends");
    assert!(
        got.len() < size,
        "the whole {size}-byte bundle was sent to a client that stopped reading"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_make_room_for_a_robot() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnectionLimits {
        max_connections: Some(4),
        ..ConnectionLimits::default()
    };
    let server = TestServer::start(with_limits(dir.path(), limits)).await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let answer = client()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a normal request is served past 10 idle connections");
    assert!(answer.status().is_success());
    let mut closed = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(500))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    // Of 10 idle connections and the robot's under a cap of 4, at least 7 idle ones were closed.
    assert!(
        closed >= 7,
        "only {closed} of 10 idle connections were closed"
    );
    server.stop().await;
}

/// The real binary under a 128-descriptor limit (so at most 96 connections): 300 idle connections cannot keep
/// it from answering, nor from opening the files a publish needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_cannot_exhaust_descriptors() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let signing = SecretKey::generate();
    let trust_file = dir.path().join("release.pub");
    std::fs::write(&trust_file, signing.public_key().to_pem()).unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 128 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_ota-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN,
            "--enrollment-secret",
            ENROLL,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--trust-root")
        .arg(&trust_file)
        .env_remove("OTA_SERVER_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        lines
            .find_map(|l| {
                l.ok()?
                    .split_once("listening on ")
                    .map(|(_, url)| url.trim().to_string())
            })
            .expect("the server says where it listens")
    })
    .await
    .unwrap();
    let addr = base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = c
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("answered past 300 idle connections");
    assert!(answer.status().is_success());
    let bytes = bundle(&[&signing], "1.0.0", COMPATIBLE);
    let published = c
        .post(format!("{base}/api/bundles"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("a publish (temp file, blob, database) past 300 idle connections");
    assert!(
        published.status().is_success(),
        "{}",
        published.text().await.unwrap()
    );
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
