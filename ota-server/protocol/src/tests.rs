use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use crate::admin::{Event, RolloutState};
use crate::device::*;
use crate::validate_device_id;

fn report(status: ReportStatus) -> ReportRequest {
    ReportRequest {
        report_id: "r1".into(),
        rollout_id: Some(1),
        version: Some("1.2.3".parse().unwrap()),
        manifest_digest: None,
        status,
        progress_percent: None,
        error: None,
        log_tail: None,
        reason: None,
    }
}

#[test]
fn poll_request_from_the_documented_example() {
    let body = json!({
        "compatible": "acme-robot-v2",
        "current_version": "1.3.0",
        "booted_slot": "a",
        "slots": {"a": "1.3.0", "b": "1.2.0"},
        "telemetry": {
            "battery_percent": 81.5,
            "position": {"x": 12.5, "y": -3.0, "theta": 1.57, "frame": "map"},
            "cpu_percent": 23.0,
            "memory_used_bytes": 1073741824u64, "memory_total_bytes": 4294967296u64,
            "disk_used_bytes": 8000000000u64, "disk_total_bytes": 32000000000u64,
            "uptime_secs": 86400,
            "metrics": {"inference_latency_ms": 41.2}
        }
    });
    let poll: PollRequest = serde_json::from_value(body).unwrap();
    assert_eq!(poll.current_version, Some("1.3.0".parse().unwrap()));
    assert_eq!(poll.slots["b"], "1.2.0");
    assert_eq!(poll.telemetry.metrics["inference_latency_ms"], 41.2);
    assert_eq!(
        poll.telemetry.position.as_ref().unwrap().frame.as_deref(),
        Some("map")
    );
    let again: PollRequest = serde_json::from_str(&serde_json::to_string(&poll).unwrap()).unwrap();
    assert_eq!(again, poll);
}

#[test]
fn minimal_poll_needs_only_compatible_and_unknown_fields_are_refused() {
    let poll: PollRequest = serde_json::from_value(json!({"compatible": "x"})).unwrap();
    assert_eq!(poll.current_version, None);
    assert_eq!(poll.telemetry, Telemetry::default());
    assert!(
        serde_json::from_value::<PollRequest>(json!({"compatible": "x", "surprise": 1})).is_err()
    );
    assert!(serde_json::from_value::<PollRequest>(json!({"current_version": "1.0.0"})).is_err());
    assert!(serde_json::from_value::<PollRequest>(
        json!({"compatible": "x", "current_version": "one"})
    )
    .is_err());
}

#[test]
fn report_status_wire_names_round_trip() {
    for status in ReportStatus::ALL {
        let text = serde_json::to_string(&status).unwrap();
        assert_eq!(text, format!("\"{}\"", status.as_str()));
        assert_eq!(ReportStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(ReportStatus::parse("exploded"), None);
    assert!(ReportStatus::RolledBack.is_bad() && ReportStatus::RolledBack.is_terminal());
    assert!(!ReportStatus::Rebooting.is_terminal() && !ReportStatus::Success.is_bad());
    for state in RolloutState::ALL {
        assert_eq!(RolloutState::parse(state.as_str()), Some(state));
    }
}

#[test]
fn report_validation_names_the_missing_field() {
    assert!(report(ReportStatus::Downloading).validate().is_ok());
    assert!(report(ReportStatus::Failure)
        .validate()
        .unwrap_err()
        .contains("'error'"));
    assert!(report(ReportStatus::RolledBack)
        .validate()
        .unwrap_err()
        .contains("'reason'"));
    let mut r = report(ReportStatus::Failure);
    r.error = Some("disk full".into());
    assert!(r.validate().is_ok());
    r.log_tail = Some("x".repeat(MAX_LOG_TAIL + 1));
    assert!(r.validate().unwrap_err().contains("log_tail"));
    let mut r = report(ReportStatus::Installing);
    r.progress_percent = Some(101);
    assert!(r.validate().is_err());
    r.progress_percent = Some(100);
    r.report_id = String::new();
    assert!(r.validate().unwrap_err().contains("report_id"));
}

#[test]
fn device_ids() {
    assert!(validate_device_id("robot-0042").is_ok());
    assert!(validate_device_id("a.b_c-D9").is_ok());
    assert!(validate_device_id("").is_err());
    assert!(validate_device_id(".hidden").is_err());
    assert!(validate_device_id("../etc").is_err());
    assert!(validate_device_id("has space").is_err());
    assert!(validate_device_id(&"x".repeat(65)).is_err());
    assert!(validate_device_id(&"x".repeat(64)).is_ok());
}

#[test]
fn retry_after() {
    assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
}

#[test]
fn event_names_and_payloads() {
    let e = Event::DeviceDeleted(crate::admin::DeviceDeletedEvent {
        device_id: "r1".into(),
    });
    assert_eq!(e.name(), "device_deleted");
    assert_eq!(e.data_json(), r#"{"device_id":"r1"}"#);
}

proptest! {
    #[test]
    fn poll_delay_stays_within_interval_plus_jitter(interval in 0u32..100_000, jitter in 0u32..100_000, r: u32) {
        let resp = PollResponse { poll_interval_secs: interval, poll_jitter_secs: jitter, update: None, trust_version: None, timestamp: None };
        let d = resp.next_poll_delay(r);
        prop_assert!(d >= Duration::from_secs(interval.into()));
        prop_assert!(d <= Duration::from_secs(u64::from(interval) + u64::from(jitter)));
    }
}

#[test]
fn poll_delay_extremes() {
    let resp = PollResponse {
        poll_interval_secs: 60,
        poll_jitter_secs: 10,
        update: None,
        trust_version: None,
        timestamp: None,
    };
    assert_eq!(resp.next_poll_delay(0), Duration::from_secs(60));
    assert_eq!(resp.next_poll_delay(u32::MAX), Duration::from_secs(70));
}
