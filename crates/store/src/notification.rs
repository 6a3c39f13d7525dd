//! Notifications as the store keeps them: their statuses, one to record, one recorded,
//! the outcome of an attempt to send one, and which to list.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The notification statuses: recorded and not tried yet; delivered to the provider;
/// failed with an error that may pass, to be tried again at `next_attempt_at`; failed for
/// good (a permanent error, or the last attempt), with a dead letter; cancelled before it
/// was sent (its customer's personal data was erased).
pub mod notification_status {
    pub(crate) const PENDING: &str = "pending";
    pub const SENT: &str = "sent";
    pub const RETRYING: &str = "retrying";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    pub const ALL: [&str; 5] = [PENDING, SENT, RETRYING, FAILED, CANCELLED];
}

/// A notification to record: rendered and ready to send, due at once. At most one is kept
/// per (`event_id`, `channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The event that caused it; with the channel, its identity and idempotency key.
    pub event_id: Uuid,
    pub event_type: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    pub template: String,
    pub order_id: String,
    pub customer_id: String,
    /// An email address, a phone number, or a push topic.
    pub recipient: String,
    /// The email's subject; the push notification's title; empty for an SMS.
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The causing event's correlation and trace ids, for the dispatcher's log lines.
    pub correlation_id: String,
    pub trace_id: String,
}

/// A recorded notification and where its delivery stands: one per (event, channel).
/// Served as is by `GET /api/notifications`, without the message bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: u64,
    /// The event that caused it.
    pub event_id: Uuid,
    pub event_type: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    pub template: String,
    pub order_id: String,
    pub customer_id: String,
    /// An email address, a phone number or a push topic.
    pub recipient: String,
    /// The email's subject or the push notification's title (empty for SMS).
    pub subject: String,
    #[serde(skip)]
    pub body_text: String,
    #[serde(skip)]
    pub body_html: Option<String>,
    /// The causing event's correlation and trace ids (absent on notifications recorded
    /// before they were kept).
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    /// One of [`notification_status`]: `pending` (not tried yet), `sent`, `retrying` (after
    /// an error that may pass) or `failed` (a permanent error or out of attempts; also in
    /// the dead letters).
    pub status: String,
    /// Attempts to send so far.
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    /// When the next attempt is due (pending and retrying notifications).
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The outcome of an attempt to send a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationUpdate {
    pub id: u64,
    /// `sent`, `retrying` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// Kept as it was when `None`.
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
}

/// Which notifications to list; every filter is optional. Newest first.
#[derive(Debug, Clone, Default)]
pub struct NotificationQuery {
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    pub channel: Option<String>,
    pub status: Option<String>,
    pub limit: u32,
}
