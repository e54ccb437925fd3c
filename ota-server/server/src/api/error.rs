//! [`ApiError`]: what handlers return (status + one operator-readable line, rendered as `{"error": "..."}`).
//! Every [`ServiceError`] kind gets its HTTP status here, in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ota_protocol::ErrorBody;

use crate::error::{ServiceError, StoreError};

/// A failed request: the status and the message for the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for `{"error": ...}`.
    pub message: String,
    /// Seconds for a `Retry-After` header (429 / 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 500; the details go to the log, the client gets a generic line.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error while {context}; see the server log"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let back_off = |status, seconds, message| ApiError {
            status,
            message,
            retry_after: Some(seconds),
        };
        match err {
            ServiceError::Unauthenticated(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            ServiceError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            ServiceError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ServiceError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            ServiceError::Rejected(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            ServiceError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            ServiceError::Busy {
                retry_after_secs,
                message,
            } => back_off(StatusCode::SERVICE_UNAVAILABLE, retry_after_secs, message),
            ServiceError::TooFast {
                retry_after_secs,
                message,
            } => back_off(StatusCode::TOO_MANY_REQUESTS, retry_after_secs, message),
            ServiceError::NotYet {
                retry_after_secs,
                message,
            } => back_off(StatusCode::TOO_EARLY, retry_after_secs, message),
            ServiceError::Internal { context, detail } => ApiError::internal(context, detail),
            // Lost compare-and-set races against other replicas, again and again: worth retrying soon.
            ServiceError::Store(e @ StoreError::Stale(_)) => {
                back_off(StatusCode::SERVICE_UNAVAILABLE, 1, e.to_string())
            }
            ServiceError::Store(e) => ApiError::internal("accessing the database", e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status() {
        let cases = [
            (ServiceError::Unauthenticated("x".into()), 401),
            (ServiceError::Forbidden("x".into()), 403),
            (ServiceError::NotFound("x".into()), 404),
            (ServiceError::Conflict("x".into()), 409),
            (ServiceError::Invalid("x".into()), 400),
            (ServiceError::Rejected("x".into()), 422),
            (ServiceError::TooLarge("x".into()), 413),
            (ServiceError::internal("doing y", "disk full"), 500),
        ];
        for (err, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status);
            assert_eq!(api.retry_after, None);
        }
        let busy = ApiError::from(ServiceError::TooFast {
            retry_after_secs: 3,
            message: "slow down".into(),
        });
        assert_eq!((busy.status.as_u16(), busy.retry_after), (429, Some(3)));
        let stale = ApiError::from(ServiceError::Store(StoreError::Stale(4)));
        assert_eq!((stale.status.as_u16(), stale.retry_after), (503, Some(1)));
        assert!(
            stale.message.contains("another server replica"),
            "{}",
            stale.message
        );
        let internal = ApiError::from(ServiceError::internal("doing y", "disk full"));
        assert_eq!(
            internal.message,
            "internal error while doing y; see the server log"
        );
    }
}
