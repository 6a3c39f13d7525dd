//! The dispatchers: one task per channel sends that channel's due notifications through
//! its provider and records each outcome. Channels never wait for each other, and the
//! consumers never wait for a provider: the consumer only records notifications.
//!
//! A dispatcher sends only while it holds its channel's lease in the store
//! (`notifications-<channel>`), so among several processes with the notification role one
//! sends each channel at a time; the lease is renewed before every send and a send is
//! bounded by a timeout well below the lease's lifetime. Should a process die after a send
//! and before recording it, the next holder sends again with the same idempotency key,
//! which the provider deduplicates.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_app::{Keyring, Opened};
use cornershop_messaging::{DeadLetterOwner, RetryPolicy};
use cornershop_store::{
    notification_status as status, DeadLetter, EventStore, Notification, NotificationUpdate,
    StoreError,
};
use tokio::sync::watch;
use uuid::Uuid;

use super::providers::{Provider, SendError};
use super::Wakeup;

/// How the dispatchers retry and share the work.
#[derive(Debug, Clone, Copy)]
pub struct DispatchPolicy {
    /// Transient failures: the n-th retry waits about `base_delay`·2ⁿ⁻¹ (with jitter, at
    /// most `max_delay`); after `max_attempts` attempts the notification fails.
    pub retry: RetryPolicy,
    /// How long a dispatcher's lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often an idle dispatcher looks for work recorded by other processes (work
    /// recorded by this process wakes it at once).
    pub poll_interval: Duration,
    /// The longest a single send may take before it counts as a (transient) timeout.
    pub send_timeout: Duration,
}

impl DispatchPolicy {
    /// The policy with the retries the settings give (`--notification-retry-delay`,
    /// `--notification-max-attempts`, whose defaults are clap's) and this module's fixed
    /// timings: a retry waits at most 5 minutes, a lease lasts 30 s, an idle dispatcher
    /// looks for work every second, a send may take 10 s.
    pub fn with_retries(base_delay: Duration, max_attempts: u32) -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: max_attempts.max(1),
                base_delay,
                max_delay: Duration::from_secs(300),
            },
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// How many due notifications are read at a time.
const BATCH: u32 = 32;

/// The dead-letter consumer name of a channel's failures, e.g. `notification-service:sms`.
pub fn dead_letter_consumer(channel: super::Channel) -> &'static str {
    match channel {
        super::Channel::Email => "notification-service:email",
        super::Channel::Sms => "notification-service:sms",
        super::Channel::Push => "notification-service:push",
    }
}

/// Re-drives the dead letters of failed notifications: the notification is queued to be
/// sent again (with the same idempotency key) and its dead letter resolved, in one store
/// transaction. The channel's dispatcher sends it when it next looks for due work.
pub struct FailedNotifications;

#[async_trait]
impl DeadLetterOwner for FailedNotifications {
    fn names(&self) -> Vec<&'static str> {
        super::Channel::ALL
            .into_iter()
            .map(dead_letter_consumer)
            .collect()
    }

    async fn redrive(&self, store: &dyn EventStore, letter: &DeadLetter) -> Result<(), StoreError> {
        let channel = super::Channel::ALL
            .into_iter()
            .find(|c| dead_letter_consumer(*c) == letter.consumer)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("'{}' is no notification channel", letter.consumer))
            })?;
        let requeued = store
            .redrive_notification(letter.id, letter.event_id, channel.as_str())
            .await?;
        tracing::info!(%channel, eventId = %letter.event_id, requeued, "failed notification re-driven");
        Ok(())
    }
}

/// Sends one channel's notifications.
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    keyring: Arc<Keyring>,
    provider: Arc<dyn Provider>,
    policy: DispatchPolicy,
    wakeup: Wakeup,
    holder: String,
    lease: String,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn EventStore>,
        keyring: Arc<Keyring>,
        provider: Arc<dyn Provider>,
        policy: DispatchPolicy,
        wakeup: Wakeup,
    ) -> Self {
        let channel = provider.channel();
        Self {
            store,
            keyring,
            holder: format!(
                "notifications-{channel}-pid{}-{}",
                std::process::id(),
                Uuid::new_v4().simple()
            ),
            lease: channel.lease(),
            provider,
            policy,
            wakeup,
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let channel = self.provider.channel();
        tracing::info!(%channel, provider = self.provider.kind(), "notification dispatcher started");
        let mut lease = LeaseState::default();
        while !*shutdown.borrow() {
            // Listen for wake-ups before looking for work, so that none is missed.
            let notified = self.wakeup.0.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let pause = match self.round(&mut lease, &shutdown).await {
                Ok(Round::Busy) => continue,
                Ok(Round::Idle(next_due)) => {
                    let until_due = next_due
                        .map(|due| (due - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                        .unwrap_or(self.policy.poll_interval);
                    until_due
                        .min(self.policy.poll_interval)
                        .max(Duration::from_millis(5))
                }
                Ok(Round::NotLeader) => self.policy.lease_ttl / 3,
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "notification dispatcher: store error; will try again");
                    self.policy.poll_interval
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if lease.held {
            let _ = self.store.release_lease(&self.lease, &self.holder).await;
        }
        tracing::info!(%channel, "notification dispatcher stopped");
    }

    /// Takes or renews the lease when it is due for renewal. Returns whether it is held.
    async fn hold_lease(&self, lease: &mut LeaseState) -> Result<bool, StoreError> {
        let renew_every = self.policy.lease_ttl / 3;
        if lease.held && lease.renewed.is_some_and(|at| at.elapsed() < renew_every) {
            return Ok(true);
        }
        let held = self
            .store
            .try_lease(&self.lease, &self.holder, self.policy.lease_ttl)
            .await?;
        if held != lease.held {
            tracing::info!(lease = %self.lease, holder = %self.holder, active = held, "notification lease changed hands");
        }
        lease.held = held;
        lease.renewed = held.then(tokio::time::Instant::now);
        Ok(held)
    }

    /// One pass: send what is due now.
    async fn round(
        &self,
        lease: &mut LeaseState,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Round, StoreError> {
        if !self.hold_lease(lease).await? {
            return Ok(Round::NotLeader);
        }
        let channel = self.provider.channel();
        let due = self
            .store
            .due_notifications(channel.as_str(), Utc::now(), BATCH)
            .await?;
        let full = due.len() as u32 == BATCH;
        for notification in &due {
            if *shutdown.borrow() || !self.hold_lease(lease).await? {
                return Ok(Round::Busy);
            }
            // The attempt's log lines belong to the causing event's business transaction.
            let span = tracing::info_span!(
                "notify",
                eventType = %notification.event_type,
                aggregateId = %notification.order_id,
                correlationId = notification.correlation_id.as_deref(),
                traceId = notification.trace_id.as_deref(),
            );
            if let Some(trace_id) = &notification.trace_id {
                let cause = cornershop_store::trace::span_id(notification.event_id);
                cornershop_messaging::tracecontext::join(&span, trace_id, &cause);
            }
            tracing::Instrument::instrument(self.attempt(notification), span).await;
        }
        if full {
            return Ok(Round::Busy);
        }
        Ok(Round::Idle(
            self.store.next_notification_due(channel.as_str()).await?,
        ))
    }

    /// The notification with its personal parts opened; `None` when its customer's data
    /// was erased (it is cancelled then) or it cannot be opened now (tried again later).
    async fn opened(&self, n: &Notification) -> Option<Notification> {
        let mut opened = n.clone();
        let mut parts = vec![&mut opened.recipient, &mut opened.body_text];
        parts.extend(opened.body_html.as_mut());
        let mut erased = false;
        for part in parts {
            match self.keyring.open_value(&super::stored_personal(part)).await {
                Ok(Opened::Clear(clear)) => *part = clear,
                Ok(Opened::Erased) => erased = true,
                Err(error) => {
                    tracing::warn!(id = n.id, %error, "a notification cannot be opened; will try again");
                    return None;
                }
            }
        }
        if !erased {
            return Some(opened);
        }
        let update = NotificationUpdate {
            id: n.id,
            status: status::CANCELLED.to_string(),
            attempts: n.attempts,
            provider_message_id: None,
            last_error: Some("the customer's personal data was erased".into()),
            next_attempt_at: n.next_attempt_at,
        };
        match self.store.update_notification(&update).await {
            Ok(_) => {
                tracing::info!(id = n.id, orderId = %n.order_id, "notification cancelled: the customer's personal data was erased")
            }
            Err(error) => tracing::warn!(id = n.id, %error, "cannot cancel a notification"),
        }
        None
    }

    /// Sends one notification and records the outcome.
    async fn attempt(&self, sealed: &Notification) {
        let Some(opened) = self.opened(sealed).await else {
            return;
        };
        let n = &opened;
        let channel = self.provider.channel();
        let kind = channel.as_str();
        let started = std::time::Instant::now();
        let outcome =
            match tokio::time::timeout(self.policy.send_timeout, self.provider.send(n)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(SendError::Transient(format!(
                    "{channel} provider did not answer within {:?}",
                    self.policy.send_timeout
                ))),
            };
        metrics::histogram!("notification_send_duration_seconds", "type" => kind)
            .record(started.elapsed().as_secs_f64());
        let attempts = n.attempts + 1;
        let now = Utc::now();
        let update = match outcome {
            Ok(provider_message_id) => {
                metrics::counter!("notifications_sent_total", "type" => kind).increment(1);
                tracing::info!(
                    %channel,
                    template = %n.template,
                    orderId = %n.order_id,
                    attempts,
                    provider = self.provider.kind(),
                    "notification sent"
                );
                NotificationUpdate {
                    id: n.id,
                    status: status::SENT.to_string(),
                    attempts,
                    provider_message_id,
                    last_error: None,
                    next_attempt_at: n.next_attempt_at,
                }
            }
            Err(error) => {
                metrics::counter!("notification_send_errors_total", "type" => kind, "kind" => error.kind())
                    .increment(1);
                let give_up = matches!(error, SendError::Permanent(_))
                    || attempts >= self.policy.retry.max_attempts;
                let message = match &error {
                    SendError::Transient(e) if give_up => {
                        format!("gave up after {attempts} attempts: {e}")
                    }
                    e => e.to_string(),
                };
                // A provider's answer may echo the address ("<ada@…>: user unknown"); the
                // reason goes to the log, the notification's row and a dead letter, so
                // the recipient is taken out of it here, for every provider at once.
                let message = without_recipient(&message, &n.recipient);
                tracing::warn!(
                    %channel,
                    orderId = %n.order_id,
                    attempts,
                    kind = error.kind(),
                    error = %message,
                    "notification not sent{}",
                    if give_up { "; it failed and goes to the dead letters" } else { "; will retry" }
                );
                if give_up {
                    self.dead_letter(n, &message, attempts).await;
                    NotificationUpdate {
                        id: n.id,
                        status: status::FAILED.to_string(),
                        attempts,
                        provider_message_id: None,
                        last_error: Some(message),
                        next_attempt_at: n.next_attempt_at,
                    }
                } else {
                    NotificationUpdate {
                        id: n.id,
                        status: status::RETRYING.to_string(),
                        attempts,
                        provider_message_id: None,
                        last_error: Some(message),
                        next_attempt_at: later(now, self.policy.retry.delay(attempts)),
                    }
                }
            }
        };
        // The outcome must be recorded, or the notification is sent again (with the same
        // idempotency key) once it is due; try a few times before leaving it to that.
        for round in 1..=3 {
            match self.store.update_notification(&update).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(%channel, id = n.id, round, error = %e, "cannot record a notification's outcome");
                    tokio::time::sleep(Duration::from_millis(200 * round)).await;
                }
            }
        }
    }

    /// Parks a failed notification's event in the dead letters, under this channel.
    async fn dead_letter(&self, n: &Notification, error: &str, attempts: u32) {
        let consumer = dead_letter_consumer(self.provider.channel());
        let recorded = async {
            let event = self.store.find_event(n.event_id).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("event {} is not in the store", n.event_id))
            })?;
            self.store
                .record_dead_letter(consumer, &event, error, attempts, n.created_at)
                .await
        }
        .await;
        match recorded {
            Ok(id) => {
                metrics::counter!("dead_letters_total", "consumer_group" => consumer).increment(1);
                tracing::info!(consumer, id, eventId = %n.event_id, "notification dead-lettered");
            }
            Err(e) => {
                tracing::error!(consumer, eventId = %n.event_id, error = %e, "cannot dead-letter a failed notification")
            }
        }
    }
}

#[derive(Debug, Default)]
struct LeaseState {
    held: bool,
    renewed: Option<tokio::time::Instant>,
}

enum Round {
    /// More may be due at once.
    Busy,
    /// Nothing due now; the next is due then (if any).
    Idle(Option<DateTime<Utc>>),
    /// Another process sends this channel.
    NotLeader,
}

/// `reason` with every occurrence of `recipient` replaced by `[recipient]`.
fn without_recipient(reason: &str, recipient: &str) -> String {
    if recipient.is_empty() {
        return reason.to_string();
    }
    reason.replace(recipient, "[recipient]")
}

fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::without_recipient;

    #[test]
    fn a_provider_reason_that_echoes_the_address_does_not_keep_it() {
        let reason = "SMTP 550: <ada@example.com>: user unknown (ada@example.com)";
        let cleaned = without_recipient(reason, "ada@example.com");
        assert_eq!(
            cleaned,
            "SMTP 550: <[recipient]>: user unknown ([recipient])"
        );
        assert_eq!(without_recipient("timeout", ""), "timeout");
    }
}
