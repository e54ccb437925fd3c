//! The path docs of the alerts' and retention's routes (`api::alerts`), listed in [`super::paths::ApiDoc`]
//! beside the others.

#![allow(dead_code)] // the functions exist for their attributes

use ota_protocol::alerts::{Alert, PruneRequest, PruneResponse};
use ota_protocol::ErrorBody;

/// Open alerts: what needs a person, most urgent first
#[utoipa::path(get, path = "/api/alerts", tag = "operations",
    responses(
        (status = 200, description = "the open alerts", body = Vec<Alert>),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn list_alerts() {}

/// Acknowledge an open alert (who and when are recorded)
#[utoipa::path(post, path = "/api/alerts/{alert_id}/ack", tag = "operations",
    params(("alert_id" = String, Path, description = "alert id (16 hex digits)")),
    responses(
        (status = 200, description = "the alert, acknowledged (the first acknowledgement stays)", body = Alert),
        (status = "default", description = "error; 404 when the alert cleared", body = ErrorBody),
    ))]
pub fn ack_alert() {}

/// Delete bundles no rollout uses (dry_run: only list them)
#[utoipa::path(post, path = "/api/bundles/prune", tag = "bundles", request_body = PruneRequest,
    responses(
        (status = 200, description = "what was (or would be) deleted and kept", body = PruneResponse),
        (status = "default", description = "error", body = ErrorBody),
    ))]
pub fn prune_bundles() {}
