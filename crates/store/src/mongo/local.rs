//! The traits beside the log: what belongs to appends is in MongoDB (applied-command keys,
//! in the append documents; publications, on their events), the rest is the SQLite part's
//! (see the split in `mod.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use mongodb::bson::doc;
use uuid::Uuid;

use super::log::int;
use super::MongoEventStore;
use crate::{
    Checkpoint, ConsumerState, DataKeyRecord, DataKeys, DeadLetter, Erasure, NewNotification,
    Notification, NotificationOutbox, NotificationQuery, NotificationUpdate, Publication,
    Scheduling, Snapshot, Snapshots, StoreError, StoredEvent, Timer,
};

#[async_trait]
impl ConsumerState for MongoEventStore {
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        self.applied_key_exists(dedupe_key).await
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        self.local.checkpoint(consumer).await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        self.local.save_checkpoint(consumer, position).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.local.checkpoints().await
    }

    async fn record_dead_letter(
        &self,
        consumer: &str,
        event: &StoredEvent,
        error: &str,
        attempts: u32,
        first_failed_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.local
            .record_dead_letter(consumer, event, error, attempts, first_failed_at)
            .await
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.local.dead_letters(status).await
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.local.dead_letter(id).await
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.local.resolve_dead_letter(id).await
    }

    /// On the events themselves: `events.<i>.topic` (and partition, offset) of the append
    /// document holding each position.
    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        for p in published {
            let position = p.position as i64;
            let Some(holder) = self
                .log
                .find_one(doc! { "_id": { "$lte": position } })
                .sort(doc! { "_id": -1 })
                .projection(doc! { "_id": 1, "n": 1 })
                .await?
            else {
                continue;
            };
            let first = int(&holder, "_id")?;
            if position >= first + int(&holder, "n")? {
                continue;
            }
            let i = position - first;
            self.log
                .update_one(
                    doc! { "_id": first },
                    doc! { "$set": {
                        format!("events.{i}.topic"): &p.topic,
                        format!("events.{i}.partition"): i64::from(p.partition),
                        format!("events.{i}.offset"): p.offset,
                    } },
                )
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Scheduling for MongoEventStore {
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.local.schedule_timer(timer).await
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        self.local.due_timers(now, limit).await
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.local.next_timer_due().await
    }

    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.local.complete_timer(timer).await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.local.try_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.local.release_lease(name, holder).await
    }
}

#[async_trait]
impl NotificationOutbox for MongoEventStore {
    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        self.local.record_notifications(notifications).await
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        self.local.due_notifications(channel, now, limit).await
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.local.next_notification_due(channel).await
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        self.local.update_notification(update).await
    }

    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        self.local
            .redrive_notification(dead_letter_id, event_id, channel)
            .await
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        self.local.notifications(query).await
    }
}

#[async_trait]
impl DataKeys for MongoEventStore {
    async fn claim_master_key(&self, id: &str) -> Result<String, StoreError> {
        self.local.claim_master_key(id).await
    }

    async fn data_key_of(&self, customer_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        self.local.data_key_of(customer_id).await
    }

    async fn data_key(&self, key_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        self.local.data_key(key_id).await
    }

    async fn insert_data_key(
        &self,
        record: &DataKeyRecord,
        master_key_id: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError> {
        self.local.insert_data_key(record, master_key_id).await
    }

    async fn erase_data_key(
        &self,
        customer_id: &str,
        new_key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        self.local.erase_data_key(customer_id, new_key_id, at).await
    }

    async fn wrapped_data_keys(&self) -> Result<Vec<DataKeyRecord>, StoreError> {
        self.local.wrapped_data_keys().await
    }

    async fn rewrap_data_keys(
        &self,
        old_master: &str,
        new_master: &str,
        rewrapped: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.local
            .rewrap_data_keys(old_master, new_master, rewrapped)
            .await
    }
}

#[async_trait]
impl Snapshots for MongoEventStore {
    async fn load_snapshot(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.local.load_snapshot(aggregate_type, aggregate_id).await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.local.save_snapshot(snapshot).await
    }
}
