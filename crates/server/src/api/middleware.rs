//! Per-request correlation: every request gets a correlation id (the client's
//! `X-Correlation-Id`, or a new one), a request id and a W3C trace id (from the client's
//! `traceparent`, or derived from the correlation id), carried in a tracing span; the
//! correlation id is echoed back in the response.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cornershop_store::trace;
use tracing::Instrument;
use uuid::Uuid;

use super::error::ApiError;

pub(super) const CORRELATION_ID: &str = "x-correlation-id";
pub(super) const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone)]
pub(super) struct RequestIds {
    pub correlation_id: String,
    /// Becomes the causationId of the events the request appends.
    pub request_id: String,
    /// The trace the request's events join (see `cornershop_store::trace`).
    pub trace_id: String,
}

impl Default for RequestIds {
    fn default() -> Self {
        let id = Uuid::new_v4().to_string();
        Self {
            trace_id: trace::trace_id_for_correlation(&id),
            correlation_id: id.clone(),
            request_id: id,
        }
    }
}

fn valid_correlation_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    (!text.is_empty() && text.len() <= 128 && text.chars().all(|c| c.is_ascii_graphic()))
        .then(|| text.to_string())
}

pub(super) async fn correlate(mut request: Request, next: Next) -> Response {
    let correlation_id = match request.headers().get(CORRELATION_ID) {
        None => Uuid::new_v4().to_string(),
        Some(value) => match valid_correlation_id(value) {
            Some(id) => id,
            None => {
                return ApiError::invalid(
                    "header X-Correlation-Id must be 1 to 128 visible ASCII characters",
                )
                .into_response()
            }
        },
    };
    // An invalid traceparent is ignored, not refused: the spec says to start a new trace.
    // The client's span is the request's parent; without one, a span id derived from the
    // trace id stands in as the (unexported) root.
    let (trace_id, parent_span_id) = match request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(trace::parse_traceparent)
    {
        Some(parent) => (parent.trace_id, parent.parent_id),
        None => {
            let trace_id = trace::trace_id_for_correlation(&correlation_id);
            let root = trace_id[..16].to_string();
            (trace_id, root)
        }
    };
    let ids = RequestIds {
        correlation_id: correlation_id.clone(),
        request_id: Uuid::new_v4().to_string(),
        trace_id,
    };
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        correlationId = %ids.correlation_id,
        requestId = %ids.request_id,
        traceId = %ids.trace_id,
    );
    cornershop_messaging::tracecontext::join(&span, &ids.trace_id, &parent_span_id);
    request.extensions_mut().insert(ids);
    let started = Instant::now();
    async move {
        let mut response = next.run(request).await;
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request handled");
        }
        if let Ok(value) = HeaderValue::from_str(&correlation_id) {
            response.headers_mut().insert(CORRELATION_ID, value);
        }
        response
    }
    .instrument(span)
    .await
}

/// HTTP request rate, errors (by status) and duration per route. A route layer: it runs
/// after routing, so the route template (not the path, whose ids would make a label value
/// per cart) is known.
pub(super) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The answer to a handler that panicked (a bug, never an outage): 500 problem+json,
/// with the panic's message in the log (inside the request's span), never in the body.
pub(super) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server could not complete the request; it has been logged",
    )
    .into_response()
}

/// Turns the request deadline's bare 503 (tower-http's `TimeoutLayer` answers with an
/// empty body) into problem+json with `Retry-After`. Every answer of ours has a content
/// type, so one without is the deadline's.
pub(super) async fn timeout_problem(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::SERVICE_UNAVAILABLE
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    tracing::warn!(
        limit = %humantime::format_duration(limit),
        "the request took longer than --request-timeout; abandoned"
    );
    let mut problem = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "request-timeout",
        format!(
            "the request was not done within {}, so the server gave up on it; a change it \
             asked for may or may not have been stored: repeat it (with the same \
             Idempotency-Key) in a moment",
            humantime::format_duration(limit)
        ),
    );
    problem.retry_after = Some(super::error::RETRY_AFTER_SECONDS);
    problem.into_response()
}
