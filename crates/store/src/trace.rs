//! W3C trace context (<https://www.w3.org/TR/trace-context/>) for events.
//!
//! Every event belongs to one trace: the trace of the HTTP request that started its business
//! transaction (the client's `traceparent`, when it sent one), inherited by every command a
//! consumer sends in reaction. The store keeps the trace id beside the envelope (not in its
//! `metadata`, which is the seed's four fields); the relay sends it as the `traceparent`
//! header, and consumers put it on their log lines as `traceId`.
//!
//! Each event is a span of its own: its span id is the first 8 bytes of its eventId, so the
//! `traceparent` of an event can be recomputed anywhere without storing it.

use uuid::Uuid;

/// The ids of a valid version-00 `traceparent` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span: 16 lowercase hex digits.
    pub parent_id: String,
}

/// The trace id (32 lowercase hex digits) of a valid version-00 `traceparent` header, or
/// `None` when the value is malformed or its trace or parent id is all zeros (the spec
/// says to start a new trace then).
pub fn trace_id_from_traceparent(value: &str) -> Option<String> {
    parse_traceparent(value).map(|parsed| parsed.trace_id)
}

/// Both ids of a `traceparent` header; `None` as for [`trace_id_from_traceparent`].
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace_id, parent_id, flags] = parts[..] else {
        return None;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    (version == "00"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && !zeros(trace_id)
        && !zeros(parent_id))
    .then(|| TraceParent {
        trace_id: trace_id.to_string(),
        parent_id: parent_id.to_string(),
    })
}

/// The trace id of a business transaction that arrived without trace context: derived from
/// its correlation id, so that every event of it (and events stored before trace ids were)
/// land in one trace.
pub fn trace_id_for_correlation(correlation_id: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, correlation_id.as_bytes())
        .simple()
        .to_string()
}

/// The event's span id: the first 16 hex digits of its eventId.
pub fn span_id(event_id: Uuid) -> String {
    event_id.simple().to_string()[..16].to_string()
}

/// The `traceparent` header value of an event (sampled).
pub fn traceparent(trace_id: &str, event_id: Uuid) -> String {
    format!("00-{trace_id}-{}-01", span_id(event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_or_zero_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(trace_id_from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_event_traceparent_round_trips() {
        let event = Uuid::new_v4();
        let trace = trace_id_for_correlation("c-1");
        let header = traceparent(&trace, event);
        assert_eq!(trace_id_from_traceparent(&header), Some(trace));
        assert_eq!(header.split('-').nth(2), Some(span_id(event).as_str()));
    }
}
