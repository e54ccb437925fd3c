//! The admin command-line client behind `ota-server rollout ...` and `ota-server devices ...`: argument parsing
//! and output formatting; the calls go through [`ota_protocol::client::ApiClient`] with an admin token.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use ota_protocol::admin::{DeviceInfo, RolloutInfo};
use ota_protocol::client::{ApiClient, ClientOptions};

/// A client of the server at `base` with the admin `token`; `ca_file`: a PEM CA certificate to trust (for a
/// server with a private CA).
pub fn connect(base: &str, token: &str, ca_file: Option<&Path>) -> anyhow::Result<ApiClient> {
    let mut options = ClientOptions::new(base);
    options.token = Some(token.to_string());
    options.ca_file = ca_file.map(Path::to_path_buf);
    Ok(ApiClient::new(&options)?)
}

/// Parses `key=value` tags.
pub fn parse_tags(tags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| {
                    format!("tag {t:?} must be written key=value, e.g. site=warehouse-3")
                })
        })
        .collect()
}

/// One line per rollout.
pub fn format_rollout(r: &RolloutInfo) -> String {
    let c = &r.counts;
    let tags = if r.tags.is_empty() {
        "all devices".to_string()
    } else {
        r.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let stage = r.stages.get(r.current_stage).copied().unwrap_or(100);
    let mut line = format!(
        "{:>4}  {:<9}  {} {}  stage {}/{} ({}%)  [{}]  targeted {} offered {} ok {} failed {} rolled back {} in progress {}",
        r.rollout_id,
        r.state.as_str(),
        r.compatible,
        r.version,
        r.current_stage + 1,
        r.stages.len(),
        stage,
        tags,
        c.targeted,
        c.offered,
        c.succeeded,
        c.failed,
        c.rolled_back,
        c.in_progress
    );
    if let Some(reason) = &r.pause_reason {
        line.push_str(&format!("\n      paused: {reason}"));
    }
    line
}

/// One line per device.
pub fn format_device(d: &DeviceInfo) -> String {
    let tags = d
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{:<24} {:<20} {:<10} slot {:<3} last seen {:<12} status {:<12} [{}]",
        d.device_id,
        d.compatible,
        d.current_version
            .as_ref()
            .map_or("-".to_string(), ToString::to_string),
        d.booted_slot.as_deref().unwrap_or("-"),
        d.last_seen.map_or("never".to_string(), |t| t.to_string()),
        d.last_status.as_ref().map_or("-", |s| s.status.as_str()),
        tags
    )
}
