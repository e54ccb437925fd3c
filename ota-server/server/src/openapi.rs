//! The OpenAPI 3 document served at `/api/openapi.json`, written by hand from one route table ([`ROUTES`]);
//! the integration tests check that every route the router serves is listed and every listed route is served.

use serde_json::{json, Map, Value};

/// One documented operation.
pub struct RouteDoc {
    /// HTTP method (lowercase).
    pub method: &'static str,
    /// OpenAPI path template.
    pub path: &'static str,
    /// `none`, `admin`, `device`, `admin_or_device`, `enrollment_secret`.
    pub auth: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Request body schema name, if any (`#raw` for a raw octet stream).
    pub request: Option<&'static str>,
    /// Success status and response schema name (`#text`, `#html`, `#sse`, `#binary`, `#none` for non-JSON).
    pub response: (u16, &'static str),
}

const fn r(
    method: &'static str,
    path: &'static str,
    auth: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    response: (u16, &'static str),
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        auth,
        summary,
        request,
        response,
    }
}

/// Every route the server serves.
pub const ROUTES: &[RouteDoc] = &[
    r("get", "/", "none", "Dashboard page", None, (200, "#html")),
    r(
        "get",
        "/static/{path}",
        "none",
        "Dashboard asset",
        None,
        (200, "#binary"),
    ),
    r("get", "/healthz", "none", "Liveness", None, (200, "Health")),
    r(
        "get",
        "/metrics",
        "admin",
        "Prometheus metrics",
        None,
        (200, "#text"),
    ),
    r(
        "get",
        "/api/openapi.json",
        "none",
        "This document",
        None,
        (200, "#any"),
    ),
    r(
        "post",
        "/api/devices/enroll",
        "enrollment_secret",
        "Enroll a device (idempotent per request_id)",
        Some("EnrollRequest"),
        (200, "EnrollResponse"),
    ),
    r(
        "post",
        "/api/device/poll",
        "device",
        "Report state and telemetry; get an update offer or nothing",
        Some("PollRequest"),
        (200, "PollResponse"),
    ),
    r(
        "post",
        "/api/device/report",
        "device",
        "Report the lifecycle status of an update (idempotent per report_id)",
        Some("ReportRequest"),
        (200, "ReportResponse"),
    ),
    r(
        "get",
        "/api/bundles",
        "admin",
        "List bundles",
        None,
        (200, "BundleList"),
    ),
    r(
        "post",
        "/api/bundles",
        "admin",
        "Upload (publish) a signed bundle; 201 new, 200 already stored",
        Some("#raw"),
        (201, "PublishResponse"),
    ),
    r(
        "get",
        "/api/bundles/{bundle_id}",
        "admin",
        "One bundle",
        None,
        (200, "BundleInfo"),
    ),
    r(
        "get",
        "/api/bundles/{bundle_id}/download",
        "admin_or_device",
        "Download a bundle (supports Range)",
        None,
        (200, "#binary"),
    ),
    r(
        "get",
        "/api/devices",
        "admin",
        "Device inventory",
        None,
        (200, "DeviceList"),
    ),
    r(
        "get",
        "/api/devices/{device_id}",
        "admin_or_device",
        "One device with its report history",
        None,
        (200, "DeviceDetail"),
    ),
    r(
        "delete",
        "/api/devices/{device_id}",
        "admin",
        "Forget a device and revoke its token",
        None,
        (204, "#none"),
    ),
    r(
        "get",
        "/api/rollouts",
        "admin",
        "List rollouts",
        None,
        (200, "RolloutList"),
    ),
    r(
        "post",
        "/api/rollouts",
        "admin",
        "Create a staged rollout",
        Some("CreateRolloutRequest"),
        (201, "RolloutInfo"),
    ),
    r(
        "get",
        "/api/rollouts/{rollout_id}",
        "admin",
        "One rollout with per-device status",
        None,
        (200, "RolloutDetail"),
    ),
    r(
        "post",
        "/api/rollouts/{rollout_id}/pause",
        "admin",
        "Pause a rollout",
        None,
        (200, "RolloutInfo"),
    ),
    r(
        "post",
        "/api/rollouts/{rollout_id}/resume",
        "admin",
        "Resume a rollout (acknowledges failures so far)",
        None,
        (200, "RolloutInfo"),
    ),
    r(
        "post",
        "/api/rollouts/{rollout_id}/abort",
        "admin",
        "Abort a rollout for good",
        None,
        (200, "RolloutInfo"),
    ),
    r(
        "get",
        "/api/events",
        "admin",
        "Server-sent events: device_updated, report, rollout_updated, device_deleted",
        None,
        (200, "#sse"),
    ),
];

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn content(name: &str) -> Value {
    match name {
        "#html" => json!({"text/html": {"schema": {"type": "string"}}}),
        "#text" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "#sse" => json!({"text/event-stream": {"schema": {"type": "string"}}}),
        "#binary" | "#raw" => {
            json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
        }
        "#any" => json!({"application/json": {"schema": {"type": "object"}}}),
        other => json!({"application/json": {"schema": schema_ref(other)}}),
    }
}

fn operation(route: &RouteDoc) -> Value {
    let mut op = Map::new();
    op.insert("summary".into(), json!(route.summary));
    op.insert(
        "operationId".into(),
        json!(format!("{} {}", route.method, route.path)),
    );
    let security = match route.auth {
        "admin" => json!([{"adminToken": []}]),
        "device" => json!([{"deviceToken": []}]),
        "admin_or_device" => json!([{"adminToken": []}, {"deviceToken": []}]),
        _ => json!([]),
    };
    op.insert("security".into(), security);
    let params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let mut params = params;
    if route.path.ends_with("/download") {
        params.push(
            json!({"name": "Range", "in": "header", "required": false, "schema": {"type": "string"},
            "description": "bytes=START-[END] to resume a download; answered with 206"}),
        );
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(req) = route.request {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": content(req)}),
        );
    }
    let (status, resp) = route.response;
    let mut responses = Map::new();
    let ok = if resp == "#none" {
        json!({"description": "done"})
    } else {
        json!({"description": "success", "content": content(resp)})
    };
    responses.insert(status.to_string(), ok);
    if route.path.ends_with("/download") {
        responses.insert(
            "206".into(),
            json!({"description": "partial content (Range)", "content": content("#binary")}),
        );
    }
    if route.method == "post" && route.path == "/api/bundles" {
        responses.insert(
            "200".into(),
            json!({"description": "already stored", "content": content("PublishResponse")}),
        );
    }
    responses.insert(
        "default".into(),
        json!({"description": "error", "content": content("Error")}),
    );
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let opt = |t: &str| json!({"type": t, "nullable": true});
    let map_str = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let status = json!({"type": "string", "enum": ["downloading", "installing", "rebooting", "success", "failure", "rolled_back"]});
    let telemetry = obj(
        &[],
        json!({
            "battery_percent": s("number"), "cpu_percent": s("number"),
            "position": obj(&["x", "y"], json!({"x": s("number"), "y": s("number"), "theta": s("number"), "frame": s("string")})),
            "memory_used_bytes": s("integer"), "memory_total_bytes": s("integer"),
            "disk_used_bytes": s("integer"), "disk_total_bytes": s("integer"), "uptime_secs": s("integer"),
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}}
        }),
    );
    let last_status = obj(
        &["status", "at"],
        json!({
            "status": status, "rollout_id": opt("integer"), "version": opt("string"), "at": s("integer"),
            "error": opt("string"), "reason": opt("string")
        }),
    );
    let report_record = obj(
        &["report_id", "status", "received_at"],
        json!({
            "report_id": s("string"), "rollout_id": opt("integer"), "version": opt("string"),
            "manifest_digest": opt("string"), "status": status, "progress_percent": opt("integer"),
            "error": opt("string"), "log_tail": opt("string"), "reason": opt("string"), "received_at": s("integer")
        }),
    );
    let counts = obj(
        &[
            "targeted",
            "offered",
            "pending",
            "in_progress",
            "succeeded",
            "failed",
            "rolled_back",
        ],
        json!({
            "targeted": s("integer"), "offered": s("integer"), "pending": s("integer"), "in_progress": s("integer"),
            "succeeded": s("integer"), "failed": s("integer"), "rolled_back": s("integer")
        }),
    );
    json!({
        "Error": obj(&["error"], json!({"error": s("string")})),
        "Health": obj(&["status"], json!({"status": s("string")})),
        "Telemetry": telemetry,
        "EnrollRequest": obj(&["enrollment_secret", "device_id", "compatible", "request_id"], json!({
            "enrollment_secret": s("string"), "device_id": s("string"), "compatible": s("string"),
            "tags": map_str, "request_id": s("string")
        })),
        "EnrollResponse": obj(&["device_id", "token", "poll_interval_secs", "poll_jitter_secs"], json!({
            "device_id": s("string"), "token": s("string"), "poll_interval_secs": s("integer"), "poll_jitter_secs": s("integer")
        })),
        "PollRequest": obj(&["compatible"], json!({
            "compatible": s("string"), "current_version": opt("string"), "booted_slot": opt("string"),
            "slots": map_str, "telemetry": schema_ref("Telemetry")
        })),
        "UpdateOffer": obj(&["rollout_id", "bundle_id", "version", "compatible", "manifest_digest", "size", "download_url"], json!({
            "rollout_id": s("integer"), "bundle_id": s("string"), "version": s("string"), "compatible": s("string"),
            "manifest_digest": s("string"), "size": s("integer"), "download_url": s("string")
        })),
        "PollResponse": obj(&["poll_interval_secs", "poll_jitter_secs", "update"], json!({
            "poll_interval_secs": s("integer"), "poll_jitter_secs": s("integer"),
            "update": {"allOf": [schema_ref("UpdateOffer")], "nullable": true}
        })),
        "ReportRequest": obj(&["report_id", "status"], json!({
            "report_id": s("string"), "rollout_id": opt("integer"), "version": opt("string"),
            "manifest_digest": opt("string"), "status": status, "progress_percent": opt("integer"),
            "error": opt("string"), "log_tail": opt("string"), "reason": opt("string")
        })),
        "ReportResponse": obj(&["accepted", "duplicate"], json!({"accepted": s("boolean"), "duplicate": s("boolean")})),
        "PublishResponse": obj(&["bundle_id", "version", "compatible", "manifest_digest", "size", "deduplicated"], json!({
            "bundle_id": s("string"), "version": s("string"), "compatible": s("string"),
            "manifest_digest": s("string"), "size": s("integer"), "deduplicated": s("boolean")
        })),
        "BundleInfo": obj(&["bundle_id", "version", "compatible", "manifest_digest", "size", "description", "uploaded_at", "images"], json!({
            "bundle_id": s("string"), "version": s("string"), "compatible": s("string"), "manifest_digest": s("string"),
            "size": s("integer"), "description": s("string"), "uploaded_at": s("integer"),
            "images": {"type": "array", "items": obj(&["name", "slot_class", "size", "sha256"], json!({
                "name": s("string"), "slot_class": s("string"), "size": s("integer"), "sha256": s("string")
            }))}
        })),
        "BundleList": {"type": "array", "items": schema_ref("BundleInfo")},
        "LastStatus": last_status,
        "DeviceInfo": obj(&["device_id", "compatible", "tags", "slots", "enrolled_at"], json!({
            "device_id": s("string"), "compatible": s("string"), "tags": map_str, "current_version": opt("string"),
            "booted_slot": opt("string"), "slots": map_str, "enrolled_at": s("integer"), "last_seen": opt("integer"),
            "last_status": {"allOf": [schema_ref("LastStatus")], "nullable": true},
            "telemetry": {"allOf": [schema_ref("Telemetry")], "nullable": true}
        })),
        "DeviceList": {"type": "array", "items": schema_ref("DeviceInfo")},
        "ReportRecord": report_record,
        "DeviceDetail": obj(&["device", "reports"], json!({
            "device": schema_ref("DeviceInfo"), "reports": {"type": "array", "items": schema_ref("ReportRecord")}
        })),
        "CreateRolloutRequest": obj(&["bundle_id"], json!({
            "bundle_id": s("string"), "tags": map_str,
            "stages": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}},
            "failure_threshold": {"type": "number", "minimum": 0, "maximum": 1}, "name": s("string")
        })),
        "RolloutCounts": counts,
        "RolloutInfo": obj(&["rollout_id", "name", "bundle_id", "version", "compatible", "manifest_digest", "tags", "stages", "current_stage", "state", "failure_threshold", "created_at", "updated_at", "counts"], json!({
            "rollout_id": s("integer"), "name": s("string"), "bundle_id": s("string"), "version": s("string"),
            "compatible": s("string"), "manifest_digest": s("string"), "tags": map_str,
            "stages": {"type": "array", "items": s("integer")}, "current_stage": s("integer"),
            "state": {"type": "string", "enum": ["active", "paused", "aborted", "completed"]},
            "pause_reason": opt("string"), "failure_threshold": s("number"), "created_at": s("integer"),
            "updated_at": s("integer"), "counts": schema_ref("RolloutCounts")
        })),
        "RolloutList": {"type": "array", "items": schema_ref("RolloutInfo")},
        "RolloutDetail": obj(&["rollout", "devices"], json!({
            "rollout": schema_ref("RolloutInfo"),
            "devices": {"type": "array", "items": obj(&["device_id", "rank", "status", "updated_at"], json!({
                "device_id": s("string"), "rank": s("integer"), "status": s("string"), "updated_at": s("integer")
            }))}
        })),
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        if let Value::Object(ops) = entry {
            ops.insert(route.method.to_string(), operation(route));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ota-server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OTA fleet server: publish signed bundles, enroll robots, staged rollouts. See ota-server/API.md."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "admin token"},
                "deviceToken": {"type": "http", "scheme": "bearer", "description": "device token from enrollment"}
            },
            "schemas": schemas()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut rest = text.as_str();
        let mut seen = 0;
        while let Some(i) = rest.find("#/components/schemas/") {
            rest = &rest[i + "#/components/schemas/".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "dangling reference to {name}");
            seen += 1;
        }
        assert!(seen > 20);
        assert_eq!(doc["paths"].as_object().unwrap().len(), 19);
    }
}
