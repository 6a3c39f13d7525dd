//! `NotificationOutbox` on the SQLite backend: recorded once per event and channel, found due,
//! updated after each attempt to send, re-driven, and listed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{micros, SqliteEventStore};
use crate::shared::{bind_notification, decode_notification, from_micros, push_notification_query};
use crate::{
    NewNotification, Notification, NotificationOutbox, NotificationQuery, NotificationUpdate,
    StoreError,
};

const NOTIFICATION_COLUMNS: &str = "id, event_id, event_type, channel, template, order_id, \
    customer_id, recipient, subject, body_text, body_html, status, attempts, \
    provider_message_id, last_error, next_attempt_us, created_us, updated_us, correlation_id, trace_id";

#[async_trait]
impl NotificationOutbox for SqliteEventStore {
    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        let notifications = notifications.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                let mut inserted = 0;
                for n in &notifications {
                    let created = micros(n.created_at);
                    let insert = sqlx::query(
                        "INSERT INTO notifications (event_id, event_type, channel, template, \
                             order_id, customer_id, recipient, subject, body_text, body_html, \
                             status, attempts, next_attempt_us, created_us, updated_us, \
                             correlation_id, trace_id) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?) \
                             ON CONFLICT (event_id, channel) DO NOTHING",
                    );
                    inserted += bind_notification(insert, n)
                        .bind(created)
                        .bind(created)
                        .bind(created)
                        .bind(&n.correlation_id)
                        .bind(&n.trace_id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                }
                Ok(inserted)
            })
        })
        .await
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE channel = ? \
             AND status IN ('pending', 'retrying') AND next_attempt_us <= ? \
             ORDER BY next_attempt_us, id LIMIT ?"
        ))
        .bind(channel)
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_notification).collect()
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_us) FROM notifications WHERE channel = ? \
             AND status IN ('pending', 'retrying')",
        )
        .bind(channel)
        .fetch_one(&self.reader)
        .await?;
        due.map(from_micros).transpose()
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        let update = update.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let changed = sqlx::query(
                    "UPDATE notifications SET status = ?, attempts = ?, \
             provider_message_id = COALESCE(?, provider_message_id), last_error = ?, \
             next_attempt_us = ?, updated_us = ? \
             WHERE id = ? AND status IN ('pending', 'retrying')",
                )
                .bind(&update.status)
                .bind(i64::from(update.attempts))
                .bind(&update.provider_message_id)
                .bind(&update.last_error)
                .bind(micros(update.next_attempt_at))
                .bind(micros(Utc::now()))
                .bind(update.id as i64)
                .execute(&mut *conn)
                .await?;
                Ok(changed.rows_affected() == 1)
            })
        })
        .await
    }

    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let channel = channel.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let now = micros(Utc::now());
                sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = ?")
                    .bind(dead_letter_id as i64)
                    .execute(&mut *conn)
                    .await?;
                let requeued = sqlx::query(
                    "UPDATE notifications SET status = 'retrying', attempts = 0, \
                     next_attempt_us = ?, updated_us = ? \
                     WHERE event_id = ? AND channel = ? AND status = 'failed'",
                )
                .bind(now)
                .bind(now)
                .bind(event_id.to_string())
                .bind(channel)
                .execute(&mut *conn)
                .await?;
                Ok(requeued.rows_affected() == 1)
            })
        })
        .await
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE 1 = 1"
        ));
        push_notification_query(&mut sql, query);
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_notification).collect()
    }
}
