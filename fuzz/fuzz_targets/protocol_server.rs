//! The JSON the server deserializes from the network (device protocol and admin bodies) and the checks it runs
//! after: the first byte picks the type, the rest is the body. Whatever parses must serialize again, and the
//! float-free types come back equal from their own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_protocol::admin::CreateRolloutRequest;
use ota_protocol::device::{EnrollRequest, PollRequest, ReportRequest};
use ota_protocol::fleet::{DeviceLabels, GroupSettings};
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Some(req) = round_trip::<EnrollRequest>(body, true) {
                let _ = ota_protocol::validate_device_id(&req.device_id);
                let _ = ota_bundle_format::manifest::validate_compatible(&req.compatible);
            }
        }
        1 => {
            if let Some(req) = round_trip::<PollRequest>(body, false) {
                let _ = ota_bundle_format::manifest::validate_compatible(&req.compatible);
            }
        }
        2 => {
            if let Some(req) = round_trip::<ReportRequest>(body, true) {
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
            round_trip::<DeviceLabels>(body, true);
        }
        _ => {
            round_trip::<GroupSettings>(body, true);
        }
    }
});

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
