//! Telemetry history, pure: which numbers of a poll's telemetry are kept, how samples fold into buckets
//! (1 minute for the last 24 hours, 1 hour before that, nothing past the retention), and the small in-memory
//! recorder the write-behind flush feeds. No I/O and no clock: every function takes the time it needs.
//!
//! The flush hands each polled device's telemetry to [`Recorder::observe`]; closed minute buckets come out of
//! [`Recorder::take_closed`] to be stored, and [`compact`] rolls stored minutes into hours and drops what is
//! past the retention. The recorder also keeps each device's last few raw samples and boot times, so the health
//! guards can read "this robot's mean since its update" without a database query.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ota_protocol::device::Telemetry;
use ota_protocol::fleet::HistoryPoint;

/// Width of a recent bucket.
pub const MINUTE: u64 = 60;
/// Width of an old bucket.
pub const HOUR: u64 = 3600;
/// How long buckets stay one minute wide.
pub const FINE_SPAN: u64 = 24 * HOUR;
/// Metrics kept per device; samples of further names are dropped (a robot cannot grow its history without
/// bound by inventing names).
pub const MAX_METRICS: usize = ota_protocol::validate::MAX_METRICS;
/// Raw samples kept per device and metric for the guards.
pub const RECENT_SAMPLES: usize = 16;
/// Boot times kept per device for the `reboots` guard.
pub const RECENT_BOOTS: usize = 16;
/// Longest metric name kept.
pub const MAX_NAME: usize = 64;
/// At most one sample per device this often, unless its version changed: plenty for minute buckets (robots
/// poll every minute by default), and it keeps a fleet polling every second from costing more.
pub const MIN_SAMPLE_GAP: u64 = 5;
/// Most buckets [`Recorder::take_closed`] returns at once: a whole fleet's buckets close at the same minute
/// boundary, and storing them is spread over the following flushes instead (10,000 robots with 10 metrics:
/// 100,000 buckets a minute, stored over 20 flushes).
pub const MAX_TAKE: usize = 5_000;

/// Start of the `width`-wide bucket holding `t`.
pub fn align(t: u64, width: u64) -> u64 {
    t - t % width
}

/// Aggregated samples of one metric over `[at, at + width)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Start (Unix seconds, a multiple of `width`).
    pub at: u64,
    /// [`MINUTE`] or [`HOUR`].
    pub width: u64,
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Sum of the samples (the mean is `sum / count`; sums merge exactly where means would not).
    pub sum: f64,
}

impl Bucket {
    /// The minute bucket of one sample taken at `t`.
    pub fn sample(t: u64, value: f64) -> Bucket {
        Bucket {
            at: align(t, MINUTE),
            width: MINUTE,
            count: 1,
            min: value,
            max: value,
            sum: value,
        }
    }

    /// Folds `other` (same or narrower span) into this bucket.
    pub fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Mean of the samples.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The wire form.
    pub fn point(&self) -> HistoryPoint {
        HistoryPoint {
            at: self.at,
            count: self.count,
            min: self.min,
            max: self.max,
            mean: self.mean(),
        }
    }
}

/// Downsamples one metric's buckets: those wholly past the retention (ending by `now - retention_secs`) go, minute
/// buckets older than the last 24 hours (before the hour boundary [`FINE_SPAN`] ago) fold into hour buckets,
/// the rest stay. Output is sorted by start, one bucket per (start, width). Idempotent.
pub fn compact(buckets: &[Bucket], now: u64, retention_secs: u64) -> Vec<Bucket> {
    let oldest = now.saturating_sub(retention_secs);
    let coarse_before = align(now.saturating_sub(FINE_SPAN), HOUR);
    let mut out: BTreeMap<(u64, u64), Bucket> = BTreeMap::new();
    for b in buckets
        .iter()
        .filter(|b| b.at + b.width > oldest && b.count > 0)
    {
        let (at, width) = if b.at < coarse_before {
            (align(b.at, HOUR), HOUR)
        } else {
            (b.at, b.width)
        };
        out.entry((at, width))
            .and_modify(|o| o.merge(b))
            .or_insert(Bucket { at, width, ..*b });
    }
    out.into_values().collect()
}

/// Merges buckets of one metric into points for the API: same start, same point; sorted; from `since` on.
pub fn points(buckets: &[Bucket], since: u64) -> Vec<HistoryPoint> {
    let mut merged: BTreeMap<(u64, u64), Bucket> = BTreeMap::new();
    for b in buckets.iter().filter(|b| b.at + b.width > since) {
        merged
            .entry((b.at, b.width))
            .and_modify(|o| o.merge(b))
            .or_insert(*b);
    }
    merged.values().map(Bucket::point).collect()
}

/// The numbers of a poll's telemetry, by metric name: the fixed fields, then every free-form metric, finite
/// values only, names of at most [`MAX_NAME`] bytes. (`position` is not a metric.)
pub fn samples(t: &Telemetry) -> Vec<(&str, f64)> {
    let fixed = [
        ("battery_percent", t.battery_percent),
        ("cpu_percent", t.cpu_percent),
        ("memory_used_bytes", t.memory_used_bytes.map(|v| v as f64)),
        ("memory_total_bytes", t.memory_total_bytes.map(|v| v as f64)),
        ("disk_used_bytes", t.disk_used_bytes.map(|v| v as f64)),
        ("disk_total_bytes", t.disk_total_bytes.map(|v| v as f64)),
        ("uptime_secs", t.uptime_secs.map(|v| v as f64)),
    ];
    fixed
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .chain(t.metrics.iter().map(|(k, v)| (k.as_str(), *v)))
        .filter(|(name, v)| v.is_finite() && !name.is_empty() && name.len() <= MAX_NAME)
        .collect()
}

/// One metric of one device in memory: the open minute bucket and the last raw samples.
#[derive(Clone, Debug, Default)]
struct Series {
    open: Option<Bucket>,
    /// (time, version generation, value).
    recent: VecDeque<(u64, u32, f64)>,
}

/// One device in memory.
#[derive(Clone, Debug, Default)]
pub struct DeviceRecent {
    series: BTreeMap<String, Series>,
    boots: VecDeque<u64>,
    last_seen: Option<u64>,
    last_uptime: Option<u64>,
    /// The version it runs, and a counter that moves whenever that changes (samples carry it).
    version: Option<semver::Version>,
    generation: u32,
}

impl DeviceRecent {
    /// Mean of the metric's recent samples taken at or after `since`; `None` without any.
    pub fn mean_since(&self, metric: &str, since: u64) -> Option<f64> {
        self.mean_where(metric, |t, _| t >= since)
    }

    /// Mean of the metric's recent samples taken at or after `since` while the device ran `version` (its
    /// current one); `None` without any, or when it runs another version now.
    pub fn mean_on(&self, metric: &str, version: &semver::Version, since: u64) -> Option<f64> {
        if self.version.as_ref() != Some(version) {
            return None;
        }
        self.mean_where(metric, |t, generation| {
            t >= since && generation == self.generation
        })
    }

    fn mean_where(&self, metric: &str, keep: impl Fn(u64, u32) -> bool) -> Option<f64> {
        let series = self.series.get(metric)?;
        let (n, sum) = series
            .recent
            .iter()
            .filter(|(t, g, _)| keep(*t, *g))
            .fold((0u32, 0.0), |(n, s), (_, _, v)| (n + 1, s + v));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// Boots seen (uptime went down, or the first sample) that happened after `since`.
    pub fn boots_since(&self, since: u64) -> u64 {
        self.boots.iter().filter(|&&b| b > since).count() as u64
    }

    /// Whether any sample of any metric was seen at or after `since`.
    pub fn seen_since(&self, since: u64) -> bool {
        self.last_seen.is_some_and(|t| t >= since)
    }
}

/// A closed bucket to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Device.
    pub device_id: String,
    /// Metric name.
    pub metric: String,
    /// The bucket.
    pub bucket: Bucket,
}

/// The in-memory side of the history: open minute buckets, closed ones waiting to be stored, and each
/// device's recent samples. Bounded: [`MAX_METRICS`] series per device, [`RECENT_SAMPLES`] samples per series.
#[derive(Debug, Default)]
pub struct Recorder {
    devices: HashMap<String, DeviceRecent>,
    closed: Vec<Row>,
    open_minutes: BTreeMap<u64, Vec<String>>,
}

impl Recorder {
    /// Records one device's telemetry taken at `t` while it ran `version`. A sample older than the device's
    /// previous one is ignored.
    pub fn observe(
        &mut self,
        device_id: &str,
        t: u64,
        version: Option<&semver::Version>,
        telemetry: &Telemetry,
    ) {
        self.record(device_id, t, version, telemetry, true);
    }

    /// Records a sample another replica took (read back from the store) for the guards only: it joins the
    /// device's recent samples and boots, but opens no bucket, because the replica that took it stores its
    /// history. A sample this recorder already holds (its own, read back) is ignored like any older one.
    pub fn observe_peer(
        &mut self,
        device_id: &str,
        t: u64,
        version: Option<&semver::Version>,
        telemetry: &Telemetry,
    ) {
        self.record(device_id, t, version, telemetry, false);
    }

    fn record(
        &mut self,
        device_id: &str,
        t: u64,
        version: Option<&semver::Version>,
        telemetry: &Telemetry,
        history: bool,
    ) {
        if !self.devices.contains_key(device_id) {
            self.devices
                .insert(device_id.to_string(), DeviceRecent::default());
        }
        let Some(dev) = self.devices.get_mut(device_id) else {
            return;
        };
        let same_version = dev.version.as_ref() == version;
        if dev
            .last_seen
            .is_some_and(|last| t < last || (same_version && t < last + MIN_SAMPLE_GAP))
        {
            return;
        }
        dev.last_seen = Some(t);
        if dev.version.as_ref() != version {
            dev.version = version.cloned();
            dev.generation = dev.generation.wrapping_add(1);
        }
        let generation = dev.generation;
        if let Some(up) = telemetry.uptime_secs {
            // A boot is the first uptime seen or one lower than the last; it happened `up` seconds ago.
            if dev.last_uptime.is_none_or(|last| up < last) {
                if dev.boots.len() == RECENT_BOOTS {
                    dev.boots.pop_front();
                }
                dev.boots.push_back(t.saturating_sub(up));
            }
            dev.last_uptime = Some(up);
        }
        let minute = align(t, MINUTE);
        let mut opened = false;
        for (name, value) in samples(telemetry) {
            if !dev.series.contains_key(name) {
                if dev.series.len() >= MAX_METRICS {
                    continue;
                }
                dev.series.insert(name.to_string(), Series::default());
            }
            let Some(series) = dev.series.get_mut(name) else {
                continue;
            };
            if series.recent.len() == RECENT_SAMPLES {
                series.recent.pop_front();
            }
            series.recent.push_back((t, generation, value));
            if !history {
                continue;
            }
            let sample = Bucket::sample(t, value);
            match &mut series.open {
                Some(open) if open.at == minute => open.merge(&sample),
                slot => {
                    if let Some(done) = slot.replace(sample) {
                        self.closed.push(Row {
                            device_id: device_id.to_string(),
                            metric: name.to_string(),
                            bucket: done,
                        });
                    }
                    opened = true;
                }
            }
        }
        if opened {
            self.open_minutes
                .entry(minute)
                .or_default()
                .push(device_id.to_string());
        }
    }

    /// A device's recent samples.
    pub fn device(&self, device_id: &str) -> Option<&DeviceRecent> {
        self.devices.get(device_id)
    }

    /// Forgets a device, with its buckets not stored yet.
    pub fn forget(&mut self, device_id: &str) {
        self.devices.remove(device_id);
        self.closed.retain(|r| r.device_id != device_id);
    }

    /// Takes the buckets that are complete at `now` (their minute has passed), at most about [`MAX_TAKE`]
    /// (the rest come with the next calls); with `all`, every open one too, without limit (at shutdown: a
    /// bucket stored twice merges).
    pub fn take_closed(&mut self, now: u64, all: bool) -> Vec<Row> {
        let current = align(now, MINUTE);
        let due: Vec<u64> = self
            .open_minutes
            .keys()
            .copied()
            .filter(|&m| all || m < current)
            .collect();
        for minute in due {
            let mut ids = self.open_minutes.remove(&minute).unwrap_or_default();
            if !all && self.closed.len() >= MAX_TAKE {
                self.open_minutes.insert(minute, ids);
                break;
            }
            let keep = if all {
                Vec::new()
            } else {
                let room = (MAX_TAKE - self.closed.len()).div_ceil(MAX_METRICS / 8);
                ids.split_off(room.min(ids.len()))
            };
            if !keep.is_empty() {
                self.open_minutes.insert(minute, keep);
            }
            for id in ids {
                let Some(dev) = self.devices.get_mut(&id) else {
                    continue;
                };
                for (name, series) in &mut dev.series {
                    if series.open.is_some_and(|b| b.at == minute) {
                        if let Some(bucket) = series.open.take() {
                            self.closed.push(Row {
                                device_id: id.clone(),
                                metric: name.clone(),
                                bucket,
                            });
                        }
                    }
                }
            }
        }
        if all || self.closed.len() <= MAX_TAKE {
            return std::mem::take(&mut self.closed);
        }
        let rest = self.closed.split_off(MAX_TAKE);
        std::mem::replace(&mut self.closed, rest)
    }

    /// Closed buckets waiting to be stored.
    pub fn unstored(&self) -> usize {
        self.closed.len()
    }

    /// Puts back buckets the store refused, for the next flush.
    pub fn requeue(&mut self, rows: Vec<Row>) {
        self.closed.extend(rows);
    }

    /// Names of a device's metrics with buckets not stored yet (open or waiting), sorted.
    pub fn unsaved_metrics(&self, device_id: &str) -> Vec<String> {
        let open = self
            .devices
            .get(device_id)
            .into_iter()
            .flat_map(|d| d.series.iter())
            .filter(|(_, s)| s.open.is_some())
            .map(|(name, _)| name.clone());
        let waiting = self
            .closed
            .iter()
            .filter(|r| r.device_id == device_id)
            .map(|r| r.metric.clone());
        let names: std::collections::BTreeSet<String> = open.chain(waiting).collect();
        names.into_iter().collect()
    }

    /// Buckets of a device's metric not stored yet (open or waiting), for answering a history query.
    pub fn unsaved(&self, device_id: &str, metric: &str) -> Vec<Bucket> {
        let open = self
            .devices
            .get(device_id)
            .and_then(|d| d.series.get(metric))
            .and_then(|s| s.open);
        self.closed
            .iter()
            .filter(|r| r.device_id == device_id && r.metric == metric)
            .map(|r| r.bucket)
            .chain(open)
            .collect()
    }
}

#[cfg(test)]
mod tests;
