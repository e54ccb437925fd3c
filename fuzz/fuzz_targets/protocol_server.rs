//! The JSON the server deserializes from the network (device protocol and admin bodies) and the checks it runs
//! after (`ota_protocol::validate`, the server's one validation of what a robot sends): the first byte picks
//! the type, the rest is the body. Whatever parses must serialize again, and the float-free types come back
//! equal from their own JSON; a value that parses but is refused is exercised as far as the refusal, and what is
//! accepted holds the bounds the server relies on. A robot's own telemetry sanitising leaves telemetry the
//! validation accepts, and changes nothing the second time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bundle_format::manifest::validate_compatible;
use ota_protocol::admin::CreateRolloutRequest;
use ota_protocol::device::{EnrollRequest, PollRequest, ReportRequest, Telemetry};
use ota_protocol::fleet::{DeviceLabels, GroupSettings};
use ota_protocol::validate;
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Some(req) = round_trip::<EnrollRequest>(body, true) {
                if validate::enroll(&req, validate_compatible).is_ok() {
                    assert!(ota_protocol::validate_device_id(&req.device_id).is_ok());
                    assert!(validate_compatible(&req.compatible).is_ok());
                    assert!((8..=128).contains(&req.request_id.len()));
                    assert!(
                        validate::tags(&req.tags).is_ok() && req.tags.len() <= validate::MAX_TAGS
                    );
                    for v in [&req.public_key, &req.challenge, &req.signature]
                        .into_iter()
                        .flatten()
                    {
                        assert!(v.len() <= validate::MAX_CREDENTIAL);
                    }
                }
            }
        }
        1 => {
            if let Some(req) = round_trip::<PollRequest>(body, false) {
                if validate::poll(&req, validate_compatible).is_ok() {
                    assert!(validate_compatible(&req.compatible).is_ok());
                    assert!(validate::telemetry(&req.telemetry).is_ok());
                    assert!(req.slots.len() <= validate::MAX_SLOTS);
                    let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
                    assert!(
                        finite(req.telemetry.battery_percent) && finite(req.telemetry.cpu_percent)
                    );
                    assert!(req.telemetry.metrics.values().all(|v| v.is_finite()));
                }
                sanitized(req.telemetry);
            }
        }
        2 => {
            if let Some(req) = round_trip::<ReportRequest>(body, true) {
                if validate::report(&req).is_ok() {
                    assert!(req.validate().is_ok());
                    for v in [&req.error, &req.reason].into_iter().flatten() {
                        assert!(v.len() <= validate::MAX_TEXT);
                    }
                }
                if req.validate().is_ok() {
                    assert!(!req.report_id.is_empty() && req.report_id.len() <= 128);
                    assert!(req
                        .log_tail
                        .as_ref()
                        .is_none_or(|l| l.len() <= ota_protocol::device::MAX_LOG_TAIL));
                }
            }
        }
        3 => {
            round_trip::<CreateRolloutRequest>(body, false);
        }
        4 => {
            if let Some(labels) = round_trip::<DeviceLabels>(body, true) {
                if validate::tags(&labels.tags).is_ok() {
                    assert!(labels.tags.len() <= validate::MAX_TAGS);
                    assert!(labels
                        .tags
                        .keys()
                        .all(|k| !k.is_empty() && !k.contains('=')));
                }
            }
        }
        _ => {
            round_trip::<GroupSettings>(body, true);
        }
    }
});

/// A robot's sanitising of its own telemetry: what is left passes the server's validation, within
/// [`validate::MAX_METRICS`], and a second pass drops nothing.
fn sanitized(mut telemetry: Telemetry) {
    validate::sanitize_telemetry(&mut telemetry);
    assert!(validate::telemetry(&telemetry).is_ok(), "{telemetry:?}");
    assert!(telemetry.metrics.len() <= validate::MAX_METRICS);
    let before = telemetry.clone();
    assert!(validate::sanitize_telemetry(&mut telemetry).is_empty());
    assert_eq!(
        serde_json::to_string(&telemetry).unwrap(),
        serde_json::to_string(&before).unwrap()
    );
}

/// Parses `body` as `T`; what parses serializes, and parses again (equal when `exact`: no floats, whose
/// shortest text form may not read back to the same bits).
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    body: &[u8],
    exact: bool,
) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let text = serde_json::to_vec(&value).expect("a parsed value serializes");
    let again: T = serde_json::from_slice(&text).expect("serialized JSON parses");
    if exact {
        assert_eq!(again, value);
    }
    Some(value)
}
