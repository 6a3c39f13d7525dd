//! `NotificationOutbox` on the SQLite backend: recorded once per event and channel, found due,
//! updated after each attempt to send, re-driven, and listed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use uuid::Uuid;

use super::{all, all_of, micros, SqliteEventStore};
use crate::shared::{decode_notification, from_micros, push_notification_query, Statement};
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
            let mut insert = conn.prepare_cached(
                "INSERT INTO notifications (event_id, event_type, channel, template, \
                 order_id, customer_id, recipient, subject, body_text, body_html, \
                 status, attempts, next_attempt_us, created_us, updated_us, \
                 correlation_id, trace_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', 0, ?11, ?11, ?11, \
                 ?12, ?13) \
                 ON CONFLICT (event_id, channel) DO NOTHING",
            )?;
            let mut inserted = 0;
            for n in &notifications {
                inserted += insert.execute(params![
                    n.event_id.to_string(),
                    n.event_type,
                    n.channel,
                    n.template,
                    n.order_id,
                    n.customer_id,
                    n.recipient,
                    n.subject,
                    n.body_text,
                    n.body_html,
                    micros(n.created_at),
                    n.correlation_id,
                    n.trace_id,
                ])? as u64;
            }
            Ok(inserted)
        })
        .await
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let channel = channel.to_string();
        self.read(move |conn| {
            all(
                conn,
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE channel = ?1 \
                     AND status IN ('pending', 'retrying') AND next_attempt_us <= ?2 \
                     ORDER BY next_attempt_us, id LIMIT ?3"
                ),
                params![channel, micros(now), i64::from(limit)],
                |row| decode_notification(row),
            )
        })
        .await
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let channel = channel.to_string();
        self.read_here(move |conn| {
            let due: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_us) FROM notifications WHERE channel = ?1 \
                     AND status IN ('pending', 'retrying')",
                )?
                .query_row([channel], |row| row.get(0))?;
            due.map(from_micros).transpose()
        })
        .await
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        let update = update.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE notifications SET status = ?1, attempts = ?2, \
                     provider_message_id = COALESCE(?3, provider_message_id), last_error = ?4, \
                     next_attempt_us = ?5, updated_us = ?6 \
                     WHERE id = ?7 AND status IN ('pending', 'retrying')",
                )?
                .execute(params![
                    update.status,
                    i64::from(update.attempts),
                    update.provider_message_id,
                    update.last_error,
                    micros(update.next_attempt_at),
                    micros(Utc::now()),
                    update.id as i64,
                ])?;
            Ok(changed == 1)
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
            let now = micros(Utc::now());
            conn.prepare_cached("UPDATE dead_letters SET status = 'resolved' WHERE id = ?1")?
                .execute([dead_letter_id as i64])?;
            let requeued = conn
                .prepare_cached(
                    "UPDATE notifications SET status = 'retrying', attempts = 0, \
                     next_attempt_us = ?1, updated_us = ?1 \
                     WHERE event_id = ?2 AND channel = ?3 AND status = 'failed'",
                )?
                .execute(params![now, event_id.to_string(), channel])?;
            Ok(requeued == 1)
        })
        .await
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut sql = Statement::new(format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE 1 = 1"
        ));
        push_notification_query(&mut sql, query);
        self.read(move |conn| all_of(conn, &sql, |row| decode_notification(row)))
            .await
    }
}
