//! The notification log: what the notification service recorded for each event and
//! channel, and how delivery went.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use cornershop_store::{notification_status, Notification, NotificationQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Problem};
use super::extract::Query;
use super::AppState;

const LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationParams {
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    /// `email`, `sms` or `push`.
    pub channel: Option<String>,
    /// `pending`, `sent`, `retrying` or `failed`.
    pub status: Option<String>,
}

/// One notification: one per (event, channel).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
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
    /// `pending` (not tried yet), `sent`, `retrying` (after an error that may pass) or
    /// `failed` (a permanent error or out of attempts; also in the dead letters).
    pub status: String,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    /// When the next attempt is due (pending and retrying notifications).
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Notification> for NotificationView {
    fn from(n: Notification) -> Self {
        Self {
            id: n.id,
            event_id: n.event_id,
            event_type: n.event_type,
            channel: n.channel,
            template: n.template,
            order_id: n.order_id,
            customer_id: n.customer_id,
            recipient: n.recipient,
            subject: n.subject,
            status: n.status,
            attempts: n.attempts,
            provider_message_id: n.provider_message_id,
            last_error: n.last_error,
            next_attempt_at: n.next_attempt_at,
            created_at: n.created_at,
            updated_at: n.updated_at,
        }
    }
}

/// The notifications matching every filter given, newest first (at most 1000).
#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(NotificationParams),
    responses(
        (status = 200, body = [NotificationView]),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<NotificationParams>,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    if let Some(channel) = &params.channel {
        if !["email", "sms", "push"].contains(&channel.as_str()) {
            return Err(ApiError::invalid(format!(
                "channel must be 'email', 'sms' or 'push', got '{channel}'"
            )));
        }
    }
    if let Some(status) = &params.status {
        if !notification_status::ALL.contains(&status.as_str()) {
            return Err(ApiError::invalid(format!(
                "status must be one of {}, got '{status}'",
                notification_status::ALL.join(", ")
            )));
        }
    }
    let notifications = state
        .bus
        .store()
        .notifications(&NotificationQuery {
            order_id: params.order_id,
            customer_id: params.customer_id,
            channel: params.channel,
            status: params.status,
            limit: LIMIT,
        })
        .await
        .map_err(cornershop_app::AppError::from)?;
    Ok(Json(notifications.into_iter().map(Into::into).collect()))
}
