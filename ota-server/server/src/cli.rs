//! The admin command-line client behind `ota-server rollout ...` and `ota-server devices ...`: argument parsing
//! and output formatting; the calls go through [`ota_protocol::client::ApiClient`] with an admin token.

pub mod admission;
pub mod bundles;
pub mod commands;
pub mod users;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ota_protocol::admin::{CreateRolloutRequest, DeviceInfo, RolloutInfo};
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_protocol::defaults;
use ota_protocol::device::TrustChain;
use ota_protocol::fleet::{GroupInfo, Schedule, StageRules, TargetFilter, Weekday};

use crate::schedule;

/// How the admin commands reach the server.
#[derive(clap::Args, Clone)]
pub struct RemoteArgs {
    /// Server base URL.
    #[arg(long, env = defaults::SERVER_URL_ENV, default_value = defaults::DEFAULT_SERVER_URL)]
    pub server: String,
    /// Admin token.
    #[arg(long, env = defaults::ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub token: String,
    /// PEM CA certificate to trust for an HTTPS server with a private CA.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A client of the server at `base` with the admin `token`; `ca_file`: a PEM CA certificate to trust (for a
/// server with a private CA).
pub fn connect(base: &str, token: &str, ca_file: Option<&Path>) -> anyhow::Result<ApiClient> {
    let mut options = ClientOptions::new(base);
    options.token = Some(token.to_string());
    options.ca_file = ca_file.map(Path::to_path_buf);
    Ok(ApiClient::new(&options)?)
}

/// `ota-server trust publish FILE`: checks the file is a trust root, then lets the server check it chains.
pub fn publish_trust_root(api: &ApiClient, file: &Path) -> anyhow::Result<TrustChain> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the trust root {}", file.display()))?;
    let root =
        ota_keys::SignedTrustRoot::from_json(&text).with_context(|| file.display().to_string())?;
    Ok(api.post(ota_protocol::paths::TRUST_CHAIN, &root)?)
}

/// The chain's newest version, then one line per root.
pub fn format_trust_chain(chain: &TrustChain) -> String {
    let mut out = match chain.newest {
        Some(v) => format!("trust chain at version {v}"),
        None => "no trust root published past the server's own".to_string(),
    };
    for value in &chain.roots {
        let line = match ota_keys::SignedTrustRoot::from_json(&value.to_string()) {
            Ok(r) => format!(
                "\n  version {}: {} of {} keys ({}), signed by {}",
                r.signed.version,
                r.signed.threshold,
                r.signed.keys.len(),
                r.signed
                    .key_ids()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                r.signatures
                    .iter()
                    .map(|s| s.key_id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("\n  unreadable root: {e}"),
        };
        out.push_str(&line);
    }
    out
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
    if c.timed_out > 0 {
        line.push_str(&format!(" timed out {}", c.timed_out));
    }
    if c.waiting > 0 {
        line.push_str(&format!(" waiting {}", c.waiting));
    }
    if let Some(group) = &r.filter.group {
        line.push_str(&format!(" group {group}"));
    }
    if r.revert {
        line.push_str(" (revert)");
    }
    if !r.guards.is_empty() {
        let rules: Vec<String> = r.guards.iter().map(crate::guards::format_rule).collect();
        line.push_str(&format!(" guards {}", rules.join(" ")));
        if r.watch_secs > 0 {
            line.push_str(&format!(" watch {}s", r.watch_secs));
        }
    }
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
    let mut line = format!(
        "{:<24} {:<20} {:<10} slot {:<3} last seen {:<12} status {:<12} [{}]",
        d.device_id,
        d.compatible,
        d.current_version
            .as_ref()
            .map_or("-".to_string(), ToString::to_string),
        d.booted_slot.as_deref().unwrap_or("-"),
        d.last_seen.map_or("never".to_string(), format_time),
        d.last_status.as_ref().map_or("-", |s| s.status.as_str()),
        tags
    );
    if !d.labels.is_empty() {
        let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" labels [{}]", labels.join(",")));
    }
    if let Some(group) = &d.group {
        line.push_str(&format!(" group {group}"));
    }
    if let Some(w) = &d.waiting {
        line.push_str(&format!(" waiting before {}: {}", w.phase, w.reason));
    }
    line
}

pub use ota_protocol::defaults::utc_time as format_time;

/// Parses a duration: seconds, or a number with `s`, `m`, `h` or `d` (`90s`, `30m`, `2h`, `1d`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad =
        || format!("duration {text:?}: expected seconds or a number with s, m, h or d, e.g. 30m");
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// Parses an instant: Unix seconds or an RFC 3339 timestamp (`2026-12-24T22:00:00+01:00`).
pub fn parse_instant(text: &str) -> Result<u64, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let ts: jiff::Timestamp = text.parse().map_err(|_| {
        format!("time {text:?}: expected Unix seconds or RFC 3339, e.g. 2026-12-24T22:00:00+01:00")
    })?;
    u64::try_from(ts.as_second()).map_err(|_| format!("time {text:?} is before 1970"))
}

/// Parses maintenance windows (`mon-fri@22:00-06:00`, repeatable) in a time zone into a schedule; `None`
/// when no window is given.
pub fn parse_schedule(
    windows: &[String],
    timezone: Option<&str>,
) -> anyhow::Result<Option<Schedule>> {
    if windows.is_empty() {
        anyhow::ensure!(
            timezone.is_none(),
            "--timezone needs at least one --window, e.g. --window mon-fri@22:00-06:00"
        );
        return Ok(None);
    }
    let schedule = Schedule {
        windows: windows
            .iter()
            .map(|w| schedule::parse_window(w))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        timezone: timezone.map(str::to_string),
    };
    schedule::CompiledSchedule::compile(&schedule).map_err(anyhow::Error::msg)?;
    Ok(Some(schedule))
}

/// A rollout's stages, failure threshold and name: `ota-server rollout create|revert` options.
#[derive(clap::Args, Clone, Debug)]
pub struct PlanArgs {
    /// Cumulative stage percentages, ending at 100.
    #[arg(long, value_delimiter = ',', default_value = "5,25,100")]
    pub stages: Vec<u8>,
    /// Pause automatically when (failed + rolled back) / offered exceeds this.
    #[arg(long, default_value_t = 0.2)]
    pub failure_threshold: f64,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
}

impl PlanArgs {
    /// The create request for `bundle_id` with these options.
    pub fn request(self, bundle_id: String) -> CreateRolloutRequest {
        CreateRolloutRequest {
            bundle_id,
            stages: Some(self.stages),
            failure_threshold: Some(self.failure_threshold),
            name: self.name,
            ..Default::default()
        }
    }
}

/// Where and when a rollout goes: `ota-server rollout create|revert` options beyond bundle and stages.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AimArgs {
    /// Only devices carrying this tag, reported or set by an operator (key=value, repeatable).
    #[arg(long = "filter-tag")]
    pub filter_tags: Vec<String>,
    /// Only devices in this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only devices running a version in this range (e.g. ">=1.2, <2").
    #[arg(long)]
    pub versions: Option<String>,
    /// Time a complete stage waits before the next starts (e.g. 30m).
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<u64>,
    /// After this long in a stage, silent robots stop blocking it (e.g. 2h).
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<u64>,
    /// Maintenance window `[DAYS@]HH:MM-HH:MM` (repeatable; default: the device group's, else any time).
    #[arg(long = "window")]
    pub windows: Vec<String>,
    /// IANA time zone of the windows (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Offer nothing before this time (Unix seconds or RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub start_at: Option<u64>,
    /// Robots wait for `ota-client approve` before rebooting into the update.
    #[arg(long)]
    pub require_confirmation: bool,
    /// Health guard `METRIC[:STAT]>BOUND` (repeatable); a breach pauses the rollout. STAT: p95 (default), mean,
    /// max; BOUND: a number, or `+N%` over robots not updated yet. E.g. `inference_latency_ms:p95>+20%`,
    /// `error_rate:mean>0.05`, `rollbacks:max>0`.
    #[arg(long = "guard", value_parser = crate::guards::parse_rule)]
    pub guards: Vec<ota_protocol::fleet::GuardRule>,
    /// How long the guards keep watching after the rollout completed (e.g. 10m).
    #[arg(long = "watch", value_parser = parse_duration)]
    pub watch: Option<u64>,
}

impl AimArgs {
    /// Fills a create request (filter tags add to `--tag`).
    pub fn apply(&self, request: &mut CreateRolloutRequest) -> anyhow::Result<()> {
        let mut tags = std::mem::take(&mut request.tags);
        tags.extend(parse_tags(&self.filter_tags)?);
        let versions = self
            .versions
            .as_deref()
            .map(|v| {
                v.parse::<semver::VersionReq>().with_context(|| {
                    format!("--versions {v:?}: expected a range such as \">=1.2, <2\"")
                })
            })
            .transpose()?;
        request.filter = Some(TargetFilter {
            tags,
            group: self.group.clone(),
            versions,
        });
        request.rules = StageRules {
            soak_secs: self.soak.unwrap_or(0),
            deadline_secs: self.deadline.unwrap_or(0),
        };
        request.schedule = parse_schedule(&self.windows, self.timezone.as_deref())?;
        request.start_at = self.start_at;
        request.require_confirmation = self.require_confirmation;
        request.guards = self.guards.clone();
        request.watch_secs = self.watch.unwrap_or(0);
        Ok(())
    }
}

/// A group's line: name, size, windows.
pub fn format_group(g: &GroupInfo) -> String {
    let s = &g.settings.schedule;
    let windows = if s.windows.is_empty() {
        "any time".to_string()
    } else {
        let list: Vec<String> = s
            .windows
            .iter()
            .map(|w| {
                let days: Vec<&str> = w.days.iter().map(|d| weekday_name(*d)).collect();
                if days.is_empty() {
                    format!("{}-{}", w.start, w.end)
                } else {
                    format!("{}@{}-{}", days.join(","), w.start, w.end)
                }
            })
            .collect();
        format!(
            "{} ({})",
            list.join(" "),
            s.timezone.as_deref().unwrap_or("UTC")
        )
    };
    format!(
        "{:<24} {:>6} devices  windows {}",
        g.name, g.devices, windows
    )
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

/// One history point: bucket start, samples, mean, min and max.
pub fn format_point(p: &ota_protocol::fleet::HistoryPoint) -> String {
    format!(
        "{:>20}  n {:>4}  mean {:>12.3}  min {:>12.3}  max {:>12.3}",
        format_time(p.at),
        p.count,
        p.mean,
        p.min,
        p.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_instants_and_schedules_parse() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert!(parse_duration("2w").is_err() && parse_duration("m").is_err());
        assert_eq!(parse_instant("1700000000"), Ok(1_700_000_000));
        assert_eq!(
            parse_instant("2026-12-24T22:00:00+01:00"),
            Ok(1_798_146_000)
        );
        assert!(parse_instant("tomorrow").is_err());
        let s = parse_schedule(&["mon-fri@22:00-06:00".into()], Some("Europe/Berlin"))
            .unwrap()
            .unwrap();
        assert_eq!(s.windows.len(), 1);
        assert!(parse_schedule(&[], Some("Europe/Berlin")).is_err());
        assert!(parse_schedule(&["mon@10:00-11:00".into()], Some("Nowhere/Town")).is_err());
        assert_eq!(parse_schedule(&[], None).unwrap(), None);
    }

    proptest::proptest! {
        /// Every time the text output shows reads back as the same instant.
        #[test]
        fn shown_times_read_back(secs in 0u64..253_402_300_799) {
            proptest::prop_assert_eq!(parse_instant(&format_time(secs)), Ok(secs));
        }
    }

    #[test]
    fn aim_fills_the_request() {
        let aim = AimArgs {
            filter_tags: vec!["site=w3".into()],
            group: Some("night".into()),
            versions: Some(">=1.0, <2".into()),
            soak: Some(60),
            deadline: Some(600),
            require_confirmation: true,
            ..AimArgs::default()
        };
        let mut req = CreateRolloutRequest {
            tags: BTreeMap::from([("model".into(), "x".into())]),
            ..Default::default()
        };
        aim.apply(&mut req).unwrap();
        let f = req.filter.unwrap();
        assert_eq!(f.tags.len(), 2);
        assert_eq!(f.group.as_deref(), Some("night"));
        assert!(f.versions.unwrap().matches(&"1.5.0".parse().unwrap()));
        assert_eq!((req.rules.soak_secs, req.rules.deadline_secs), (60, 600));
        assert!(req.require_confirmation && req.schedule.is_none());
    }
}
