//! The handlers: extract (caller, path, body), call a service, answer JSON. Which path and method reach each
//! one is [`crate::api::routes::ROUTES`]'s business.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ota_protocol::admin::{CreateRolloutRequest, DeviceDetail, DevicePage, PreauthorizeRequest};
use ota_protocol::device::{ChallengeRequest, EnrollRequest, PollRequest, ReportRequest};
use ota_protocol::fleet::{DeviceLabels, GroupSettings};

use crate::api::error::ApiError;
use crate::api::extract::{Admin, AnyCaller, ApiJson, DeviceCaller, Operator, Scraper, Viewer};
use crate::device_query::DeviceQuery;
use crate::rollout::RolloutAction;
use crate::services::admission::AdminAction;
use crate::state::AppState;
use crate::tokens::Caller;

/// How many reports `GET /api/devices/{id}` includes.
const DEVICE_REPORTS: usize = 200;

type AppResult = Result<Response, ApiError>;
type St = State<Arc<AppState>>;

/// `GET /healthz`.
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `POST /api/devices/enroll`.
pub async fn enroll(State(state): St, ApiJson(req): ApiJson<EnrollRequest>) -> AppResult {
    Ok(Json(state.devices.enroll(req).await?).into_response())
}

/// `POST /api/devices/challenge`.
pub async fn challenge(State(state): St, ApiJson(req): ApiJson<ChallengeRequest>) -> AppResult {
    Ok(Json(state.devices.challenge(&req)?).into_response())
}

/// `GET /api/admission`.
pub async fn list_identities(State(state): St, _: Viewer) -> AppResult {
    Ok(Json(state.devices.identities().await?).into_response())
}

async fn decide(state: &AppState, id: &str, action: AdminAction) -> AppResult {
    Ok(Json(state.devices.decide(id, action).await?).into_response())
}

/// `POST /api/devices/{device_id}/admit`.
pub async fn admit_device(State(state): St, _: Admin, Path(id): Path<String>) -> AppResult {
    decide(&state, &id, AdminAction::Admit).await
}

/// `POST /api/devices/{device_id}/reject`.
pub async fn reject_device(State(state): St, _: Admin, Path(id): Path<String>) -> AppResult {
    decide(&state, &id, AdminAction::Reject).await
}

/// `POST /api/devices/{device_id}/preauthorize`.
pub async fn preauthorize_device(
    State(state): St,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PreauthorizeRequest>,
) -> AppResult {
    decide(&state, &id, AdminAction::Preauthorize(req.public_key)).await
}

/// `POST /api/device/poll`.
pub async fn poll(
    State(state): St,
    DeviceCaller(id): DeviceCaller,
    ApiJson(req): ApiJson<PollRequest>,
) -> AppResult {
    let mut answer = state.devices.poll(&id, req)?;
    answer.timestamp = state.timestamp().map(|t| (*t).clone());
    Ok(Json(answer).into_response())
}

/// `GET /api/trust/timestamp`: the signed timestamp polls carry (404 without a timestamp key).
pub async fn trust_timestamp(State(state): St) -> AppResult {
    match state.timestamp() {
        Some(t) => Ok(Json(&*t).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this server has no timestamp key",
        )),
    }
}

/// `POST /api/device/report`.
pub async fn report(
    State(state): St,
    DeviceCaller(id): DeviceCaller,
    ApiJson(req): ApiJson<ReportRequest>,
) -> AppResult {
    let rollout = req.rollout_id;
    let answer = state.devices.report(&id, req).await?;
    if let (Some(rollout), false) = (rollout, answer.duplicate) {
        state.watch.check_soon(rollout);
    }
    Ok(Json(answer).into_response())
}

/// `POST /api/bundles`: 201 when new, 200 when already stored.
pub async fn upload_bundle(
    State(state): St,
    _: Operator,
    headers: HeaderMap,
    body: Body,
) -> AppResult {
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (created, response) = state
        .bundles
        .upload(content_length, body.into_data_stream())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)).into_response())
}

/// `GET /api/bundles`.
pub async fn list_bundles(State(state): St, _: Viewer) -> Response {
    Json(state.bundles.list()).into_response()
}

/// `GET /api/bundles/{bundle_id}`.
pub async fn get_bundle(State(state): St, _: Viewer, Path(id): Path<String>) -> AppResult {
    Ok(Json(state.bundles.get(&id)?).into_response())
}

/// `GET`/`HEAD /api/bundles/{bundle_id}/download`: the whole file, one range or several
/// ([`crate::api::download`]).
pub async fn download(
    State(state): St,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> AppResult {
    let path = state.bundles.download(&caller, &id)?;
    crate::api::download::respond(&method, &headers, path, &id).await
}

/// `GET /api/devices[?page=&per_page=&sort=&order=&q=&status=&health=&rollout=]`: with `page`, a
/// [`DevicePage`]; without, the whole (filtered, sorted) list as before paging existed.
pub async fn list_devices(
    State(state): St,
    _: Viewer,
    Query(params): Query<BTreeMap<String, String>>,
) -> AppResult {
    let query =
        DeviceQuery::parse(&params).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let (devices, total, fleet) = state.devices.query(&query)?;
    Ok(match query.page {
        None => Json(devices).into_response(),
        Some(page) => Json(DevicePage {
            devices,
            total,
            page,
            per_page: query.per_page,
            fleet,
        })
        .into_response(),
    })
}

/// `GET /api/devices/{device_id}`: admins, or the device itself.
pub async fn get_device(
    State(state): St,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> AppResult {
    if let Caller::Device(me) = &caller {
        if *me != id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a device may read only its own record",
            ));
        }
    }
    let device = state.devices.get(&id)?;
    let reports = state.devices.reports(&id, DEVICE_REPORTS).await?;
    Ok(Json(DeviceDetail { device, reports }).into_response())
}

/// `GET /api/devices/{device_id}/history?metric=NAME[&since=UNIX]`.
pub async fn device_history(
    State(state): St,
    _: Viewer,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> AppResult {
    let metric = query.get("metric").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "name the metric: ?metric=NAME, e.g. ?metric=inference_latency_ms",
        )
    })?;
    let since = crate::api::history::since(&query)?;
    Ok(Json(state.history.query(&id, metric, since).await?).into_response())
}

/// `DELETE /api/devices/{device_id}`.
pub async fn delete_device(State(state): St, _: Operator, Path(id): Path<String>) -> AppResult {
    state.devices.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/rollouts`.
pub async fn list_rollouts(State(state): St, _: Viewer) -> Response {
    Json(state.rollouts.list()).into_response()
}

/// `POST /api/rollouts`.
pub async fn create_rollout(
    State(state): St,
    _: Operator,
    ApiJson(req): ApiJson<CreateRolloutRequest>,
) -> AppResult {
    let info = state.rollouts.create(req).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// A rollout id from the path (400 naming the value otherwise).
pub(crate) fn rollout_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("rollout id must be a positive integer, not {text:?}"),
        )
    })
}

/// `GET /api/rollouts/{rollout_id}`.
pub async fn get_rollout(State(state): St, _: Viewer, Path(id): Path<String>) -> AppResult {
    Ok(Json(state.rollouts.get(rollout_id(&id)?)?).into_response())
}

async fn control(state: Arc<AppState>, id: String, action: RolloutAction) -> AppResult {
    let id = rollout_id(&id)?;
    Ok(Json(state.rollouts.control(id, action).await?).into_response())
}

/// `POST /api/rollouts/{rollout_id}/pause`.
pub async fn pause_rollout(State(state): St, _: Operator, Path(id): Path<String>) -> AppResult {
    control(state, id, RolloutAction::Pause).await
}

/// `POST /api/rollouts/{rollout_id}/resume`.
pub async fn resume_rollout(State(state): St, _: Operator, Path(id): Path<String>) -> AppResult {
    control(state, id, RolloutAction::Resume).await
}

/// `POST /api/rollouts/{rollout_id}/abort`.
pub async fn abort_rollout(State(state): St, _: Operator, Path(id): Path<String>) -> AppResult {
    control(state, id, RolloutAction::Abort).await
}

/// `GET /metrics`.
pub async fn metrics(State(state): St, _: Scraper) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.render_metrics(),
    )
        .into_response()
}

/// `GET /api/events`: server-sent events; the stream ends when the server shuts down.
pub async fn events(State(state): St, _: Viewer) -> Response {
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

/// `PUT /api/devices/{device_id}/labels`.
pub async fn set_labels(
    State(state): St,
    _: Operator,
    Path(id): Path<String>,
    ApiJson(labels): ApiJson<DeviceLabels>,
) -> AppResult {
    Ok(Json(state.devices.set_labels(&id, labels).await?).into_response())
}

/// `GET /api/groups`.
pub async fn list_groups(State(state): St, _: Viewer) -> Response {
    Json(state.devices.groups()).into_response()
}

/// `PUT /api/groups/{name}`.
pub async fn put_group(
    State(state): St,
    _: Operator,
    Path(name): Path<String>,
    ApiJson(settings): ApiJson<GroupSettings>,
) -> AppResult {
    Ok(Json(state.devices.put_group(&name, settings).await?).into_response())
}

/// `POST /api/rollouts/{rollout_id}/next`.
pub async fn next_stage(State(state): St, _: Operator, Path(id): Path<String>) -> AppResult {
    Ok(Json(state.rollouts.next(rollout_id(&id)?).await?).into_response())
}

/// `POST /api/rollouts/{rollout_id}/retry`.
pub async fn retry_rollout(State(state): St, _: Operator, Path(id): Path<String>) -> AppResult {
    Ok(Json(state.rollouts.retry(rollout_id(&id)?).await?).into_response())
}
