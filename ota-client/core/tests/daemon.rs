//! The daemon's state machine driven by a virtual clock: table tests of typical histories and
//! property tests over random server answers, install outcomes and stops. Nothing sleeps.

use std::collections::BTreeSet;
use std::time::Duration;

use ota_client_core::daemon::*;
use ota_client_core::{EventKind, ReportEvent, Slot};
use ota_protocol::device::{PollResponse, ReportStatus, UpdateOffer};
use proptest::prelude::*;

#[path = "daemon/gates.rs"]
mod gates;

const SECOND: Duration = Duration::from_secs(1);

fn settings() -> Settings {
    Settings {
        device_id: "robot".into(),
        server_url: "https://ota.example".into(),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(60),
        gates: vec![],
    }
}

fn offer(version: &str) -> UpdateOffer {
    UpdateOffer {
        rollout_id: 7,
        bundle_id: "b".repeat(64),
        version: version.parse().unwrap(),
        compatible: "robot-v1".into(),
        manifest_digest: format!("digest-{version}"),
        size: 1000,
        download_url: "/bundle".into(),
        install_allowed: true,
        revert: false,
        require_confirmation: false,
        chunked: false,
    }
}

fn polled(update: Option<UpdateOffer>) -> Input {
    Input::Polled {
        response: PollResponse {
            poll_interval_secs: 60,
            poll_jitter_secs: 10,
            update,
            trust_version: None,
            timestamp: None,
        },
        armed: false,
        held: false,
    }
}

fn event(id: u64, kind: EventKind, version: &str) -> ReportEvent {
    ReportEvent {
        id,
        kind,
        slot: Some(Slot::A),
        version: Some(version.parse().unwrap()),
        bundle_hash: Some(format!("digest-{version}")),
        reason: if kind == EventKind::Committed {
            String::new()
        } else {
            "health check failed".into()
        },
    }
}

fn failure(kind: ErrorKind, status: Option<u16>, retry_after: Option<Duration>) -> Failure {
    Failure {
        kind,
        status,
        message: "nope".into(),
        why: format!("HTTP {}: nope", status.unwrap_or(0)),
        retry_after,
    }
}

/// A machine with a virtual clock that saves its state like the agent does.
struct Driver {
    m: DaemonMachine,
    now: Duration,
    random: u64,
    saved: Option<DaemonState>,
    log: Vec<(Level, String)>,
}

impl Driver {
    fn new(saved: Option<DaemonState>, has_token: bool) -> Driver {
        Driver {
            m: DaemonMachine::new(settings(), saved.clone(), has_token),
            now: Duration::ZERO,
            random: 0x1234_5678_9abc_def0,
            saved,
            log: Vec::new(),
        }
    }

    /// A robot that enrolled before and has a token.
    fn enrolled() -> Driver {
        Driver::new(Some(DaemonState::new("robot", 1)), true)
    }

    fn feed(&mut self, input: Input) -> Action {
        self.random = self
            .random
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let action = self.m.step(self.now, self.random, input);
        if self.m.take_changed() {
            self.saved = Some(self.m.state().clone());
        }
        self.log.extend(self.m.take_log());
        if let Action::Wait { until, .. } = action {
            self.now = until;
        }
        action
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.iter().any(|(_, l)| l.contains(needle))
    }
}

fn delay(a: &Action) -> Duration {
    match a {
        Action::Wait { delay, .. } => *delay,
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn sent_status(a: &Action) -> ReportStatus {
    match a {
        Action::Send { request, .. } => request.status,
        other => panic!("expected a report, got {other:?}"),
    }
}

// ------------------------------------------------------------------ backoff

#[test]
fn backoff_is_bounded_full_jitter_and_honours_retry_after() {
    let mut b = Backoff::new(SECOND, Duration::from_secs(300));
    for n in 1..40u32 {
        let ceiling = SECOND
            .saturating_mul(1 << (n - 1).min(20))
            .min(Duration::from_secs(300));
        let d = b.next(u64::MAX - 7, None);
        assert!(d <= ceiling, "failure {n}: {d:?} > {ceiling:?}");
    }
    assert_eq!(b.failures(), 39);
    // Full jitter reaches both ends.
    let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(300));
    assert_eq!(b.next(0, None), Duration::ZERO);
    assert_eq!(b.next(2000, None), Duration::from_millis(2000));
    // Retry-After is a floor, capped at an hour.
    b.reset();
    assert_eq!(
        b.next(0, Some(Duration::from_secs(7))),
        Duration::from_secs(7)
    );
    assert_eq!(
        b.next(0, Some(Duration::from_secs(1 << 40))),
        MAX_RETRY_AFTER
    );
}

proptest! {
    #[test]
    fn backoff_never_exceeds_its_cap_nor_undercuts_retry_after(
        initial_ms in 1u64..10_000,
        max_s in 1u64..10_000,
        steps in proptest::collection::vec((any::<u64>(), proptest::option::of(0u64..10_000_000)), 1..80),
    ) {
        let max = Duration::from_secs(max_s);
        let mut b = Backoff::new(Duration::from_millis(initial_ms), max);
        for (random, retry_after) in steps {
            let retry_after = retry_after.map(Duration::from_secs);
            let d = b.next(random, retry_after);
            let floor = retry_after.map_or(Duration::ZERO, |r| r.min(MAX_RETRY_AFTER));
            prop_assert!(d >= floor, "{d:?} < Retry-After {floor:?}");
            prop_assert!(d <= max.max(floor), "{d:?} > cap {max:?} / {floor:?}");
        }
    }
}

// ------------------------------------------------------------------ progress

#[test]
fn progress_is_reported_per_step_and_interval() {
    let mut p = ProgressThrottle::default();
    let t = |ms| Duration::from_millis(ms);
    assert_eq!(p.image_started(1000, t(0)), Some(0));
    assert_eq!(p.image(), 1);
    // 25 % but within the interval: not yet.
    assert_eq!(p.bytes_written(250, t(500)), None);
    assert_eq!(p.bytes_written(0, t(1000)), Some(20));
    assert_eq!(p.bytes_written(10, t(2500)), None, "still the 20 % step");
    assert_eq!(p.bytes_written(700, t(2600)), Some(80));
    assert_eq!(p.image_finished(t(2700)), Some(100));
    assert_eq!(p.image_finished(t(2800)), None);
    assert_eq!(p.image_started(0, t(3000)), Some(0));
    assert_eq!(
        p.bytes_written(10, t(9000)),
        None,
        "an empty image has no percentage"
    );
    assert_eq!(p.image(), 2);
}

// ------------------------------------------------------------------ typical histories

#[test]
fn a_new_robot_forgets_any_token_enrolls_reports_and_polls() {
    let mut d = Driver::new(None, true);
    assert_eq!(d.feed(Input::Start), Action::ForgetToken);
    assert_eq!(
        d.saved, None,
        "the token goes before the new identity is saved"
    );
    assert_eq!(d.feed(Input::Done), Action::Enroll);
    let saved = d.saved.clone().expect("identity saved before enrolling");
    assert_eq!(saved.device_id, "robot");
    assert!(saved.enroll_request_id.starts_with("enroll-"));
    assert!(
        !d.logged("device id changed"),
        "nothing changed: there was none"
    );
    assert_eq!(d.feed(Input::Done), Action::ListEvents);
    assert!(d.logged("started as device robot polling https://ota.example"));
    assert!(d.logged("enrolled as robot with https://ota.example"));
    assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    let wait = delay(&d.feed(polled(None)));
    assert!((Duration::from_secs(60)..=Duration::from_secs(70)).contains(&wait));
    assert_eq!(
        d.feed(Input::Woke),
        Action::ListEvents,
        "no second enrollment"
    );
}

#[test]
fn a_changed_device_id_starts_a_new_identity() {
    let mut old = DaemonState::new("old-robot", 5);
    old.suppressed_events = vec![3];
    let mut d = Driver::new(Some(old.clone()), true);
    assert_eq!(d.feed(Input::Start), Action::ForgetToken);
    assert_eq!(d.feed(Input::Done), Action::Enroll);
    assert!(d.logged("device id changed from old-robot to robot: enrolling again"));
    let new = d.saved.clone().unwrap();
    assert_ne!(new.enroll_request_id, old.enroll_request_id);
    assert!(new.suppressed_events.is_empty());
}

#[test]
fn an_outage_backs_off_and_honours_retry_after() {
    let mut d = Driver::enrolled();
    assert_eq!(d.feed(Input::Start), Action::ListEvents);
    assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    let mut ceilings = Vec::new();
    for n in 1..=5 {
        let w = delay(&d.feed(Input::Failed(failure(ErrorKind::Retry, None, None))));
        ceilings.push(w);
        assert!(
            w <= Duration::from_millis(100) * (1 << (n - 1)),
            "{n}: {w:?}"
        );
        assert!(d.logged(&format!("retry {n} in")));
        assert_eq!(d.feed(Input::Woke), Action::ListEvents);
        assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    }
    let busy = failure(ErrorKind::Retry, Some(503), Some(Duration::from_secs(7)));
    assert!(delay(&d.feed(Input::Failed(busy))) >= Duration::from_secs(7));
    assert_eq!(d.feed(Input::Woke), Action::ListEvents);
    assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    d.feed(polled(None));
    assert_eq!(
        d.m.backoff().failures(),
        0,
        "a good cycle resets the backoff"
    );
}

#[test]
fn a_refused_token_is_forgotten_and_the_robot_enrolls_again_with_a_new_request() {
    let mut d = Driver::enrolled();
    let before = d.saved.clone().unwrap().enroll_request_id;
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    let a = d.feed(Input::Failed(failure(
        ErrorKind::Reauthenticate,
        Some(401),
        None,
    )));
    assert_eq!(a, Action::ForgetToken);
    delay(&d.feed(Input::Done));
    assert!(d.logged("the server no longer accepts this device's token (nope); enrolling again in"));
    assert_ne!(d.saved.clone().unwrap().enroll_request_id, before);
    assert_eq!(d.feed(Input::Woke), Action::Enroll);
}

#[test]
fn enrollment_refusals_say_what_to_do_and_wait_long() {
    for (f, expected) in [
        (
            failure(ErrorKind::Reauthenticate, Some(401), None),
            "enrollment refused: nope (check [server] enrollment_secret)",
        ),
        (
            failure(ErrorKind::GiveUp, Some(409), None),
            "another robot enrolled as robot; an operator must delete that device",
        ),
        (
            failure(ErrorKind::GiveUp, Some(400), None),
            "enrollment refused: nope; trying again in",
        ),
        (
            Failure::give_up("cannot read /etc/secret: denied"),
            "cannot read /etc/secret: denied; trying again in",
        ),
    ] {
        let mut d = Driver::new(None, false);
        d.feed(Input::Start);
        assert_eq!(d.feed(Input::Done), Action::Enroll);
        let w = delay(&d.feed(Input::Failed(f)));
        assert!(
            w >= Duration::from_secs(30),
            "half the longest backoff: {w:?}"
        );
        assert!(
            d.log
                .iter()
                .any(|(l, s)| *l == Level::Error && s.contains(expected)),
            "{:?}",
            d.log
        );
        assert_eq!(d.feed(Input::Woke), Action::Enroll);
    }
}

#[test]
fn an_offer_is_persisted_downloaded_installed_and_rebooted_into() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    let a = d.feed(polled(Some(offer("2.0.0"))));
    assert_eq!(sent_status(&a), ReportStatus::Downloading);
    let active = d
        .saved
        .clone()
        .unwrap()
        .active
        .expect("persisted before anything");
    assert_eq!(active.manifest_digest, "digest-2.0.0");
    assert!(!active.rebooting);
    assert_eq!(d.feed(Input::Done), Action::Install(offer("2.0.0")));
    let a = d.feed(Input::Installed(InstallResult::TrialArmed {
        slot: Slot::B,
    }));
    assert_eq!(sent_status(&a), ReportStatus::Rebooting);
    assert!(d.saved.clone().unwrap().active.unwrap().rebooting);
    // The rebooting report is best effort.
    let a = d.feed(Input::Failed(failure(ErrorKind::Retry, None, None)));
    assert_eq!(a, Action::Reboot);
    assert!(!a.interruptible());
    assert!(d.logged("could not report the reboot (HTTP 0: nope); rebooting anyway"));
    assert_eq!(d.feed(Input::Done), Action::Exit(Exit::Rebooted));
    assert_eq!(
        d.feed(Input::Woke),
        Action::Exit(Exit::Rebooted),
        "stays ended"
    );
}

#[test]
fn an_armed_offer_the_robot_did_not_reboot_into_reboots_without_installing() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    let a = d.feed(Input::Polled {
        response: PollResponse {
            poll_interval_secs: 1,
            poll_jitter_secs: 0,
            update: Some(offer("2.0.0")),
            trust_version: None,
            timestamp: None,
        },
        armed: true,
        held: false,
    });
    assert_eq!(sent_status(&a), ReportStatus::Rebooting);
    assert!(d.saved.clone().unwrap().active.unwrap().rebooting);
    assert_eq!(d.feed(Input::Done), Action::Reboot);
    // A failed reboot is retried after a backoff.
    delay(&d.feed(Input::Failed(Failure::retry("exit status 1"))));
    assert!(d.logged("the reboot into 2.0.0 failed: exit status 1; retry 1 in"));
}

#[test]
fn a_refused_offer_is_reported_then_polled_again_only_after_a_growing_backoff() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    for n in 1..=3u64 {
        d.feed(polled(Some(offer("1.0.0"))));
        assert_eq!(d.feed(Input::Done), Action::Install(offer("1.0.0")));
        let recorded = event(n, EventKind::InstallFailed, "1.0.0");
        let a = d.feed(Input::Installed(InstallResult::Failed {
            failure: Failure::give_up("version 1.0.0 is lower than the installed 2.0.0"),
            cancelled: false,
            new_events: vec![recorded.clone()],
        }));
        assert_eq!(a, Action::ListEvents, "reported at once");
        let a = d.feed(Input::Events(vec![recorded]));
        let Action::Send {
            request,
            attach_log,
        } = a
        else {
            panic!("{a:?}")
        };
        assert!(attach_log);
        assert_eq!(request.status, ReportStatus::Failure);
        assert_eq!(request.rollout_id, Some(7));
        assert_eq!(d.feed(Input::Done), Action::Ack { id: n });
        let w = d.feed(Input::Done);
        delay(&w);
        assert!(
            d.saved.clone().unwrap().active.is_none(),
            "the failure ended the offer"
        );
        assert!(d.logged(&format!(
            "the offer of 1.0.0 failed; polling again after a backoff; retry {n} in"
        )));
        assert_eq!(d.feed(Input::Woke), Action::ListEvents);
        assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    }
}

#[test]
fn a_failure_the_client_could_not_record_is_reported_by_the_daemon() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    d.feed(polled(Some(offer("2.0.0"))));
    d.feed(Input::Done);
    let a = d.feed(Input::Installed(InstallResult::Failed {
        failure: Failure::give_up("the state directory is full"),
        cancelled: false,
        new_events: vec![],
    }));
    let Action::Send {
        request,
        attach_log,
    } = a
    else {
        panic!("{a:?}")
    };
    assert!(attach_log);
    assert_eq!(request.status, ReportStatus::Failure);
    assert_eq!(
        request.error.as_deref(),
        Some("the state directory is full")
    );
    assert!(
        d.saved.clone().unwrap().active.is_some(),
        "until the server has it"
    );
    assert_eq!(d.feed(Input::Done), Action::ListEvents);
    assert!(d.saved.clone().unwrap().active.is_none());
    delay(&d.feed(Input::Events(vec![])));
}

#[test]
fn an_interrupted_download_is_not_a_verdict_and_its_event_is_not_reported() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    d.feed(polled(Some(offer("2.1.0"))));
    d.feed(Input::Done);
    let recorded = event(4, EventKind::InstallFailed, "2.1.0");
    delay(&d.feed(Input::Installed(InstallResult::Failed {
        failure: Failure::retry("the server sent no data for 1000 ms (read timeout)"),
        cancelled: false,
        new_events: vec![recorded.clone()],
    })));
    assert!(d.logged("installing 2.1.0 was interrupted (the server sent no data for 1000 ms (read timeout)); retrying; retry 1 in"));
    assert_eq!(d.saved.clone().unwrap().suppressed_events, vec![4]);
    d.feed(Input::Woke);
    // Acknowledged without a report, then forgotten.
    assert_eq!(d.feed(Input::Events(vec![recorded])), Action::Ack { id: 4 });
    assert_eq!(d.feed(Input::Done), Action::Poll);
    assert!(d.saved.clone().unwrap().suppressed_events.is_empty());
}

#[test]
fn a_stop_during_an_install_keeps_the_offer_for_the_next_start() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    d.feed(polled(Some(offer("2.1.0"))));
    d.feed(Input::Done);
    let a = d.feed(Input::Installed(InstallResult::Failed {
        failure: Failure::retry("cancelled"),
        cancelled: true,
        new_events: vec![event(9, EventKind::InstallFailed, "2.1.0")],
    }));
    assert_eq!(a, Action::Exit(Exit::Stopped));
    assert!(d.logged("installing 2.1.0 interrupted by shutdown"));
    let saved = d.saved.clone().unwrap();
    assert_eq!(saved.suppressed_events, vec![9]);
    assert!(saved.active.is_some());
}

#[test]
fn events_are_reported_in_order_and_a_permanently_refused_one_is_dropped() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    let events = vec![
        event(1, EventKind::Committed, "2.0.0"),
        event(2, EventKind::RolledBack, "2.1.0"),
        event(3, EventKind::MarkedBad, "2.1.0"),
    ];
    let a = d.feed(Input::Events(events));
    let Action::Send {
        request,
        attach_log,
    } = a
    else {
        panic!("{a:?}")
    };
    assert_eq!((request.status, attach_log), (ReportStatus::Success, false));
    assert!(request.report_id.ends_with("-1"));
    assert_eq!(d.feed(Input::Done), Action::Ack { id: 1 });
    assert!(d.logged("reported success of 2.0.0"));
    let a = d.feed(Input::Done);
    let Action::Send { request, .. } = a else {
        panic!("{a:?}")
    };
    assert_eq!(request.status, ReportStatus::RolledBack);
    assert_eq!(request.reason.as_deref(), Some("health check failed"));
    // Refused for good: dropped (acknowledged), not retried.
    let a = d.feed(Input::Failed(failure(ErrorKind::GiveUp, Some(422), None)));
    assert_eq!(a, Action::Ack { id: 2 });
    assert!(d.logged("the server refused the report of rollback (health check failed) of 2.1.0 (HTTP 422: nope); dropping it"));
    let a = d.feed(Input::Done);
    let Action::Send { request, .. } = a else {
        panic!("{a:?}")
    };
    assert_eq!(
        request.error.as_deref(),
        Some("slot A was marked bad: health check failed")
    );
    // An outage: not acknowledged, sent again on the next cycle.
    delay(&d.feed(Input::Failed(failure(ErrorKind::Retry, None, None))));
    d.feed(Input::Woke);
    let a = d.feed(Input::Events(vec![event(3, EventKind::MarkedBad, "2.1.0")]));
    let Action::Send { request: again, .. } = a else {
        panic!("{a:?}")
    };
    assert_eq!(again.report_id, request.report_id, "the same report");
}

#[test]
fn a_live_switch_polls_again_at_once() {
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    d.feed(polled(Some(offer("2.0.0"))));
    d.feed(Input::Done);
    let a = d.feed(Input::Installed(InstallResult::LiveSwitched {
        classes: vec!["model".into()],
    }));
    assert_eq!(a, Action::ListEvents);
    assert!(d.logged("2.0.0 switched live (model) and healthy"));
}

#[test]
fn a_stop_ends_the_daemon_wherever_it_is_and_stray_inputs_change_nothing() {
    let mut d = Driver::enrolled();
    assert_eq!(d.feed(Input::Start), Action::ListEvents);
    assert_eq!(
        d.feed(Input::Woke),
        Action::ListEvents,
        "not an answer: asked again"
    );
    assert_eq!(d.feed(Input::Done), Action::ListEvents);
    assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    assert_eq!(d.feed(Input::Cancelled), Action::Exit(Exit::Stopped));
    assert_eq!(d.feed(Input::Start), Action::Exit(Exit::Stopped));
}

// ------------------------------------------------------------------ random histories

/// How the world answers one action.
#[derive(Debug, Clone)]
struct Fate {
    /// 0..: picks the answer.
    pick: u8,
    kind: ErrorKind,
    retry_after: Option<u64>,
    /// Feed a stray input first.
    stray: bool,
    /// Ask to stop before this action.
    stop: bool,
}

fn fate() -> impl Strategy<Value = Fate> {
    (
        any::<u8>(),
        prop_oneof![
            Just(ErrorKind::Retry),
            Just(ErrorKind::GiveUp),
            Just(ErrorKind::Reauthenticate)
        ],
        proptest::option::of(0u64..100_000),
        proptest::bool::weighted(0.05),
        proptest::bool::weighted(0.01),
    )
        .prop_map(|(pick, kind, retry_after, stray, stop)| Fate {
            pick,
            kind,
            retry_after,
            stray,
            stop,
        })
}

/// The client's side: unreported events, and what the server has.
#[derive(Default)]
struct World {
    events: Vec<ReportEvent>,
    next_id: u64,
    /// Report ids the server answered (accepted or refused for good).
    answered: BTreeSet<String>,
    refused: BTreeSet<String>,
    acked: Vec<u64>,
}

impl World {
    fn record(&mut self, kind: EventKind) -> ReportEvent {
        let ev = event(self.next_id, kind, "2.0.0");
        self.next_id += 1;
        self.events.push(ev.clone());
        ev
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_histories_keep_the_daemons_promises(
        fates in proptest::collection::vec(fate(), 1..200),
        initial_events in 0usize..4,
        has_token in any::<bool>(),
    ) {
        let s = settings();
        let mut d = Driver::new(Some(DaemonState::new("robot", 9)), has_token);
        let mut w = World::default();
        for _ in 0..initial_events {
            w.record(EventKind::Committed);
        }
        let mut action = d.feed(Input::Start);
        let mut installing = false;
        let mut last_failure: Option<(Action, Failure)> = None;
        // A GiveUp install verdict must be followed by a wait before the next install.
        let mut must_wait_before_install = false;
        let mut last_sent_event: Option<(u64, String, bool)> = None;
        let mut fresh = true;
        for f in fates {
            // Invariants on the action just returned (a repeat after a stray input is the
            // same request, not a new one).
            match &action {
                _ if !fresh => {}
                Action::Wait { delay, .. } => {
                    must_wait_before_install = false;
                    if let Some((_, fail)) = &last_failure {
                        let floor = match (fail.kind, fail.retry_after) {
                            (ErrorKind::Retry, Some(r)) => r.min(MAX_RETRY_AFTER),
                            _ => Duration::ZERO,
                        };
                        prop_assert!(*delay >= floor, "{delay:?} undercuts Retry-After {floor:?}");
                        prop_assert!(*delay <= s.backoff_max.max(floor), "{delay:?} over the cap");
                        if fail.kind == ErrorKind::GiveUp {
                            prop_assert!(*delay >= s.backoff_max / 2, "a give-up retried soon: {delay:?}");
                        }
                    }
                }
                Action::Install(_) => {
                    prop_assert!(!installing, "two installs at once");
                    prop_assert!(!must_wait_before_install, "a refused offer was installed again at once");
                    let saved = d.saved.clone().and_then(|s| s.active);
                    prop_assert!(saved.is_some(), "the offer is persisted before the install");
                    installing = true;
                }
                Action::Reboot => {
                    prop_assert!(!installing);
                    prop_assert!(d.saved.clone().and_then(|s| s.active).is_some_and(|a| a.rebooting),
                        "the reboot is persisted before it happens");
                }
                Action::Ack { id } => {
                    let suppressed = d.saved.clone().is_some_and(|s| s.suppressed_events.contains(id));
                    let answered = last_sent_event.as_ref().is_some_and(|(sid, rid, ok)| sid == id && *ok && w.answered.contains(rid));
                    prop_assert!(suppressed || answered, "event {id} dropped before the server had it");
                }
                Action::Send { request, .. } => {
                    prop_assert!(!w.refused.contains(&request.report_id), "a refused report was sent again");
                }
                _ => {}
            }
            if matches!(action, Action::Exit(_)) {
                break;
            }
            if f.stray {
                let again = d.feed(Input::Woke);
                if !matches!(action, Action::Wait { .. }) {
                    prop_assert_eq!(&again, &action, "a stray input changed nothing");
                    fresh = false;
                    continue;
                }
                action = again;
                fresh = true;
                continue;
            }
            if f.stop && action.interruptible() {
                let a = d.feed(Input::Cancelled);
                prop_assert_eq!(a, Action::Exit(Exit::Stopped));
                break;
            }
            let fail = Failure {
                kind: f.kind,
                status: None,
                message: "m".into(),
                why: "w".into(),
                retry_after: f.retry_after.map(Duration::from_millis),
            };
            let fails = f.pick % 3 == 0;
            let input = match &action {
                Action::ForgetToken | Action::Reboot => Input::Done,
                Action::Enroll | Action::Poll if fails => Input::Failed(fail.clone()),
                Action::Enroll => Input::Done,
                Action::ListEvents => Input::Events(w.events.clone()),
                Action::Send { request, .. } => {
                    let id = w.events.iter().find(|e| request.report_id.ends_with(&format!("-{}", e.id))
                        && request.report_id.starts_with("event-")).map(|e| e.id);
                    let ok = !fails || f.kind == ErrorKind::GiveUp;
                    if ok {
                        w.answered.insert(request.report_id.clone());
                    }
                    if fails && f.kind == ErrorKind::GiveUp && id.is_some() {
                        w.refused.insert(request.report_id.clone());
                    }
                    if let Some(id) = id {
                        last_sent_event = Some((id, request.report_id.clone(), ok));
                    }
                    if fails { Input::Failed(fail.clone()) } else { Input::Done }
                }
                Action::Ack { id } => {
                    if f.pick % 7 == 1 {
                        // Not acknowledged: the report goes out again (at least once).
                        if let Some((_, rid, _)) = last_sent_event.as_ref().filter(|(sid, ..)| sid == id) {
                            w.refused.remove(rid);
                        }
                        Input::Failed(Failure::retry("state file busy"))
                    } else {
                        w.events.retain(|e| e.id != *id);
                        w.acked.push(*id);
                        Input::Done
                    }
                }
                Action::Poll => polled((f.pick % 2 == 0).then(|| offer("2.0.0"))),
                Action::Install(_) => {
                    installing = false;
                    match f.pick % 4 {
                        0 => Input::Installed(InstallResult::TrialArmed { slot: Slot::A }),
                        1 => Input::Installed(InstallResult::LiveSwitched { classes: vec!["model".into()] }),
                        _ => {
                            let ev = w.record(EventKind::InstallFailed);
                            if f.kind != ErrorKind::Retry {
                                must_wait_before_install = true;
                            }
                            Input::Installed(InstallResult::Failed {
                                failure: fail.clone(),
                                cancelled: false,
                                new_events: vec![ev],
                            })
                        }
                    }
                }
                Action::Wait { .. } => Input::Woke,
                Action::Exit(_) => unreachable!(),
                Action::Stage(_) | Action::Activate(_) | Action::CheckReady { .. } | Action::CheckApproval { .. } => {
                    prop_assert!(false, "no gates, nothing held: {action:?}");
                    unreachable!()
                }
            };
            last_failure = match &input {
                Input::Failed(fl) => Some((action.clone(), fl.clone())),
                _ => None,
            };
            action = d.feed(input);
            fresh = true;
        }
        // Acknowledged in order, each once.
        prop_assert!(w.acked.windows(2).all(|p| p[0] < p[1]), "{:?}", w.acked);
    }
}
