//! `NotificationOutbox` on the PostgreSQL backend: recorded once per event and channel, found
//! due, updated after each attempt to send, re-driven, and listed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{commit_failure, PgEventStore};
use crate::shared::{decode_notification, push_notification_query, Statement};
use crate::{
    truncate_to_micros as truncate, NewNotification, Notification, NotificationOutbox,
    NotificationQuery, NotificationUpdate, StoreError,
};

const NOTIFICATION_COLUMNS: &str = "id, event_id::text AS event_id, event_type, channel, \
    template, order_id, customer_id, recipient, subject, body_text, body_html, status, attempts, \
    provider_message_id, last_error, next_attempt_at, created_at, updated_at, correlation_id, trace_id";

#[async_trait]
impl NotificationOutbox for PgEventStore {
    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for n in notifications {
            let created = truncate(n.created_at)?;
            inserted += sqlx::query(
                "INSERT INTO notifications (event_id, event_type, channel, template, order_id, \
                 customer_id, recipient, subject, body_text, body_html, status, attempts, \
                 next_attempt_at, created_at, updated_at, correlation_id, trace_id) \
                 VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, \
                 $11, $11, $11, $12, $13) \
                 ON CONFLICT (event_id, channel) DO NOTHING",
            )
            .bind(n.event_id.to_string())
            .bind(&n.event_type)
            .bind(&n.channel)
            .bind(&n.template)
            .bind(&n.order_id)
            .bind(&n.customer_id)
            .bind(&n.recipient)
            .bind(&n.subject)
            .bind(&n.body_text)
            .bind(&n.body_html)
            .bind(created)
            .bind(&n.correlation_id)
            .bind(&n.trace_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await.map_err(commit_failure)?;
        Ok(inserted)
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE channel = $1 \
             AND status IN ('pending', 'retrying') AND next_attempt_at <= $2 \
             ORDER BY next_attempt_at, id LIMIT $3"
        ))
        .bind(channel)
        .bind(truncate(now)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_notification).collect()
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM notifications WHERE channel = $1 \
             AND status IN ('pending', 'retrying')",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE notifications SET status = $1, attempts = $2, \
             provider_message_id = COALESCE($3, provider_message_id), last_error = $4, \
             next_attempt_at = $5, updated_at = $6 \
             WHERE id = $7 AND status IN ('pending', 'retrying')",
        )
        .bind(&update.status)
        .bind(i64::from(update.attempts))
        .bind(&update.provider_message_id)
        .bind(&update.last_error)
        .bind(truncate(update.next_attempt_at)?)
        .bind(Utc::now())
        .bind(update.id as i64)
        .execute(&self.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = $1")
            .bind(dead_letter_id as i64)
            .execute(&mut *tx)
            .await?;
        let now = Utc::now();
        let requeued = sqlx::query(
            "UPDATE notifications SET status = 'retrying', attempts = 0, \
             next_attempt_at = $1, updated_at = $1 \
             WHERE event_id = $2::uuid AND channel = $3 AND status = 'failed'",
        )
        .bind(truncate(now)?)
        .bind(event_id.to_string())
        .bind(channel)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map_err(commit_failure)?;
        Ok(requeued.rows_affected() == 1)
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut sql = Statement::new(format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE TRUE"
        ));
        push_notification_query(&mut sql, query);
        let rows = super::bound(&sql)?.fetch_all(&self.pool).await?;
        rows.iter().map(decode_notification).collect()
    }
}
