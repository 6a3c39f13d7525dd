//! Puts a `tracing` span into an event's W3C trace for OTLP export.
//!
//! The log lines carry the trace id as a field (`traceId`); when OTLP export is on (see the
//! server's telemetry), the exported span must also *be* in that trace, with the event (or
//! the client's request) as its remote parent. Without an OpenTelemetry layer installed
//! this does nothing.

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the remote span `parent_span_id` (16 hex digits) in trace
/// `trace_id` (32 hex digits). Malformed ids leave the span as it is (its own trace).
pub fn join(span: &tracing::Span, trace_id: &str, parent_span_id: &str) {
    if let Some(parent) = ids(trace_id, parent_span_id) {
        set_remote_parent(span, parent);
    }
}

fn set_remote_parent(span: &tracing::Span, (trace_id, span_id): (TraceId, SpanId)) {
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

/// A trace id (32 hex digits) and a span id (16), parsed; `None` when either is malformed.
fn ids(trace_id: &str, span_id: &str) -> Option<(TraceId, SpanId)> {
    Some((
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
    ))
}

/// The trace of `event` and its own span's id.
fn event_ids(event: &cornershop_store::StoredEvent) -> Option<(TraceId, SpanId)> {
    ids(
        &event.trace_id,
        &cornershop_store::trace::span_id(event.envelope.event_id),
    )
}

/// Joins `span` to the trace of `event`, as a child of the event's own span.
pub(crate) fn join_event(span: &tracing::Span, event: &cornershop_store::StoredEvent) {
    if let Some(parent) = event_ids(event) {
        set_remote_parent(span, parent);
    }
}

/// Exports one span per stored event (`event <eventType>`), with the span id that every
/// consumer of the event takes as its parent (`trace::span_id(eventId)`, also in the Kafka
/// `traceparent` header), as a child of the span that appended it: the client's request,
/// or a consumer's handling of the cause. Without these spans the consumers' spans would
/// name parents that no collector ever receives. An instant span, at the append.
///
/// Uses the global tracer provider (the server installs its OTLP provider there); with
/// none installed it does nothing.
pub fn export_event_spans(events: &[cornershop_store::StoredEvent]) {
    let tracer = opentelemetry::global::tracer("cornershop");
    let appender = tracing::Span::current().context();
    let appender_span = appender.span().span_context().clone();
    for event in events {
        let envelope = &event.envelope;
        let Some((trace_id, span_id)) = event_ids(event) else {
            continue;
        };
        // The appender's span is the parent when it is in the event's trace; otherwise
        // (a timer firing, a span not exported) the event's span starts the trace.
        let parent = if appender_span.is_valid() && appender_span.trace_id() == trace_id {
            appender.clone()
        } else {
            Context::new()
        };
        let builder = tracer
            .span_builder(format!("event {}", envelope.event_type))
            .with_kind(SpanKind::Producer)
            .with_trace_id(trace_id)
            .with_span_id(span_id)
            .with_attributes([
                KeyValue::new("eventId", envelope.event_id.to_string()),
                KeyValue::new("eventType", envelope.event_type.clone()),
                KeyValue::new("aggregateType", envelope.aggregate_type.to_string()),
                KeyValue::new("aggregateId", envelope.aggregate_id.clone()),
                KeyValue::new("version", envelope.version as i64),
                KeyValue::new("position", event.position as i64),
                KeyValue::new("correlationId", envelope.metadata.correlation_id.clone()),
            ]);
        tracer.build_with_context(builder, &parent).end();
    }
}
