//! The route table: every route once, with its handler and its documentation. [`app`] builds the router from
//! it and [`document`] the OpenAPI document, so the two cannot drift; the tests derive their route lists from
//! it too. Adding a route is one entry here (plus its handler and, for a new body type, its schema in
//! `openapi.rs`).

use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde_json::Value;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::error::ApiError;
use crate::api::handlers as h;
use crate::openapi::{self, Auth, RouteDoc, Verb};
use crate::state::AppState;

/// One route: how it is documented and which handler serves it.
pub struct Route {
    /// Method, path, auth, summary, schemas.
    pub doc: RouteDoc,
    /// The handler, for the method in `doc`.
    pub handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
}

impl Route {
    /// Whether the route counts against the device-request limit (503 when over it): the device endpoints.
    pub fn device_limited(&self) -> bool {
        matches!(self.doc.auth, Auth::Device | Auth::EnrollmentSecret)
    }
}

pub(crate) const fn doc(
    method: Verb,
    path: &'static str,
    auth: Auth,
    summary: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        auth,
        summary,
        request: None,
        response: (200, "#any"),
        also: &[],
        range: false,
        query: &[],
    }
}

pub(crate) const fn route(
    doc: RouteDoc,
    response: (u16, &'static str),
    handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
) -> Route {
    Route {
        doc: RouteDoc { response, ..doc },
        handler,
    }
}

pub(crate) const fn with_body(mut r: Route, request: &'static str) -> Route {
    r.doc.request = Some(request);
    r
}

use Auth::{Admin, AdminOrDevice, Device, EnrollmentSecret, Operator, Viewer};
use Verb::{Delete, Get, Post, Put};

/// Every route the server serves.
pub static ROUTES: &[Route] = &[
    route(
        doc(Get, "/", Auth::None, "Dashboard page"),
        (200, "#html"),
        |m| on(m, super::assets::index),
    ),
    route(
        doc(Get, "/static/{*path}", Auth::None, "Dashboard asset"),
        (200, "#binary"),
        |m| on(m, super::assets::static_file),
    ),
    route(
        doc(Get, "/healthz", Auth::None, "Liveness"),
        (200, "Health"),
        |m| on(m, h::healthz),
    ),
    route(
        doc(Get, "/metrics", Auth::Scrape, "Prometheus metrics"),
        (200, "#text"),
        |m| on(m, h::metrics),
    ),
    route(
        doc(Get, "/api/openapi.json", Auth::None, "This document"),
        (200, "#any"),
        |m| on(m, openapi_json),
    ),
    with_body(
        route(
            doc(
                Post,
                "/api/devices/enroll",
                EnrollmentSecret,
                "Enroll a device (idempotent per request_id)",
            ),
            (200, "EnrollResponse"),
            |m| on(m, h::enroll),
        ),
        "EnrollRequest",
    ),
    with_body(
        route(
            doc(
                Post,
                "/api/device/poll",
                Device,
                "Report state and telemetry; get an update offer or nothing",
            ),
            (200, "PollResponse"),
            |m| on(m, h::poll),
        ),
        "PollRequest",
    ),
    with_body(
        route(
            doc(
                Post,
                "/api/device/report",
                Device,
                "Report the lifecycle status of an update (idempotent per report_id)",
            ),
            (200, "ReportResponse"),
            |m| on(m, h::report),
        ),
        "ReportRequest",
    ),
    route(
        doc(Get, "/api/bundles", Viewer, "List bundles"),
        (200, "BundleList"),
        |m| on(m, h::list_bundles),
    ),
    with_body(
        Route {
            doc: RouteDoc {
                response: (201, "PublishResponse"),
                also: &[(200, "already stored", "PublishResponse")],
                ..doc(
                    Post,
                    "/api/bundles",
                    Operator,
                    "Upload (publish) a signed bundle; 201 new, 200 already stored",
                )
            },
            handler: |m| on(m, h::upload_bundle),
        },
        "#raw",
    ),
    route(
        doc(Get, "/api/bundles/{bundle_id}", Viewer, "One bundle"),
        (200, "BundleInfo"),
        |m| on(m, h::get_bundle),
    ),
    Route {
        doc: RouteDoc {
            response: (200, "#binary"),
            also: &[
                (206, "one range, or several as multipart/byteranges", "#binary"),
                (416, "overlapping, out-of-file or more than 64 ranges", "Error"),
            ],
            range: true,
            ..doc(
                Get,
                "/api/bundles/{bundle_id}/download",
                AdminOrDevice,
                "Download a bundle (also HEAD; Range with up to 64 ranges, If-Range on the ETag)",
            )
        },
        handler: |m| on(m, h::download),
    },
    with_body(
        route(
            doc(
                Post,
                "/api/devices/challenge",
                Auth::None,
                "A one-time enrollment challenge for a device id",
            ),
            (200, "ChallengeResponse"),
            |m| on(m, h::challenge),
        ),
        "ChallengeRequest",
    ),
    route(
        doc(Get, "/api/admission", Viewer, "Robot identities: pending, accepted, rejected"),
        (200, "DeviceIdentityList"),
        |m| on(m, h::list_identities),
    ),
    route(
        doc(
            Post,
            "/api/devices/{device_id}/admit",
            Admin,
            "Admit a robot that asked: its key gets tokens",
        ),
        (200, "DeviceIdentity"),
        |m| on(m, h::admit_device),
    ),
    route(
        doc(
            Post,
            "/api/devices/{device_id}/reject",
            Admin,
            "Reject or revoke a robot: its token stops working at once",
        ),
        (200, "DeviceIdentity"),
        |m| on(m, h::reject_device),
    ),
    with_body(
        route(
            doc(
                Post,
                "/api/devices/{device_id}/preauthorize",
                Admin,
                "Accept a robot's key on its first contact",
            ),
            (200, "DeviceIdentity"),
            |m| on(m, h::preauthorize_device),
        ),
        "PreauthorizeRequest",
    ),
    Route {
        doc: RouteDoc {
            response: (200, "DeviceList"),
            also: &[(200, "with page: one page and the total", "DevicePage")],
            query: &[
                ("page", false, "page from 1; without it, the whole list"),
                ("per_page", false, "1 to 500, default 50"),
                ("sort", false, "a column: device, version, last_seen, status, battery, health, ..."),
                ("order", false, "asc or desc"),
                ("q", false, "words to find in id, tags, group, version, status"),
                ("status", false, "the latest report's status, or none"),
                ("health", false, "ok, warn or bad"),
                ("rollout", false, "targets of this rollout"),
            ],
            ..doc(Get, "/api/devices", Viewer, "Device inventory (paged, filtered, sorted)")
        },
        handler: |m| on(m, h::list_devices),
    },
    route(
        doc(
            Get,
            "/api/devices/{device_id}",
            AdminOrDevice,
            "One device with its report history",
        ),
        (200, "DeviceDetail"),
        |m| on(m, h::get_device),
    ),
    route(
        doc(
            Delete,
            "/api/devices/{device_id}",
            Operator,
            "Forget a device and revoke its token",
        ),
        (204, "#none"),
        |m| on(m, h::delete_device),
    ),
    Route {
        doc: RouteDoc {
            response: (200, "MetricHistory"),
            query: &[
                ("metric", true, "metric name, e.g. inference_latency_ms"),
                ("since", false, "Unix seconds; default: 24 hours ago"),
            ],
            ..doc(
                Get,
                "/api/devices/{device_id}/history",
                Viewer,
                "A device's telemetry history of one metric (1-minute buckets for a day, hourly before)",
            )
        },
        handler: |m| on(m, h::device_history),
    },
    with_body(
        route(
            doc(
                Put,
                "/api/devices/{device_id}/labels",
                Operator,
                "Set a device's operator tags and group (they override its reported tags)",
            ),
            (200, "DeviceInfo"),
            |m| on(m, h::set_labels),
        ),
        "DeviceLabels",
    ),
    route(
        doc(Get, "/api/groups", Viewer, "Device groups with their settings and sizes"),
        (200, "GroupList"),
        |m| on(m, h::list_groups),
    ),
    with_body(
        route(
            doc(
                Put,
                "/api/groups/{name}",
                Operator,
                "Create or replace a group's settings (maintenance windows)",
            ),
            (200, "GroupInfo"),
            |m| on(m, h::put_group),
        ),
        "GroupSettings",
    ),
    route(
        doc(Get, "/api/rollouts", Viewer, "List rollouts"),
        (200, "RolloutList"),
        |m| on(m, h::list_rollouts),
    ),
    with_body(
        route(
            doc(Post, "/api/rollouts", Operator, "Create a staged rollout"),
            (201, "RolloutInfo"),
            |m| on(m, h::create_rollout),
        ),
        "CreateRolloutRequest",
    ),
    route(
        doc(
            Get,
            "/api/rollouts/{rollout_id}",
            Viewer,
            "One rollout with per-device status",
        ),
        (200, "RolloutDetail"),
        |m| on(m, h::get_rollout),
    ),
    route(
        doc(
            Post,
            "/api/rollouts/{rollout_id}/pause",
            Operator,
            "Pause a rollout",
        ),
        (200, "RolloutInfo"),
        |m| on(m, h::pause_rollout),
    ),
    route(
        doc(
            Post,
            "/api/rollouts/{rollout_id}/resume",
            Operator,
            "Resume a rollout (acknowledges failures so far)",
        ),
        (200, "RolloutInfo"),
        |m| on(m, h::resume_rollout),
    ),
    route(
        doc(
            Post,
            "/api/rollouts/{rollout_id}/abort",
            Operator,
            "Abort a rollout for good",
        ),
        (200, "RolloutInfo"),
        |m| on(m, h::abort_rollout),
    ),
    route(
        doc(
            Post,
            "/api/rollouts/{rollout_id}/next",
            Operator,
            "Start the next stage now, whatever the current one's completion or soak",
        ),
        (200, "RolloutInfo"),
        |m| on(m, h::next_stage),
    ),
    route(
        doc(
            Post,
            "/api/rollouts/{rollout_id}/retry",
            Operator,
            "Offer the update again to failed and rolled-back robots",
        ),
        (200, "RolloutInfo"),
        |m| on(m, h::retry_rollout),
    ),
    Route {
        doc: RouteDoc {
            response: (200, "DeviceTimeline"),
            query: &[("since", false, "Unix seconds; default: 24 hours ago")],
            ..doc(
                Get,
                "/api/devices/{device_id}/timeline",
                Viewer,
                "What a device's history charts show besides points: its metrics and update events",
            )
        },
        handler: |m| on(m, super::history::device_timeline),
    },
    Route {
        doc: RouteDoc {
            response: (200, "GuardHistory"),
            query: &[("since", false, "Unix seconds; default: an hour before the rollout, at most a day ago")],
            ..doc(
                Get,
                "/api/rollouts/{rollout_id}/guards/history",
                Viewer,
                "Each guard's metric over time, updated against not-yet-updated robots",
            )
        },
        handler: |m| on(m, super::history::guard_history),
    },
    route(
        doc(Get, "/api/sites", Viewer, "Sites for the map (plans with scale and origin)"),
        (200, "SiteList"),
        |m| on(m, super::sites::list),
    ),
    with_body(
        Route {
            doc: RouteDoc {
                response: (201, "SiteInfo"),
                also: &[(200, "replaced", "SiteInfo")],
                query: &[
                    ("name", true, "site name: the robots' position frame"),
                    ("scale", true, "metres per pixel, e.g. 0.05"),
                    ("origin_x", false, "pixel column of (0 m, 0 m); default 0"),
                    ("origin_y", false, "pixel row of (0 m, 0 m); default 0"),
                ],
                ..doc(
                    Post,
                    "/api/sites",
                    Operator,
                    "Upload a site plan (PNG or JPEG body, at most 10 MiB); 201 new, 200 replaced",
                )
            },
            handler: |m| on(m, super::sites::upload),
        },
        "#raw",
    ),
    route(
        doc(Get, "/api/sites/{name}/image", Viewer, "A site's plan image"),
        (200, "#binary"),
        |m| on(m, super::sites::image),
    ),
    route(
        doc(Get, "/api/sites/{name}/robots", Viewer, "The robots on a site, placed on its plan"),
        (200, "SiteRobots"),
        |m| on(m, super::sites::robots),
    ),
    route(
        doc(Delete, "/api/sites/{name}", Operator, "Delete a site"),
        (204, "#none"),
        |m| on(m, super::sites::delete),
    ),
    route(
        doc(Get, "/api/alerts", Viewer, "Open alerts: what needs a person, most urgent first"),
        (200, "AlertList"),
        |m| on(m, super::alerts::list),
    ),
    route(
        doc(
            Post,
            "/api/alerts/{alert_id}/ack",
            Operator,
            "Acknowledge an open alert (who and when are recorded)",
        ),
        (200, "Alert"),
        |m| on(m, super::alerts::ack),
    ),
    with_body(
        route(
            doc(
                Post,
                "/api/bundles/prune",
                Operator,
                "Delete bundles no rollout uses (dry_run: only list them)",
            ),
            (200, "PruneResponse"),
            |m| on(m, super::alerts::prune),
        ),
        "PruneRequest",
    ),
    route(
        doc(
            Get,
            "/api/events",
            Viewer,
            "Server-sent events: device_updated, report, rollout_updated, device_deleted, alerts_changed",
        ),
        (200, "#sse"),
        |m| on(m, h::events),
    ),
    Route {
        doc: RouteDoc {
            response: (200, "TrustChain"),
            query: &[(
                "after",
                false,
                "a trust root version: only newer roots are listed (default 0: all)",
            )],
            ..doc(
                Get,
                "/api/trust/chain",
                Auth::None,
                "The fleet's rotated trust roots after a version (public: each root verifies itself)",
            )
        },
        handler: |m| on(m, super::trust::chain),
    },
    with_body(
        Route {
            doc: RouteDoc {
                response: (201, "TrustChain"),
                also: &[(200, "already published", "TrustChain")],
                ..doc(
                    Post,
                    "/api/trust/chain",
                    Admin,
                    "Publish the next trust root (signed by the newest root's keys and its own); 201 new, 200 already published",
                )
            },
            handler: |m| on(m, super::trust::publish),
        },
        "#any",
    ),
    route(
        doc(
            Get,
            "/api/trust/timestamp",
            Auth::None,
            "The signed timestamp polls carry (public: robots verify it with their trust root)",
        ),
        (200, "#any"),
        |m| on(m, h::trust_timestamp),
    ),
    super::accounts::LOGIN,
    super::accounts::LOGOUT,
    super::accounts::ME,
    super::accounts::CHANGE_OWN_PASSWORD,
    super::accounts::LIST_USERS,
    super::accounts::ADD_USER,
    super::accounts::REMOVE_USER,
    super::accounts::SET_ROLE,
    super::accounts::SET_PASSWORD,
    super::accounts::LIST_TOKENS,
    super::accounts::CREATE_TOKEN,
    super::accounts::REVOKE_TOKEN,
    super::accounts::AUDIT,
];

/// The OpenAPI document of [`ROUTES`] (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| openapi::document(ROUTES.iter().map(|r| &r.doc)))
}

async fn openapi_json() -> Response {
    Json(document()).into_response()
}

/// Builds the router over a shared state from [`ROUTES`].
pub fn app(state: Arc<AppState>) -> Router {
    let json_limit = state.config().max_json_bytes;
    let mut device_routes = Router::new();
    let mut router = Router::new();
    for r in ROUTES {
        let handler = (r.handler)(r.doc.method.filter());
        if r.device_limited() {
            device_routes = device_routes.route(r.doc.path, handler);
        } else {
            router = router.route(r.doc.path, handler);
        }
    }
    let device_routes =
        device_routes.route_layer(middleware::from_fn_with_state(state.clone(), device_gate));
    router
        .merge(device_routes)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; see GET /api/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route; see GET /api/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::audit_log::audit_log,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log",
            )
            .into_response()
        }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::latency::observe,
        ))
        .with_state(state)
}

/// Concurrency limit for the device endpoints (503 + Retry-After when over it).
async fn device_gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match state.enter_device_request() {
        Ok(_guard) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    /// Schema references are checked with the rest of the document in `openapi::tests`.
    fn every_route_is_listed_once_and_documented() {
        let unique: BTreeSet<(&str, &str)> = ROUTES
            .iter()
            .map(|r| (r.doc.method.as_str(), r.doc.path))
            .collect();
        assert_eq!(unique.len(), ROUTES.len());
        let doc = document();
        // Exactly the route table's paths (a count here went stale whenever two changes added routes at once).
        let paths: BTreeSet<String> = ROUTES.iter().map(|r| r.doc.openapi_path()).collect();
        assert_eq!(doc["paths"].as_object().unwrap().len(), paths.len());
        assert!(paths.len() >= 31, "{paths:?}");
        assert!(doc["paths"]["/static/{path}"]["get"].is_object());
    }
}
