use std::collections::{BTreeMap, HashSet};

use ota_protocol::admin::{DeviceHealth, DeviceInfo, HealthLevel, LastStatus};
use ota_protocol::device::{ReportStatus, Telemetry};
use proptest::prelude::*;

use super::*;

fn device(
    i: usize,
    version: Option<u64>,
    battery: Option<f64>,
    status: Option<ReportStatus>,
    site: &str,
) -> DeviceInfo {
    DeviceInfo {
        device_id: format!("robot-{i:05}"),
        compatible: "acme".into(),
        tags: BTreeMap::from([("site".to_string(), site.to_string())]),
        current_version: version.map(|v| semver::Version::new(1, v, 0)),
        booted_slot: None,
        slots: BTreeMap::new(),
        enrolled_at: i as u64,
        last_seen: version.map(|v| 1000 + v),
        last_status: status.map(|status| LastStatus {
            status,
            rollout_id: None,
            version: None,
            at: 1,
            error: None,
            reason: None,
        }),
        telemetry: battery.map(|b| Telemetry {
            battery_percent: Some(b),
            ..Telemetry::default()
        }),
        labels: BTreeMap::new(),
        group: None,
        waiting: None,
        security_floor: None,
        freeze_alarm: None,
        maintenance_score: None,
        health: status.map(|s| DeviceHealth {
            level: match s {
                ReportStatus::Failure => HealthLevel::Warn,
                ReportStatus::RolledBack => HealthLevel::Bad,
                _ => HealthLevel::Ok,
            },
            failures: 0,
            rollbacks: 0,
            outcomes: 1,
        }),
    }
}

fn fleet() -> impl Strategy<Value = Vec<DeviceInfo>> {
    let status = prop::option::of(prop::sample::select(ReportStatus::ALL.to_vec()));
    let site = prop::sample::select(vec!["north", "south", "<img src=x>"]);
    prop::collection::vec(
        (
            prop::option::of(0u64..4),
            prop::option::of(0.0f64..100.0),
            status,
            site,
        ),
        0..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (ver, bat, st, site))| device(i, ver, bat, st, site))
            .collect()
    })
}

fn query() -> impl Strategy<Value = DeviceQuery> {
    let key = prop::sample::select(SortKey::ALL.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let words = prop::sample::select(vec![
        vec![],
        vec!["north".to_string()],
        vec!["1.2".into()],
        vec!["robot-000".into(), "south".into()],
    ]);
    let status = prop::option::of(prop::sample::select(vec![
        "none".to_string(),
        "failure".into(),
        "success".into(),
    ]));
    let health = prop::option::of(prop::sample::select(vec![
        HealthLevel::Ok,
        HealthLevel::Warn,
        HealthLevel::Bad,
    ]));
    (
        key,
        any::<bool>(),
        1u32..12,
        words,
        status,
        health,
        any::<bool>(),
    )
        .prop_map(
            |(sort, descending, per_page, words, status, health, rollout)| DeviceQuery {
                page: Some(1),
                per_page,
                sort,
                descending,
                words,
                status,
                health,
                rollout: rollout.then_some(7),
            },
        )
}

fn members(devices: &[DeviceInfo]) -> HashSet<String> {
    devices
        .iter()
        .step_by(3)
        .map(|d| d.device_id.clone())
        .collect()
}

proptest! {
    /// Paging partitions the matching devices: the pages, in order, are exactly the filtered list sorted by
    /// `compare`, every device once; `total` counts them on every page.
    #[test]
    fn pages_partition_the_sorted_matches(devices in fleet(), q in query()) {
        let m = members(&devices);
        let expected: Vec<DeviceInfo> = {
            let mut v: Vec<_> = devices.iter().filter(|d| matches(d, &q, Some(&m))).cloned().collect();
            v.sort_by(|a, b| compare(a, b, q.sort, q.descending));
            v
        };
        let mut seen = Vec::new();
        let mut page = 1;
        loop {
            let (items, total) = select(devices.clone(), &DeviceQuery { page: Some(page), ..q.clone() }, Some(&m));
            prop_assert_eq!(total as usize, expected.len());
            prop_assert!(items.len() <= q.per_page as usize);
            if items.is_empty() {
                break;
            }
            seen.extend(items);
            page += 1;
        }
        prop_assert_eq!(&seen, &expected);
        let ids: HashSet<_> = seen.iter().map(|d| &d.device_id).collect();
        prop_assert_eq!(ids.len(), seen.len());
        // Without a page: the whole sorted list.
        let (all, _) = select(devices.clone(), &DeviceQuery { page: None, ..q.clone() }, Some(&m));
        prop_assert_eq!(all, expected);
    }

    /// Every match satisfies each filter; every non-match fails one.
    #[test]
    fn filters_hold(devices in fleet(), q in query()) {
        let m = members(&devices);
        for d in &devices {
            let hay = haystack(d);
            let status = d.last_status.as_ref().map_or("none", |s| s.status.as_str());
            let expect = (q.rollout.is_none() || m.contains(&d.device_id))
                && q.status.as_deref().is_none_or(|s| s == status)
                && q.health.is_none_or(|h| h == health_level(d))
                && q.words.iter().all(|w| hay.contains(w.as_str()));
            prop_assert_eq!(matches(d, &q, Some(&m)), expect, "{}", d.device_id);
        }
    }

    /// `compare` is a total order consistent with the ascending order reversed (missing values last either way)
    /// and ties go to the device id.
    #[test]
    fn order_is_total(devices in fleet(), k in 0usize..SortKey::ALL.len()) {
        let key = SortKey::ALL[k].0;
        for a in &devices {
            for b in &devices {
                let asc = compare(a, b, key, false);
                let desc = compare(a, b, key, true);
                prop_assert_eq!(asc == Ordering::Equal, a.device_id == b.device_id);
                prop_assert_eq!(compare(b, a, key, false), asc.reverse());
                prop_assert_eq!(desc == Ordering::Equal, asc == Ordering::Equal);
            }
        }
    }
}

#[test]
fn parse_accepts_the_documented_parameters_and_names_the_wrong_one() {
    let params = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let q = DeviceQuery::parse(&params(&[
        ("page", "2"),
        ("per_page", "500"),
        ("sort", "last_seen"),
        ("order", "desc"),
        ("q", "Site=North  1.2"),
        ("status", "rolled_back"),
        ("health", "bad"),
        ("rollout", "3"),
    ]))
    .unwrap();
    assert_eq!(q.page, Some(2));
    assert_eq!(q.per_page, 500);
    assert_eq!(q.sort, SortKey::LastSeen);
    assert!(q.descending);
    assert_eq!(q.words, ["site=north", "1.2"]);
    assert_eq!(q.status.as_deref(), Some("rolled_back"));
    assert_eq!(q.health, Some(HealthLevel::Bad));
    assert_eq!(q.rollout, Some(3));
    assert_eq!(
        DeviceQuery::parse(&params(&[])).unwrap(),
        DeviceQuery::default()
    );
    for (bad, says) in [
        (("per_page", "501"), "per_page must be 1 to 500"),
        (("page", "0"), "page must be a number from 1"),
        (
            ("sort", "password"),
            "sort must be one of device, compatible",
        ),
        (("order", "up"), "order must be asc or desc"),
        (
            ("status", "broken"),
            "status must be one of none, downloading",
        ),
        (("rollout", "x"), "rollout must be a rollout id"),
        (("pgae", "1"), "unknown parameter 'pgae'"),
    ] {
        let e = DeviceQuery::parse(&params(&[bad])).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn missing_values_sort_last_in_both_orders() {
    let a = device(1, Some(1), None, None, "north");
    let b = device(2, Some(2), Some(50.0), None, "north");
    for desc in [false, true] {
        assert_eq!(compare(&b, &a, SortKey::Battery, desc), Ordering::Less);
    }
    assert_eq!(compare(&a, &b, SortKey::Version, false), Ordering::Less);
    assert_eq!(compare(&a, &b, SortKey::Version, true), Ordering::Greater);
}
