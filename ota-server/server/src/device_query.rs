//! `GET /api/devices`' query (pure): which devices match (`q` words, `status`, `health`, `rollout`), in which
//! order (`sort` on any column the console shows, `order`), and which page (`page`, `per_page` ≤
//! [`MAX_PER_PAGE`]). The server holds the fleet in memory, so 10,000 robots are filtered and sorted per request
//! in milliseconds and the page only ever receives one page.
//!
//! Ties (and missing values, which sort last in either order) fall back to the device id, so pages never
//! overlap or skip a device while nothing changes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use ota_protocol::admin::{DeviceInfo, FleetCounts, HealthLevel};
use ota_protocol::device::ReportStatus;

/// The largest page.
pub const MAX_PER_PAGE: u32 = 500;
/// The page size when none is asked.
pub const DEFAULT_PER_PAGE: u32 = 50;

/// A column to sort by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// `device`: the device id.
    Device,
    /// `compatible`.
    Compatible,
    /// `tags`: the tags (reported and operator) as `k=v` text.
    Tags,
    /// `group`.
    Group,
    /// `version`: the running version (semver order).
    Version,
    /// `slot`: the booted slot.
    Slot,
    /// `last_seen`.
    LastSeen,
    /// `status`: the latest report's status.
    Status,
    /// `battery`: telemetry battery percent.
    Battery,
    /// `health`: level, then bad outcomes.
    Health,
    /// `maintenance`: the maintenance score.
    Maintenance,
    /// `enrolled`.
    Enrolled,
}

impl SortKey {
    /// Every key with its query name.
    pub const ALL: [(SortKey, &'static str); 12] = [
        (SortKey::Device, "device"),
        (SortKey::Compatible, "compatible"),
        (SortKey::Tags, "tags"),
        (SortKey::Group, "group"),
        (SortKey::Version, "version"),
        (SortKey::Slot, "slot"),
        (SortKey::LastSeen, "last_seen"),
        (SortKey::Status, "status"),
        (SortKey::Battery, "battery"),
        (SortKey::Health, "health"),
        (SortKey::Maintenance, "maintenance"),
        (SortKey::Enrolled, "enrolled"),
    ];

    fn parse(s: &str) -> Option<SortKey> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }
}

/// What `GET /api/devices` was asked.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceQuery {
    /// The page (from 1); `None`: the whole list, as before paging existed.
    pub page: Option<u32>,
    /// Page size, 1..=[`MAX_PER_PAGE`].
    pub per_page: u32,
    /// Sort column.
    pub sort: SortKey,
    /// Descending.
    pub descending: bool,
    /// Lower-case words that must all appear in the device's text (id, tags, group, version, ...).
    pub words: Vec<String>,
    /// The latest report's status (`none`: no report yet).
    pub status: Option<String>,
    /// Health level.
    pub health: Option<HealthLevel>,
    /// Only targets of this rollout.
    pub rollout: Option<u64>,
}

impl Default for DeviceQuery {
    fn default() -> Self {
        DeviceQuery {
            page: None,
            per_page: DEFAULT_PER_PAGE,
            sort: SortKey::Device,
            descending: false,
            words: Vec::new(),
            status: None,
            health: None,
            rollout: None,
        }
    }
}

/// `status=` values: a report status, or `none` (no report yet).
fn status_names() -> impl Iterator<Item = &'static str> {
    std::iter::once("none").chain(ReportStatus::ALL.iter().map(|s| s.as_str()))
}

impl DeviceQuery {
    /// Parses the query string's parameters; the error says which one is wrong and what it accepts.
    pub fn parse(params: &BTreeMap<String, String>) -> Result<DeviceQuery, String> {
        let mut q = DeviceQuery::default();
        for (name, value) in params {
            match name.as_str() {
                "page" => {
                    q.page = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|p| *p >= 1)
                            .ok_or_else(|| format!("page must be a number from 1, not '{value}'"))?,
                    )
                }
                "per_page" => {
                    q.per_page = value
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                        .ok_or_else(|| {
                            format!("per_page must be 1 to {MAX_PER_PAGE}, not '{value}'")
                        })?
                }
                "sort" => {
                    q.sort = SortKey::parse(value).ok_or_else(|| {
                        let names: Vec<_> = SortKey::ALL.iter().map(|(_, n)| *n).collect();
                        format!("sort must be one of {}, not '{value}'", names.join(", "))
                    })?
                }
                "order" => {
                    q.descending = match value.as_str() {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err(format!("order must be asc or desc, not '{value}'")),
                    }
                }
                "q" => {
                    q.words = value
                        .split_whitespace()
                        .map(str::to_lowercase)
                        .collect()
                }
                "status" if !value.is_empty() => {
                    if !status_names().any(|n| n == value) {
                        let names: Vec<_> = status_names().collect();
                        return Err(format!(
                            "status must be one of {}, not '{value}'",
                            names.join(", ")
                        ));
                    }
                    q.status = Some(value.clone());
                }
                "health" if !value.is_empty() => {
                    q.health = Some(match value.as_str() {
                        "ok" => HealthLevel::Ok,
                        "warn" => HealthLevel::Warn,
                        "bad" => HealthLevel::Bad,
                        _ => return Err(format!("health must be ok, warn or bad, not '{value}'")),
                    })
                }
                "rollout" if !value.is_empty() => {
                    q.rollout =
                        Some(value.parse().map_err(|_| {
                            format!("rollout must be a rollout id, not '{value}'")
                        })?)
                }
                "status" | "health" | "rollout" => {}
                other => {
                    return Err(format!(
                        "unknown parameter '{other}'; use page, per_page, sort, order, q, status, health, rollout"
                    ))
                }
            }
        }
        Ok(q)
    }
}

fn health_level(d: &DeviceInfo) -> HealthLevel {
    d.health.map_or(HealthLevel::Ok, |h| h.level)
}

/// The text the `q` words are looked for in.
fn haystack(d: &DeviceInfo) -> String {
    let mut parts: Vec<String> = vec![d.device_id.clone(), d.compatible.clone()];
    parts.extend(d.current_version.as_ref().map(ToString::to_string));
    parts.extend(d.booted_slot.clone());
    parts.extend(d.group.clone());
    parts.extend(
        d.tags
            .iter()
            .chain(&d.labels)
            .map(|(k, v)| format!("{k}={v}")),
    );
    if let Some(s) = &d.last_status {
        parts.push(s.status.as_str().to_string());
    }
    if d.waiting.is_some() {
        parts.push("waiting".into());
    }
    if let Some(f) = &d.freeze_alarm {
        let reason = serde_json::to_string(&f.reason).unwrap_or_default();
        parts.push(format!("frozen {}", reason.trim_matches('"')));
    }
    parts.push(health_level(d).as_str().into());
    parts.join(" ").to_lowercase()
}

/// Whether a device passes the filter (`members`: the rollout's targets, when the query names one).
pub fn matches(d: &DeviceInfo, q: &DeviceQuery, members: Option<&HashSet<String>>) -> bool {
    if q.rollout.is_some() && !members.is_some_and(|m| m.contains(&d.device_id)) {
        return false;
    }
    if let Some(status) = &q.status {
        let last = d.last_status.as_ref().map_or("none", |s| s.status.as_str());
        if last != status {
            return false;
        }
    }
    if q.health.is_some_and(|h| h != health_level(d)) {
        return false;
    }
    if q.words.is_empty() {
        return true;
    }
    let hay = haystack(d);
    q.words.iter().all(|w| hay.contains(w.as_str()))
}

fn tags_text(d: &DeviceInfo) -> String {
    let all: Vec<String> = d
        .tags
        .iter()
        .chain(&d.labels)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    all.join(",")
}

/// `Some` values in `order`, `None` last either way.
fn opt<T: PartialOrd>(a: Option<T>, b: Option<T>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if descending {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The order of two devices under the query's sort (ties by device id, ascending).
pub fn compare(a: &DeviceInfo, b: &DeviceInfo, key: SortKey, descending: bool) -> Ordering {
    let battery = |d: &DeviceInfo| d.telemetry.as_ref().and_then(|t| t.battery_percent);
    let health = |d: &DeviceInfo| {
        let h = d.health.unwrap_or(ota_protocol::admin::DeviceHealth {
            level: HealthLevel::Ok,
            failures: 0,
            rollbacks: 0,
            outcomes: 0,
        });
        (h.level, h.failures + h.rollbacks)
    };
    let d = descending;
    let primary = match key {
        SortKey::Device => opt(Some(&a.device_id), Some(&b.device_id), d),
        SortKey::Compatible => opt(Some(&a.compatible), Some(&b.compatible), d),
        SortKey::Tags => opt(Some(tags_text(a)), Some(tags_text(b)), d),
        SortKey::Group => opt(a.group.as_ref(), b.group.as_ref(), d),
        SortKey::Version => opt(a.current_version.as_ref(), b.current_version.as_ref(), d),
        SortKey::Slot => opt(a.booted_slot.as_ref(), b.booted_slot.as_ref(), d),
        SortKey::LastSeen => opt(a.last_seen, b.last_seen, d),
        SortKey::Status => opt(
            a.last_status.as_ref().map(|s| s.status.as_str()),
            b.last_status.as_ref().map(|s| s.status.as_str()),
            d,
        ),
        SortKey::Battery => opt(battery(a), battery(b), d),
        SortKey::Health => opt(Some(health(a)), Some(health(b)), d),
        SortKey::Maintenance => opt(a.maintenance_score, b.maintenance_score, d),
        SortKey::Enrolled => opt(Some(a.enrolled_at), Some(b.enrolled_at), d),
    };
    primary.then_with(|| a.device_id.cmp(&b.device_id))
}

/// Counts over the whole fleet.
pub fn counts(devices: &[DeviceInfo]) -> FleetCounts {
    let mut c = FleetCounts {
        devices: devices.len() as u64,
        ..FleetCounts::default()
    };
    for d in devices {
        match health_level(d) {
            HealthLevel::Bad => c.failing += 1,
            HealthLevel::Warn => c.last_failed += 1,
            HealthLevel::Ok => {}
        }
        c.frozen += u64::from(d.freeze_alarm.is_some());
        c.waiting += u64::from(d.waiting.is_some());
    }
    c
}

/// Filters and sorts `devices`; returns the requested page (everything when the query has no page) and how
/// many matched.
pub fn select(
    devices: Vec<DeviceInfo>,
    q: &DeviceQuery,
    members: Option<&HashSet<String>>,
) -> (Vec<DeviceInfo>, u64) {
    let mut hits: Vec<DeviceInfo> = devices
        .into_iter()
        .filter(|d| matches(d, q, members))
        .collect();
    let total = hits.len() as u64;
    hits.sort_by(|a, b| compare(a, b, q.sort, q.descending));
    let Some(page) = q.page else {
        return (hits, total);
    };
    let start = (page as usize - 1).saturating_mul(q.per_page as usize);
    let page: Vec<DeviceInfo> = hits
        .into_iter()
        .skip(start)
        .take(q.per_page as usize)
        .collect();
    (page, total)
}

#[cfg(test)]
mod tests;
