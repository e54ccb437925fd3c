//! Freeze and replay detection with the real daemon against a loopback server that controls the timestamps in
//! its poll answers: a replayed old timestamp is refused and the alarm goes out with the next poll; a server
//! that withholds fresh timestamps past `max_metadata_age_secs` of the robot's uptime gets the alarm in the
//! next poll; one signed by a key the root does not name is refused; a robot whose root names no timestamp
//! key keeps today's behaviour (no alarm, no state file).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_client::daemon::{DaemonHooks, ScaledClock, FRESHNESS_FILE};
use ota_keys::timestamp::{SignedTimestamp, Timestamp, TimestampRole};
use ota_keys::{SecretKey, SignedTrustRoot, TrustRoot};
use ota_protocol::device::{EnrollResponse, PollRequest, PollResponse};
use ota_protocol::fleet::FreezeReason;
use ota_testkit::robot::*;
use ota_testkit::wait::wait_for;

/// The image's build time the robots are configured with.
const BUILD: u64 = 1_800_000_000;
const HOUR: u64 = 3600;
const BOUND: Duration = Duration::from_secs(30);

/// What the server puts in the answer to poll number `n` (0-based).
type Script = Arc<dyn Fn(usize) -> Option<serde_json::Value> + Send + Sync>;

/// A device-protocol server on loopback: enrolls anyone, answers polls (no offer, poll again in a second)
/// with the script's timestamp, records every poll request.
struct Fake {
    base: String,
    polls: Arc<Mutex<Vec<PollRequest>>>,
}

impl Fake {
    fn start(script: Script) -> Fake {
        Fake::publishing(script, None)
    }

    /// Also says the server publishes trust root `trust_version` (its chain route answers nothing of use).
    fn publishing(script: Script, trust_version: Option<u64>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let polls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&polls);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (script, seen) = (Arc::clone(&script), Arc::clone(&seen));
                std::thread::spawn(move || {
                    let _ = answer(stream, &script, &seen, trust_version);
                });
            }
        });
        Fake { base, polls }
    }

    fn polls(&self) -> Vec<PollRequest> {
        self.polls.lock().unwrap().clone()
    }
}

fn answer(
    stream: std::net::TcpStream,
    script: &Script,
    polls: &Mutex<Vec<PollRequest>>,
    trust_version: Option<u64>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let value = match path.as_str() {
        // Key-proving enrollment asks for a one-time challenge first.
        "/api/devices/challenge" => {
            Ok(serde_json::json!({"challenge": "c1.test", "expires_in_secs": 300}))
        }
        ota_protocol::paths::ENROLL => serde_json::to_value(EnrollResponse {
            device_id: "robot".into(),
            token: "ota1.test".into(),
            poll_interval_secs: 1,
            poll_jitter_secs: 0,
        }),
        ota_protocol::paths::POLL => {
            let n = {
                let mut p = polls.lock().unwrap();
                p.push(serde_json::from_slice(&body).expect("a poll request"));
                p.len() - 1
            };
            serde_json::to_value(PollResponse {
                poll_interval_secs: 1,
                poll_jitter_secs: 0,
                update: None,
                trust_version,
                timestamp: script(n),
            })
        }
        _ => serde_json::to_value(serde_json::json!({"accepted": true, "duplicate": false})),
    }
    .unwrap();
    let body = serde_json::to_vec(&value).unwrap();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)
}

/// A timestamp issued at `at` (valid three hours), signed by `key`, as a poll answer carries it.
fn stamp(key: &SecretKey, at: u64) -> serde_json::Value {
    let ts = Timestamp {
        version: at,
        issued_at: at,
        expires: at + 3 * HOUR,
        trust_version: 1,
    };
    serde_json::to_value(SignedTimestamp::sign(ts, &[key])).unwrap()
}

/// A robot polling `fake`, trusting the release key and (with `online`) a timestamp role naming it, built at
/// [`BUILD`], raising the stale alarm after `max_age_secs`.
fn robot(
    dir: &std::path::Path,
    fake: &Fake,
    online: Option<&SecretKey>,
    max_age_secs: u64,
) -> Robot {
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.server = Some(ServerSpec {
        url: fake.base.clone(),
        device_id: "robot".into(),
        enrollment_secret: "fleet".into(),
        tags: Default::default(),
        backoff_initial_ms: 100,
        backoff_max_secs: 1,
        telemetry_command: None,
    });
    let r = Robot::create(dir, &spec);
    if let Some(online) = online {
        let mut root = TrustRoot::new(1, 1, vec![release_key().public_key()]).unwrap();
        root.timestamp = Some(TimestampRole::new(vec![online.public_key()]));
        let mut signed = SignedTrustRoot::new(root);
        signed.sign(release_key());
        std::fs::write(r.path("trust.pub"), signed.to_json_pretty()).unwrap();
    }
    // [server] is the configuration's last section.
    let mut config = std::fs::read_to_string(&r.config_path).unwrap();
    config.push_str(&format!(
        "max_metadata_age_secs = {max_age_secs}\nbuild_time = {BUILD}\n"
    ));
    std::fs::write(&r.config_path, config).unwrap();
    r
}

/// Runs the daemon (sleeps scaled to 5 %: a poll every 50 ms) until `done` holds for the polls so far.
fn run_until(
    r: &Robot,
    fake: &Fake,
    what: &str,
    done: impl Fn(&[PollRequest]) -> bool,
) -> Vec<String> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let hooks = DaemonHooks {
        clock: Arc::new(ScaledClock(0.05)),
        reboot: None,
        log: Arc::new(move |level, line: &str| {
            sink.lock().unwrap().push(format!("{level}: {line}"))
        }),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let daemon = s.spawn(|| r.run_daemon(&hooks, &cancel));
        wait_for(what, BOUND, || done(&fake.polls()));
        cancel.store(true, Ordering::Relaxed);
        daemon.join().unwrap().unwrap();
    });
    let log = lines.lock().unwrap().clone();
    log
}

fn reasons(polls: &[PollRequest]) -> Vec<Option<FreezeReason>> {
    polls
        .iter()
        .map(|p| p.freeze_alarm.as_ref().map(|a| a.reason))
        .collect()
}

#[test]
fn a_replayed_timestamp_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let online = SecretKey::generate();
    let key = online.to_pem();
    // Poll 0: fresh (ten hours after the build). Then the timestamp of an hour after the build, expired
    // two hours before the fresh one was issued.
    let fake = Fake::start(Arc::new(move |n| {
        let key = SecretKey::from_pem(&key).unwrap();
        Some(stamp(
            &key,
            if n == 0 {
                BUILD + 10 * HOUR
            } else {
                BUILD + HOUR
            },
        ))
    }));
    let r = robot(dir.path(), &fake, Some(&online), 7 * 24 * HOUR);
    let log = run_until(&r, &fake, "a poll reporting the replay", |p| {
        reasons(p).contains(&Some(FreezeReason::Replayed))
    });
    let polls = fake.polls();
    assert_eq!(reasons(&polls[..2]), vec![None, None], "{log:#?}");
    let alarm = polls.iter().find_map(|p| p.freeze_alarm.clone()).unwrap();
    assert_eq!(
        alarm.last_version,
        Some(BUILD + 10 * HOUR),
        "the replay replaced nothing"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("freeze alarm (replayed)") && l.contains("expired")),
        "{log:#?}"
    );
    // Kept in the data directory and shown by `ota-client status`.
    let client = r.client();
    let status =
        ota_client::daemon::freshness_status(client.config(), &client.trust_root().unwrap())
            .unwrap();
    assert_eq!(status.alarm.unwrap().reason, FreezeReason::Replayed);
    assert_eq!(status.state.newest.unwrap().version, BUILD + 10 * HOUR);
    assert_eq!(status.state.floor, BUILD + 10 * HOUR);
}

#[test]
fn withheld_timestamps_raise_the_alarm_after_the_configured_uptime() {
    let dir = tempfile::tempdir().unwrap();
    let online = SecretKey::generate();
    let key = online.to_pem();
    // One fresh timestamp, then the same one over and over: nothing new.
    let fake = Fake::start(Arc::new(move |_| {
        Some(stamp(&SecretKey::from_pem(&key).unwrap(), BUILD + HOUR))
    }));
    let r = robot(dir.path(), &fake, Some(&online), 2);
    let log = run_until(&r, &fake, "a poll reporting staleness", |p| {
        reasons(p).contains(&Some(FreezeReason::Stale))
    });
    let polls = fake.polls();
    let first = reasons(&polls).iter().position(Option::is_some).unwrap();
    assert!(
        first >= 2,
        "not before two seconds of polling every 50 ms: {log:#?}"
    );
    let alarm = polls[first].freeze_alarm.clone().unwrap();
    assert_eq!(alarm.reason, FreezeReason::Stale);
    assert!(alarm.stale_secs >= 2);
    assert_eq!(alarm.last_version, Some(BUILD + HOUR));
    assert!(
        log.iter().any(|l| l.contains("freeze alarm (stale)")),
        "{log:#?}"
    );
}

#[test]
fn a_timestamp_from_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let online = SecretKey::generate();
    let stranger = SecretKey::generate().to_pem();
    let fake = Fake::start(Arc::new(move |_| {
        Some(stamp(
            &SecretKey::from_pem(&stranger).unwrap(),
            BUILD + HOUR,
        ))
    }));
    let r = robot(dir.path(), &fake, Some(&online), 7 * 24 * HOUR);
    let log = run_until(&r, &fake, "a poll reporting the forgery", |p| {
        reasons(p).contains(&Some(FreezeReason::Invalid))
    });
    assert!(
        log.iter()
            .any(|l| l.contains("not signed by the trust root's timestamp key")),
        "{log:#?}"
    );
}

#[test]
fn without_a_timestamp_role_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let stranger = SecretKey::generate().to_pem();
    let fake = Fake::start(Arc::new(move |_| {
        Some(stamp(&SecretKey::from_pem(&stranger).unwrap(), 0))
    }));
    let r = robot(dir.path(), &fake, None, 1);
    run_until(&r, &fake, "polls for over a second", |p| p.len() >= 25);
    assert!(reasons(&fake.polls()).iter().all(Option::is_none));
    assert!(!r.path("data").join(FRESHNESS_FILE).exists());
}

/// A server that publishes a newer root whose chain never walks: the robot warns once, not on every poll.
#[test]
fn a_chain_that_never_walks_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::publishing(Arc::new(|_| None), Some(7));
    let r = robot(dir.path(), &fake, None, HOUR);
    let log = run_until(&r, &fake, "six polls", |p| p.len() >= 6);
    let warned = log
        .iter()
        .filter(|l| l.contains("cannot walk the server's trust chain from version 0 to 7"))
        .count();
    assert_eq!(warned, 1, "{log:#?}");
}
