//! What travels with a command: who asked and in the context of what (the new events'
//! metadata, the trace, the caller's restriction to its own aggregates), and a client's
//! idempotency key with the reply it is answered with.

use cornershop_store::StoredEvent;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Who asked, and in the context of what: becomes every new event's metadata.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub correlation_id: String,
    /// The id of the message that caused this command: an HTTP request's id, or the
    /// eventId of the event a saga reacted to.
    pub causation_id: String,
    pub user_id: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// The W3C trace id the command's events join; `None` derives one from the correlation
    /// id (see `cornershop_store::trace`).
    pub trace_id: Option<String>,
    /// A customer who may act only on what it owns: a command on a cart or an order of
    /// another customer is refused as if the aggregate did not exist (the same 404, so
    /// nothing tells one customer that another's exists). `None`: the shop's staff, a
    /// consumer, the command line.
    pub acting_for: Option<String>,
    /// The command continues the business transaction the aggregate belongs to (a person
    /// shipping or cancelling an order): its events take the correlation and trace ids of
    /// the aggregate's first event instead of the request's, found by the bus with the
    /// state it loads anyway.
    pub continues_transaction: bool,
}

impl CommandContext {
    /// The context of a command sent in reaction to an event: same business transaction
    /// (correlation id), caused by that event.
    pub fn caused_by(event: &StoredEvent) -> Self {
        let metadata = &event.envelope.metadata;
        Self {
            correlation_id: metadata.correlation_id.clone(),
            causation_id: event.envelope.event_id.to_string(),
            user_id: metadata.user_id.clone(),
            idempotency_key: None,
            trace_id: Some(event.trace_id.clone()),
            acting_for: None,
            continues_transaction: false,
        }
    }

    /// A context for a command with no outer cause (a CLI action, a test).
    pub fn new_root() -> Self {
        let id = Uuid::new_v4().to_string();
        Self {
            correlation_id: id.clone(),
            causation_id: id,
            user_id: None,
            idempotency_key: None,
            trace_id: None,
            acting_for: None,
            continues_transaction: false,
        }
    }

    /// The same context, for a command that continues the aggregate's own business
    /// transaction (see [`continues_transaction`](Self::continues_transaction)).
    pub fn continuing(self) -> Self {
        Self {
            continues_transaction: true,
            ..self
        }
    }
}

/// A client-supplied `Idempotency-Key` and what it was sent with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// The fingerprint identifies a request by method, path and body, so that a key
    /// reused for a different request is refused rather than silently answered.
    pub fn new(key: String, method: &str, path: &str, body: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(method.as_bytes());
        hash.update(b" ");
        hash.update(path.as_bytes());
        hash.update(b"\n");
        hash.update(body);
        let fingerprint = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Self { key, fingerprint }
    }
}

/// A response as the API sends it; stored whole for idempotent replays.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}
