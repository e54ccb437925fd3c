//! Wire types of the OTA server's HTTP API, shared by the server, the robot client and the release tools.
//!
//! * [`device`]: what a robot sends and receives (enroll, poll, report), plus the small helpers a client needs
//!   (poll delay with jitter, `Retry-After`).
//! * [`admin`]: what release engineers, operators and the dashboard send and receive.
//! * [`fleet`]: fleet operations: labels and groups, rollout targets, stage rules, windows, guards, history.
//! * [`client`]: the typed HTTP client (feature `client`) and the retry / give up / re-authenticate decision.
//!
//! This crate has no server dependencies: only `serde` types and pure helpers, so the client can link it; the
//! HTTP client and its reqwest dependency come only with the `client` feature.
//! `ota-server/API.md` is the prose contract; `GET /api/openapi.json` the machine-readable one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
pub mod admin;
pub mod alerts;
pub mod client;
pub mod defaults;
pub mod device;
pub mod fleet;
pub mod sites;
pub mod validate;

use serde::{Deserialize, Serialize};

/// The body of every 4xx/5xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, phrased for an operator.
    pub error: String,
}

/// Route paths, so clients and the server cannot drift apart.
pub mod paths {
    /// `POST`: enroll a device.
    pub const ENROLL: &str = "/api/devices/enroll";
    /// `POST`: a one-time enrollment challenge.
    pub const CHALLENGE: &str = "/api/devices/challenge";
    /// `GET`: every robot identity (pending, accepted, rejected).
    pub const ADMISSION: &str = "/api/admission";
    /// `POST`: admit (`admit`), reject (`reject`) or pre-authorise (`preauthorize`) a robot.
    pub fn admission(device_id: &str, action: &str) -> String {
        format!("/api/devices/{device_id}/{action}")
    }
    /// `POST`: device poll.
    pub const POLL: &str = "/api/device/poll";
    /// `POST`: device status report.
    pub const REPORT: &str = "/api/device/report";
    /// `GET` (list) / `POST` (upload) bundles.
    pub const BUNDLES: &str = "/api/bundles";
    /// `GET` (list) / `POST` (create) rollouts.
    pub const ROLLOUTS: &str = "/api/rollouts";
    /// `GET`: device inventory.
    pub const DEVICES: &str = "/api/devices";
    /// `GET` (list) device groups; `PUT {GROUPS}/{name}` sets one.
    pub const GROUPS: &str = "/api/groups";
    /// `GET`: server-sent events.
    pub const EVENTS: &str = "/api/events";
    /// `GET`: open alerts; `POST {ALERTS}/{id}/ack` acknowledges one.
    pub const ALERTS: &str = "/api/alerts";
    /// `POST`: delete bundles no rollout uses.
    pub const BUNDLES_PRUNE: &str = "/api/bundles/prune";
    /// `GET`: OpenAPI document.
    pub const OPENAPI: &str = "/api/openapi.json";
    /// `GET`: Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// `GET` (`?after=N`, public): the published trust roots after version N; `POST` (admin): publish the next.
    pub const TRUST_CHAIN: &str = "/api/trust/chain";
    /// `GET` (public): the server's signed timestamp, as every poll answer carries it.
    pub const TRUST_TIMESTAMP: &str = "/api/trust/timestamp";

    /// Download path of a bundle.
    pub fn bundle_download(bundle_id: &str) -> String {
        format!("/api/bundles/{bundle_id}/download")
    }
}

/// Checks a device id: 1-64 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "device_id must be 1-64 characters long (got {})",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err("device_id must not start with '.'".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "device_id may contain only A-Z a-z 0-9 . _ - (found {c:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
