//! Puts a `tracing` span into an event's W3C trace for OTLP export.
//!
//! The log lines carry the trace id as a field (`traceId`); when OTLP export is on (see the
//! server's telemetry), the exported span must also *be* in that trace, with the event (or
//! the client's request) as its remote parent. Without an OpenTelemetry layer installed
//! this does nothing.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the remote span `parent_span_id` (16 hex digits) in trace
/// `trace_id` (32 hex digits). Malformed ids leave the span as it is (its own trace).
pub fn join(span: &tracing::Span, trace_id: &str, parent_span_id: &str) {
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(trace_id),
        SpanId::from_hex(parent_span_id),
    ) else {
        return;
    };
    let parent = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Fails only when the span is disabled or already started: nothing to join then.
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
}

/// Joins `span` to the trace of `event`, as a child of the event's own span.
pub fn join_event(span: &tracing::Span, event: &cornershop_store::StoredEvent) {
    join(
        span,
        &event.trace_id,
        &cornershop_store::trace::span_id(event.envelope.event_id),
    );
}
