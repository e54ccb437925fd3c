//! The request-latency layer: times every request from its arrival to its response headers and records it
//! under the route's path template (axum's `MatchedPath`, so `/api/devices/{device_id}` is one series however
//! many devices there are), its method and its status class.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// The route label of a request no route matched (404 fallback).
pub const UNMATCHED: &str = "unmatched";

/// The method label: the methods HTTP defines, anything else as `other` (a client picks the method, and each
/// label value is a series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: records the request's latency in `ota_http_request_duration_seconds`.
pub async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // `MatchedPath` is a shared string: cloning it costs no allocation on the poll path.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    state.metrics().observe_request(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_method_a_client_sends_gets_one_of_a_few_labels(name in "[A-Z]{1,12}") {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            let label = method_label(&method);
            let known = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
            prop_assert!(known.contains(&label) || label == "other");
            prop_assert_eq!(known.contains(&name.as_str()), label == name);
        }
    }
}
