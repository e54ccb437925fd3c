//! The robot's own say: readiness checks per phase, download ahead of the install window,
//! arming what a slot already holds, a local confirmation before the reboot, and what a waiting
//! robot reports. Virtual clock; the property tests hold over random checks, windows, flags
//! and failures.

use ota_client_core::daemon::gates::describe;
use ota_protocol::fleet::{WaitPhase, Waiting};

use super::*;

const ALL: [WaitPhase; 3] = WaitPhase::ALL;

fn gated(gates: &[WaitPhase]) -> Driver {
    let mut d = Driver::enrolled();
    d.m = DaemonMachine::new(
        Settings {
            gates: gates.to_vec(),
            ..settings()
        },
        d.saved.clone(),
        true,
    );
    d
}

fn polled_with(update: UpdateOffer, armed: bool, held: bool) -> Input {
    Input::Polled {
        response: PollResponse {
            poll_interval_secs: 60,
            poll_jitter_secs: 0,
            update: Some(update),
            trust_version: None,
            timestamp: None,
        },
        armed,
        held,
    }
}

fn check(phase: WaitPhase, o: &UpdateOffer) -> Action {
    Action::CheckReady {
        phase,
        offer: o.clone(),
    }
}

fn wait(reason: &str) -> Input {
    Input::Ready(Readiness::Wait(reason.into()))
}

/// Starts a cycle: the next action is a poll.
fn to_poll(d: &mut Driver) {
    let a = d.feed(Input::Woke);
    assert_eq!(a, Action::ListEvents);
    assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
}

#[test]
fn a_busy_robot_holds_the_download_says_why_in_its_polls_and_goes_when_ready() {
    let o = offer("2.0.0");
    let mut d = gated(&ALL);
    d.feed(Input::Start);
    assert_eq!(d.feed(Input::Events(vec![])), Action::Poll);
    assert_eq!(d.m.waiting(), None);
    assert_eq!(
        d.feed(polled_with(o.clone(), false, false)),
        check(WaitPhase::Download, &o)
    );
    assert_eq!(delay(&d.feed(wait("on a mission"))), 60 * SECOND);
    assert!(d.logged("the download of 2.0.0 waits: on a mission; asking again at the next poll"));
    to_poll(&mut d);
    assert_eq!(
        d.m.waiting(),
        Some(&Waiting {
            phase: WaitPhase::Download,
            reason: "on a mission".into(),
            for_secs: 60,
        }),
        "the reason reaches the next poll"
    );
    // Still busy: re-checked at every poll, counting from the first "wait".
    assert_eq!(
        d.feed(polled_with(o.clone(), false, false)),
        check(WaitPhase::Download, &o)
    );
    delay(&d.feed(wait("on a mission")));
    to_poll(&mut d);
    assert_eq!(d.m.waiting().unwrap().for_secs, 120);
    // Ready: download ahead (the reboot is gated, so nothing is armed yet), then arm, reboot.
    assert_eq!(
        d.feed(polled_with(o.clone(), false, false)),
        check(WaitPhase::Download, &o)
    );
    assert_eq!(
        sent_status(&d.feed(Input::Ready(Readiness::Go))),
        ReportStatus::Downloading
    );
    assert_eq!(d.feed(Input::Done), Action::Stage(o.clone()));
    assert_eq!(
        sent_status(&d.feed(Input::Installed(InstallResult::Staged))),
        ReportStatus::Staged
    );
    assert!(!d.saved.clone().unwrap().active.unwrap().staged);
    assert_eq!(d.feed(Input::Done), check(WaitPhase::Install, &o));
    assert!(
        d.saved.clone().unwrap().active.unwrap().staged,
        "staged is reported once"
    );
    assert_eq!(
        d.feed(Input::Ready(Readiness::Go)),
        check(WaitPhase::Reboot, &o)
    );
    assert_eq!(
        d.feed(Input::Ready(Readiness::Go)),
        Action::Activate(o.clone())
    );
    let a = d.feed(Input::Installed(InstallResult::TrialArmed {
        slot: Slot::B,
    }));
    assert_eq!(sent_status(&a), ReportStatus::Rebooting);
    assert!(d.saved.clone().unwrap().active.unwrap().rebooting);
    assert_eq!(d.feed(Input::Done), Action::Reboot);
}

#[test]
fn a_gate_on_the_reboot_alone_waits_with_the_bundle_staged_not_armed() {
    let o = offer("2.0.0");
    let mut d = gated(&[WaitPhase::Reboot]);
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    assert_eq!(
        sent_status(&d.feed(polled_with(o.clone(), false, false))),
        ReportStatus::Downloading
    );
    assert_eq!(d.feed(Input::Done), Action::Stage(o.clone()));
    d.feed(Input::Installed(InstallResult::Staged));
    assert_eq!(d.feed(Input::Done), check(WaitPhase::Reboot, &o));
    delay(&d.feed(wait("charging: 3 %")));
    to_poll(&mut d);
    assert_eq!(d.m.waiting().unwrap().phase, WaitPhase::Reboot);
    assert_eq!(d.m.waiting().unwrap().reason, "charging: 3 %");
    // The next poll: the slot holds it, nothing is downloaded again.
    assert_eq!(
        d.feed(polled_with(o.clone(), false, true)),
        check(WaitPhase::Reboot, &o)
    );
    assert_eq!(
        d.feed(Input::Ready(Readiness::Go)),
        Action::Activate(o.clone())
    );
    d.feed(Input::Installed(InstallResult::TrialArmed {
        slot: Slot::B,
    }));
    assert_eq!(d.feed(Input::Done), Action::Reboot);
}

#[test]
fn outside_the_window_the_robot_downloads_ahead_and_arms_when_the_window_opens() {
    let mut closed = offer("2.0.0");
    closed.install_allowed = false;
    let open = offer("2.0.0");
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    assert_eq!(
        sent_status(&d.feed(polled_with(closed.clone(), false, false))),
        ReportStatus::Downloading
    );
    assert!(d.logged(
        "update 2.0.0 offered (rollout 7, 1000 bytes): downloading it ahead of its install window"
    ));
    assert_eq!(d.feed(Input::Done), Action::Stage(closed.clone()));
    let a = d.feed(Input::Installed(InstallResult::Staged));
    let Action::Send { request, .. } = &a else {
        panic!("{a:?}")
    };
    assert_eq!(
        (request.status, request.version.clone()),
        (ReportStatus::Staged, Some("2.0.0".parse().unwrap()))
    );
    assert_eq!(
        delay(&d.feed(Input::Done)),
        60 * SECOND,
        "nothing is armed: wait for the window"
    );
    to_poll(&mut d);
    assert_eq!(
        d.m.waiting(),
        None,
        "a closed window is the server's, not the robot's say"
    );
    // Still closed: nothing to do, not even a second `staged` report.
    assert_eq!(
        delay(&d.feed(polled_with(closed.clone(), false, true))),
        60 * SECOND
    );
    assert!(d.logged("update 2.0.0 is staged: waiting for its install window"));
    to_poll(&mut d);
    // Open: armed from the slot, no download.
    assert_eq!(
        d.feed(polled_with(open.clone(), false, true)),
        Action::Activate(open.clone())
    );
    let a = d.feed(Input::Installed(InstallResult::TrialArmed {
        slot: Slot::B,
    }));
    assert!(d.logged("2.0.0 was already in slot B: armed it for a trial boot without downloading"));
    assert_eq!(sent_status(&a), ReportStatus::Rebooting);
}

#[test]
fn a_revert_arms_the_other_slot_and_downloads_only_if_it_no_longer_holds_the_release() {
    let mut o = offer("1.0.0");
    o.revert = true;
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    assert_eq!(
        d.feed(polled_with(o.clone(), false, true)),
        Action::Activate(o.clone())
    );
    let a = d.feed(Input::Installed(InstallResult::TrialArmed {
        slot: Slot::A,
    }));
    assert_eq!(sent_status(&a), ReportStatus::Rebooting);

    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    assert_eq!(
        d.feed(polled_with(o.clone(), false, true)),
        Action::Activate(o.clone())
    );
    let a = d.feed(Input::Installed(InstallResult::NotHeld));
    assert!(d.logged("1.0.0 is not in a slot after all: downloading it"));
    assert_eq!(sent_status(&a), ReportStatus::Downloading);
    assert_eq!(d.feed(Input::Done), Action::Install(o.clone()));
}

#[test]
fn a_staged_bundle_that_vanished_is_not_downloaded_in_a_loop() {
    let o = offer("2.0.0");
    let mut d = gated(&[WaitPhase::Reboot]);
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    d.feed(polled_with(o.clone(), false, false));
    assert_eq!(d.feed(Input::Done), Action::Stage(o.clone()));
    d.feed(Input::Installed(InstallResult::Staged));
    d.feed(Input::Done);
    assert_eq!(
        d.feed(Input::Ready(Readiness::Go)),
        Action::Activate(o.clone())
    );
    delay(&d.feed(Input::Installed(InstallResult::NotHeld)));
    assert!(d.logged("2.0.0 was staged but no slot holds it now; retry 1 in"));
}

#[test]
fn a_required_confirmation_holds_the_reboot_until_approved() {
    let mut o = offer("2.0.0");
    o.require_confirmation = true;
    let mut d = Driver::enrolled();
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    d.feed(polled_with(o.clone(), false, false));
    assert_eq!(
        d.feed(Input::Done),
        Action::Stage(o.clone()),
        "staged, not armed, before the approval"
    );
    d.feed(Input::Installed(InstallResult::Staged));
    let approval = Action::CheckApproval {
        manifest_digest: "digest-2.0.0".into(),
    };
    assert_eq!(d.feed(Input::Done), approval);
    delay(&d.feed(Input::Approved(false)));
    to_poll(&mut d);
    assert_eq!(d.m.waiting().unwrap().phase, WaitPhase::Reboot);
    assert_eq!(d.m.waiting().unwrap().reason, WAITING_FOR_CONFIRMATION);
    assert_eq!(d.feed(polled_with(o.clone(), false, true)), approval);
    assert_eq!(d.feed(Input::Approved(true)), Action::Activate(o.clone()));
    d.feed(Input::Installed(InstallResult::TrialArmed {
        slot: Slot::B,
    }));
    assert_eq!(d.feed(Input::Done), Action::Reboot);
}

#[test]
fn an_armed_robot_checks_before_rebooting_and_never_reboots_outside_the_window() {
    let mut o = offer("2.0.0");
    let mut d = gated(&ALL);
    d.feed(Input::Start);
    d.feed(Input::Events(vec![]));
    assert_eq!(
        d.feed(polled_with(o.clone(), true, true)),
        check(WaitPhase::Reboot, &o)
    );
    delay(&d.feed(wait("docking")));
    to_poll(&mut d);
    o.install_allowed = false;
    delay(&d.feed(polled_with(o.clone(), true, true)));
    assert!(
        d.logged("2.0.0 is armed for a trial boot; rebooting into it waits for its install window")
    );
    to_poll(&mut d);
    assert_eq!(
        d.m.waiting().unwrap().reason,
        "docking",
        "the robot's last word stands"
    );
    // Another offer: what held the first one back is not its reason.
    let three = offer("3.0.0");
    assert_eq!(
        d.feed(polled_with(three.clone(), false, false)),
        check(WaitPhase::Download, &three)
    );
    d.feed(Input::Ready(Readiness::Go));
    delay(&d.feed(Input::Failed(Failure::retry("outage"))));
    to_poll(&mut d);
    assert_eq!(d.m.waiting(), None);
    // No offer: nothing waits.
    assert_eq!(
        d.feed(polled_with(o.clone(), false, false)),
        check(WaitPhase::Download, &o)
    );
    delay(&d.feed(wait("docking")));
    to_poll(&mut d);
    assert!(d.m.waiting().is_some());
    delay(&d.feed(polled(None)));
    to_poll(&mut d);
    assert_eq!(d.m.waiting(), None);
}

#[test]
fn log_lines_name_what_the_robot_does_with_an_offer() {
    let o = offer("2.0.0");
    let line = |armed, steps: &[Step]| describe(&o, armed, steps);
    assert_eq!(
        line(true, &[Step::Reboot]),
        "2.0.0 is armed for a trial boot but the robot did not reboot: rebooting"
    );
    assert_eq!(
        line(true, &[Step::Approval, Step::Reboot]),
        "2.0.0 is armed for a trial boot: checking before rebooting"
    );
    assert_eq!(
        line(
            false,
            &[Step::ReportDownloading, Step::Install, Step::Reboot]
        ),
        "update 2.0.0 offered (rollout 7, 1000 bytes): downloading and installing"
    );
    assert_eq!(
        line(false, &[Step::Activate, Step::Reboot]),
        "update 2.0.0 offered and already in a slot: arming it"
    );
    assert_eq!(
        line(false, &[Step::Approval, Step::Activate, Step::Reboot]),
        "update 2.0.0 offered and already in a slot: checking before arming it"
    );
    assert_eq!(
        line(false, &[Step::ReportDownloading, Step::Stage, Step::Approval]),
        "update 2.0.0 offered (rollout 7, 1000 bytes): downloading it, to be armed right before the reboot"
    );
    assert_eq!(
        WaitPhase::ALL.map(WaitPhase::as_str),
        ["download", "install", "reboot"]
    );
    for p in WaitPhase::ALL {
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
    }
}

// ------------------------------------------------------------------ properties

fn any_offer() -> impl Strategy<Value = UpdateOffer> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(install_allowed, revert, confirm)| {
        let mut o = offer("2.0.0");
        o.install_allowed = install_allowed;
        o.revert = revert;
        o.require_confirmation = confirm;
        o
    })
}

fn any_gates() -> impl Strategy<Value = Vec<WaitPhase>> {
    proptest::sample::subsequence(WaitPhase::ALL.to_vec(), 0..=3)
}

/// The checks a step needs a go from first.
fn needs(step: Step, o: &UpdateOffer, gates: &[WaitPhase]) -> Vec<Step> {
    let mut phases = match step {
        Step::Install => vec![WaitPhase::Download, WaitPhase::Install],
        Step::Stage => vec![WaitPhase::Download],
        Step::Activate => vec![WaitPhase::Install],
        Step::Reboot => vec![WaitPhase::Reboot],
        _ => vec![],
    };
    phases.retain(|p| gates.contains(p));
    let mut checks: Vec<Step> = phases.into_iter().map(Step::Check).collect();
    if step == Step::Reboot && o.require_confirmation {
        checks.push(Step::Approval);
    }
    checks
}

proptest! {
    #[test]
    fn a_plan_checks_before_each_step_and_never_arms_outside_the_window(
        o in any_offer(),
        gates in any_gates(),
        armed in any::<bool>(),
        in_slot in any::<bool>(),
        staged_reported in any::<bool>(),
    ) {
        let steps = plan(&o, Held { armed, in_slot, staged_reported }, &gates);
        for (i, step) in steps.iter().enumerate() {
            for need in needs(*step, &o, &gates) {
                prop_assert!(steps[..i].contains(&need), "{step:?} without {need:?} first: {steps:?}");
            }
            if !o.install_allowed {
                prop_assert!(!matches!(step, Step::Install | Step::Activate | Step::Reboot), "{steps:?}");
            }
        }
        let reboot_held = o.require_confirmation || gates.contains(&WaitPhase::Reboot);
        if reboot_held {
            prop_assert!(!steps.contains(&Step::Install), "arming must wait for the checks before the reboot");
        }
        if armed || in_slot {
            prop_assert!(!steps.contains(&Step::Stage) && !steps.contains(&Step::Install), "downloaded again: {steps:?}");
        }
    }
}

/// One answer of the world to an action.
#[derive(Debug, Clone)]
struct Turn {
    offer: Option<UpdateOffer>,
    go: bool,
    fails: bool,
    stray: bool,
}

fn turn() -> impl Strategy<Value = Turn> {
    (
        proptest::option::weighted(0.8, any_offer()),
        proptest::bool::weighted(0.6),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(offer, go, fails, stray)| Turn {
            offer,
            go,
            fails,
            stray,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_robot_never_acts_against_its_own_say(
        gates in any_gates(),
        turns in proptest::collection::vec(turn(), 1..150),
    ) {
        let mut d = gated(&gates);
        let mut action = d.feed(Input::Start);
        // The world: what the slots hold, and the offer of the current cycle.
        let (mut staged, mut armed) = (false, false);
        let mut current: Option<UpdateOffer> = None;
        // Since the last poll: the phases a check let through, an approval.
        let mut went: Vec<WaitPhase> = Vec::new();
        let mut approved = false;
        let mut said: Option<(WaitPhase, String)> = None;
        for t in turns {
            match &action {
                Action::Poll => {
                    if let Some((phase, reason)) = said.take() {
                        let w = d.m.waiting();
                        prop_assert_eq!(w.map(|w| (w.phase, w.reason.clone())), Some((phase, reason)),
                            "a waiting robot's reason reaches the next poll");
                    }
                    went.clear();
                    approved = false;
                }
                Action::Install(o) | Action::Stage(o) => {
                    prop_assert_eq!(Some(o), current.as_ref());
                    if gates.contains(&WaitPhase::Download) {
                        prop_assert!(went.contains(&WaitPhase::Download), "downloaded while the gate said no");
                    }
                }
                _ => {}
            }
            if let Action::Install(o) | Action::Activate(o) = &action {
                prop_assert!(o.install_allowed, "armed outside the install window");
                if gates.contains(&WaitPhase::Install) {
                    prop_assert!(went.contains(&WaitPhase::Install), "installed while the gate said no");
                }
            }
            if action == Action::Reboot {
                let o = current.clone().expect("an offer");
                prop_assert!(o.install_allowed, "rebooted outside the install window");
                prop_assert!(armed, "rebooted into nothing");
                if gates.contains(&WaitPhase::Reboot) {
                    prop_assert!(went.contains(&WaitPhase::Reboot), "rebooted while the gate said no");
                }
                if o.require_confirmation {
                    prop_assert!(approved, "rebooted without the confirmation");
                }
            }
            if matches!(action, Action::Exit(_)) {
                break;
            }
            if t.stray && !matches!(action, Action::Wait { .. }) {
                prop_assert_eq!(&d.feed(Input::Woke), &action, "a stray input changed nothing");
                continue;
            }
            let input = match &action {
                Action::Reboot if t.fails => Input::Failed(Failure::retry("reboot command failed")),
                Action::ForgetToken | Action::Enroll | Action::Ack { .. } | Action::Reboot => Input::Done,
                Action::ListEvents => Input::Events(vec![]),
                Action::Send { .. } if t.fails => Input::Failed(Failure::retry("outage")),
                Action::Send { .. } => Input::Done,
                Action::Poll if t.fails => Input::Failed(Failure::retry("outage")),
                Action::Poll => {
                    current = t.offer.clone();
                    Input::Polled {
                        response: PollResponse { poll_interval_secs: 60, poll_jitter_secs: 5, update: t.offer.clone(), trust_version: None, timestamp: None },
                        armed: armed && current.is_some(),
                        held: staged && current.is_some(),
                    }
                }
                Action::CheckReady { phase, .. } => {
                    if t.go {
                        went.push(*phase);
                        Input::Ready(Readiness::Go)
                    } else {
                        said = Some((*phase, format!("busy {}", t.go as u8)));
                        Input::Ready(Readiness::Wait(said.clone().unwrap().1))
                    }
                }
                Action::CheckApproval { manifest_digest } => {
                    prop_assert_eq!(manifest_digest, "digest-2.0.0");
                    approved = t.go;
                    if !t.go {
                        said = Some((WaitPhase::Reboot, WAITING_FOR_CONFIRMATION.into()));
                    }
                    Input::Approved(t.go)
                }
                Action::Stage(_) if t.fails => Input::Installed(InstallResult::Failed {
                    failure: Failure::retry("dropped"), cancelled: false, new_events: vec![] }),
                Action::Stage(_) => {
                    staged = true;
                    Input::Installed(InstallResult::Staged)
                }
                Action::Install(_) if t.fails => Input::Installed(InstallResult::Failed {
                    failure: Failure::retry("dropped"), cancelled: false, new_events: vec![] }),
                Action::Install(_) => {
                    armed = true;
                    Input::Installed(InstallResult::TrialArmed { slot: Slot::B })
                }
                Action::Activate(_) if staged => {
                    armed = true;
                    Input::Installed(InstallResult::TrialArmed { slot: Slot::B })
                }
                Action::Activate(_) => Input::Installed(InstallResult::NotHeld),
                Action::Wait { .. } => Input::Woke,
                Action::Exit(_) => unreachable!(),
            };
            action = d.feed(input);
        }
    }
}
