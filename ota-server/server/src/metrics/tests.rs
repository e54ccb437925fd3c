use std::collections::BTreeSet;

use ota_protocol::admin::{RolloutInfo, RolloutState};
use proptest::prelude::*;
use serde_json::json;

use super::fleet::{devices_by_version, rollout_progress, MAX_VERSIONS, RECENT_FINISHED_ROLLOUTS};
use super::*;

fn rollout(id: u64, state: RolloutState, succeeded: u64) -> RolloutInfo {
    serde_json::from_value(json!({
        "rollout_id": id, "name": format!("r{id}"), "bundle_id": "b", "version": "2.0.0",
        "compatible": "c", "manifest_digest": "d", "tags": {}, "stages": [100], "current_stage": 0,
        "state": state, "pause_reason": null, "failure_threshold": 0.1, "created_at": 1, "updated_at": 2,
        "counts": {"targeted": 10, "offered": 10, "pending": 0, "in_progress": 0, "succeeded": succeeded,
                   "failed": 1, "rolled_back": 2}
    }))
    .unwrap()
}

fn state_strategy() -> impl Strategy<Value = RolloutState> {
    prop::sample::select(RolloutState::ALL.to_vec())
}

proptest! {
    #[test]
    fn versions_are_bounded_and_every_device_is_counted(
        picks in prop::collection::vec(prop::option::of(0u64..40), 0..300)
    ) {
        let versions: Vec<Option<semver::Version>> =
            picks.iter().map(|p| p.map(|minor| semver::Version::new(1, minor, 0))).collect();
        let out = devices_by_version(versions.iter().map(Option::as_ref));
        prop_assert!(out.0.len() <= MAX_VERSIONS + 2);
        prop_assert_eq!(out.0.values().sum::<u64>(), picks.len() as u64);
        let unknown = picks.iter().filter(|p| p.is_none()).count() as u64;
        prop_assert_eq!(out.0.get("unknown").copied().unwrap_or(0), unknown);
        let distinct: BTreeSet<u64> = picks.iter().flatten().copied().collect();
        prop_assert_eq!(out.0.contains_key("other"), distinct.len() > MAX_VERSIONS);
        // A version named on its own is counted exactly; none left out is more common than one kept.
        let named: Vec<u64> = out.0.iter().filter(|(k, _)| *k != "other" && *k != "unknown").map(|(_, n)| *n).collect();
        for (k, n) in &out.0 {
            if let Ok(v) = semver::Version::parse(k) {
                prop_assert_eq!(*n, versions.iter().filter(|x| x.as_ref() == Some(&v)).count() as u64);
            }
        }
        if let Some(least) = named.iter().min() {
            for minor in &distinct {
                let name = semver::Version::new(1, *minor, 0).to_string();
                if !out.0.contains_key(&name) {
                    let n = picks.iter().filter(|p| **p == Some(*minor)).count() as u64;
                    prop_assert!(n <= *least);
                }
            }
        }
    }

    #[test]
    fn running_rollouts_always_have_series_and_finished_ones_are_bounded(
        states in prop::collection::vec(state_strategy(), 0..40)
    ) {
        let rollouts: Vec<RolloutInfo> =
            states.iter().enumerate().map(|(i, s)| rollout(i as u64 + 1, *s, 3)).collect();
        let out = rollout_progress(&rollouts);
        let running = |s: RolloutState| matches!(s, RolloutState::Active | RolloutState::Paused);
        let ids: Vec<u64> = out.iter().map(|p| p.rollout_id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(&ids, &sorted);
        for r in &rollouts {
            if running(r.state) {
                prop_assert!(ids.contains(&r.rollout_id));
            }
        }
        let finished: Vec<u64> = rollouts.iter().filter(|r| !running(r.state)).map(|r| r.rollout_id).collect();
        let kept: Vec<u64> = out.iter().filter(|p| !running(p.state)).map(|p| p.rollout_id).collect();
        prop_assert_eq!(kept.len(), finished.len().min(RECENT_FINISHED_ROLLOUTS));
        let newest: Vec<u64> = finished.iter().rev().take(RECENT_FINISHED_ROLLOUTS).rev().copied().collect();
        prop_assert_eq!(kept, newest);
    }

    #[test]
    fn status_classes(status in 100u16..600) {
        prop_assert_eq!(status_class(status).as_bytes()[0], b'0' + (status / 100) as u8);
    }
}

#[test]
fn render_keeps_todays_families_and_adds_the_new_ones() {
    let m = Metrics::default();
    m.polls.fetch_add(3, Ordering::Relaxed);
    m.observe_request("/api/device/poll", "POST", 200, Duration::from_micros(700));
    let gauges = Gauges {
        devices: 2,
        rollouts_by_state: RolloutState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        devices_by_version: devices_by_version([Some(&semver::Version::new(1, 0, 0)), None]),
        rollouts: rollout_progress(&[rollout(7, RolloutState::Active, 4)]),
        lease_held: true,
        freeze_alarms: crate::metrics::fleet::freeze_alarms([None]),
        ..Gauges::default()
    };
    let text = render(&m, &gauges);
    for line in [
        "# HELP ota_polls_total Device polls answered.",
        "# TYPE ota_polls_total counter",
        "ota_polls_total 3",
        "ota_devices 2",
        "ota_lease_held 1",
        "ota_rollouts{state=\"active\"} 0",
        "ota_devices_by_version{version=\"1.0.0\"} 1",
        "ota_devices_by_version{version=\"unknown\"} 1",
        "ota_devices_freeze_alarm{reason=\"stale\"} 0",
        "ota_rollout_devices{outcome=\"updated\",rollout=\"7\"} 4",
        "ota_rollout_devices{outcome=\"targeted\",rollout=\"7\"} 10",
        "ota_rollout_state{rollout=\"7\",state=\"active\"} 1",
        "ota_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/device/poll\",status=\"2xx\",le=\"0.001\"} 1",
        "ota_http_request_duration_seconds_count{method=\"POST\",route=\"/api/device/poll\",status=\"2xx\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.find("ota_polls_total").unwrap() < text.find("ota_devices ").unwrap());
    #[cfg(target_os = "linux")]
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "missing {name} in\n{text}"
        );
    }
}

#[test]
fn a_scrape_token_is_kept_as_its_hash_and_a_short_one_refused() {
    assert_eq!(scrape_token_hash(None).unwrap(), None);
    let hash = scrape_token_hash(Some("scrape-token-0123456789\n".into())).unwrap();
    assert_eq!(
        hash,
        Some(crate::tokens::hash_token("scrape-token-0123456789"))
    );
    let short = scrape_token_hash(Some("short".into())).unwrap_err();
    assert_eq!(
        short.to_string(),
        "the metrics token must be at least 16 characters long (it has 5)"
    );
}

#[test]
fn freeze_alarms_are_counted_per_reason_with_every_reason_present() {
    use ota_protocol::fleet::{FreezeAlarm, FreezeReason};
    let alarm = |reason| FreezeAlarm {
        reason,
        stale_secs: 1,
        last_version: None,
    };
    let (stale, invalid) = (alarm(FreezeReason::Stale), alarm(FreezeReason::Invalid));
    let counts =
        crate::metrics::fleet::freeze_alarms([Some(&stale), None, Some(&stale), Some(&invalid)]);
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![("invalid", 1), ("replayed", 0), ("stale", 2)]
    );
}
