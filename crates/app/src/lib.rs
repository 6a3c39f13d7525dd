//! Command handling: load an aggregate's events, fold them, let the pure `decide` answer,
//! and append with the version that was read. On a concurrency conflict the whole cycle
//! runs again (bounded), so callers see conflicts only when the state truly forbids the
//! command.
//!
//! Also here: the clock (so tests can control time), the context that travels with every
//! command (`context.rs`), the bus's state cache (`cache.rs`), the snapshots of long
//! streams under it (`snapshots.rs`), idempotency keys, and replay.
//!
//! Offers [`CommandBus`], [`CommandContext`], [`SnapshotPolicy`], [`fold_stored`],
//! [`Clock`] and replay. Depends on the domain and the store only; never on messaging, the
//! workflow (services), the read side or the server.

pub mod business_metrics;
mod cache;
pub mod clock;
mod context;
pub mod keyring;
pub mod replay;
mod snapshots;

use std::sync::Arc;
use std::time::Duration;

use cornershop_domain::{
    Aggregate, AggregateType, DecodeError, DomainError, DomainEvent, EncodeError, Metadata,
    WriteSchema,
};
use cornershop_store::{
    AppendRequest, EventStore, IdempotentResponse, NewEvent, StoreError, StoredEvent, TimeRange,
};
use rand::Rng;
use uuid::Uuid;

pub use clock::{Clock, SystemClock};
pub use context::{CommandContext, IdempotencyKey, Reply};
pub use keyring::{KeyError, Keyring, MasterKey, Opened};
pub use snapshots::SnapshotPolicy;

use cache::{Origin, StateCache};
use snapshots::Taken;

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<A> {
    pub state: A,
    /// The aggregate's version after the command.
    pub version: u64,
    /// The events appended (empty when the command changed nothing).
    pub events: Vec<StoredEvent>,
    /// The aggregate's whole stream after the command (the events read, then the events
    /// appended), when the command was run with
    /// [`execute_streamed`](CommandBus::execute_streamed); empty otherwise.
    pub stream: Vec<StoredEvent>,
}

/// An aggregate as one command reads it.
struct Loaded<A> {
    state: A,
    version: u64,
    origin: Option<Origin>,
    /// Every event, when the whole stream was asked for.
    stream: Vec<StoredEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0}")]
    Invalid(String),
    #[error("{aggregate_type} '{aggregate_id}' kept changing while the command was applied; gave up after {attempts} attempts")]
    Contended {
        aggregate_type: AggregateType,
        aggregate_id: String,
        attempts: u32,
    },
    #[error("Idempotency-Key '{0}' was already used for a different request")]
    IdempotencyKeyReused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored event cannot be read: {0}")]
    Decode(#[from] DecodeError),
    /// The schema this process writes cannot say the event (see `WriteSchema`).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Keys(KeyError),
}

impl From<KeyError> for AppError {
    fn from(error: KeyError) -> Self {
        match error {
            // An outage of the store is the store's, retried like any other.
            KeyError::Store(e) => Self::Store(e),
            other => Self::Keys(other),
        }
    }
}

/// The write side: command handlers over an event store.
#[derive(Clone)]
pub struct CommandBus {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    max_attempts: u32,
    states: Arc<StateCache>,
    appended: Option<AppendObserver>,
    keyring: Arc<Keyring>,
    snapshots: SnapshotPolicy,
    write_schema: WriteSchema,
}

/// Told of every append the bus makes, with the stored events, inside the span of the
/// request or consumer that sent the command (the server exports the events' trace spans
/// this way when OTLP export is on).
pub(crate) type AppendObserver = Arc<dyn Fn(&[StoredEvent]) + Send + Sync>;

/// The service name that goes into `metadata.source` for each aggregate.
pub fn source_of(aggregate_type: AggregateType) -> &'static str {
    match aggregate_type {
        AggregateType::Cart => "CartService",
        AggregateType::Order => "OrderService",
        AggregateType::Payment => "PaymentService",
        AggregateType::Inventory => "InventoryService",
        AggregateType::Customer => "PrivacyService",
    }
}

impl CommandBus {
    /// A bus over `store`; `keyring` seals the personal data of every event it appends.
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Self {
        Self {
            store,
            clock,
            max_attempts: 200,
            states: Arc::default(),
            appended: None,
            keyring,
            snapshots: SnapshotPolicy::default(),
            write_schema: WriteSchema::CURRENT,
        }
    }

    /// The same bus, loading aggregates from their snapshots and taking them as `policy`
    /// says (`--snapshot-every`; without this call, none).
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// The same bus, writing new events in `schema` (the previous version during a
    /// rolling upgrade, so that processes still on the previous release read them).
    pub fn with_write_schema(mut self, schema: WriteSchema) -> Self {
        self.write_schema = schema;
        self
    }

    /// The schema version new events are written in.
    pub fn write_schema(&self) -> WriteSchema {
        self.write_schema
    }

    /// The keys of personal data.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The same bus, telling `observer` of every append.
    pub fn with_append_observer(mut self, observer: AppendObserver) -> Self {
        self.appended = Some(observer);
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Loads an aggregate's current state and version.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<(A, u64), AppError> {
        let loaded = self.load_cached::<A>(id).await?;
        Ok((loaded.state, loaded.version))
    }

    /// The state from the cache and the events after it (or, not cached, from every
    /// event), with the aggregate's business transaction.
    async fn load_cached<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, AppError> {
        let (state, version, origin) = match self.states.get::<A>(id) {
            Some((cached, version, origin)) => {
                let newer = self
                    .store
                    .load_aggregate_after(A::TYPE, id, version)
                    .await?;
                if newer.is_empty() {
                    // The cache is current: nothing to fold and nothing to store again.
                    return Ok(Loaded {
                        state: cached,
                        version,
                        origin,
                        stream: Vec::new(),
                    });
                }
                let origin = origin.or_else(|| newer.first().map(Origin::of));
                let (state, version) = fold_onto(cached, version, &newer)?;
                (state, version, origin)
            }
            None => self.load_cold::<A>(id).await?,
        };
        self.states.put(id, &state, version, origin.clone());
        Ok(Loaded {
            state,
            version,
            origin,
            stream: Vec::new(),
        })
    }

    /// An aggregate the cache does not hold: from its snapshot and the events after it,
    /// when it has one this build can use (see `snapshots.rs`), or else from every event.
    async fn load_cold<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<(A, u64, Option<Origin>), AppError> {
        if self.snapshots.interval().is_some() {
            if let Some(loaded) = self.load_from_snapshot::<A>(id).await? {
                return Ok(loaded);
            }
        }
        let events = self
            .store
            .load_aggregate(A::TYPE, id, TimeRange::default())
            .await?;
        let (state, version) = fold_stored::<A>(&events)?;
        let origin = events.first().map(Origin::of);
        if let (Some(last), Some(origin)) = (events.last(), &origin) {
            if self.snapshots.folded_enough(events.len()) {
                // A long stream without a usable snapshot: the next cold load need not
                // fold it all again.
                self.save_snapshot_later(Taken::after(
                    id,
                    state.clone(),
                    last,
                    origin.clone(),
                    self.clock.now(),
                ));
            }
        }
        Ok((state, version, origin))
    }

    /// The state from the aggregate's snapshot and the events after it; `None` when it
    /// has no snapshot this build can use (the reason is logged).
    async fn load_from_snapshot<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<(A, u64, Option<Origin>)>, AppError> {
        let snapshot = match self.store.load_snapshot(A::TYPE, id).await {
            Ok(Some(snapshot)) if snapshot.version > 0 => snapshot,
            Ok(_) => return Ok(None),
            Err(error) => {
                // Snapshots are never needed: the events are (and their read says whether
                // the store is there at all).
                tracing::warn!(
                    aggregate_type = A::TYPE.as_str(),
                    aggregate_id = id,
                    %error,
                    "cannot read the snapshot; folding the stream from its first event"
                );
                return Ok(None);
            }
        };
        let state = match snapshots::state_of::<A>(&snapshot) {
            Ok(state) => state,
            Err(unusable) => {
                unusable.log(A::TYPE.as_str(), id);
                return Ok(None);
            }
        };
        // From the snapshot's own version on: its first event proves the snapshot is of
        // this stream.
        let events = self
            .store
            .load_aggregate_after(A::TYPE, id, snapshot.version - 1)
            .await?;
        let tail = match snapshots::tail_after(&snapshot, &events) {
            Ok(tail) => tail,
            Err(stale) => {
                stale.log(A::TYPE.as_str(), id);
                return Ok(None);
            }
        };
        let (state, version) = fold_onto(state, snapshot.version, tail)?;
        let origin = snapshots::origin_of(&snapshot);
        if let Some(last) = tail.last() {
            if self.snapshots.folded_enough(tail.len()) {
                // Snapshots were not taken for a while (another process appended with
                // them off, say): catch up.
                self.save_snapshot_later(Taken::after(
                    id,
                    state.clone(),
                    last,
                    origin.clone(),
                    self.clock.now(),
                ));
            }
        }
        Ok(Some((state, version, Some(origin))))
    }

    fn save_snapshot_later<A: Aggregate>(&self, taken: Taken<A>) {
        snapshots::save_later(self.store.clone(), taken);
    }

    /// Every event of the aggregate, folded (the cache is bypassed: the events are the
    /// point).
    async fn load_stream<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, AppError> {
        let stream = self
            .store
            .load_aggregate(A::TYPE, id, TimeRange::default())
            .await?;
        let (state, version) = fold_stored(&stream)?;
        let origin = stream.first().map(Origin::of);
        self.states.put(id, &state, version, origin.clone());
        Ok(Loaded {
            state,
            version,
            origin,
            stream,
        })
    }

    /// Runs a command: load → decide → append with the version read, retrying on a
    /// concurrency conflict.
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
    ) -> Result<Executed<A>, AppError> {
        self.execute_with(id, command, ctx, None, Load::Cached, |_| None)
            .await
            .map(|(executed, _)| executed.expect("no idempotency key, so never a replay"))
    }

    /// Like [`execute`](Self::execute), for an API request: `reply` turns the outcome into
    /// the response. When the context carries an idempotency key, the response is stored
    /// in the same transaction as the events, and a repeat of the request returns the
    /// stored response (`None` for the outcome) without running the command again.
    pub async fn execute_idempotent<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
        reply: impl Fn(&Executed<A>) -> Reply,
    ) -> Result<Reply, AppError> {
        let (_, reply) = self
            .execute_with(id, command, ctx, None, Load::Cached, |e| Some(reply(e)))
            .await?;
        Ok(reply.expect("a reply is always built"))
    }

    /// Like [`execute_idempotent`](Self::execute_idempotent), reading the aggregate's
    /// whole stream once (not the cached state) and handing it back, with the events
    /// appended, in [`Executed::stream`]: for an answer that needs what only the events
    /// hold (when each happened). `None` for the outcome when the request is a repeat
    /// answered from its idempotency key.
    pub async fn execute_streamed<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
        reply: impl Fn(&Executed<A>) -> Reply,
    ) -> Result<(Option<Executed<A>>, Reply), AppError> {
        let (executed, reply) = self
            .execute_with(id, command, ctx, None, Load::Stream, |e| Some(reply(e)))
            .await?;
        Ok((executed, reply.expect("a reply is always built")))
    }

    async fn replay_of(&self, key: &IdempotencyKey) -> Result<Option<Reply>, AppError> {
        let Some(stored) = self.store.find_idempotent_response(&key.key).await? else {
            return Ok(None);
        };
        if stored.fingerprint != key.fingerprint {
            return Err(AppError::IdempotencyKeyReused(key.key.clone()));
        }
        let body = serde_json::from_str(&stored.body)
            .map_err(|e| StoreError::Corrupt(format!("stored response: {e}")))?;
        Ok(Some(Reply {
            status: stored.status,
            body,
        }))
    }

    /// Runs a command sent by a consumer in reaction to an event, at most once per
    /// `dedupe_key` (derived from the causing event and the step of the reaction). The key
    /// is recorded in the same transaction as the command's events, so a redelivered event
    /// finds it and the command is not applied again: `Ok(None)`.
    pub async fn execute_once<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
        dedupe_key: &str,
    ) -> Result<Option<Executed<A>>, AppError> {
        if self.store.is_applied(dedupe_key).await? {
            return Ok(None);
        }
        match self
            .execute_with(id, command, ctx, Some(dedupe_key), Load::Cached, |_| None)
            .await
        {
            Ok((executed, _)) => Ok(executed),
            Err(AppError::Store(StoreError::AlreadyApplied(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn execute_with<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        ctx: &CommandContext,
        dedupe_key: Option<&str>,
        how: Load,
        reply: impl Fn(&Executed<A>) -> Option<Reply>,
    ) -> Result<(Option<Executed<A>>, Option<Reply>), AppError> {
        if let Some(key) = &ctx.idempotency_key {
            if let Some(replayed) = self.replay_of(key).await? {
                return Ok((None, Some(replayed)));
            }
        }
        for attempt in 1..=self.max_attempts {
            let loaded = match how {
                Load::Cached => self.load_cached::<A>(id).await?,
                Load::Stream => self.load_stream::<A>(id).await?,
            };
            let Loaded {
                state,
                version,
                origin,
                stream,
            } = loaded;
            if let (Some(customer), Some(owner)) = (&ctx.acting_for, state.owner()) {
                if customer != owner {
                    // Exactly the refusal of an aggregate that does not exist (whose empty
                    // state knows no id): the caller cannot tell the two apart.
                    return Err(DomainError::NotFound {
                        aggregate: A::TYPE,
                        id: String::new(),
                    }
                    .into());
                }
            }
            // A command that continues the aggregate's business transaction joins it.
            let inherited;
            let ctx = match (&origin, ctx.continues_transaction) {
                (Some(origin), true) => {
                    inherited = CommandContext {
                        correlation_id: origin.correlation_id.clone(),
                        trace_id: Some(origin.trace_id.clone()),
                        ..ctx.clone()
                    };
                    &inherited
                }
                _ => ctx,
            };
            let mut decided = match state.decide(command) {
                Ok(decided) => decided,
                Err(refusal) => {
                    // The same request may have run concurrently and won, so that the state
                    // read now refuses it (a repeated "create" finds the cart existing):
                    // answer as that run did.
                    if let Some(key) = &ctx.idempotency_key {
                        if let Some(replayed) = self.replay_of(key).await? {
                            return Ok((None, Some(replayed)));
                        }
                    }
                    return Err(refusal.into());
                }
            };
            // Personal data is sealed before anything holds it: the state cache, the
            // stored events, the reply.
            for event in &mut decided {
                self.keyring.seal_event(event).await?;
            }
            let now = self.clock.now();
            let mut next = state;
            let new_events: Vec<NewEvent> = decided
                .iter()
                .map(|event| {
                    next = next.clone().evolve(event);
                    self.new_event(event, now, ctx)
                })
                .collect::<Result<_, _>>()?;
            // The reply is built from the outcome as it will be once appended.
            let mut executed = Executed {
                state: next,
                version: version + decided.len() as u64,
                events: Vec::new(),
                stream,
            };
            let built = reply(&executed);
            let idempotency = match (&ctx.idempotency_key, &built) {
                (Some(key), Some(r)) => Some(IdempotentResponse {
                    key: key.key.clone(),
                    fingerprint: key.fingerprint.clone(),
                    status: r.status,
                    body: r.body.to_string(),
                }),
                _ => None,
            };
            if new_events.is_empty() && idempotency.is_none() {
                return Ok((Some(executed), built));
            }
            let request = AppendRequest {
                aggregate_type: A::TYPE,
                aggregate_id: id.to_string(),
                expected_version: version,
                events: new_events,
                idempotency,
                dedupe_key: dedupe_key.map(str::to_string),
            };
            match self.store.append(request).await {
                Ok(stored) => {
                    business_metrics::count(&decided);
                    if let Some(observer) = &self.appended {
                        observer(&stored);
                    }
                    let origin = origin.or_else(|| stored.first().map(Origin::of));
                    if let (Some(last), Some(origin)) = (stored.last(), &origin) {
                        if self.snapshots.crossed(version, executed.version) {
                            self.save_snapshot_later(Taken::after(
                                id,
                                executed.state.clone(),
                                last,
                                origin.clone(),
                                now,
                            ));
                        }
                    }
                    self.states
                        .put(id, &executed.state, executed.version, origin);
                    if how == Load::Stream {
                        executed.stream.extend(stored.iter().cloned());
                    }
                    executed.events = stored;
                    return Ok((Some(executed), built));
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(aggregate_id = id, attempt, "concurrency conflict; retrying");
                    // A little jitter so that competing writers do not retry in lockstep.
                    let pause = rand::rng().random_range(0..=attempt.min(20)) as u64;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(StoreError::IdempotencyKeyTaken(_)) => {
                    // The same request ran concurrently and won: answer as it did.
                    let key = ctx.idempotency_key.as_ref().expect("a key was given");
                    let replayed = self
                        .replay_of(key)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()))?;
                    return Ok((None, Some(replayed)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contended {
            aggregate_type: A::TYPE,
            aggregate_id: id.to_string(),
            attempts: self.max_attempts,
        })
    }

    fn new_event(
        &self,
        event: &DomainEvent,
        now: chrono::DateTime<chrono::Utc>,
        ctx: &CommandContext,
    ) -> Result<NewEvent, EncodeError> {
        Ok(NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event.event_type().to_string(),
            schema_version: self.write_schema.version(),
            timestamp: now,
            data: self.write_schema.encode(event)?,
            metadata: Metadata {
                correlation_id: ctx.correlation_id.clone(),
                causation_id: ctx.causation_id.clone(),
                user_id: ctx.user_id.clone(),
                source: source_of(event.aggregate_type()).to_string(),
            },
            trace_id: ctx.trace_id.clone(),
        })
    }
}

/// How a command reads its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// The cached state and the events after it.
    Cached,
    /// Every event, kept for the answer.
    Stream,
}

/// Folds stored events into a state with the aggregate's own `evolve`: the one function
/// the write side, replay and time travel all share.
pub fn fold_stored<A: Aggregate>(events: &[StoredEvent]) -> Result<(A, u64), AppError> {
    fold_onto(A::default(), 0, events)
}

/// Applies `events` (the ones after `version`) to `state`.
fn fold_onto<A: Aggregate>(
    mut state: A,
    mut version: u64,
    events: &[StoredEvent],
) -> Result<(A, u64), AppError> {
    metrics::counter!("events_replayed_total", "aggregate_type" => A::TYPE.as_str())
        .increment(events.len() as u64);
    for stored in events {
        state = state.evolve(&stored.envelope.decode()?);
        version = stored.envelope.version;
    }
    Ok((state, version))
}
