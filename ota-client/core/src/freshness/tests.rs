//! Table tests and virtual-clock property tests of freshness: random schedules of polls, servers that sign,
//! withhold, replay or forge, and restarts (graceful or power cuts).

use proptest::prelude::*;

use super::*;

const HOUR: u64 = 3600;
const BUILD: u64 = 1_800_000_000;

fn policy(max_age_secs: u64) -> Policy {
    Policy {
        max_age: Duration::from_secs(max_age_secs),
        build_time: BUILD,
    }
}

fn keys() -> Vec<String> {
    vec!["0011223344556677".into()]
}

/// What a server with a one-hour period signs at `at`.
fn signed_at(at: u64) -> Seen {
    let issued_at = at - at % HOUR;
    Seen {
        version: issued_at,
        issued_at,
        expires: issued_at + 3 * HOUR,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_new_version_is_fresh_and_raises_the_floor() {
    let mut f = Freshness::new(policy(7 * 24 * HOUR), FreshnessState::default(), &keys());
    assert_eq!(f.state().floor, BUILD);
    let t = signed_at(BUILD + 10 * HOUR);
    assert_eq!(f.observe(secs(0), t), Verdict::Fresh);
    assert_eq!(f.state().floor, t.issued_at);
    assert_eq!(f.observe(secs(60), t), Verdict::Same);
    assert_eq!(
        f.observe(secs(120), signed_at(BUILD + 9 * HOUR)),
        Verdict::Older
    );
    assert_eq!(f.state().newest, Some(t));
    assert_eq!(f.alarm(), None);
}

#[test]
fn a_timestamp_expired_before_the_floor_is_a_replay_until_a_fresh_one() {
    let mut f = Freshness::new(policy(7 * 24 * HOUR), FreshnessState::default(), &keys());
    // Older than the image itself.
    let old = signed_at(BUILD - 5 * HOUR);
    assert_eq!(f.observe(secs(0), old), Verdict::Expired);
    let alarm = f.alarm().unwrap();
    assert_eq!(alarm.reason, FreezeReason::Replayed);
    assert_eq!(alarm.last_version, None);
    assert!(f.state().newest.is_none());
    assert!(f.take_save());
    // The same replay again changes nothing more.
    assert_eq!(f.observe(secs(1), old), Verdict::Expired);
    assert!(!f.take_save());
    assert_eq!(f.observe(secs(2), signed_at(BUILD + HOUR)), Verdict::Fresh);
    assert_eq!(f.alarm(), None);
}

#[test]
fn a_forged_timestamp_raises_the_alarm_until_a_fresh_one() {
    let mut f = Freshness::new(policy(HOUR), FreshnessState::default(), &keys());
    f.refuse_invalid(secs(0), Some(9), "not signed".into());
    assert_eq!(f.alarm().unwrap().reason, FreezeReason::Invalid);
    assert_eq!(f.observe(secs(1), signed_at(BUILD)), Verdict::Fresh);
    assert_eq!(f.alarm(), None);
}

#[test]
fn uptime_without_a_new_version_becomes_stale_across_restarts() {
    let p = policy(10 * HOUR);
    let mut f = Freshness::new(p, FreshnessState::default(), &keys());
    let t = signed_at(BUILD + HOUR);
    f.observe(secs(0), t);
    f.tick(secs(6 * HOUR));
    assert_eq!(f.alarm(), None);
    assert!(f.take_save());
    // Off for a month: not counted. Then the same timestamp over and over.
    let mut f = Freshness::new(p, f.state().clone(), &keys());
    f.observe(secs(100), t);
    assert_eq!(f.observe(secs(100 + 4 * HOUR - 1), t), Verdict::Same);
    assert_eq!(f.alarm(), None);
    f.tick(secs(100 + 4 * HOUR));
    let alarm = f.alarm().unwrap();
    assert_eq!(alarm.reason, FreezeReason::Stale);
    assert_eq!(alarm.stale_secs, 10 * HOUR);
    assert_eq!(alarm.last_version, Some(t.version));
    assert!(f.take_save(), "the alarm's arrival is saved");
}

#[test]
fn new_timestamp_keys_start_over_but_keep_the_uptime() {
    let p = policy(10 * HOUR);
    let mut f = Freshness::new(p, FreshnessState::default(), &keys());
    // A far-future timestamp from a key that leaked pushes the floor out of reach...
    f.observe(secs(0), signed_at(BUILD + 100_000 * HOUR));
    f.tick(secs(HOUR));
    assert_eq!(
        f.observe(secs(HOUR), signed_at(BUILD + HOUR)),
        Verdict::Expired
    );
    // ...until a rotated root names another key.
    let f = Freshness::new(p, f.state().clone(), &["8899aabbccddeeff".to_string()]);
    assert_eq!(f.state().floor, BUILD);
    assert_eq!(f.state().newest, None);
    assert_eq!(f.state().refused, None);
    assert_eq!(f.state().stale_ms, HOUR * 1000);
}

#[test]
fn a_newer_image_raises_the_floor() {
    let mut f = Freshness::new(policy(HOUR), FreshnessState::default(), &keys());
    f.observe(secs(0), signed_at(BUILD));
    let newer = Policy {
        build_time: BUILD + 10 * HOUR,
        ..policy(HOUR)
    };
    let mut f = Freshness::new(newer, f.state().clone(), &keys());
    assert_eq!(f.state().floor, BUILD + 10 * HOUR);
    assert_eq!(f.observe(secs(0), signed_at(BUILD)), Verdict::Expired);
}

#[test]
fn counted_uptime_is_saved_every_so_often() {
    let mut f = Freshness::new(policy(7 * 24 * HOUR), FreshnessState::default(), &keys());
    f.tick(secs(0));
    assert!(f.take_save(), "the first state is saved");
    f.tick(secs(599));
    assert!(!f.take_save());
    f.tick(secs(600));
    assert!(f.take_save());
    // A short max_age saves more often.
    let mut f = Freshness::new(policy(160), FreshnessState::default(), &keys());
    f.tick(secs(0));
    f.take_save();
    f.tick(secs(10));
    assert!(f.take_save());
}

/// What the server does at one poll.
#[derive(Clone, Copy, Debug)]
enum Server {
    /// Signs the current period's timestamp.
    Signs,
    /// Sends nothing.
    Withholds,
    /// Replays the timestamp of `n` hours ago.
    Replays(u64),
    /// Sends something that does not verify.
    Forges,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The robot runs this many seconds, then polls.
    Poll { after: u64, server: Server },
    /// The daemon stops (gracefully: saving first; else a power cut) and the robot stays off this long.
    Restart { graceful: bool, off: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    let server = prop_oneof![
        3 => Just(Server::Signs),
        4 => Just(Server::Withholds),
        2 => (0..12u64).prop_map(Server::Replays),
        1 => Just(Server::Forges),
    ];
    prop_oneof![
        8 => (0..4 * HOUR, server).prop_map(|(after, server)| Step::Poll { after, server }),
        1 => (any::<bool>(), 0..1000 * HOUR).prop_map(|(graceful, off)| Step::Restart { graceful, off }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the schedule: the floor and the newest version never go back; a replay or a forgery is never
    /// accepted and raises the alarm; the counted uptime never exceeds the uptime since the last new version
    /// and loses at most one save interval per power cut; "stale" is raised exactly when the counted uptime
    /// reaches `max_age`.
    #[test]
    fn freshness_under_random_schedules(
        max_age_h in 1..48u64,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let p = policy(max_age_h * HOUR);
        let every = millis(SAVE_EVERY.min(p.max_age / 16));
        let mut saved = FreshnessState::default();
        let mut f = Freshness::new(p, saved.clone(), &keys());
        // Server (true) time, this run's monotonic clock, and the model.
        let mut server_now = BUILD + HOUR;
        let mut run_clock = 0u64;
        let mut first_poll_of_run = true;
        let mut uptime_since_fresh_ms = 0u64;
        let mut power_cuts_since_fresh = 0u64;
        let mut newest_version = 0u64;
        let mut floor = 0u64;
        for s in steps {
            match s {
                Step::Restart { graceful, off } => {
                    if graceful {
                        saved = f.state().clone();
                    } else {
                        power_cuts_since_fresh += 1;
                    }
                    server_now += off;
                    run_clock = 0;
                    first_poll_of_run = true;
                    f = Freshness::new(p, saved.clone(), &keys());
                }
                Step::Poll { after, server } => {
                    server_now += after;
                    run_clock += after;
                    if !first_poll_of_run {
                        uptime_since_fresh_ms += after * 1000;
                    }
                    first_poll_of_run = false;
                    let now = secs(run_clock);
                    match server {
                        Server::Signs => {
                            let t = signed_at(server_now);
                            let v = f.observe(now, t);
                            prop_assert!(v == Verdict::Fresh || v == Verdict::Same);
                            if v == Verdict::Fresh {
                                uptime_since_fresh_ms = 0;
                                power_cuts_since_fresh = 0;
                            }
                        }
                        Server::Withholds => f.tick(now),
                        Server::Replays(h) => {
                            let t = signed_at(server_now.saturating_sub(h * HOUR));
                            let before = f.state().newest;
                            let floor_before = f.state().floor;
                            let v = f.observe(now, t);
                            prop_assert!(v != Verdict::Fresh || before.is_none_or(|b| t.version > b.version));
                            if t.expires < floor_before {
                                prop_assert_eq!(v, Verdict::Expired);
                            }
                            if v == Verdict::Expired {
                                prop_assert_eq!(f.state().newest, before);
                                prop_assert_eq!(f.alarm().map(|a| a.reason), Some(FreezeReason::Replayed));
                            }
                            if v == Verdict::Fresh {
                                uptime_since_fresh_ms = 0;
                                power_cuts_since_fresh = 0;
                            }
                        }
                        Server::Forges => {
                            let before = f.state().newest;
                            f.refuse_invalid(now, None, "forged".into());
                            prop_assert_eq!(f.state().newest, before);
                            prop_assert_eq!(f.alarm().map(|a| a.reason), Some(FreezeReason::Invalid));
                        }
                    }
                    if f.take_save() {
                        saved = f.state().clone();
                    }
                    let st = f.state();
                    // Forward only.
                    prop_assert!(st.floor >= floor && st.floor >= BUILD);
                    let v = st.newest.map_or(0, |n| n.version);
                    prop_assert!(v >= newest_version);
                    floor = st.floor;
                    newest_version = v;
                    // Counted uptime: never more than ran, at most one interval lost per power cut.
                    prop_assert!(st.stale_ms <= uptime_since_fresh_ms);
                    prop_assert!(
                        st.stale_ms + every * power_cuts_since_fresh >= uptime_since_fresh_ms,
                        "counted {} ran {} cuts {}", st.stale_ms, uptime_since_fresh_ms, power_cuts_since_fresh
                    );
                    // The alarm: a loud refusal, else stale exactly at max_age of counted uptime.
                    let alarm = f.alarm().map(|a| a.reason);
                    match &st.refused {
                        Some(r) => prop_assert_eq!(alarm, Some(r.reason)),
                        None => prop_assert_eq!(
                            alarm.is_some(),
                            st.stale_ms >= millis(p.max_age)
                        ),
                    }
                    if uptime_since_fresh_ms >= millis(p.max_age) + every * power_cuts_since_fresh {
                        prop_assert!(alarm.is_some(), "ran {} ms without a new timestamp", uptime_since_fresh_ms);
                    }
                    if uptime_since_fresh_ms < millis(p.max_age) && st.refused.is_none() {
                        prop_assert!(alarm.is_none());
                    }
                }
            }
        }
    }
}
