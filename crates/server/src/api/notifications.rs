//! The notification log: what the notification service recorded for each event and
//! channel, and how delivery went.

use axum::extract::State;
use axum::Json;
use cornershop_store::{notification_status, Notification, NotificationQuery};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;

use super::error::{ApiError, Problem};
use super::extract::Query;
use super::AppState;

const LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NotificationParams {
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    /// `email`, `sms` or `push`.
    pub channel: Option<String>,
    /// `pending`, `sent`, `retrying` or `failed`.
    pub status: Option<String>,
}

/// The notifications matching every filter given, newest first (at most 1000).
#[utoipa::path(get, path = "/api/notifications", tag = "notifications", operation_id = "list_notifications",
    params(NotificationParams),
    responses(
        (status = 200, body = [Notification]),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(mut params): Query<NotificationParams>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    // A customer sees only its own: its filter is always its own id, and one naming
    // another customer matches nothing.
    if let Some(own) = caller.only_customer() {
        if params
            .customer_id
            .as_deref()
            .is_some_and(|asked| asked != own)
        {
            return Ok(Json(Vec::new()));
        }
        params.customer_id = Some(own.to_string());
    }
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
    let mut notifications = state
        .bus
        .store()
        .notifications(&NotificationQuery {
            order_id: params.order_id,
            customer_id: params.customer_id,
            channel: params.channel,
            status: params.status,
            limit: LIMIT,
        })
        .await?;
    // Recipients and bodies are stored sealed; they are opened for whom may see them.
    for n in &mut notifications {
        let customer = n.customer_id.clone();
        let reveal = |text: String| {
            let (state, caller, customer) = (&state, &caller, &customer);
            async move { super::customers::revealed_text(state, caller, customer, &text).await }
        };
        n.recipient = reveal(std::mem::take(&mut n.recipient)).await?;
        n.body_text = reveal(std::mem::take(&mut n.body_text)).await?;
        if let Some(html) = n.body_html.take() {
            n.body_html = Some(reveal(html).await?);
        }
    }
    Ok(Json(notifications))
}
