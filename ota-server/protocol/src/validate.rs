//! What a robot sends, checked the same way on every route: one rule per kind of value (device id, compatible,
//! version, tag, slot, metric name, free text) and one check per request ([`enroll`], [`poll`], [`report`]),
//! so a value refused at enrollment is refused in a poll too. Pure; each error names the field to fix.
//!
//! The `compatible` rule belongs to the bundle format (a robot's compatible must be one a manifest can carry),
//! which this crate does not link: callers pass it in as [`CompatibleRule`]. How often a robot may report is
//! the server's limit, not a wire rule. A robot passes its own telemetry through [`sanitize_telemetry`] before
//! it polls, so a faulty telemetry script costs a metric, never the poll that brings the robot its updates.

use std::collections::BTreeMap;

use crate::device::{EnrollRequest, PollRequest, ReportRequest, Telemetry};

/// The bundle format's rule for a `compatible` string (`ota_bundle_format::manifest::validate_compatible`).
pub type CompatibleRule = fn(&str) -> Result<(), String>;

/// Most telemetry metrics a robot may send (the server keeps one history series per metric, so a robot
/// inventing names cannot grow what the server holds for it).
pub const MAX_METRICS: usize = 64;
/// Most tags a robot or a rollout target may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag key.
pub const MAX_TAG_KEY: usize = 64;
/// Longest tag value.
pub const MAX_TAG_VALUE: usize = 256;
/// Longest version string (semver leaves pre-release and build parts unbounded).
pub const MAX_VERSION: usize = 128;
/// Most slots a robot reports.
pub const MAX_SLOTS: usize = 8;
/// Longest slot name (`A`, `B`, `rootfs.0`).
pub const MAX_SLOT_NAME: usize = 64;
/// Longest telemetry metric name.
pub const MAX_METRIC_NAME: usize = 64;
/// Longest one-line text a robot sends (a waiting reason, a reference frame, a digest).
pub const MAX_LINE: usize = 1024;
/// Longest multi-line text in a report (`error`, `reason`); the log tail has its own bound.
pub const MAX_TEXT: usize = 16 * 1024;
/// Longest credential-like value (enrollment secret, public key, challenge, signature).
pub const MAX_CREDENTIAL: usize = 4096;

/// An enrollment request: device id, compatible, request id, tags, and the lengths of its credentials.
pub fn enroll(req: &EnrollRequest, compatible: CompatibleRule) -> Result<(), String> {
    crate::validate_device_id(&req.device_id)?;
    compatible_field(&req.compatible, compatible)?;
    if req.request_id.len() < 8 || req.request_id.len() > 128 {
        return Err("request_id must be 8-128 characters (a random string)".into());
    }
    tags(&req.tags)?;
    bounded("enrollment_secret", &req.enrollment_secret, MAX_CREDENTIAL)?;
    for (field, value) in [
        ("public_key", &req.public_key),
        ("challenge", &req.challenge),
        ("signature", &req.signature),
    ] {
        if let Some(v) = value {
            bounded(field, v, MAX_CREDENTIAL)?;
        }
    }
    Ok(())
}

/// A poll: compatible (as at enrollment), versions, slots, telemetry, the waiting reason and the staged digest.
pub fn poll(req: &PollRequest, compatible: CompatibleRule) -> Result<(), String> {
    compatible_field(&req.compatible, compatible)?;
    version("current_version", req.current_version.as_ref())?;
    version("security_floor", req.security_floor.as_ref())?;
    if let Some(slot) = &req.booted_slot {
        slot_name("booted_slot", slot)?;
    }
    if req.slots.len() > MAX_SLOTS {
        return Err(format!("slots: at most {MAX_SLOTS} slots"));
    }
    for (slot, installed) in &req.slots {
        slot_name("slots", slot)?;
        if installed.len() > MAX_VERSION || has_control(installed) {
            line(&format!("slots.{slot}"), installed, MAX_VERSION)?;
        }
    }
    telemetry(&req.telemetry)?;
    if let Some(waiting) = &req.waiting {
        line("waiting.reason", &waiting.reason, MAX_LINE)?;
    }
    if let Some(staged) = &req.staged {
        line("staged", staged, MAX_LINE)?;
    }
    Ok(())
}

/// A report: the fields that depend on each other ([`ReportRequest::validate`]), its version and the length
/// and shape of its texts.
pub fn report(req: &ReportRequest) -> Result<(), String> {
    req.validate()?;
    version("version", req.version.as_ref())?;
    if let Some(digest) = &req.manifest_digest {
        line("manifest_digest", digest, MAX_LINE)?;
    }
    for (field, value) in [("error", &req.error), ("reason", &req.reason)] {
        if let Some(v) = value {
            text(field, v, MAX_TEXT)?;
        }
    }
    Ok(())
}

/// Tags (a robot's own or a rollout's target): at most [`MAX_TAGS`], keys 1-64 characters without `=`,
/// values at most 256, no control characters.
pub fn tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    for (k, v) in tags {
        let bad_key = k.is_empty() || k.len() > MAX_TAG_KEY || k.contains('=');
        if bad_key || v.len() > MAX_TAG_VALUE || has_control(k) || has_control(v) {
            return Err(format!(
                "tag {k:?}: keys must be 1-{MAX_TAG_KEY} characters without '=', values at most \
                 {MAX_TAG_VALUE}, neither with control characters"
            ));
        }
    }
    Ok(())
}

/// Telemetry: finite numbers, metric names 1-64 characters of `A-Z a-z 0-9 . _ - : /`, a short frame name.
pub fn telemetry(t: &Telemetry) -> Result<(), String> {
    for (field, value) in [
        ("telemetry.battery_percent", t.battery_percent),
        ("telemetry.cpu_percent", t.cpu_percent),
    ] {
        finite(field, value)?;
    }
    if let Some(p) = &t.position {
        for (field, value) in [
            ("telemetry.position.x", Some(p.x)),
            ("telemetry.position.y", Some(p.y)),
            ("telemetry.position.theta", p.theta),
        ] {
            finite(field, value)?;
        }
        if let Some(frame) = &p.frame {
            line("telemetry.position.frame", frame, MAX_METRIC_NAME)?;
        }
    }
    for (name, value) in &t.metrics {
        metric_name(name)?;
        if !value.is_finite() {
            finite(&format!("telemetry.metrics.{name}"), Some(*value))?;
        }
    }
    Ok(())
}

/// Drops from `t` whatever [`telemetry`] would refuse, and metrics past [`MAX_METRICS`] (the first ones by
/// name are kept): non-finite readings, metrics with bad names or values, a bad position. Returns one line per
/// thing dropped (empty: nothing was).
pub fn sanitize_telemetry(t: &mut Telemetry) -> Vec<String> {
    let mut dropped = Vec::new();
    for (field, value) in [
        ("telemetry.battery_percent", &mut t.battery_percent),
        ("telemetry.cpu_percent", &mut t.cpu_percent),
    ] {
        if let Err(e) = finite(field, *value) {
            *value = None;
            dropped.push(e);
        }
    }
    if let Some(p) = &t.position {
        let frame = p.frame.as_deref().map_or(Ok(()), |f| {
            line("telemetry.position.frame", f, MAX_METRIC_NAME)
        });
        let numbers = [
            ("telemetry.position.x", Some(p.x)),
            ("telemetry.position.y", Some(p.y)),
            ("telemetry.position.theta", p.theta),
        ]
        .into_iter()
        .try_for_each(|(field, v)| finite(field, v));
        if let Err(e) = numbers.and(frame) {
            t.position = None;
            dropped.push(e);
        }
    }
    t.metrics.retain(|name, value| {
        let verdict = metric_name(name)
            .and_then(|()| finite(&format!("telemetry.metrics.{name}"), Some(*value)));
        verdict.map_err(|e| dropped.push(e)).is_ok()
    });
    if t.metrics.len() > MAX_METRICS {
        let extra = t.metrics.len() - MAX_METRICS;
        let kept: BTreeMap<String, f64> = std::mem::take(&mut t.metrics)
            .into_iter()
            .take(MAX_METRICS)
            .collect();
        t.metrics = kept;
        dropped.push(format!(
            "{extra} telemetry metrics past the first {MAX_METRICS} (the server keeps {MAX_METRICS} per robot)"
        ));
    }
    dropped
}

/// A telemetry metric's name.
pub fn metric_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/');
    if name.is_empty() || name.len() > MAX_METRIC_NAME || !name.chars().all(allowed) {
        return Err(format!(
            "telemetry metric {name:?}: names are 1-{MAX_METRIC_NAME} characters of A-Z a-z 0-9 . _ - : /"
        ));
    }
    Ok(())
}

fn compatible_field(value: &str, rule: CompatibleRule) -> Result<(), String> {
    rule(value).map_err(|e| format!("compatible: {e}"))
}

fn version(field: &str, v: Option<&semver::Version>) -> Result<(), String> {
    match v {
        Some(v) if version_len(v) > MAX_VERSION => Err(format!(
            "{field} must be at most {MAX_VERSION} characters long"
        )),
        _ => Ok(()),
    }
}

/// `v.to_string().len()` without building the string (polls check versions on the hot path).
fn version_len(v: &semver::Version) -> usize {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let part = |s: &str| if s.is_empty() { 0 } else { s.len() + 1 };
    digits(v.major)
        + digits(v.minor)
        + digits(v.patch)
        + 2
        + part(v.pre.as_str())
        + part(v.build.as_str())
}

fn slot_name(field: &str, slot: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if slot.is_empty() || slot.len() > MAX_SLOT_NAME || !slot.chars().all(allowed) {
        return Err(format!(
            "{field}: slot name {slot:?} must be 1-{MAX_SLOT_NAME} characters of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

fn finite(field: &str, value: Option<f64>) -> Result<(), String> {
    match value {
        Some(v) if !v.is_finite() => Err(format!("{field} must be a finite number")),
        _ => Ok(()),
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn bounded(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} must be at most {max} bytes long"));
    }
    Ok(())
}

/// One line of text: bounded, no control characters.
fn line(field: &str, value: &str, max: usize) -> Result<(), String> {
    bounded(field, value, max)?;
    if has_control(value) {
        return Err(format!(
            "{field} must be one line without control characters"
        ));
    }
    Ok(())
}

/// Multi-line text: bounded, no control characters but newlines and tabs.
fn text(field: &str, value: &str, max: usize) -> Result<(), String> {
    bounded(field, value, max)?;
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(format!(
            "{field} must not contain control characters other than newlines and tabs"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
