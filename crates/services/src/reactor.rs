//! The frame every workflow consumer is written in: a [`Reaction`] says which events it
//! reacts to (typed, from the domain's list of events) and what it does about one;
//! [`Reacting`] turns it into a consumer (`messaging::Handler`): the consumer group's
//! name, the filter, the concurrency, decoding the event, and the [`Reactor`] through
//! which its commands go, each at most once per (consumer, cause, step).

use async_trait::async_trait;
use cornershop_app::{AppError, CommandBus, CommandContext, Executed};
use cornershop_domain::{Aggregate, DomainError, DomainEvent, EventType, Order};
use cornershop_messaging::{Handler, HandlerError};
use cornershop_store::StoredEvent;

/// How many business transactions (orders) a workflow consumer works on at once on the
/// embedded log (see `Handler::concurrency`): their commands share group commits.
pub const TRANSACTIONS_AT_ONCE: usize = 32;

/// A consumer of the workflow: its reactions and nothing else.
#[async_trait]
pub trait Reaction: Send + Sync + 'static {
    /// The consumer group: names its checkpoint, its dead letters and its command keys.
    const NAME: &'static str;
    /// The events it reacts to; every other event passes by undecoded.
    const REACTS_TO: &'static [EventType];
    /// How many business transactions it may work on at once (see
    /// `Handler::concurrency`): the workflow's reactions are idempotent per event and
    /// independent across orders.
    const CONCURRENCY: usize = TRANSACTIONS_AT_ONCE;

    /// The bus its commands go through.
    fn bus(&self) -> &CommandBus;

    /// Reacts to one event of a type in [`REACTS_TO`](Self::REACTS_TO).
    async fn react(&self, event: DomainEvent, on: &Reactor<'_>) -> Result<(), HandlerError>;
}

/// A [`Reaction`] as a consumer.
pub struct Reacting<R>(pub R);

#[async_trait]
impl<R: Reaction> Handler for Reacting<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        EventType::is_one_of(event_type, R::REACTS_TO)
    }

    fn concurrency(&self) -> usize {
        R::CONCURRENCY
    }

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let decoded = event
            .envelope
            .decode()
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let reactor = Reactor::new(self.0.bus(), R::NAME, event);
        self.0.react(decoded, &reactor).await
    }
}

pub(crate) fn handler_error(e: AppError) -> HandlerError {
    match e {
        AppError::Store(ref store) if store.unavailability().is_some() => {
            HandlerError::Unavailable(e.to_string())
        }
        AppError::Store(_) | AppError::Contended { .. } => HandlerError::Transient(e.to_string()),
        AppError::Domain(_)
        | AppError::Invalid(_)
        | AppError::Decode(_)
        | AppError::Encode(_)
        | AppError::Keys(_)
        | AppError::IdempotencyKeyReused(_) => HandlerError::Permanent(e.to_string()),
    }
}

/// What a consumer uses to react to one event: the bus, and the event as the cause of
/// the commands it sends.
pub struct Reactor<'a> {
    pub bus: &'a CommandBus,
    pub consumer: &'static str,
    pub cause: &'a StoredEvent,
    pub ctx: CommandContext,
}

/// How a step of a reaction ended.
pub enum Step<A> {
    Applied(Executed<A>),
    /// This step ran already for this cause (a redelivery).
    AlreadyApplied,
}

impl<'a> Reactor<'a> {
    pub fn new(bus: &'a CommandBus, consumer: &'static str, cause: &'a StoredEvent) -> Self {
        Self {
            bus,
            consumer,
            cause,
            ctx: CommandContext::caused_by(cause),
        }
    }

    /// The key that makes step `step` of this reaction happen at most once.
    pub fn key(&self, step: &str) -> String {
        format!(
            "{}:{}:{}",
            self.consumer, self.cause.envelope.event_id, step
        )
    }

    /// Sends a command at most once for (this consumer, this event, this step).
    pub async fn once<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
    ) -> Result<Step<A>, AppError> {
        Ok(
            match self
                .bus
                .execute_once::<A>(id, command, &self.ctx, &self.key(step))
                .await?
            {
                Some(done) => Step::Applied(done),
                None => Step::AlreadyApplied,
            },
        )
    }

    /// Like [`once`](Self::once) for a command whose refusal means that the aggregate has
    /// already moved on by another path (an order cancelled by the customer while the
    /// workflow was running): the refusal is logged and the reaction goes on.
    pub(crate) async fn once_unless_moved_on<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
    ) -> Result<(), HandlerError> {
        self.applied_unless_moved_on::<A>(id, command, step)
            .await
            .map(|_| ())
    }

    /// [`once_unless_moved_on`](Self::once_unless_moved_on) for the command that ends an
    /// order's workflow: counts `saga_outcomes_total{saga="order", outcome, reason}` when
    /// it is applied now (not when it was already, or the order had moved on). The order
    /// workflow ends in the order saga (confirmed, payment failed) or in the inventory
    /// service (out of stock), hence one saga label for both.
    pub(crate) async fn conclude<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
        outcome: &'static str,
        reason: &'static str,
    ) -> Result<(), HandlerError> {
        if self.applied_unless_moved_on::<A>(id, command, step).await? {
            metrics::counter!(
                "saga_outcomes_total",
                "saga" => "order",
                "outcome" => outcome,
                "reason" => reason
            )
            .increment(1);
        }
        Ok(())
    }

    /// Whether the command was applied by this call.
    async fn applied_unless_moved_on<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
    ) -> Result<bool, HandlerError> {
        match self.once::<A>(id, command, step).await {
            Ok(step) => Ok(matches!(step, Step::Applied(_))),
            Err(AppError::Domain(
                e @ (DomainError::InvalidTransition { .. } | DomainError::AlreadyExists { .. }),
            )) => {
                tracing::info!(consumer = self.consumer, step, reason = %e, "step skipped: the aggregate has moved on");
                Ok(false)
            }
            Err(e) => Err(handler_error(e)),
        }
    }

    pub async fn order(&self, order_id: &str) -> Result<Order, HandlerError> {
        let (order, _) = self
            .bus
            .load::<Order>(order_id)
            .await
            .map_err(handler_error)?;
        Ok(order)
    }
}
