//! The path docs: one `#[utoipa::path]` function per route of `api::routes::ROUTES` (the handlers live in
//! `api::handlers`; these functions only carry the documentation, so a handler can change without touching
//! this file). The doc comment's first line is the operation's summary.

#![allow(dead_code)] // the functions exist for their attributes

use ota_protocol::admin::{
    BundleInfo, CreateRolloutRequest, DeviceDetail, DeviceIdentity, DeviceInfo, DevicePage,
    PreauthorizeRequest, PublishResponse, RolloutDetail, RolloutInfo,
};
use ota_protocol::device::{
    ChallengeRequest, ChallengeResponse, EnrollRequest, EnrollResponse, PollRequest, PollResponse,
    ReportRequest, ReportResponse, TrustChain,
};
use ota_protocol::fleet::{DeviceLabels, GroupInfo, GroupSettings, MetricHistory};
use ota_protocol::ErrorBody;
use utoipa::{OpenApi, ToSchema};

/// `GET /healthz`'s answer.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// The generated document (security schemes and per-operation security are added by `openapi::document`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ota-server",
        description = "OTA fleet server: publish signed bundles, enroll robots, staged rollouts. See ota-server/API.md."
    ),
    paths(
        dashboard,
        static_file,
        healthz,
        metrics,
        openapi_json,
        challenge,
        enroll,
        poll,
        report,
        list_bundles,
        upload_bundle,
        get_bundle,
        download,
        list_identities,
        admit_device,
        reject_device,
        preauthorize_device,
        list_devices,
        get_device,
        delete_device,
        device_history,
        set_labels,
        list_groups,
        put_group,
        list_rollouts,
        create_rollout,
        get_rollout,
        pause_rollout,
        resume_rollout,
        abort_rollout,
        next_stage,
        retry_rollout,
        events,
        super::alerts::list_alerts,
        super::alerts::ack_alert,
        super::alerts::prune_bundles,
        super::history_map::device_timeline,
        super::history_map::guard_history,
        super::history_map::list_sites,
        super::history_map::upload_site,
        super::history_map::site_image,
        super::history_map::site_robots,
        super::history_map::delete_site,
        trust_chain,
        publish_trust_root,
        trust_timestamp
    ),
    components(schemas(ErrorBody, Health, DevicePage))
)]
pub struct ApiDoc;

/// Dashboard page
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "the dashboard", body = String, content_type = "text/html")))]
fn dashboard() {}

/// Dashboard asset
#[utoipa::path(get, path = "/static/{path}", tag = "dashboard",
    params(("path" = String, Path, description = "asset path under the dashboard's static directory")),
    responses(
        (status = 200, description = "the asset", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "no such asset", body = ErrorBody),
    ))]
fn static_file() {}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the server answers", body = Health)))]
fn healthz() {}

/// Prometheus metrics
///
/// The Prometheus text format (version 0.0.4). An admin token or the read-only scrape token
/// (`--metrics-token`); a device token gets 403.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "every metric", body = String, content_type = "text/plain"),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn metrics() {}

/// This document
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
fn openapi_json() {}

/// Enroll a device (idempotent per request_id)
///
/// Authenticated by the fleet enrollment secret in the body.
#[utoipa::path(post, path = "/api/devices/enroll", tag = "device", request_body = EnrollRequest,
    responses(
        (status = 200, description = "the device's token", body = EnrollResponse),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn enroll() {}

/// A one-time enrollment challenge for a device id
///
/// Stateless (any replica checks it), valid five minutes, usable once: the robot signs it with its key inside
/// the enrollment request.
#[utoipa::path(post, path = "/api/devices/challenge", tag = "device", request_body = ChallengeRequest,
    responses(
        (status = 200, description = "a challenge", body = ChallengeResponse),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn challenge() {}

/// Robot identities: pending, accepted, rejected
#[utoipa::path(get, path = "/api/admission", tag = "devices",
    responses(
        (status = 200, description = "every robot identity, by id", body = Vec<DeviceIdentity>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_identities() {}

/// Admit a robot that asked: its key gets tokens
#[utoipa::path(post, path = "/api/devices/{device_id}/admit", tag = "devices",
    params(("device_id" = String, Path, description = "device id")),
    responses(
        (status = 200, description = "the robot's identity", body = DeviceIdentity),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn admit_device() {}

/// Reject or revoke a robot: its token stops working at once
#[utoipa::path(post, path = "/api/devices/{device_id}/reject", tag = "devices",
    params(("device_id" = String, Path, description = "device id")),
    responses(
        (status = 200, description = "the robot's identity", body = DeviceIdentity),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn reject_device() {}

/// Accept a robot's key on its first contact
#[utoipa::path(post, path = "/api/devices/{device_id}/preauthorize", tag = "devices",
    params(("device_id" = String, Path, description = "device id")),
    request_body = PreauthorizeRequest,
    responses(
        (status = 200, description = "the robot's identity", body = DeviceIdentity),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn preauthorize_device() {}

/// Report state and telemetry; get an update offer or nothing
#[utoipa::path(post, path = "/api/device/poll", tag = "device", request_body = PollRequest,
    responses(
        (status = 200, description = "an offer or nothing", body = PollResponse),
        (status = "default", description = "error (429 and 503 carry Retry-After)", body = ErrorBody),
    ))]
fn poll() {}

/// Report the lifecycle status of an update (idempotent per report_id)
#[utoipa::path(post, path = "/api/device/report", tag = "device", request_body = ReportRequest,
    responses(
        (status = 200, description = "stored, or a duplicate", body = ReportResponse),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn report() {}

/// List bundles
#[utoipa::path(get, path = "/api/bundles", tag = "bundles",
    responses(
        (status = 200, description = "every published bundle", body = Vec<BundleInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_bundles() {}

/// Upload (publish) a signed bundle; 201 new, 200 already stored
#[utoipa::path(post, path = "/api/bundles", tag = "bundles",
    request_body(content = Vec<u8>, description = "the signed bundle (.otab)", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "stored", body = PublishResponse),
        (status = 200, description = "already stored", body = PublishResponse),
        (status = "default", description = "refused: the message says why", body = ErrorBody),
    ))]
fn upload_bundle() {}

/// One bundle
#[utoipa::path(get, path = "/api/bundles/{bundle_id}", tag = "bundles",
    params(("bundle_id" = String, Path, description = "bundle id (from publish)")),
    responses(
        (status = 200, description = "the bundle", body = BundleInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn get_bundle() {}

/// Download a bundle (also HEAD; Range with up to 64 ranges, If-Range on the ETag)
#[utoipa::path(get, path = "/api/bundles/{bundle_id}/download", tag = "bundles",
    params(
        ("bundle_id" = String, Path, description = "bundle id (from publish)"),
        ("Range" = Option<String>, Header, description = "bytes=A-B[,C-D...]: one range (206 with Content-Range) or up to 64 (206 multipart/byteranges, parts in the order asked); resumed and delta downloads use it"),
    ),
    responses(
        (status = 200, description = "the whole bundle", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "one range, or several as multipart/byteranges", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 416, description = "overlapping, out-of-file or more than 64 ranges", body = ErrorBody),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn download() {}

/// Device inventory (paged with `page`; filtered and sorted on the server)
#[utoipa::path(get, path = "/api/devices", tag = "devices",
    params(
        ("page" = Option<u32>, Query, description = "page from 1: the answer is a DevicePage; without it, the whole list"),
        ("per_page" = Option<u32>, Query, description = "page size, 1 to 500 (default 50)"),
        ("sort" = Option<String>, Query, description = "device, compatible, tags, group, version, slot, last_seen, status, battery, health, maintenance or enrolled (default device)"),
        ("order" = Option<String>, Query, description = "asc (default) or desc; missing values sort last either way"),
        ("q" = Option<String>, Query, description = "words that must all appear in the id, tags, group, version, status or health"),
        ("status" = Option<String>, Query, description = "the latest report's status, or none"),
        ("health" = Option<String>, Query, description = "ok, warn or bad"),
        ("rollout" = Option<u64>, Query, description = "only targets of this rollout"),
    ),
    responses(
        (status = 200, description = "every matching device (a DevicePage with page)", body = Vec<DeviceInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_devices() {}

/// One device with its report history
#[utoipa::path(get, path = "/api/devices/{device_id}", tag = "devices",
    params(("device_id" = String, Path, description = "device id")),
    responses(
        (status = 200, description = "the device", body = DeviceDetail),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn get_device() {}

/// Forget a device and revoke its token
#[utoipa::path(delete, path = "/api/devices/{device_id}", tag = "devices",
    params(("device_id" = String, Path, description = "device id")),
    responses(
        (status = 204, description = "forgotten"),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn delete_device() {}

/// A device's telemetry history of one metric (1-minute buckets for a day, hourly before)
#[utoipa::path(get, path = "/api/devices/{device_id}/history", tag = "devices",
    params(
        ("device_id" = String, Path, description = "device id"),
        ("metric" = String, Query, description = "metric name, e.g. inference_latency_ms"),
        ("since" = Option<u64>, Query, description = "Unix seconds; default: 24 hours ago"),
    ),
    responses(
        (status = 200, description = "the history, oldest first", body = MetricHistory),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn device_history() {}

/// Set a device's operator tags and group (they override its reported tags)
#[utoipa::path(put, path = "/api/devices/{device_id}/labels", tag = "devices",
    params(("device_id" = String, Path, description = "device id")),
    request_body = DeviceLabels,
    responses(
        (status = 200, description = "the device", body = DeviceInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn set_labels() {}

/// Device groups with their settings and sizes
#[utoipa::path(get, path = "/api/groups", tag = "devices",
    responses(
        (status = 200, description = "every group", body = Vec<GroupInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_groups() {}

/// Create or replace a group's settings (maintenance windows)
#[utoipa::path(put, path = "/api/groups/{name}", tag = "devices",
    params(("name" = String, Path, description = "group name")),
    request_body = GroupSettings,
    responses(
        (status = 200, description = "the group", body = GroupInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn put_group() {}

/// List rollouts
#[utoipa::path(get, path = "/api/rollouts", tag = "rollouts",
    responses(
        (status = 200, description = "every rollout", body = Vec<RolloutInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn list_rollouts() {}

/// Create a staged rollout
#[utoipa::path(post, path = "/api/rollouts", tag = "rollouts", request_body = CreateRolloutRequest,
    responses(
        (status = 201, description = "created", body = RolloutInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn create_rollout() {}

/// One rollout with per-device status
#[utoipa::path(get, path = "/api/rollouts/{rollout_id}", tag = "rollouts",
    params(("rollout_id" = u64, Path, description = "rollout id")),
    responses(
        (status = 200, description = "the rollout", body = RolloutDetail),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn get_rollout() {}

/// Pause a rollout
#[utoipa::path(post, path = "/api/rollouts/{rollout_id}/pause", tag = "rollouts",
    params(("rollout_id" = u64, Path, description = "rollout id")),
    responses(
        (status = 200, description = "the rollout", body = RolloutInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn pause_rollout() {}

/// Resume a rollout (acknowledges failures so far)
#[utoipa::path(post, path = "/api/rollouts/{rollout_id}/resume", tag = "rollouts",
    params(("rollout_id" = u64, Path, description = "rollout id")),
    responses(
        (status = 200, description = "the rollout", body = RolloutInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn resume_rollout() {}

/// Abort a rollout for good
#[utoipa::path(post, path = "/api/rollouts/{rollout_id}/abort", tag = "rollouts",
    params(("rollout_id" = u64, Path, description = "rollout id")),
    responses(
        (status = 200, description = "the rollout", body = RolloutInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn abort_rollout() {}

/// Start the next stage now, whatever the current one's completion or soak
#[utoipa::path(post, path = "/api/rollouts/{rollout_id}/next", tag = "rollouts",
    params(("rollout_id" = u64, Path, description = "rollout id")),
    responses(
        (status = 200, description = "the rollout", body = RolloutInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn next_stage() {}

/// Offer the update again to failed and rolled-back robots
#[utoipa::path(post, path = "/api/rollouts/{rollout_id}/retry", tag = "rollouts",
    params(("rollout_id" = u64, Path, description = "rollout id")),
    responses(
        (status = 200, description = "the rollout", body = RolloutInfo),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn retry_rollout() {}

/// Server-sent events: device_updated, report, rollout_updated, device_deleted, alerts_changed
#[utoipa::path(get, path = "/api/events", tag = "operations",
    responses(
        (status = 200, description = "the event stream", body = String, content_type = "text/event-stream"),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn events() {}

/// The fleet's rotated trust roots after a version (public: each root verifies itself)
///
/// Trust root files (`"type": "ota-trust-root"`), oldest first. A robot whose poll answer names a newer
/// `trust_version` than its own walks them: each must be the next version, signed by a threshold of the previous
/// root's keys and of its own.
#[utoipa::path(get, path = "/api/trust/chain", tag = "trust",
    params(("after" = Option<u64>, Query, description = "a trust root version: only newer roots are listed (default 0: all)")),
    responses(
        (status = 200, description = "the roots after the version", body = TrustChain),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn trust_chain() {}

/// Publish the next trust root (signed by the newest root's keys and its own); 201 new, 200 already published
#[utoipa::path(post, path = "/api/trust/chain", tag = "trust",
    request_body(content = Object, description = "a trust root file (`ota-bundle trust create` / `sign`)"),
    responses(
        (status = 201, description = "appended; the whole chain", body = TrustChain),
        (status = 200, description = "already published; the whole chain", body = TrustChain),
        (status = "default", description = "refused (422: does not chain from the newest root)", body = ErrorBody),
    ))]
fn publish_trust_root() {}

/// The signed timestamp polls carry (public: robots verify it with their trust root)
///
/// `{"type": "ota-timestamp", "signed": {"version", "issued_at", "expires", "trust_version"}, "signatures"}`,
/// signed by the server's timestamp key, which the trust root's `timestamp` role names; re-signed every
/// `--timestamp-period-secs`, valid three periods (docs/time-model.md). 404 when the server has no timestamp key.
#[utoipa::path(get, path = "/api/trust/timestamp", tag = "trust",
    responses(
        (status = 200, description = "the current signed timestamp", body = Object),
        (status = "default", description = "error", body = ErrorBody),
    ))]
fn trust_timestamp() {}
