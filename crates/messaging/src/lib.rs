//! Consumers of the event log.
//!
//! A consumer is a named group with a [`Handler`]. It processes the global log in order
//! from a durable checkpoint: delivery is at-least-once, so handlers are idempotent by
//! eventId (the ones that change the store record that they did, in the same
//! transaction). A failing event is retried with backoff and, after the last attempt,
//! parked in the dead letters so that the consumer can move on.
//!
//! The transport is kept apart from the handlers: the embedded one ([`run_embedded`]) tails
//! the store's own log and is woken by appends; a Kafka transport ([`kafka`]) drives the
//! same handlers the same way.

mod embedded;
pub mod kafka;
mod stall;
pub mod tracecontext;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use cornershop_store::{DeadLetter, EventStore, StoreError, StoredEvent};
use rand::Rng;
use tokio::sync::watch;

pub use embedded::{count_publications, run_embedded};
pub use stall::StallWatch;

/// Why a handler could not handle an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Might pass on a later attempt (a store hiccup, a provider timeout): retried.
    #[error("{0}")]
    Transient(String),
    /// Will fail however often it is tried (an event the handler cannot make sense of):
    /// dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
    /// A dependency the handler needs (the store, the read-model database) is unavailable:
    /// not the event's fault, so it is retried for as long as the outage lasts and never
    /// dead-lettered for it.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(_) => Self::Permanent(e.to_string()),
            _ if e.unavailability().is_some() => Self::Unavailable(e.to_string()),
            _ => Self::Transient(e.to_string()),
        }
    }
}

pub use cornershop_domain::panics::panic_message;

/// A span of wall-clock time in milliseconds (negative when the clocks of two processes
/// disagree), for log lines.
pub fn millis(span: chrono::TimeDelta) -> f64 {
    span.num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1e3)
}

/// Why this build will not hand `event` to any handler: a schema version it does not read
/// (one newer than it knows: a newer release wrote it). A handler would either refuse it
/// or, worse, make something of the fields it recognises; so the event goes to the dead
/// letters with that reason, to be re-driven once the consumer runs the newer release.
fn unreadable(event: &StoredEvent) -> Option<HandlerError> {
    event
        .envelope
        .check_schema_version()
        .err()
        .map(|e| HandlerError::Permanent(e.to_string()))
}

/// Runs a handler on one event, with a panic turned into a failure of that event (a
/// panic is a bug in the handler or an event it cannot take, never a reason for the
/// consumer to stop). An event of a schema this build does not read never reaches the
/// handler ([`unreadable`]).
async fn handle_caught(handler: &dyn Handler, event: &StoredEvent) -> Result<(), HandlerError> {
    use futures::FutureExt;
    if let Some(refusal) = unreadable(event) {
        return Err(refusal);
    }
    match std::panic::AssertUnwindSafe(handler.handle(event))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(payload) => Err(HandlerError::Transient(format!(
            "the handler panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// The longest pause between attempts while a dependency is unavailable: short, so that
/// work resumes within moments of its return.
const UNAVAILABLE_MAX_DELAY: Duration = Duration::from_secs(2);

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The consumer group: names the checkpoint and the dead letters.
    fn name(&self) -> &'static str;

    /// Whether the handler wants events of this type at all; others are skipped cheaply.
    fn handles(&self, event_type: &str) -> bool;

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError>;

    /// How many business transactions (correlation ids) the handler may work on at once on
    /// the embedded log; the events of one are always handled one after another, in log
    /// order. More than 1 only for handlers whose effects are idempotent per event and do
    /// not depend on the order of unrelated transactions (their commands then share
    /// group commits instead of waiting for one fsync each).
    fn concurrency(&self) -> usize {
        1
    }

    /// Whether [`handle_batch`](Self::handle_batch) takes a batch in fewer writes than
    /// one by one (a projection: one transaction for the batch).
    fn batches(&self) -> bool {
        false
    }

    /// Handles several events (those it [`handles`](Self::handles), in log order) all or
    /// nothing: an error means none of them took effect, and the consumer then delivers
    /// them one by one, with their retries and dead letters. Only called when
    /// [`batches`](Self::batches) says so.
    async fn handle_batch(&self, events: &[&StoredEvent]) -> Result<(), HandlerError> {
        for event in events {
            self.handle(event).await?;
        }
        Ok(())
    }
}

/// How often and how patiently a failing event is retried before it is dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with jitter: attempt n waits about base·2ⁿ⁻¹, capped, times a
    /// random factor in [0.5, 1) so that retries of many events do not synchronise.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(rand::rng().random_range(0.5..1.0))
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    Handled,
    /// Parked in the dead letters under this id; the consumer moves on.
    DeadLettered(u64),
    /// Shutdown came first: the event is not done and will be delivered again.
    Interrupted,
}

/// A handler with its retry policy and the store that keeps its dead letters.
#[derive(Clone)]
pub struct Consumer {
    pub handler: Arc<dyn Handler>,
    pub store: Arc<dyn EventStore>,
    pub policy: RetryPolicy,
}

impl Consumer {
    pub fn name(&self) -> &'static str {
        self.handler.name()
    }

    /// [`deliver`](Self::deliver) inside the event's `consume` span: its business
    /// transaction's ids (on every log line of the handling) and its trace.
    pub(crate) async fn deliver_traced(
        &self,
        event: &StoredEvent,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Delivery {
        tracing::Instrument::instrument(self.deliver(event, shutdown), self.consume_span(event))
            .await
    }

    /// The span of one event's handling: its business transaction's ids and its trace.
    fn consume_span(&self, event: &StoredEvent) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            consumer = self.name(),
            eventType = %event.envelope.event_type,
            aggregateId = %event.envelope.aggregate_id,
            correlationId = %event.envelope.metadata.correlation_id,
            traceId = %event.trace_id,
            topic = event.topic.as_deref(),
        );
        tracecontext::join_event(&span, event);
        span
    }

    /// The topic an event is counted under: where it came from, or where its aggregate
    /// type publishes.
    fn topic_of(event: &StoredEvent) -> String {
        event
            .topic
            .clone()
            .unwrap_or_else(|| event.envelope.aggregate_type.topic().to_string())
    }

    /// Counts and logs a handled event: `waited` from its timestamp to the start of the
    /// handling, `elapsed` the handling. Called inside the event's consume span.
    fn record_handled(
        &self,
        event: &StoredEvent,
        attempt: u32,
        waited: chrono::TimeDelta,
        elapsed: std::time::Duration,
    ) {
        let event_type = event.envelope.event_type.clone();
        tracing::info!(
            attempt,
            waited_ms = millis(waited),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "event handled"
        );
        metrics::counter!("events_consumed_total", "event_type" => event_type, "topic" => Self::topic_of(event), "consumer_group" => self.name())
            .increment(1);
    }

    /// Delivers one event, retrying with backoff; dead-letters it after the last attempt.
    pub(crate) async fn deliver(
        &self,
        event: &StoredEvent,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Delivery {
        let first_failed_at = Utc::now();
        let event_type = event.envelope.event_type.clone();
        let topic = Self::topic_of(event);
        let mut attempt = 0;
        let mut outages = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            // From the event's decision to this attempt: its commit, its way here (the
            // head watch, or the relay and the broker) and the consumer's queue.
            let waited = Utc::now() - event.envelope.timestamp;
            let outcome = handle_caught(self.handler.as_ref(), event).await;
            let elapsed = started.elapsed();
            metrics::histogram!("event_consume_duration_seconds", "event_type" => event_type.clone(), "consumer_group" => self.name())
                .record(elapsed.as_secs_f64());
            let error = match outcome {
                Ok(()) => {
                    self.record_handled(event, attempt, waited, elapsed);
                    return Delivery::Handled;
                }
                Err(e) => e,
            };
            metrics::counter!("events_consume_errors_total", "event_type" => event_type.clone(), "topic" => topic.clone(), "consumer_group" => self.name())
                .increment(1);
            let unavailable = matches!(error, HandlerError::Unavailable(_));
            if unavailable {
                // An outage is not this event's failure: it does not use up its attempts.
                attempt -= 1;
                outages += 1;
            }
            let give_up = match error {
                HandlerError::Permanent(_) => true,
                HandlerError::Unavailable(_) => false,
                HandlerError::Transient(_) => attempt >= self.policy.max_attempts,
            };
            tracing::warn!(
                consumer = self.name(),
                eventType = %event.envelope.event_type,
                aggregateId = %event.envelope.aggregate_id,
                correlationId = %event.envelope.metadata.correlation_id,
                attempt,
                error = %error,
                "handler failed{}",
                if give_up { "; dead-lettering the event" } else { "; will retry" }
            );
            if give_up {
                return self
                    .dead_letter(event, &error, attempt, first_failed_at, shutdown)
                    .await;
            }
            let pause = if unavailable {
                self.policy.delay(outages).min(UNAVAILABLE_MAX_DELAY)
            } else {
                self.policy.delay(attempt)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|stop| *stop) => return Delivery::Interrupted,
            }
        }
    }

    /// Delivers the wanted events of `batch` as the handler takes them best: in one
    /// [`Handler::handle_batch`] when it [`batches`](Handler::batches) (one by one if that
    /// fails), by business transaction when its concurrency is above 1, else one by one.
    /// `Interrupted` when shutdown cut any delivery short (then none of the batch counts
    /// as handled).
    pub(crate) async fn deliver_all(
        &self,
        batch: &[StoredEvent],
        shutdown: &watch::Receiver<bool>,
    ) -> Delivery {
        if self.handler.batches() {
            let wanted: Vec<&StoredEvent> = batch
                .iter()
                .filter(|e| self.handler.handles(&e.envelope.event_type))
                .collect();
            // (A batch with an event this build does not read goes one by one, which
            // dead-letters that event and delivers the rest.)
            let readable = wanted.iter().all(|e| unreadable(e).is_none());
            if wanted.len() > 1 && readable && self.deliver_in_one(&wanted).await {
                return Delivery::Handled;
            }
        }
        if self.handler.concurrency() > 1 {
            return self.deliver_by_transaction(batch, shutdown).await;
        }
        let mut shutdown = shutdown.clone();
        for event in batch {
            if self.handler.handles(&event.envelope.event_type)
                && self.deliver_traced(event, &mut shutdown).await == Delivery::Interrupted
            {
                return Delivery::Interrupted;
            }
        }
        Delivery::Handled
    }

    /// One attempt at `events` through [`Handler::handle_batch`]: whether it took them all
    /// (each then counted and logged as handled). On failure, or a panic, nothing of the
    /// batch took effect, and the caller delivers the events one by one.
    async fn deliver_in_one(&self, events: &[&StoredEvent]) -> bool {
        use futures::FutureExt;
        let started = std::time::Instant::now();
        let waited: Vec<chrono::TimeDelta> = events
            .iter()
            .map(|e| Utc::now() - e.envelope.timestamp)
            .collect();
        let outcome = std::panic::AssertUnwindSafe(self.handler.handle_batch(events))
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| {
                Err(HandlerError::Transient(format!(
                    "the handler panicked: {}",
                    panic_message(payload.as_ref())
                )))
            });
        let elapsed = started.elapsed();
        if let Err(error) = outcome {
            tracing::warn!(consumer = self.name(), events = events.len(), error = %error, "a batch failed; delivering its events one by one");
            return false;
        }
        for (event, waited) in events.iter().zip(waited) {
            metrics::histogram!("event_consume_duration_seconds", "event_type" => event.envelope.event_type.clone(), "consumer_group" => self.name())
                .record(elapsed.as_secs_f64());
            self.consume_span(event)
                .in_scope(|| self.record_handled(event, 1, waited, elapsed));
        }
        true
    }

    /// Delivers the wanted events of `batch` grouped by correlation id: up to the handler's
    /// concurrency of groups at once, each group's events in log order. `Interrupted` when
    /// shutdown cut any delivery short.
    pub(crate) async fn deliver_by_transaction(
        &self,
        batch: &[StoredEvent],
        shutdown: &watch::Receiver<bool>,
    ) -> Delivery {
        use futures::StreamExt;
        let consumer = self;
        // Groups of indices into `batch` (owned, so that the futures below borrow only
        // `batch` and `consumer`).
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (at, event) in batch.iter().enumerate() {
            if !consumer.handler.handles(&event.envelope.event_type) {
                continue;
            }
            let key = event.envelope.metadata.correlation_id.as_str();
            let group = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(at);
        }
        let outcomes: Vec<Delivery> = futures::stream::iter(groups)
            .map(|group| {
                let mut shutdown = shutdown.clone();
                async move {
                    for at in group {
                        if consumer.deliver_traced(&batch[at], &mut shutdown).await
                            == Delivery::Interrupted
                        {
                            return Delivery::Interrupted;
                        }
                    }
                    Delivery::Handled
                }
            })
            .buffer_unordered(consumer.handler.concurrency())
            .collect()
            .await;
        if outcomes.contains(&Delivery::Interrupted) {
            Delivery::Interrupted
        } else {
            Delivery::Handled
        }
    }

    async fn dead_letter(
        &self,
        event: &StoredEvent,
        error: &HandlerError,
        attempts: u32,
        first_failed_at: chrono::DateTime<Utc>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Delivery {
        // The dead letter must be stored before the consumer moves past the event;
        // if the store itself is failing, keep trying until it answers or we stop.
        loop {
            match self
                .store
                .record_dead_letter(
                    self.name(),
                    event,
                    &error.to_string(),
                    attempts,
                    first_failed_at,
                )
                .await
            {
                Ok(id) => {
                    metrics::counter!("dead_letters_total", "consumer_group" => self.name())
                        .increment(1);
                    return Delivery::DeadLettered(id);
                }
                Err(e) => {
                    tracing::error!(consumer = self.name(), error = %e, "cannot store a dead letter; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.policy.max_delay) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return Delivery::Interrupted,
                    }
                }
            }
        }
    }
}

/// Every consumer by name, so that a dead letter can be re-driven through the consumer
/// that parked it; and the other owners of dead letters (see [`DeadLetterOwner`]).
#[derive(Clone, Default)]
pub struct ConsumerRegistry {
    consumers: BTreeMap<&'static str, Consumer>,
    owners: BTreeMap<&'static str, Arc<dyn DeadLetterOwner>>,
}

/// Parks dead letters under a name that is not a consumer of the log, and knows what
/// re-driving one means: a notification dispatcher, for example, dead-letters a message
/// its provider refused, and re-driving it queues the message to be sent again.
#[async_trait]
pub trait DeadLetterOwner: Send + Sync {
    /// The dead letters' `consumer` names this owner answers for.
    fn names(&self) -> Vec<&'static str>;

    /// Sets the dead letter's work going again and resolves the dead letter.
    async fn redrive(&self, store: &dyn EventStore, letter: &DeadLetter) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("dead letter {0} does not exist")]
    NotFound(u64),
    #[error(
        "dead letter {id} belongs to consumer '{consumer}', which does not run in this process"
    )]
    NoSuchConsumer { id: u64, consumer: String },
    #[error("event {0} of the dead letter is no longer in the store")]
    EventMissing(uuid::Uuid),
    #[error("the retry failed again: {0}")]
    FailedAgain(HandlerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConsumerRegistry {
    pub fn add(&mut self, consumer: Consumer) {
        self.consumers.insert(consumer.name(), consumer);
    }

    pub fn consumers(&self) -> impl Iterator<Item = &Consumer> {
        self.consumers.values()
    }

    pub fn add_owner(&mut self, owner: Arc<dyn DeadLetterOwner>) {
        for name in owner.names() {
            self.owners.insert(name, owner.clone());
        }
    }

    /// Runs a dead letter's event through its consumer's handler once more. On success
    /// the dead letter is resolved; on failure it stays pending with the new error.
    /// A dead letter of another [`DeadLetterOwner`] is handed to that owner.
    pub async fn redrive(
        &self,
        store: &dyn EventStore,
        id: u64,
    ) -> Result<DeadLetter, RedriveError> {
        let letter = store
            .dead_letter(id)
            .await?
            .ok_or(RedriveError::NotFound(id))?;
        match self.owners.get(letter.consumer.as_str()) {
            Some(owner) => {
                owner.redrive(store, &letter).await?;
                tracing::info!(consumer = %letter.consumer, id, "dead letter handed back to its owner");
            }
            None => self.redrive_through_consumer(store, &letter).await?,
        }
        store
            .dead_letter(id)
            .await?
            .ok_or(RedriveError::NotFound(id))
    }

    /// Runs the letter's event through the consumer that parked it: resolved on success,
    /// pending again with the new error on failure.
    async fn redrive_through_consumer(
        &self,
        store: &dyn EventStore,
        letter: &DeadLetter,
    ) -> Result<(), RedriveError> {
        let id = letter.id;
        let consumer = self
            .consumers
            .get(letter.consumer.as_str())
            .ok_or_else(|| RedriveError::NoSuchConsumer {
                id,
                consumer: letter.consumer.clone(),
            })?;
        let event = store
            .find_event(letter.event_id)
            .await?
            .ok_or(RedriveError::EventMissing(letter.event_id))?;
        match handle_caught(consumer.handler.as_ref(), &event).await {
            Ok(()) => {
                store.resolve_dead_letter(id).await?;
                tracing::info!(consumer = consumer.name(), id, "dead letter re-driven");
            }
            Err(error) => {
                store
                    .record_dead_letter(
                        consumer.name(),
                        &event,
                        &error.to_string(),
                        1,
                        letter.first_failed_at,
                    )
                    .await?;
                return Err(RedriveError::FailedAgain(error));
            }
        }
        Ok(())
    }
}
