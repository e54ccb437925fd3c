//! What the simulated fleet sends: device ids, the canary share, and enroll and poll bodies with telemetry that
//! moves a little on every poll, all from a small deterministic PRNG.

use std::collections::BTreeMap;

use hyper::body::Bytes;
use ota_protocol::device::{EnrollRequest, PollRequest, Position, Telemetry};

/// The product every simulated device claims to be.
pub(crate) const COMPATIBLE: &str = "acme-robot-v2";

/// A small, fast PRNG (xorshift64*): telemetry values and nothing security-related.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sites the devices are spread over (tag `site=warehouse-N`).
pub(crate) const SITES: usize = 20;
/// Robot models (tag `model`): a third of the devices are pickers, the rest carriers.
pub(crate) const MODELS: [&str; 2] = ["picker", "carrier"];

pub(crate) fn device_id(i: usize) -> String {
    format!("robot-{i:05}")
}

pub(crate) fn is_canary(i: usize, percent: u32) -> bool {
    (i % 100) < percent as usize
}

/// A poll like a robot sends it: versions and slots, plus telemetry that moves a little on every poll.
pub(crate) fn poll_body(rng: &mut Rng, device: usize, uptime: u64) -> Bytes {
    let mut metrics = BTreeMap::new();
    metrics.insert("inference_latency_ms".to_string(), 35.0 + rng.unit() * 15.0);
    metrics.insert("motor_temp_c".to_string(), 40.0 + rng.unit() * 20.0);
    metrics.insert("wifi_rssi_dbm".to_string(), -70.0 + rng.unit() * 30.0);
    metrics.insert("error_rate".to_string(), rng.unit() * 0.02);
    let mut slots = BTreeMap::new();
    slots.insert("A".to_string(), "1.0.0".to_string());
    slots.insert("B".to_string(), "0.9.0".to_string());
    let request = PollRequest {
        compatible: COMPATIBLE.into(),
        current_version: Some(semver::Version::new(1, 0, 0)),
        booted_slot: Some("A".into()),
        slots,
        telemetry: Telemetry {
            battery_percent: Some(20.0 + rng.unit() * 80.0),
            position: Some(Position {
                x: (device % 100) as f64 + rng.unit(),
                y: (device / 100) as f64 - rng.unit(),
                theta: Some(rng.unit() * std::f64::consts::TAU),
                frame: Some("map".into()),
            }),
            cpu_percent: Some(rng.unit() * 100.0),
            memory_used_bytes: Some(1_000_000_000 + rng.next() % 2_000_000_000),
            memory_total_bytes: Some(4_294_967_296),
            disk_used_bytes: Some(8_000_000_000 + rng.next() % 1_000_000_000),
            disk_total_bytes: Some(32_000_000_000),
            uptime_secs: Some(uptime),
            metrics,
        },
        ..Default::default()
    };
    Bytes::from(serde_json::to_vec(&request).expect("a poll request serializes"))
}

pub(crate) fn enroll_body(i: usize, secret: &str, canary_percent: u32) -> Bytes {
    let mut tags = BTreeMap::new();
    tags.insert("site".to_string(), format!("warehouse-{}", i % SITES));
    tags.insert(
        "model".to_string(),
        if i.is_multiple_of(3) {
            MODELS[0]
        } else {
            MODELS[1]
        }
        .to_string(),
    );
    tags.insert(
        "ring".to_string(),
        if is_canary(i, canary_percent) {
            "canary"
        } else {
            "main"
        }
        .to_string(),
    );
    let request = EnrollRequest {
        enrollment_secret: secret.into(),
        device_id: device_id(i),
        compatible: COMPATIBLE.into(),
        tags,
        request_id: format!("loadgen-{i}"),
        public_key: None,
        challenge: None,
        signature: None,
    };
    Bytes::from(serde_json::to_vec(&request).expect("an enroll request serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_bodies_are_valid_protocol_requests() {
        let mut rng = Rng(7);
        let body = poll_body(&mut rng, 1234, 100);
        let parsed: PollRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.compatible, COMPATIBLE);
        assert_eq!(parsed.telemetry.uptime_secs, Some(100));
        assert!(parsed.telemetry.metrics.len() >= 3);
        let other = poll_body(&mut rng, 1234, 101);
        assert_ne!(body, other, "telemetry moves between polls");
    }

    #[test]
    fn canary_share_matches_the_percentage() {
        let n = (0..10_000).filter(|&i| is_canary(i, 10)).count();
        assert_eq!(n, 1_000);
        assert_eq!((0..100).filter(|&i| is_canary(i, 0)).count(), 0);
    }
}
