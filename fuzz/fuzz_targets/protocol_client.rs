//! The JSON robots and the operator CLI deserialize from the server (which may be hostile), and what the robot
//! computes from it: the poll delay, `Retry-After`. The first byte picks the type, the rest is the body.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ota_protocol::admin::{BundleInfo, DeviceDetail, PublishResponse, RolloutDetail, RolloutInfo};
use ota_protocol::device::{parse_retry_after, EnrollResponse, PollResponse, ReportResponse};
use ota_protocol::ErrorBody;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 9 {
        0 => {
            if let Some(resp) = parse::<PollResponse>(body) {
                for random in [0, 1, u32::MAX / 2, u32::MAX] {
                    // The delay is what the robot sleeps: bounded, whatever the server says.
                    assert!(
                        resp.next_poll_delay(random)
                            <= Duration::from_secs(u64::from(u32::MAX) * 2)
                    );
                }
            }
        }
        1 => {
            parse::<EnrollResponse>(body);
        }
        2 => {
            parse::<ReportResponse>(body);
        }
        3 => {
            parse::<ErrorBody>(body);
        }
        4 => {
            parse::<Vec<BundleInfo>>(body);
        }
        5 => {
            parse::<PublishResponse>(body);
        }
        6 => {
            parse::<Vec<RolloutInfo>>(body);
            parse::<RolloutDetail>(body);
        }
        7 => {
            parse::<DeviceDetail>(body);
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = parse_retry_after(text);
            }
        }
    }
});

fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}
