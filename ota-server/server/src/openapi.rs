//! The OpenAPI 3 document served at `/api/openapi.json`, built from the route table (`api::routes::ROUTES`,
//! which also builds the router, so the two cannot drift) and the component schemas below.

use axum::routing::MethodFilter;
use serde_json::{json, Map, Value};

/// An HTTP method the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
    /// PUT.
    Put,
}

impl Verb {
    /// Lowercase, as OpenAPI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
            Verb::Put => "put",
        }
    }

    /// The router's method filter.
    pub fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
            Verb::Put => MethodFilter::PUT,
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    None,
    /// An admin token (a device token gets 403).
    Admin,
    /// A device token (an admin token gets 403).
    Device,
    /// An admin or a device token.
    AdminOrDevice,
    /// The fleet enrollment secret, in the body.
    EnrollmentSecret,
}

impl Auth {
    /// Whether a bearer token is required (401 without one).
    pub fn needs_token(self) -> bool {
        matches!(self, Auth::Admin | Auth::Device | Auth::AdminOrDevice)
    }
}

/// How one operation is documented.
#[derive(Clone, Copy, Debug)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: Verb,
    /// Router path template (`{name}` parameters, `{*name}` for a rest-of-path parameter).
    pub path: &'static str,
    /// Who may call it.
    pub auth: Auth,
    /// One line.
    pub summary: &'static str,
    /// Request body schema name, if any (`#raw` for a raw octet stream).
    pub request: Option<&'static str>,
    /// Success status and response schema name (`#text`, `#html`, `#sse`, `#binary`, `#any`, `#none` for
    /// non-JSON or no body).
    pub response: (u16, &'static str),
    /// Further non-error responses: status, description, schema name.
    pub also: &'static [(u16, &'static str, &'static str)],
    /// Accepts a `Range` header (resumable download).
    pub range: bool,
    /// Query parameters: name, whether required, description.
    pub query: &'static [(&'static str, bool, &'static str)],
}

impl RouteDoc {
    /// The OpenAPI path template (`{*path}` becomes `{path}`).
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }
}

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
    let path = route.openapi_path();
    let mut op = Map::new();
    op.insert("summary".into(), json!(route.summary));
    op.insert(
        "operationId".into(),
        json!(format!("{} {}", route.method.as_str(), path)),
    );
    let security = match route.auth {
        Auth::Admin => json!([{"adminToken": []}]),
        Auth::Device => json!([{"deviceToken": []}]),
        Auth::AdminOrDevice => json!([{"adminToken": []}, {"deviceToken": []}]),
        Auth::None | Auth::EnrollmentSecret => json!([]),
    };
    op.insert("security".into(), security);
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    for (name, required, description) in route.query {
        params.push(
            json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"},
            "description": description}),
        );
    }
    if route.range {
        params.push(
            json!({"name": "Range", "in": "header", "required": false, "schema": {"type": "string"},
            "description": "bytes=A-B[,C-D...]: one range (206 with Content-Range) or up to 64 (206 multipart/byteranges, parts in the order asked); resumed and delta downloads use it"}),
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
    for (status, description, schema) in route.also {
        responses.insert(
            status.to_string(),
            json!({"description": description, "content": content(schema)}),
        );
    }
    responses.insert(
        "default".into(),
        json!({"description": "error", "content": content("Error")}),
    );
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// An object schema; `required` is left out when empty (OpenAPI 3.0 wants it non-empty when present).
fn obj(required: &[&str], props: Value) -> Value {
    let mut schema = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
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
            "succeeded": s("integer"), "failed": s("integer"), "rolled_back": s("integer"),
            "timed_out": s("integer"), "waiting": s("integer")
        }),
    );
    let nullable = |name: &str| json!({"allOf": [schema_ref(name)], "nullable": true});
    let mut all = fleet_schemas();
    let base = json!({
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
            "slots": map_str, "telemetry": schema_ref("Telemetry"), "waiting": nullable("Waiting"),
            "staged": opt("string"), "security_floor": opt("string")
        })),
        "UpdateOffer": obj(&["rollout_id", "bundle_id", "version", "compatible", "manifest_digest", "size", "download_url"], json!({
            "rollout_id": s("integer"), "bundle_id": s("string"), "version": s("string"), "compatible": s("string"),
            "manifest_digest": s("string"), "size": s("integer"), "download_url": s("string"),
            "install_allowed": s("boolean"), "revert": s("boolean"), "require_confirmation": s("boolean")
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
            "telemetry": {"allOf": [schema_ref("Telemetry")], "nullable": true},
            "labels": map_str, "group": opt("string"), "waiting": nullable("Waiting"), "security_floor": opt("string")
        })),
        "DeviceList": {"type": "array", "items": schema_ref("DeviceInfo")},
        "ReportRecord": report_record,
        "DeviceDetail": obj(&["device", "reports"], json!({
            "device": schema_ref("DeviceInfo"), "reports": {"type": "array", "items": schema_ref("ReportRecord")}
        })),
        "CreateRolloutRequest": obj(&["bundle_id"], json!({
            "bundle_id": s("string"), "tags": map_str,
            "stages": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}},
            "failure_threshold": {"type": "number", "minimum": 0, "maximum": 1}, "name": s("string"),
            "filter": schema_ref("TargetFilter"), "rules": schema_ref("StageRules"), "schedule": schema_ref("Schedule"),
            "start_at": s("integer"), "require_confirmation": s("boolean"), "revert": s("boolean"),
            "guards": {"type": "array", "items": schema_ref("GuardRule")}, "watch_secs": s("integer")
        })),
        "RolloutCounts": counts,
        "RolloutInfo": obj(&["rollout_id", "name", "bundle_id", "version", "compatible", "manifest_digest", "tags", "stages", "current_stage", "state", "failure_threshold", "created_at", "updated_at", "counts"], json!({
            "rollout_id": s("integer"), "name": s("string"), "bundle_id": s("string"), "version": s("string"),
            "compatible": s("string"), "manifest_digest": s("string"), "tags": map_str,
            "stages": {"type": "array", "items": s("integer")}, "current_stage": s("integer"),
            "state": {"type": "string", "enum": ["active", "paused", "aborted", "completed"]},
            "pause_reason": opt("string"), "failure_threshold": s("number"), "created_at": s("integer"),
            "updated_at": s("integer"), "counts": schema_ref("RolloutCounts"),
            "filter": schema_ref("TargetFilter"), "rules": schema_ref("StageRules"), "schedule": nullable("Schedule"),
            "start_at": opt("integer"), "require_confirmation": s("boolean"), "revert": s("boolean"),
            "stage_started_at": opt("integer"),
            "guards": {"type": "array", "items": schema_ref("GuardRule")}, "watch_secs": s("integer"),
            "breach": nullable("GuardBreach")
        })),
        "RolloutList": {"type": "array", "items": schema_ref("RolloutInfo")},
        "RolloutDetail": obj(&["rollout", "devices"], json!({
            "rollout": schema_ref("RolloutInfo"),
            "devices": {"type": "array", "items": obj(&["device_id", "rank", "status", "updated_at"], json!({
                "device_id": s("string"), "rank": s("integer"), "status": s("string"), "updated_at": s("integer"),
                "timed_out": s("boolean"), "waiting": nullable("Waiting")
            }))}
        })),
    });
    if let (Value::Object(all), Value::Object(base)) = (&mut all, base) {
        all.extend(base);
    }
    all
}

/// Schemas of fleet operations: labels, groups, filters, stage rules, windows, waiting robots.
fn fleet_schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let map_str = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let days = json!({"type": "array", "items": {"type": "string", "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}});
    json!({
        "TargetFilter": obj(&[], json!({"tags": map_str, "group": s("string"), "versions": s("string")})),
        "StageRules": obj(&[], json!({"soak_secs": s("integer"), "deadline_secs": s("integer")})),
        "Window": obj(&["start", "end"], json!({"days": days, "start": s("string"), "end": s("string")})),
        "Schedule": obj(&[], json!({
            "windows": {"type": "array", "items": schema_ref("Window")}, "timezone": s("string")
        })),
        "Waiting": obj(&["phase", "reason"], json!({
            "phase": {"type": "string", "enum": ["download", "install", "reboot"]}, "reason": s("string"),
            "for_secs": s("integer")
        })),
        "DeviceLabels": obj(&[], json!({"tags": map_str, "group": {"type": "string", "nullable": true}})),
        "GroupSettings": obj(&[], json!({"schedule": schema_ref("Schedule")})),
        "GroupInfo": obj(&["name", "settings", "devices"], json!({
            "name": s("string"), "settings": schema_ref("GroupSettings"), "devices": s("integer")
        })),
        "GroupList": {"type": "array", "items": schema_ref("GroupInfo")},
        "GuardRule": obj(&["metric"], json!({
            "metric": s("string"), "stat": {"type": "string", "enum": ["p95", "mean", "max"]},
            "max": s("number"), "max_increase_percent": s("number"), "min_robots": s("integer")
        })),
        "GuardBreach": obj(&["rule", "updated", "robots", "at"], json!({
            "rule": schema_ref("GuardRule"), "updated": s("number"), "baseline": {"type": "number", "nullable": true},
            "robots": {"type": "array", "items": s("string")}, "at": s("integer")
        })),
        "MetricHistory": obj(&["device_id", "metric", "points"], json!({
            "device_id": s("string"), "metric": s("string"),
            "points": {"type": "array", "items": obj(&["at", "count", "min", "max", "mean"], json!({
                "at": s("integer"), "count": s("integer"), "min": s("number"), "max": s("number"), "mean": s("number")
            }))}
        })),
    })
}

/// The whole document for these routes.
pub fn document<'a>(routes: impl IntoIterator<Item = &'a RouteDoc>) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let entry = paths
            .entry(route.openapi_path())
            .or_insert_with(|| json!({}));
        if let Value::Object(ops) = entry {
            ops.insert(route.method.as_str().to_string(), operation(route));
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
    fn no_schema_has_an_empty_required_list() {
        let text = schemas().to_string();
        assert!(!text.contains("\"required\":[]"), "{text}");
        assert!(schemas()["Telemetry"].get("required").is_none());
        assert_eq!(schemas()["Error"]["required"], json!(["error"]));
    }
}
