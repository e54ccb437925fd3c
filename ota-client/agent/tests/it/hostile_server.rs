//! Hostile servers over 127.0.0.1: a body that never ends, a body that stalls on every
//! request, 500/503/404 forever (503 also with Retry-After), a replayed old bundle, bytes swapped in a payload, ranges
//! ignored or lied about, a body trickled a byte at a time. Whatever the server does, the client stops with an error that names
//! the problem within a bounded time, retries only what can get better (with growing delays,
//! a bounded number of times), never arms a slot, and installs fine from a good server
//! afterwards. The daemon does not answer a server that keeps offering a refused bundle with a
//! download loop.
//!
//! Every test uses short timeouts ([`hostile_http`]) so the whole file runs in seconds.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_client::config::HttpConfig;
use ota_client::daemon::{DaemonHooks, Level, SystemClock};
use ota_client::{BundleSource, Client, InstallOptions, InstallReport, NoProgress, Slot};
use ota_protocol::device::{ReportStatus, UpdateOffer};
use ota_testkit::robot::*;
use ota_testkit::wait::wait_for;

use crate::common::http::{Behaviour, Endless, Framing, Server};

/// Read timeout of the hostile tests.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Retries after a failure without progress (so 4 attempts).
const RETRIES: u32 = 3;
/// First retry delay (then doubled; each delay is 50-100 % of that).
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Upper bound on any hostile test's install, with a generous margin for a loaded machine.
const BOUND: Duration = Duration::from_secs(20);

fn hostile_http() -> HttpConfig {
    HttpConfig {
        ca_file: None,
        connect_timeout: Duration::from_secs(2),
        read_timeout: READ_TIMEOUT,
        retries: RETRIES,
        retry_delay: RETRY_DELAY,
        ..HttpConfig::default()
    }
}

/// A client of `r` with the short timeouts.
fn client(r: &Robot) -> Client {
    let mut config = r.config();
    config.http = hostile_http();
    Client::open(config).unwrap()
}

/// Installs from `url` with the short timeouts; returns the error text and how long it took.
fn install_fails(r: &Robot, url: &str) -> (String, Duration) {
    let start = Instant::now();
    let result = client(r).install(
        &BundleSource::parse(url),
        &InstallOptions::default(),
        &mut NoProgress,
    );
    let took = start.elapsed();
    let err = match result {
        Ok(report) => panic!("a hostile server's bundle was installed: {report:?}"),
        Err(e) => e.to_string(),
    };
    assert!(took < BOUND, "took {took:?}: {err}");
    (err, took)
}

/// The lower bound of retry `n`'s delay (1-based), from the configuration.
fn min_backoff(n: u32) -> Duration {
    RETRY_DELAY * (1 << (n - 1)) / 2
}

/// The gaps between successive request arrivals.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Asserts that each retry came at least `before_each + min_backoff(n)` after the previous
/// attempt, and that the delays grew.
fn assert_backoff(times: &[Instant], before_each: Duration) {
    let g = gaps(times);
    assert_eq!(g.len(), RETRIES as usize, "{g:?}");
    // The server stamps a request when it has parsed it: allow for its thread's scheduling.
    let slack = Duration::from_millis(30);
    for (i, gap) in g.iter().enumerate() {
        let floor = before_each + min_backoff(i as u32 + 1);
        assert!(
            *gap + slack >= floor,
            "retry {} came after {gap:?}, before its delay {floor:?}: {g:?}",
            i + 1
        );
    }
    // Retry 1 waits 100-200 ms, retry 3 400-800 ms: the last gap is longer by at least 200 ms
    // (100 ms of it asserted, the rest is margin for scheduling noise).
    let (first, last) = (g[0], g[g.len() - 1]);
    assert!(
        last >= first + RETRY_DELAY / 2,
        "the delays did not grow: {g:?}"
    );
}

/// Waits (bounded) until the server has seen `n` connections end; returns them.
fn wait_ended(server: &Server, n: usize, within: Duration) -> Vec<crate::common::http::Ended> {
    let start = Instant::now();
    loop {
        let ended = server.ended();
        if ended.len() >= n {
            return ended;
        }
        assert!(
            start.elapsed() < within,
            "only {} of {n} connections ended within {within:?}: the client kept a hostile connection open",
            ended.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where a hostile test's robot stands: the committed slot, the release whose image it holds,
/// and the next release a good server offers.
#[derive(Clone, Copy)]
struct Start {
    booted: Slot,
    running: &'static str,
    good: &'static str,
}

/// A factory robot ([`Robot::new`]): the factory image in A; 2.0.0 comes next.
const FACTORY: Start = Start {
    booted: Slot::A,
    running: "factory",
    good: "2.0.0",
};

/// A robot committed to 2.0.0 in B ([`robot_on_2_0_0`]); 2.1.0 comes next.
const ON_2_0_0: Start = Start {
    booted: Slot::B,
    running: "2.0.0",
    good: "2.1.0",
};

/// What must hold after a hostile install on a robot standing at `start`: nothing armed, the
/// committed slot and boot environment untouched, the standby slot `standby_state` (not
/// bootable), a reboot boots the committed slot with its bytes; then a good server's next
/// release installs.
fn assert_safe_then_good_install(r: &Robot, before: &Snapshot, start: Start, standby_state: &str) {
    let Start {
        booted,
        running,
        good,
    } = start;
    let running = rootfs_image(running);
    let status = r.status();
    assert_eq!(status.trial, None, "nothing armed");
    assert_eq!(status.pending_trial, None, "nothing armed");
    assert_eq!(
        status.primary,
        Some(booted),
        "the committed slot did not move"
    );
    let after = r.snapshot();
    assert_eq!(
        after.env, before.env,
        "the boot environment was not touched"
    );
    assert_eq!(r.slot_bytes("rootfs", booted), running);
    assert_eq!(
        (&after.model_a, &after.model_b, after.link),
        (&before.model_a, &before.model_b, before.link)
    );
    assert_eq!(r.slot_state("rootfs", booted.other()), standby_state);
    assert_eq!(
        r.reboot(),
        booted,
        "a reboot still boots the committed slot"
    );
    assert_eq!(r.slot_bytes("rootfs", booted), running);

    let server = Server::start(Behaviour {
        body: rootfs_bundle(good),
        etag: "good".into(),
        ..Default::default()
    });
    let report = client(r)
        .install(
            &BundleSource::parse(&server.url("/bundle.otab")),
            &InstallOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
    assert!(
        matches!(report, InstallReport::TrialArmed { slot, .. } if slot == booted.other()),
        "{report:?}"
    );
    assert_eq!(server.bundle_requests().len(), 1);
    assert_eq!(r.slot_bytes("rootfs", booted.other()), rootfs_image(good));
    let (slot, confirm) = r.reboot_and_confirm();
    assert_eq!(slot, booted.other());
    confirm.unwrap();
}

// ------------------------------------------------------------------ 1. endless bodies

/// The first `prefix` bytes of the bundle, then `filler` bytes forever: the reader refuses the
/// stream with one of the `expected` errors, the client drops the connection (the server sees it
/// go) and does not retry.
fn endless_body_is_refused(framing: Framing, prefix: usize, filler: u8, expected: &[String]) {
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        endless: Some(Endless {
            framing,
            prefix,
            filler,
        }),
        body: body.clone(),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let before = r.snapshot();
    let (err, _) = install_fails(&r, &server.url("/bundle.otab"));
    let returned = Instant::now();
    assert!(
        expected.iter().any(|e| err.contains(e.as_str())),
        "{framing:?}: {err}"
    );
    assert_eq!(
        server.bundle_requests().len(),
        1,
        "a verdict is not retried"
    );
    // The server notices the disconnect: its endless write fails, soon.
    let ended = wait_ended(&server, 1, Duration::from_secs(5));
    assert!(ended[0].at.saturating_duration_since(returned) < Duration::from_secs(5));
    assert!(ended[0].error.is_some(), "{:?}", ended[0]);
    // What it managed to push is the bundle plus what the socket buffers held, not a stream.
    assert!(
        ended[0].body_bytes < body.len() as u64 + (64 << 20),
        "{:?}",
        ended[0]
    );
    assert_safe_then_good_install(&r, &before, FACTORY, "writing");
}

/// The whole bundle, then bytes forever: refused at the first byte after its end.
fn endless_after_the_bundle(framing: Framing, filler: u8) {
    let len = rootfs_bundle("2.0.0").len();
    let trailing = format!("trailing data after the end of the bundle at byte {len}");
    endless_body_is_refused(framing, len, filler, &[trailing]);
}

#[test]
fn endless_chunked_zeros_after_the_bundle_are_refused_as_trailing_data() {
    // Zeros look like more end-of-archive padding to a lax tar reader.
    endless_after_the_bundle(Framing::Chunked, 0);
}

#[test]
fn a_content_length_far_beyond_the_bundle_is_refused_as_trailing_data() {
    let len = rootfs_bundle("2.0.0").len() as u64;
    endless_after_the_bundle(Framing::ContentLength(len + (1 << 40)), 0x5a);
}

#[test]
fn an_endless_close_delimited_body_of_garbage_after_a_valid_prefix_is_refused() {
    let half = rootfs_bundle("2.0.0").len() / 2;
    // Which check trips first depends on where the garbage lands; both name the image.
    let either = [
        "image 'rootfs.img' payload is corrupt".to_string(),
        "image 'rootfs.img' does not match its SHA-256".to_string(),
    ];
    endless_body_is_refused(Framing::CloseDelimited, half, 0x5a, &either);
}

// ------------------------------------------------------------------ 2. stalls

#[test]
fn a_body_that_stalls_on_every_request_gives_up_after_bounded_attempts_with_growing_delays() {
    let body = rootfs_bundle("2.0.0");
    let cut = body.len() / 3;
    let server = Server::start(Behaviour {
        drop_first_after: Some(cut),
        stall_every: Some(Duration::from_secs(3600)),
        body: body.clone(),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::File);
    let before = r.snapshot();
    let (err, took) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(
        err.contains(&format!(
            "download of {} failed after {} attempts without progress",
            server.url("/bundle.otab"),
            RETRIES + 1
        )) && err.contains("the server sent no data for 500 ms (read timeout)"),
        "{err}"
    );
    assert!(!err.contains("slot rootfs/"), "not the slot's fault: {err}");
    let seen = server.bundle_requests();
    assert_eq!(seen.len(), RETRIES as usize + 1, "{seen:?}");
    assert_eq!(seen[0].range, None);
    for s in &seen[1..] {
        assert_eq!(s.range.as_deref(), Some(format!("bytes={cut}-").as_str()));
        assert_eq!(s.if_range.as_deref(), Some("\"v2\""));
    }
    // Each attempt waited the read timeout, then a growing delay.
    let times: Vec<Instant> = seen.iter().map(|s| s.at).collect();
    assert_backoff(&times, READ_TIMEOUT);
    assert!(took >= READ_TIMEOUT * (RETRIES + 1), "{took:?}");
    // Every stalled connection was closed by the client, not left hanging.
    let ended = wait_ended(&server, seen.len(), Duration::from_secs(5));
    assert!(
        ended
            .iter()
            .all(|e| e.error.as_deref() == Some("client disconnected")),
        "{ended:?}"
    );
    assert_safe_then_good_install(&r, &before, FACTORY, "writing");
}

#[test]
fn a_server_trickling_bytes_is_dropped_by_the_low_speed_limit_after_bounded_attempts() {
    // One byte every 20 ms: never silent for the 500 ms read timeout, but 50 bytes/s, far below
    // the 2,000 bytes/s over 300 ms the robot requires.
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        trickle: Some(Duration::from_millis(20)),
        body: body.clone(),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::File);
    let before = r.snapshot();
    let mut config = r.config();
    config.http = HttpConfig {
        low_speed_limit: 2_000,
        low_speed_time: Duration::from_millis(300),
        ..hostile_http()
    };
    let start = Instant::now();
    let err = Client::open(config)
        .unwrap()
        .install(
            &BundleSource::parse(&server.url("/bundle.otab")),
            &InstallOptions::default(),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
    let took = start.elapsed();
    assert!(took < BOUND, "took {took:?}: {err}");
    assert!(
        err.contains(&format!("failed after {} attempts", RETRIES + 1))
            && err.contains("below the low-speed limit of 2000 bytes/s"),
        "{err}"
    );
    let seen = server.bundle_requests();
    assert_eq!(seen.len(), RETRIES as usize + 1, "{seen:?}");
    // Each attempt resumes where the last one stopped, after a growing delay.
    for s in &seen[1..] {
        assert!(s.range.is_some(), "{seen:?}");
    }
    let times: Vec<Instant> = seen.iter().map(|s| s.at).collect();
    assert_backoff(&times, Duration::from_millis(300));
    let ended = wait_ended(&server, seen.len(), Duration::from_secs(5));
    assert_eq!(
        ended.len(),
        seen.len(),
        "every trickling connection was closed"
    );
    // The trickle never got past the manifest, so the standby slot is still empty.
    assert_safe_then_good_install(&r, &before, FACTORY, "empty");
}

// ------------------------------------------------------------------ 3. error statuses

/// Serves `status` (with an optional `Retry-After`) forever; asserts the install gives up after
/// the bounded attempts, `within` the given time, with `expected_why`, and nothing changed.
/// Returns the times of the attempts, the robot and its state before.
fn status_forever_is_given_up(
    status: u16,
    retry_after_secs: Option<u64>,
    expected_why: &str,
    within: Duration,
) -> (Vec<Instant>, Robot, Snapshot) {
    let server = Server::start(Behaviour {
        status_forever: Some(status),
        retry_after_secs,
        body: rootfs_bundle("2.0.0"),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let before = r.snapshot();
    let (err, took) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(
        err.contains(&format!(
            "failed after {} attempts without progress: {expected_why}",
            RETRIES + 1
        )),
        "{err}"
    );
    let seen = server.bundle_requests();
    assert_eq!(
        seen.len(),
        RETRIES as usize + 1,
        "bounded retries: {seen:?}"
    );
    assert!(seen.iter().all(|s| s.range.is_none()), "{seen:?}");
    assert!(took < within, "{took:?}");
    // Not a byte of the bundle was read: nothing at all changed.
    assert_eq!(r.snapshot(), before);
    (seen.iter().map(|s| s.at).collect(), r, before)
}

fn status_forever_is_retried_with_backoff_then_given_up(status: u16) {
    let why = format!("HTTP {status}");
    let (times, r, before) = status_forever_is_given_up(status, None, &why, Duration::from_secs(5));
    assert_backoff(&times, Duration::ZERO);
    assert_safe_then_good_install(&r, &before, FACTORY, "empty");
}

#[test]
fn http_500_forever_is_retried_with_backoff_then_given_up() {
    status_forever_is_retried_with_backoff_then_given_up(500);
}

#[test]
fn http_503_forever_is_retried_with_backoff_then_given_up() {
    status_forever_is_retried_with_backoff_then_given_up(503);
}

#[test]
fn a_503_with_retry_after_is_retried_no_sooner_than_the_server_asked() {
    // The backoff alone would wait 100-200, 200-400 and 400-800 ms; the server asks for 1 s.
    let why = "HTTP 503 (Retry-After: 1 s)";
    let (times, _, _) = status_forever_is_given_up(503, Some(1), why, BOUND);
    let g = gaps(&times);
    assert!(
        g.iter().all(|gap| *gap >= Duration::from_millis(990)),
        "a retry came before the server's Retry-After: {g:?}"
    );
}

#[test]
fn http_404_forever_is_not_retried() {
    let server = Server::start(Behaviour {
        status_forever: Some(404),
        body: rootfs_bundle("2.0.0"),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let before = r.snapshot();
    let (err, took) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(
        err.contains(&format!(
            "download of {} failed: HTTP 404: the server does not have this bundle (check the URL)",
            server.url("/bundle.otab")
        )),
        "{err}"
    );
    assert_eq!(
        server.bundle_requests().len(),
        1,
        "a permanent error is not retried"
    );
    assert!(took < min_backoff(1) + Duration::from_secs(1), "{took:?}");
    assert_eq!(r.snapshot(), before);
    assert_safe_then_good_install(&r, &before, FACTORY, "empty");
}

// ------------------------------------------------------------------ 4. replays

/// A robot that left the factory on 2.0.0 (slot B committed).
fn robot_on_2_0_0() -> Robot {
    let r = Robot::new(Backend::Grub);
    assert_eq!(r.provision(release_key(), "2.0.0").unwrap(), Slot::B);
    r
}

fn replay_is_refused(version: &str, expected: &str) {
    let r = robot_on_2_0_0();
    let server = Server::start(Behaviour {
        body: rootfs_bundle(version),
        etag: "old".into(),
        ..Default::default()
    });
    let before = r.snapshot();
    let (err, took) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(err.contains(expected), "{err}");
    assert_eq!(
        server.bundle_requests().len(),
        1,
        "a refusal is not retried"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Refused after the manifest, before any slot was touched.
    assert_eq!(r.snapshot(), before);
    assert_safe_then_good_install(&r, &before, ON_2_0_0, "good");
}

#[test]
fn a_replayed_older_bundle_is_refused_as_a_downgrade() {
    replay_is_refused(
        "1.0.0",
        "install refused: version 1.0.0 is lower than the installed 2.0.0: refusing a downgrade",
    );
}

#[test]
fn a_replayed_bundle_of_the_installed_version_is_refused() {
    replay_is_refused(
        "2.0.0",
        "install refused: version 2.0.0 is already installed",
    );
}

fn trust(r: &Robot) -> ota_keys::TrustRoot {
    ota_keys::load_trust_root(&r.path("trust.pub")).unwrap()
}

fn offer_of(r: &Robot, bundle: &[u8], version: &str) -> UpdateOffer {
    let reader =
        ota_bundle_format::BundleReader::open(Cursor::new(bundle.to_vec()), &trust(r)).unwrap();
    UpdateOffer {
        rollout_id: 7,
        bundle_id: "b".repeat(64),
        version: version.parse().unwrap(),
        compatible: COMPATIBLE.into(),
        manifest_digest: reader.manifest_digest(),
        size: bundle.len() as u64,
        download_url: "/bundle.otab".into(),
        install_allowed: true,
        revert: false,
        require_confirmation: false,
        chunked: false,
    }
}

/// What a daemon test waits for before it stops the daemon: a name for the timeout message and
/// a test on the server and the log so far.
struct Until {
    what: &'static str,
    done: fn(&Server, &[String]) -> bool,
}

/// The daemon backed off twice after refusals of the same offer.
const BACKED_OFF_TWICE: Until = Until {
    what: "the daemon's second backoff",
    done: |_, log| {
        log.iter()
            .any(|l| l.contains("polling again after a backoff; retry 2 in"))
    },
};

/// Runs the daemon of a robot on 2.0.0 against a server that offers `behaviour.body` on every
/// poll (and asks to be polled again at once) `until` the event; returns the server and the log.
fn daemon_against(
    behaviour: Behaviour,
    version: &str,
    until: Until,
    edit_config: impl Fn(String) -> String,
) -> (tempfile::TempDir, Robot, Server, Vec<String>, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let probe = Robot::new(Backend::Grub);
    let offer = offer_of(&probe, &behaviour.body, version);
    let server = Server::start(Behaviour {
        offer: Some(offer),
        ..behaviour
    });
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.server = Some(ServerSpec {
        url: server.base.clone(),
        device_id: "robot".into(),
        enrollment_secret: "fleet".into(),
        tags: Default::default(),
        backoff_initial_ms: 100,
        backoff_max_secs: 1,
        telemetry_command: None,
    });
    let r = Robot::create(dir.path(), &spec);
    let config = std::fs::read_to_string(&r.config_path).unwrap();
    std::fs::write(&r.config_path, edit_config(config)).unwrap();
    assert_eq!(r.provision(release_key(), "2.0.0").unwrap(), Slot::B);
    let before = r.snapshot();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let hooks = DaemonHooks {
        clock: Arc::new(SystemClock),
        reboot: None,
        log: Arc::new(move |level: Level, line: &str| {
            sink.lock().unwrap().push(format!("{level}: {line}"));
        }),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    let mut stopping = Instant::now();
    let result = std::thread::scope(|s| {
        let daemon = s.spawn(|| r.run_daemon(&hooks, &cancel));
        wait_for(until.what, BOUND, || {
            (until.done)(&server, &lines.lock().unwrap())
        });
        stopping = Instant::now();
        stop.store(true, Ordering::Relaxed);
        daemon.join().unwrap()
    });
    result.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the daemon did not stop promptly"
    );
    let log = lines.lock().unwrap().clone();
    (dir, r, server, log, before)
}

/// At most this many downloads of a refused offer by the daemon's second backoff: one per
/// refusal, two refusals; a daemon that answers the offer again at once downloads it hundreds
/// of times before it backs off (or never does).
const MAX_REFUSED_DOWNLOADS: usize = 20;

fn assert_daemon_backs_off(server: &Server, log: &[String], expected: &str) {
    let downloads = server.bundle_requests().len();
    assert!(
        (2..=MAX_REFUSED_DOWNLOADS).contains(&downloads),
        "{downloads} downloads of the refused bundle by the second backoff:\n{}",
        log.join("\n")
    );
    let failures: Vec<_> = server
        .reports()
        .into_iter()
        .filter(|r| r.status == ReportStatus::Failure)
        .collect();
    assert!(!failures.is_empty(), "{}", log.join("\n"));
    assert!(
        failures
            .iter()
            .all(|f| f.error.as_deref().is_some_and(|e| e.contains(expected))),
        "{failures:?}"
    );
    // Each refusal was reported before the next download (the server was told).
    assert!(failures.len() + 1 >= downloads, "{failures:?}");
    // The delays grew: the backoff was not reset between refusals of the same offer.
    assert!(
        log.iter()
            .any(|l| l.contains("polling again after a backoff; retry 2 in")),
        "{}",
        log.join("\n")
    );
}

#[test]
fn a_daemon_offered_an_old_bundle_forever_does_not_download_it_in_a_loop() {
    let old = rootfs_bundle("1.0.0");
    let (_dir, r, server, log, before) = daemon_against(
        Behaviour {
            body: old,
            etag: "old".into(),
            ..Default::default()
        },
        "1.0.0",
        BACKED_OFF_TWICE,
        |c| c,
    );
    assert_daemon_backs_off(
        &server,
        &log,
        "version 1.0.0 is lower than the installed 2.0.0",
    );
    assert_eq!(r.snapshot(), before, "nothing was written");
    assert_safe_then_good_install(&r, &before, ON_2_0_0, "good");
}

#[test]
fn a_daemon_whose_download_stalls_mid_payload_retries_later_without_reporting_a_failure() {
    let body = rootfs_bundle("2.1.0");
    let (_dir, r, server, log, before) = daemon_against(
        Behaviour {
            drop_first_after: Some(body.len() / 2),
            stall_every: Some(Duration::from_secs(3600)),
            body,
            etag: "v".into(),
            ..Default::default()
        },
        "2.1.0",
        Until {
            what: "a second install after the first gave up",
            done: |server, log| {
                server.bundle_requests().len() >= 3 && log.iter().any(|l| l.contains("; retrying"))
            },
        },
        // Each install gives up after 2 stalls of 1 s.
        |c| {
            let c = c.replace("read_timeout_secs = 2", "read_timeout_secs = 1");
            assert!(c.contains("retries = 4"));
            c.replace("retries = 4", "retries = 1")
        },
    );
    let text = log.join("\n");
    // An outage is not a verdict on the update: nothing is reported as failed...
    let failures: Vec<_> = server
        .reports()
        .into_iter()
        .filter(|r| r.status == ReportStatus::Failure)
        .collect();
    assert!(failures.is_empty(), "{failures:?}\n{text}");
    assert!(
        text.contains("was interrupted (")
            && text.contains("the server sent no data for 1000 ms (read timeout)); retrying"),
        "{text}"
    );
    // ...and the daemon tried again after a backoff: the first install made 2 requests (the
    // stalled first answer, one stalled resume), the second started from scratch.
    let seen = server.bundle_requests();
    assert!(seen.len() >= 3, "{seen:?}\n{text}");
    assert_eq!(seen[2].range, None, "a new install starts over: {seen:?}");
    assert_eq!(r.status().trial, None);
    assert_eq!(r.slot_state("rootfs", Slot::A), "writing", "not bootable");
    assert_safe_then_good_install(&r, &before, ON_2_0_0, "writing");
}

// ------------------------------------------------------------------ 5. swapped bytes

/// A rootfs image zstd cannot compress (stored verbatim in raw blocks), so two swapped
/// payload bytes decode to two swapped image bytes: only the SHA-256 can tell.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// The noise bundle and a copy with two different adjacent payload bytes in its second half
/// swapped (same length).
fn noise_bundle_and_swapped(version: &str) -> (Vec<u8>, Vec<u8>) {
    let image = noise(ROOTFS_SIZE);
    let bundle = bundle_with(
        release_key(),
        version,
        COMPATIBLE,
        &[("rootfs", image.clone())],
    );
    let needle = &image[ROOTFS_SIZE * 3 / 4..ROOTFS_SIZE * 3 / 4 + 64];
    let at = bundle
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the payload stores the image verbatim");
    let i = (at..).find(|&i| bundle[i] != bundle[i + 1]).unwrap();
    assert!(i > bundle.len() / 2);
    let mut swapped = bundle.clone();
    swapped.swap(i, i + 1);
    (bundle, swapped)
}

#[test]
fn bytes_swapped_in_a_resumed_payload_are_refused_by_the_image_hash() {
    let (bundle, swapped) = noise_bundle_and_swapped("2.0.0");
    // The first answer breaks off at half; the resume (valid 206, same ETag) carries the
    // swap. The HTTP layer cannot tell, the image's SHA-256 does.
    let server = Server::start(Behaviour {
        drop_first_after: Some(bundle.len() / 2),
        tampered_after_first: Some(swapped),
        body: bundle.clone(),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let before = r.snapshot();
    let (err, took) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(
        err.contains("image 'rootfs.img' does not match its SHA-256 in the manifest")
            && err.contains("the payload was modified"),
        "{err}"
    );
    assert!(
        err.starts_with("bundle refused: "),
        "not the slot's fault: {err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let seen = server.bundle_requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={}-", bundle.len() / 2).as_str())
    );
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v2\""));
    assert_eq!(r.slot_state("rootfs", Slot::B), "writing", "not bootable");
    assert_eq!(r.status().trial, None);

    // Trying the same bad bytes again fails the same way, once, without a retry loop.
    let (again, _) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(
        again.contains("image 'rootfs.img' does not match its SHA-256"),
        "{again}"
    );
    assert_eq!(server.bundle_requests().len(), 3, "one request per install");
    assert_safe_then_good_install(&r, &before, FACTORY, "writing");
}

#[test]
fn a_daemon_offered_a_tampered_bundle_forever_does_not_download_it_in_a_loop() {
    let (_, swapped) = noise_bundle_and_swapped("2.1.0");
    let (_dir, r, server, log, before) = daemon_against(
        Behaviour {
            body: swapped,
            etag: "t".into(),
            ..Default::default()
        },
        "2.1.0",
        BACKED_OFF_TWICE,
        |c| c,
    );
    assert_daemon_backs_off(
        &server,
        &log,
        "image 'rootfs.img' does not match its SHA-256 in the manifest",
    );
    assert_eq!(r.slot_state("rootfs", Slot::A), "writing", "not bootable");
    assert_safe_then_good_install(&r, &before, ON_2_0_0, "writing");
}

// ------------------------------------------------------------------ 6. lying about ranges

fn resume_is_not_spliced(behaviour: Behaviour, expected: &str) {
    let body = behaviour.body.clone();
    let server = Server::start(Behaviour {
        drop_first_after: Some(body.len() / 2),
        etag: "v2".into(),
        ..behaviour
    });
    let r = Robot::new(Backend::Grub);
    let before = r.snapshot();
    let (err, took) = install_fails(&r, &server.url("/bundle.otab"));
    assert!(
        err.contains(&format!(
            "download of {} cannot resume: {expected}",
            server.url("/bundle.otab")
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(server.bundle_requests().len(), 2, "not retried");
    assert_safe_then_good_install(&r, &before, FACTORY, "writing");
}

#[test]
fn a_range_request_answered_with_the_whole_file_is_not_spliced() {
    resume_is_not_spliced(
        Behaviour {
            body: rootfs_bundle("2.0.0"),
            ignore_range: true,
            ..Default::default()
        },
        "the server sent the whole file instead of the missing range",
    );
}

#[test]
fn a_range_answered_from_the_wrong_offset_is_not_spliced() {
    let body = rootfs_bundle("2.0.0");
    let half = body.len() / 2;
    resume_is_not_spliced(
        Behaviour {
            body,
            range_start_off_by: Some(-100),
            ..Default::default()
        },
        &format!(
            "asked for byte {half} onwards, the server sent from byte {}",
            half - 100
        ),
    );
}
