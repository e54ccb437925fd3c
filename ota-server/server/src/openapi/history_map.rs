//! The path docs of the history charts' and the map's routes (`api::history`, `api::sites`), listed in
//! [`super::paths::ApiDoc`] beside the others.

#![allow(dead_code)] // the functions exist for their attributes

use ota_protocol::fleet::{DeviceTimeline, GuardHistory};
use ota_protocol::sites::{SiteInfo, SiteRobots};
use ota_protocol::ErrorBody;

/// What a device's history charts show besides points: its metrics and update events
#[utoipa::path(get, path = "/api/devices/{device_id}/timeline", tag = "devices",
    params(
        ("device_id" = String, Path, description = "device id"),
        ("since" = Option<u64>, Query, description = "Unix seconds; default: 24 hours ago"),
    ),
    responses(
        (status = 200, description = "its metrics with history and its update events, oldest first", body = DeviceTimeline),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn device_timeline() {}

/// Each guard's metric over time, updated against not-yet-updated robots
#[utoipa::path(get, path = "/api/rollouts/{rollout_id}/guards/history", tag = "rollouts",
    params(
        ("rollout_id" = u64, Path, description = "rollout id"),
        ("since" = Option<u64>, Query, description = "Unix seconds; default: an hour before the rollout, at most a day ago"),
    ),
    responses(
        (status = 200, description = "one series per guard", body = GuardHistory),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn guard_history() {}

/// Sites for the map (plans with scale and origin)
#[utoipa::path(get, path = "/api/sites", tag = "sites",
    responses(
        (status = 200, description = "every site, by name", body = Vec<SiteInfo>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn list_sites() {}

/// Upload a site plan (PNG or JPEG body, at most 10 MiB); 201 new, 200 replaced
#[utoipa::path(post, path = "/api/sites", tag = "sites",
    params(
        ("name" = String, Query, description = "site name: the robots' position frame"),
        ("scale" = f64, Query, description = "metres per pixel, e.g. 0.05"),
        ("origin_x" = Option<f64>, Query, description = "pixel column of (0 m, 0 m); default 0"),
        ("origin_y" = Option<f64>, Query, description = "pixel row of (0 m, 0 m); default 0"),
    ),
    request_body(content = Vec<u8>, description = "the plan image (PNG or JPEG)", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "stored", body = SiteInfo),
        (status = 200, description = "replaced", body = SiteInfo),
        (status = "default", description = "refused: the message says why", body = ErrorBody),
    ))]
pub fn upload_site() {}

/// A site's plan image
#[utoipa::path(get, path = "/api/sites/{name}/image", tag = "sites",
    params(("name" = String, Path, description = "site name")),
    responses(
        (status = 200, description = "the image as uploaded", content(
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/jpeg"),
        )),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn site_image() {}

/// The robots on a site, placed on its plan
#[utoipa::path(get, path = "/api/sites/{name}/robots", tag = "sites",
    params(("name" = String, Path, description = "site name")),
    responses(
        (status = 200, description = "the site and its robots in pixels", body = SiteRobots),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn site_robots() {}

/// Delete a site
#[utoipa::path(delete, path = "/api/sites/{name}", tag = "sites",
    params(("name" = String, Path, description = "site name")),
    responses(
        (status = 204, description = "deleted"),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn delete_site() {}
