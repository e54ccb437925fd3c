//! A download resumed across a daemon restart, checked by the bytes the server sent: a real `ota-server` (in
//! process) publishes a chunked 2.0.0 and rolls it out; one real `ota-client daemon` process downloads it through
//! the test kit's proxy, which slows the link down and counts what the server sent. The daemon is killed
//! (SIGKILL) once it wrote a journal point (`<data_dir>/download.json`), started again, and finishes: the robot
//! reboots into 2.0.0 and commits it. The server sent less than 1.5 times the bundle in all, and the restarted
//! daemon asked only for payload past what the first one had verified.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ota_bundle_format::chunked::{FrameSpan, Span, DEFAULT_PARAMS};
use ota_bundle_format::head::{parse_head, HeadParse};
use ota_bundle_format::{build_chunked_bundle, BundleSpec, SeekableImage};
use ota_e2e::trust;
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_testkit::proxy::Proxy;
use ota_testkit::robot::{noise, release_key, Backend, Robot, RobotSpec, ServerSpec, COMPATIBLE};
use ota_testkit::wait::wait_for;

use crate::common::{rollout, server};

/// Past the client's first journal point (every 64 MiB of output), with a third of the image left after it.
const IMAGE: usize = 96 << 20;
/// The slowed link, bytes per second: the download takes a few seconds, so the daemon is killed long before it
/// ends.
const RATE: u64 = 5_000_000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// `target/<profile>/<name>`: cargo builds the workspace's binaries next to the test executable's directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p ota-client` first",
        bin.display()
    );
    bin
}

/// A daemon process, killed (SIGKILL) when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(robot: &Robot) -> Daemon {
        let child = Command::new(binary("ota-client"))
            .arg("--config")
            .arg(&robot.config_path)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ota-client daemon starts");
        Daemon(child)
    }

    /// SIGKILL, as a power cut or the OOM killer would.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A rootfs of [`IMAGE`] bytes whose first 64 MiB (up to the first journal point) compress to about a
/// sixteenth and the rest hardly at all: the restarted daemon has most of the bundle still to fetch, so
/// what the first one fetched ahead of its journal point (a request or two of at most 8 MiB) cannot add up to
/// half a bundle.
fn rootfs() -> Vec<u8> {
    let text: Vec<u8> = (0..64 << 10).map(|i| b'a' + (i % 23) as u8).collect();
    let mut out = Vec::with_capacity(IMAGE);
    let mut seed = 11;
    while out.len() < IMAGE {
        let random = if out.len() < 64 << 20 {
            4 << 10
        } else {
            56 << 10
        };
        out.extend_from_slice(&noise(seed, random));
        out.extend_from_slice(&text[random..]);
        seed += 1;
    }
    out.truncate(IMAGE);
    out
}

fn chunked_bundle(version: &str, image: &[u8]) -> Vec<u8> {
    let spec = BundleSpec {
        version: version.parse().unwrap(),
        compatible: COMPATIBLE.into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: None,
        level: 3,
        workers: 2,
    };
    let images = vec![SeekableImage {
        name: "rootfs.img".into(),
        slot_class: "rootfs".into(),
        reader: Box::new(Cursor::new(image)),
    }];
    let key = ota_keys::SecretKey::from_pem(&release_key().to_pem()).unwrap();
    let (_, out) = build_chunked_bundle(
        Cursor::new(Vec::new()),
        &spec,
        DEFAULT_PARAMS,
        images,
        None::<&mut ota_bundle_format::write::BaseBundle<Cursor<Vec<u8>>>>,
        &[key],
        |_| {},
    )
    .expect("the bundle builds");
    out.into_inner()
}

/// Where the image's payload lies in the bundle file, and its frames.
fn payload_and_frames(bundle: &[u8]) -> (Span, Vec<FrameSpan>) {
    let HeadParse::Complete(head) = parse_head(bundle).unwrap() else {
        panic!("a whole bundle has a complete head")
    };
    let head = head.verify(&trust()).unwrap();
    let spans = head
        .layout
        .image(&head.manifest, "rootfs.img")
        .expect("the image is in the layout");
    let index = spans.index.expect("a chunked image has an index");
    let bytes = &bundle[index.offset as usize..index.end() as usize];
    let frames = head.index("rootfs.img", bytes).unwrap().frame_spans();
    (spans.payload, frames)
}

/// The first bytes of each range of a `Range: bytes=a-b,c-d` header.
fn range_starts(header: &str) -> Vec<u64> {
    header
        .trim()
        .trim_start_matches("bytes=")
        .split(',')
        .filter_map(|r| r.trim().split('-').next()?.parse().ok())
        .collect()
}

#[test]
fn a_download_resumes_across_a_daemon_restart() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = ApiClient::new(&ClientOptions::new(&server.base))
        .unwrap()
        .with_token(&server.admin_token);
    let proxy = Proxy::start(server.addr);

    let image = rootfs();
    let bundle = chunked_bundle("2.0.0", &image);
    let (payload, frames) = payload_and_frames(&bundle);
    let bundle_id = admin.publish_bytes(bundle.clone()).unwrap().bundle_id;

    let mut spec = RobotSpec::new(Backend::File);
    spec.rootfs_size = IMAGE;
    spec.server = Some(ServerSpec {
        url: proxy.base.clone(),
        device_id: "robot-1".into(),
        enrollment_secret: server.enrollment_secret.clone(),
        tags: [("site".to_string(), "warehouse-1".to_string())].into(),
        backoff_initial_ms: 100,
        backoff_max_secs: 1,
        telemetry_command: None,
    });
    let robot = Robot::create(&dir.path().join("robot-1"), &spec);
    let target = robot.booted().other();
    let journal = robot.path("data/download.json");
    eprintln!(
        "setup: {} byte bundle ({} byte payload at {}), {:.1} s",
        bundle.len(),
        payload.len,
        payload.offset,
        started.elapsed().as_secs_f64()
    );

    proxy.set_download_rate(Some(RATE));
    let first = Daemon::start(&robot);
    wait_for("the robot to enroll", TIMEOUT, || {
        admin.device("robot-1").is_ok()
    });
    rollout(&admin, &bundle_id, vec![100], 1.0);
    let deadline = Instant::now() + TIMEOUT;
    while !journal.exists() {
        assert!(
            Instant::now() < deadline,
            "no journal point of the download; the proxy saw {:?}",
            proxy.seen()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill();
    let killed_at = proxy.seen().len();
    let bytes_before = proxy.download_bytes();
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    let verified = recorded["verified_upto"].as_u64().unwrap_or(0);
    assert!(
        verified > 0 && verified < IMAGE as u64,
        "journal: {recorded}"
    );
    assert!(
        bytes_before < bundle.len() as u64,
        "the first daemon downloaded the whole bundle ({bytes_before} bytes) before it was killed"
    );
    eprintln!(
        "killed the daemon after {bytes_before} bytes from the server; the journal says {verified} bytes verified"
    );

    let second = Daemon::start(&robot);
    wait_for(
        "the update to be written and a reboot asked for",
        TIMEOUT,
        || robot.take_reboot_requests() > 0,
    );
    second.kill();
    robot.reboot();
    robot.client().confirm().expect("2.0.0 commits");
    assert_eq!(robot.booted(), target);
    assert!(
        robot.slot_bytes("rootfs", target) == image,
        "slot {target} does not hold 2.0.0"
    );
    assert_eq!(robot.status().primary, Some(target));
    assert!(!journal.exists(), "the journal outlived the write");

    let total = proxy.download_bytes();
    let seen = proxy.seen();
    let downloads = |from: usize| -> Vec<Vec<u64>> {
        seen[from..]
            .iter()
            .filter(|s| s.path.ends_with("/download"))
            .map(|s| s.range.as_deref().map(range_starts).unwrap_or(vec![0]))
            .collect()
    };
    let after = downloads(killed_at);
    eprintln!(
        "server sent {total} bytes in all for a {} byte bundle ({:.2}x); {} requests before the kill, {} after: {after:?}",
        bundle.len(),
        total as f64 / bundle.len() as f64,
        downloads(0).len() - after.len(),
        after.len()
    );
    assert!(
        (total as f64) < 1.5 * bundle.len() as f64,
        "the server sent {total} bytes for a {} byte bundle",
        bundle.len()
    );
    // The restarted daemon reads the head and the index again, then only payload from the frame holding the
    // last byte the first one had verified.
    let kept = frames
        .iter()
        .find(|f| f.image_offset + f.raw_size >= verified)
        .expect("the journal point lies inside the image");
    let first_payload = after
        .iter()
        .flatten()
        .copied()
        .filter(|&s| s >= payload.offset)
        .min()
        .expect("the restarted daemon fetched payload");
    assert!(
        first_payload >= payload.offset + kept.payload_offset && first_payload > payload.offset,
        "the restarted daemon fetched payload from byte {first_payload}; the payload starts at {}, the frame \
         of the journal point ({verified}) at {}",
        payload.offset,
        payload.offset + kept.payload_offset
    );
    eprintln!("resume: {:.1} s", started.elapsed().as_secs_f64());
}
