//! The HTTP routes. [`app`] builds the router; handlers are thin: authenticate (extractors in [`crate::auth`]),
//! parse, call [`AppState`], answer JSON.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ota_protocol::admin::{CreateRolloutRequest, DeviceDetail};
use ota_protocol::device::{EnrollRequest, PollRequest, ReportRequest};
use serde::de::DeserializeOwned;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::ServeFile;

use crate::auth::{Admin, AnyCaller, Caller, DeviceCaller};
use crate::error::ApiError;
use crate::state::{blocking, bundle_info, AppState, RolloutAction};

/// JSON body extractor whose rejections are `{"error": ...}` with the right status (400 malformed, 413 too
/// large, 415 wrong content type, 422 wrong shape).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(_) => format!(
            "request body has the wrong shape: {}",
            rejection.body_text()
        ),
        JsonRejection::JsonSyntaxError(_) => {
            format!("request body is not valid JSON: {}", rejection.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => {
            "send the body with 'Content-Type: application/json'".into()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body too large".into(),
        _ => rejection.body_text(),
    };
    ApiError::new(status, message)
}

/// Builds the router over a shared state.
pub fn app(state: Arc<AppState>) -> Router {
    let json_limit = state.config.max_json_bytes;
    let device_routes = Router::new()
        .route("/api/device/poll", post(poll))
        .route("/api/device/report", post(report))
        .route("/api/devices/enroll", post(enroll))
        .route_layer(middleware::from_fn_with_state(state.clone(), device_gate));
    Router::new()
        .merge(device_routes)
        .route("/", get(crate::assets::index))
        .route("/static/{*path}", get(crate::assets::static_file))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/bundles", get(list_bundles).post(upload_bundle))
        .route("/api/bundles/{bundle_id}", get(get_bundle))
        .route("/api/bundles/{bundle_id}/download", get(download))
        .route("/api/devices", get(list_devices))
        .route(
            "/api/devices/{device_id}",
            get(get_device).delete(delete_device),
        )
        .route("/api/rollouts", get(list_rollouts).post(create_rollout))
        .route("/api/rollouts/{rollout_id}", get(get_rollout))
        .route("/api/rollouts/{rollout_id}/pause", post(pause_rollout))
        .route("/api/rollouts/{rollout_id}/resume", post(resume_rollout))
        .route("/api/rollouts/{rollout_id}/abort", post(abort_rollout))
        .route("/api/events", get(events))
        .fallback(|| async { ApiError::not_found("no such route; see GET /api/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route; see GET /api/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log",
            )
            .into_response()
        }))
        .with_state(state)
}

/// Concurrency limit for the device endpoints (503 + Retry-After when over it).
async fn device_gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match state.enter_device_request() {
        Ok(_guard) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn enroll(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(state.enroll(req).await?).into_response())
}

async fn poll(
    State(state): State<Arc<AppState>>,
    DeviceCaller(id): DeviceCaller,
    ApiJson(req): ApiJson<PollRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(state.poll(&id, req)?).into_response())
}

async fn report(
    State(state): State<Arc<AppState>>,
    DeviceCaller(id): DeviceCaller,
    ApiJson(req): ApiJson<ReportRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(state.report(&id, req).await?).into_response())
}

fn valid_bundle_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bundle id must be 64 lowercase hex digits (the bundle file's SHA-256)",
        ))
    }
}

async fn upload_bundle(
    State(state): State<Arc<AppState>>,
    _: Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (created, response) = crate::bundle_store::upload(&state, content_length, body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)).into_response())
}

async fn list_bundles(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    Json(state.bundles()).into_response()
}

async fn get_bundle(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    valid_bundle_id(&id)?;
    let bundle = state
        .bundle(&id)
        .ok_or_else(|| ApiError::not_found(format!("no bundle '{id}'")))?;
    Ok(Json(bundle_info(&bundle)).into_response())
}

async fn download(
    State(state): State<Arc<AppState>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    valid_bundle_id(&id)?;
    if state.bundle(&id).is_none() {
        return Err(ApiError::not_found(format!("no bundle '{id}'")));
    }
    if !state.may_download(&caller, &id) {
        return Err(ApiError::forbidden(
            "this bundle has not been offered to this device",
        ));
    }
    state.metrics.downloads.fetch_add(1, Ordering::Relaxed);
    let path = state.blob_dir().join(&id);
    // Blob names have no extension, so the content type is application/octet-stream.
    let response = ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::internal("reading the bundle file", e))?;
    Ok(response.map(Body::new))
}

async fn list_devices(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    Json(state.devices()).into_response()
}

async fn get_device(
    State(state): State<Arc<AppState>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Caller::Device(me) = &caller {
        if *me != id {
            return Err(ApiError::forbidden("a device may read only its own record"));
        }
    }
    let device = state
        .device(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device '{id}'")))?;
    let reports = blocking(&state.store, move |s| s.reports(&id, 200)).await?;
    Ok(Json(DeviceDetail { device, reports }).into_response())
}

async fn delete_device(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.delete_device(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_rollouts(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    Json(state.rollouts()).into_response()
}

async fn create_rollout(
    State(state): State<Arc<AppState>>,
    _: Admin,
    ApiJson(req): ApiJson<CreateRolloutRequest>,
) -> Result<Response, ApiError> {
    let info = state.create_rollout(req).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

fn rollout_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "rollout id must be a positive integer, not {text:?}"
        ))
    })
}

async fn get_rollout(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = rollout_id(&id)?;
    let detail = state
        .rollout(id)
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    Ok(Json(detail).into_response())
}

async fn control(
    state: Arc<AppState>,
    id: String,
    action: RolloutAction,
) -> Result<Response, ApiError> {
    let id = rollout_id(&id)?;
    Ok(Json(state.control_rollout(id, action).await?).into_response())
}

async fn pause_rollout(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    control(state, id, RolloutAction::Pause).await
}

async fn resume_rollout(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    control(state, id, RolloutAction::Resume).await
}

async fn abort_rollout(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    control(state, id, RolloutAction::Abort).await
}

async fn metrics(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state),
    )
        .into_response()
}

async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// Server-sent events; the stream ends when the server shuts down.
async fn events(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    let receiver = state.subscribe();
    let shutdown = state.shutdown_signal();
    let stream = futures_util::stream::unfold(
        (receiver, shutdown),
        |(mut rx, mut shutdown)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Ok(event) => {
                            let sse = SseEvent::default().event(event.name()).data(event.data_json());
                            return Some((Ok::<_, Infallible>(sse), (rx, shutdown)));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let sse = SseEvent::default().comment(format!("lagged: {n} events dropped; refetch lists"));
                            return Some((Ok(sse), (rx, shutdown)));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
