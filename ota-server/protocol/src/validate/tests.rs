use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::device::{EnrollRequest, PollRequest, Position, ReportRequest, ReportStatus};

/// Stands in for the bundle format's rule (printable ASCII, 1-200, no spaces at the ends).
fn rule(c: &str) -> Result<(), String> {
    let ok = !c.is_empty()
        && c.len() <= 200
        && c.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && c.trim() == c;
    ok.then_some(())
        .ok_or_else(|| format!("'{c}' is not allowed"))
}

fn enrollment(compatible: &str) -> EnrollRequest {
    EnrollRequest {
        enrollment_secret: "s".repeat(32),
        device_id: "robot-1".into(),
        compatible: compatible.into(),
        tags: BTreeMap::new(),
        request_id: "request-0001".into(),
        public_key: None,
        challenge: None,
        signature: None,
    }
}

fn polling(compatible: &str) -> PollRequest {
    PollRequest {
        compatible: compatible.into(),
        ..PollRequest::default()
    }
}

fn reporting() -> ReportRequest {
    ReportRequest {
        report_id: "r1".into(),
        rollout_id: Some(1),
        version: Some("1.2.3".parse().unwrap()),
        manifest_digest: None,
        status: ReportStatus::Failure,
        progress_percent: None,
        error: Some("disk full\nwhile writing slot B".into()),
        log_tail: None,
        reason: None,
    }
}

#[test]
fn well_formed_requests_pass() {
    assert_eq!(enroll(&enrollment("acme-robot-v2"), rule), Ok(()));
    let mut p = polling("acme-robot-v2");
    p.booted_slot = Some("a".into());
    p.slots = [("a".into(), "1.3.0".into()), ("b".into(), String::new())].into();
    p.telemetry
        .metrics
        .insert("inference_latency_ms".into(), 12.5);
    p.telemetry.position = Some(Position {
        x: 1.0,
        y: 2.0,
        theta: None,
        frame: Some("map".into()),
    });
    assert_eq!(poll(&p, rule), Ok(()));
    assert_eq!(report(&reporting()), Ok(()));
}

#[test]
fn each_error_names_its_field() {
    let mut p = polling("acme");
    p.booted_slot = Some("../a".into());
    assert!(poll(&p, rule).unwrap_err().contains("booted_slot"));
    let mut p = polling("acme");
    p.telemetry.metrics.insert("bad name".into(), 1.0);
    assert!(poll(&p, rule).unwrap_err().contains("bad name"));
    let mut p = polling("acme");
    p.telemetry.battery_percent = Some(f64::NAN);
    assert!(poll(&p, rule).unwrap_err().contains("battery_percent"));
    let mut p = polling("acme");
    p.staged = Some("x".repeat(MAX_LINE + 1));
    assert!(poll(&p, rule).unwrap_err().contains("staged"));
    let mut p = polling("acme");
    p.slots = (0..=MAX_SLOTS)
        .map(|i| (format!("s{i}"), String::new()))
        .collect();
    assert!(poll(&p, rule).unwrap_err().contains("slots"));
    let mut r = reporting();
    r.error = Some("bell\u{7}".into());
    assert!(report(&r).unwrap_err().contains("error"));
    let mut r = reporting();
    r.log_tail = Some("x".repeat(crate::device::MAX_LOG_TAIL + 1));
    assert!(report(&r).unwrap_err().contains("log_tail"));
    let mut e = enrollment("acme");
    e.public_key = Some("k".repeat(MAX_CREDENTIAL + 1));
    assert!(enroll(&e, rule).unwrap_err().contains("public_key"));
    let mut e = enrollment("acme");
    e.tags.insert("site".into(), "w\n3".into());
    assert!(enroll(&e, rule).unwrap_err().contains("site"));
}

fn long_version(pre: &str) -> semver::Version {
    format!("1.0.0-{pre}").parse().unwrap()
}

proptest! {
    /// A compatible refused at enrollment is refused in a poll, and one accepted there is accepted here.
    #[test]
    fn enroll_and_poll_agree_on_compatible(c in "\\PC{0,8}|[ -~]{0,210}") {
        prop_assert_eq!(enroll(&enrollment(&c), rule).is_ok(), rule(&c).is_ok());
        prop_assert_eq!(poll(&polling(&c), rule).is_ok(), rule(&c).is_ok());
    }

    /// A version too long in a poll is too long in a report, on every version field.
    #[test]
    fn poll_and_report_agree_on_versions(pre in "[a-z][a-z0-9]{0,199}") {
        let v = long_version(&pre);
        let mut p = polling("acme");
        p.current_version = Some(v.clone());
        let mut floor = polling("acme");
        floor.security_floor = Some(v.clone());
        let mut r = reporting();
        r.version = Some(v.clone());
        let ok = v.to_string().len() <= MAX_VERSION;
        prop_assert_eq!(poll(&p, rule).is_ok(), ok);
        prop_assert_eq!(poll(&floor, rule).is_ok(), ok);
        prop_assert_eq!(report(&r).is_ok(), ok);
    }

    /// A metric passes the telemetry check exactly when its name passes the name rule and its value is finite.
    #[test]
    fn telemetry_is_its_names_and_values(name in "\\PC{0,70}", value in proptest::num::f64::ANY) {
        let mut p = polling("acme");
        p.telemetry.metrics.insert(name.clone(), value);
        prop_assert_eq!(poll(&p, rule).is_ok(), metric_name(&name).is_ok() && value.is_finite());
    }

    /// Tags refused for a robot are refused for a rollout target too (one rule), and never panic.
    #[test]
    fn tag_rule_is_total(k in "\\PC{0,70}", v in "\\PC{0,300}") {
        let t: BTreeMap<String, String> = [(k.clone(), v.clone())].into();
        let expected = !k.is_empty() && k.len() <= MAX_TAG_KEY && !k.contains('=') && v.len() <= MAX_TAG_VALUE
            && !k.chars().chain(v.chars()).any(char::is_control);
        prop_assert_eq!(tags(&t).is_ok(), expected);
        let mut e = enrollment("acme");
        e.tags = t;
        prop_assert_eq!(enroll(&e, rule).is_ok(), expected);
    }
}

proptest! {
    #[test]
    fn version_len_is_the_printed_length(
        major in 0u64..u64::MAX, minor in 0u64..1000, patch in 0u64..10,
        pre in "([a-z][a-z0-9]{0,7})?", build in "([a-z0-9]{1,8})?",
    ) {
        let mut text = format!("{major}.{minor}.{patch}");
        if !pre.is_empty() { text += &format!("-{pre}"); }
        if !build.is_empty() { text += &format!("+{build}"); }
        let v: semver::Version = text.parse().unwrap();
        prop_assert_eq!(super::version_len(&v), v.to_string().len());
    }
}

proptest! {
    /// What a robot sanitises is accepted, within the metric limit, and only what the rules refuse (or what is
    /// past the limit) is dropped, each drop said.
    #[test]
    fn sanitized_telemetry_is_accepted_and_keeps_what_was_valid(
        metrics in proptest::collection::btree_map("\\PC{0,70}", prop_oneof![
            Just(f64::NAN), Just(f64::INFINITY), -1e9f64..1e9
        ], 0..80),
        battery in prop_oneof![Just(f64::NAN), 0.0f64..100.0],
        frame in proptest::option::of("\\PC{0,70}"),
    ) {
        let mut t = Telemetry {
            battery_percent: Some(battery),
            position: Some(crate::device::Position { x: 1.0, y: 2.0, theta: None, frame: frame.clone() }),
            metrics: metrics.clone(),
            ..Telemetry::default()
        };
        let valid: Vec<&String> = metrics
            .iter()
            .filter(|(n, v)| metric_name(n).is_ok() && v.is_finite())
            .map(|(n, _)| n)
            .collect();
        let dropped = sanitize_telemetry(&mut t);
        prop_assert!(telemetry(&t).is_ok(), "{:?}", telemetry(&t));
        prop_assert!(t.metrics.len() <= MAX_METRICS);
        prop_assert_eq!(t.metrics.len(), valid.len().min(MAX_METRICS));
        prop_assert!(t.metrics.keys().all(|k| valid.contains(&k)));
        prop_assert_eq!(t.battery_percent.is_some(), battery.is_finite());
        let frame_ok = frame.as_deref().is_none_or(|f| f.len() <= MAX_METRIC_NAME && !f.chars().any(char::is_control));
        prop_assert_eq!(t.position.is_some(), frame_ok);
        let nothing_wrong = valid.len() == metrics.len() && metrics.len() <= MAX_METRICS
            && battery.is_finite() && frame_ok;
        prop_assert_eq!(dropped.is_empty(), nothing_wrong);
    }
}
