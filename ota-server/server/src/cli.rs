//! The admin command-line client behind `ota-server rollout ...` and `ota-server devices ...`: blocking HTTP
//! calls to a running server with an admin token.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use ota_protocol::admin::{
    CreateRolloutRequest, DeviceDetail, DeviceInfo, RolloutDetail, RolloutInfo,
};
use ota_protocol::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A server and the admin token to call it with.
pub struct Remote {
    base: String,
    token: String,
    client: reqwest::blocking::Client,
}

impl Remote {
    /// `ca_file`: a PEM CA certificate to trust (for a server with a private CA).
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Remote {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: builder.build().context("cannot set up the HTTP client")?,
        })
    }

    fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("cannot reach the server at {} ({what})", self.base))?;
        let status = response.status();
        let body = response
            .text()
            .with_context(|| format!("reading the server's answer ({what})"))?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&body).map_or(body, |e| e.error);
            bail!("{what}: server answered {status}: {message}");
        }
        serde_json::from_str(&body)
            .with_context(|| format!("{what}: unexpected answer from the server: {body}"))
    }

    /// GET a JSON resource.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(
            self.client.get(format!("{}{path}", self.base)),
            &format!("GET {path}"),
        )
    }

    /// POST JSON (or nothing).
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, &format!("POST {path}"))
    }
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

/// `rollout create`.
pub fn rollout_create(
    remote: &Remote,
    request: &CreateRolloutRequest,
) -> anyhow::Result<RolloutInfo> {
    remote.post("/api/rollouts", Some(request))
}

/// `rollout list`.
pub fn rollout_list(remote: &Remote) -> anyhow::Result<Vec<RolloutInfo>> {
    remote.get("/api/rollouts")
}

/// `rollout show`.
pub fn rollout_show(remote: &Remote, id: u64) -> anyhow::Result<RolloutDetail> {
    remote.get(&format!("/api/rollouts/{id}"))
}

/// `rollout pause|resume|abort`.
pub fn rollout_action(remote: &Remote, id: u64, action: &str) -> anyhow::Result<RolloutInfo> {
    remote.post::<(), _>(&format!("/api/rollouts/{id}/{action}"), None)
}

/// `devices list`.
pub fn devices_list(remote: &Remote) -> anyhow::Result<Vec<DeviceInfo>> {
    remote.get("/api/devices")
}

/// `devices show`.
pub fn devices_show(remote: &Remote, id: &str) -> anyhow::Result<DeviceDetail> {
    remote.get(&format!("/api/devices/{id}"))
}
