use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn telemetry(latency: f64, uptime: u64) -> Telemetry {
    Telemetry {
        battery_percent: Some(80.0),
        uptime_secs: Some(uptime),
        metrics: BTreeMap::from([("inference_latency_ms".to_string(), latency)]),
        ..Telemetry::default()
    }
}

#[test]
fn samples_take_fixed_fields_and_free_metrics_but_no_position_or_nan() {
    let mut t = telemetry(41.5, 100);
    t.metrics.insert("broken".into(), f64::NAN);
    t.metrics.insert("x".repeat(65), 1.0);
    t.position = Some(ota_protocol::device::Position {
        x: 1.0,
        y: 2.0,
        theta: None,
        frame: None,
    });
    let names: Vec<&str> = samples(&t).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["battery_percent", "uptime_secs", "inference_latency_ms"]
    );
}

#[test]
fn the_recorder_closes_a_minute_when_it_has_passed_and_keeps_recent_samples() {
    let mut r = Recorder::default();
    r.observe("r1", 600, None, &telemetry(40.0, 10));
    r.observe("r1", 630, None, &telemetry(60.0, 40));
    r.observe("r1", 620, None, &telemetry(1e9, 40)); // older than the last: ignored
    assert!(
        r.take_closed(659, false).is_empty(),
        "minute 600 still open"
    );
    assert_eq!(r.unsaved("r1", "inference_latency_ms")[0].count, 2);
    let rows = r.take_closed(660, false);
    let latency = rows
        .iter()
        .find(|row| row.metric == "inference_latency_ms")
        .unwrap();
    assert_eq!(latency.bucket.at, 600);
    assert_eq!(latency.bucket.mean(), 50.0);
    assert_eq!((latency.bucket.min, latency.bucket.max), (40.0, 60.0));
    assert_eq!(rows.len(), 3);
    let dev = r.device("r1").unwrap();
    assert_eq!(dev.mean_since("inference_latency_ms", 630), Some(60.0));
    assert_eq!(dev.mean_since("inference_latency_ms", 631), None);
    assert!(r.unsaved("r1", "inference_latency_ms").is_empty());
}

#[test]
fn mean_on_a_version_counts_only_samples_taken_on_it() {
    let v1: semver::Version = "1.0.0".parse().unwrap();
    let v2: semver::Version = "2.0.0".parse().unwrap();
    let mut r = Recorder::default();
    r.observe("r1", 600, Some(&v1), &telemetry(40.0, 10));
    r.observe("r1", 600, Some(&v2), &telemetry(9999.0, 1)); // same second, after the update
    let dev = r.device("r1").unwrap();
    assert_eq!(dev.mean_on("inference_latency_ms", &v2, 600), Some(9999.0));
    assert_eq!(
        dev.mean_on("inference_latency_ms", &v1, 0),
        None,
        "runs 2.0.0 now"
    );
    assert_eq!(dev.mean_since("inference_latency_ms", 600), Some(5019.5));
}

#[test]
fn a_device_is_sampled_at_most_every_few_seconds_unless_its_version_changed() {
    let v2: semver::Version = "2.0.0".parse().unwrap();
    let mut r = Recorder::default();
    r.observe("r1", 600, None, &telemetry(40.0, 10));
    r.observe("r1", 600 + MIN_SAMPLE_GAP - 1, None, &telemetry(50.0, 11));
    r.observe(
        "r1",
        600 + MIN_SAMPLE_GAP - 1,
        Some(&v2),
        &telemetry(60.0, 1),
    );
    let open = r.unsaved("r1", "inference_latency_ms");
    assert_eq!((open[0].count, open[0].min, open[0].max), (2, 40.0, 60.0));
}

#[test]
fn a_fleet_closing_its_minute_at_once_is_handed_out_in_parts() {
    let mut r = Recorder::default();
    let devices = 2 * MAX_TAKE / 3;
    for i in 0..devices {
        r.observe(&format!("r{i}"), 600, None, &telemetry(1.0, 10));
    }
    let mut parts = Vec::new();
    loop {
        let rows = r.take_closed(700, false);
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= MAX_TAKE);
        parts.push(rows.len());
    }
    assert!(parts.len() > 1, "{parts:?}");
    assert_eq!(parts.iter().sum::<usize>(), devices * 3);
}

#[test]
fn a_new_minute_closes_the_previous_bucket_at_once() {
    let mut r = Recorder::default();
    r.observe("r1", 600, None, &telemetry(40.0, 10));
    r.observe("r1", 700, None, &telemetry(50.0, 110));
    let closed = r.take_closed(700, false);
    assert!(closed.iter().all(|row| row.bucket.at == 600));
    assert_eq!(closed.len(), 3);
    assert_eq!(
        r.take_closed(700, true).len(),
        3,
        "shutdown takes open ones"
    );
}

#[test]
fn boots_are_when_uptime_goes_down() {
    let mut r = Recorder::default();
    r.observe("r1", 1000, None, &telemetry(1.0, 900)); // booted at 100
    r.observe("r1", 1060, None, &telemetry(1.0, 960));
    r.observe("r1", 1120, None, &telemetry(1.0, 5)); // booted at 1115
    let dev = r.device("r1").unwrap();
    assert_eq!(dev.boots_since(0), 2);
    assert_eq!(dev.boots_since(1000), 1);
    assert_eq!(dev.boots_since(1115), 0);
}

#[test]
fn another_replicas_samples_feed_the_guards_but_open_no_bucket() {
    let v2: semver::Version = "2.0.0".parse().unwrap();
    let mut r = Recorder::default();
    r.observe("r1", 600, Some(&v2), &telemetry(40.0, 900));
    r.observe_peer("r1", 630, Some(&v2), &telemetry(80.0, 10)); // rebooted, seen by a peer
    r.observe_peer("r1", 630, Some(&v2), &telemetry(80.0, 10)); // read back again: ignored
    r.observe_peer("r2", 640, Some(&v2), &telemetry(7.0, 50));
    let dev = r.device("r1").unwrap();
    assert_eq!(dev.mean_on("inference_latency_ms", &v2, 0), Some(60.0));
    assert_eq!(dev.boots_since(600), 1);
    assert!(r.device("r2").unwrap().seen_since(640));
    let rows = r.take_closed(10_000, true);
    assert!(
        rows.iter()
            .all(|row| row.device_id == "r1" && row.bucket.count == 1),
        "only r1's own sample is history to store here: {rows:?}"
    );
    assert!(r.unsaved("r2", "inference_latency_ms").is_empty());
}

#[test]
fn a_device_keeps_at_most_64_metrics() {
    let mut r = Recorder::default();
    for i in 0..100u64 {
        let mut t = Telemetry::default();
        t.metrics.insert(format!("m{i:03}"), 1.0);
        r.observe("r1", 1000 + MIN_SAMPLE_GAP * i, None, &t);
    }
    let rows = r.take_closed(10_000, true);
    let names: std::collections::BTreeSet<_> = rows.iter().map(|r| r.metric.clone()).collect();
    assert_eq!(names.len(), MAX_METRICS);
    assert!(names.contains("m000") && !names.contains("m064"));
}

#[test]
fn compact_keeps_a_day_of_minutes_then_hours_then_nothing() {
    let now = 100 * 86_400 + 1234;
    let minute = |at: u64| Bucket::sample(at, 1.0);
    let fresh = minute(now - 3600);
    let day_old = minute(now - FINE_SPAN - 2 * HOUR);
    let day_old2 = minute(now - FINE_SPAN - 2 * HOUR + 60);
    let ancient = minute(now - 40 * 86_400);
    let out = compact(&[fresh, day_old, day_old2, ancient], now, 30 * 86_400);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].width, HOUR);
    assert_eq!(out[0].count, 2);
    assert_eq!(out[1], fresh);
}

#[test]
fn points_merge_same_buckets_and_start_at_since() {
    let a = Bucket::sample(600, 10.0);
    let b = Bucket::sample(610, 20.0);
    let c = Bucket::sample(720, 5.0);
    let p = points(&[c, a, b], 0);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].at, p[0].count, p[0].mean), (600, 2, 15.0));
    assert_eq!(points(&[a, b, c], 700).len(), 1);
}

fn bucket() -> impl Strategy<Value = Bucket> {
    (0u64..(60 * 86_400), -1e6f64..1e6, 1u64..5).prop_map(|(t, v, n)| Bucket {
        count: n,
        sum: v * n as f64,
        ..Bucket::sample(t, v)
    })
}

proptest! {
    /// Compaction loses no samples within the retention, keeps min and max, aligns every bucket to its
    /// width, uses hours only for buckets more than a day old, and is idempotent.
    #[test]
    fn compaction_preserves_what_it_keeps(buckets in proptest::collection::vec(bucket(), 0..60),
                                          now in (30 * 86_400u64)..(61 * 86_400),
                                          retention_days in 1u64..40) {
        let retention = retention_days * 86_400;
        let out = compact(&buckets, now, retention);
        let kept: Vec<&Bucket> = buckets.iter().filter(|b| b.at + b.width > now.saturating_sub(retention)).collect();
        prop_assert_eq!(out.iter().map(|b| b.count).sum::<u64>(), kept.iter().map(|b| b.count).sum::<u64>());
        let sum_in: f64 = kept.iter().map(|b| b.sum).sum();
        let sum_out: f64 = out.iter().map(|b| b.sum).sum();
        prop_assert!((sum_in - sum_out).abs() <= 1e-6 * (1.0 + sum_in.abs()));
        if !kept.is_empty() {
            let min_in = kept.iter().map(|b| b.min).fold(f64::INFINITY, f64::min);
            let max_in = kept.iter().map(|b| b.max).fold(f64::NEG_INFINITY, f64::max);
            prop_assert_eq!(out.iter().map(|b| b.min).fold(f64::INFINITY, f64::min), min_in);
            prop_assert_eq!(out.iter().map(|b| b.max).fold(f64::NEG_INFINITY, f64::max), max_in);
        }
        for b in &out {
            prop_assert_eq!(b.at % b.width, 0);
            prop_assert!(b.at + b.width > now.saturating_sub(retention));
            if b.width == HOUR {
                prop_assert!(b.at < now.saturating_sub(FINE_SPAN));
            } else {
                prop_assert!(b.at + FINE_SPAN + HOUR >= now);
            }
        }
        prop_assert!(out.windows(2).all(|w| (w[0].at, w[0].width) < (w[1].at, w[1].width)));
        prop_assert_eq!(compact(&out, now, retention), out);
    }

    /// However the samples of a minute are split between recorder flushes, the stored buckets add up to the
    /// same count and sum, and nothing is ever held for more than [`RECENT_SAMPLES`] per series.
    #[test]
    fn recorder_loses_no_sample(values in proptest::collection::vec((MIN_SAMPLE_GAP..30, -1e3f64..1e3), 1..80),
                                flush_every in 1usize..10) {
        let mut r = Recorder::default();
        let mut t = 1_000_000u64;
        let mut stored = Vec::new();
        for (i, (dt, v)) in values.iter().enumerate() {
            t += dt;
            let mut tel = Telemetry::default();
            tel.metrics.insert("m".into(), *v);
            r.observe("d", t, None, &tel);
            if i % flush_every == 0 {
                stored.extend(r.take_closed(t, false));
            }
            prop_assert!(r.device("d").unwrap().series["m"].recent.len() <= RECENT_SAMPLES);
        }
        stored.extend(r.take_closed(t, true));
        prop_assert_eq!(stored.iter().map(|row| row.bucket.count).sum::<u64>(), values.len() as u64);
        let sum: f64 = values.iter().map(|(_, v)| v).sum();
        let got: f64 = stored.iter().map(|row| row.bucket.sum).sum();
        prop_assert!((sum - got).abs() < 1e-6);
        let minutes: std::collections::BTreeSet<u64> = stored.iter().map(|row| row.bucket.at).collect();
        prop_assert_eq!(minutes.len(), stored.len(), "one stored bucket per minute");
    }
}
