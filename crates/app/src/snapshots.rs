//! Snapshots of long streams: an aggregate the state cache does not hold loads from its
//! latest snapshot and the events after it, instead of folding every event since the
//! first (a popular SKU's stock has thousands of reservations).
//!
//! Snapshots are derived data. The events alone make a state; a snapshot only saves
//! folding them, so it is never required and never trusted blindly:
//!
//! - **Used** only when it is of the aggregate's current `STATE_SCHEMA`, its state decodes,
//!   and it is not stale. **Stale** means: the stream does not hold, at the snapshot's
//!   version, the very event the snapshot was taken after (same version, same eventId).
//!   That covers a snapshot above the stream's current version (a store restored from a
//!   backup older than the snapshot) and one of another stream under the same id. Events
//!   are immutable and versions have no gaps, so a stream that holds that event holds every
//!   event the snapshot folded, and the snapshot's state is what folding them gives.
//!   Anything else (another schema, a state that does not decode, a stale snapshot, or a
//!   store that cannot read snapshots just now) is logged and the stream folded from its
//!   first event, exactly as without snapshots.
//! - **Taken** after an append that makes the aggregate's version cross a multiple of N
//!   (`--snapshot-every`), of the state the append reached; and after a cold load that had
//!   to fold N events or more (so that a missing or stale snapshot is rebuilt by the next
//!   load that needs it). Saved by a task of its own, after the command has its answer: a
//!   save is never part of an append's transaction, and one that fails is logged, not
//!   reported to the caller.
//! - **Never holds personal data in clear.** The bus seals a new event's personal values
//!   before `evolve`, so a state holds them sealed already; a state that holds one in clear
//!   (folded from a schema-1 event, written before sealing existed) is not kept.
//! - **Exact.** A state that does not read back from its JSON as itself is not kept, so a
//!   load from a snapshot gives what the full fold gives.
//!
//! Replay and time travel do not use snapshots: they read the events up to their instant
//! anyway (they list them), and fold them from the first.

use std::num::NonZeroU64;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cornershop_domain::Aggregate;
use cornershop_store::{Snapshot, Snapshots, StoredEvent};
use uuid::Uuid;

use crate::cache::Origin;

/// When the bus takes snapshots: every N events of an aggregate (`--snapshot-every`).
/// Off (0), none is taken and none is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: Option<NonZeroU64>,
}

impl SnapshotPolicy {
    /// A snapshot each time an aggregate's version crosses a multiple of `events`; 0 for
    /// none.
    pub fn every(events: u64) -> Self {
        Self {
            every: NonZeroU64::new(events),
        }
    }

    /// N, when snapshots are on.
    pub fn interval(self) -> Option<u64> {
        self.every.map(NonZeroU64::get)
    }

    /// Whether an append from version `before` to `after` crossed a multiple of N.
    pub(crate) fn crossed(self, before: u64, after: u64) -> bool {
        self.interval().is_some_and(|n| after / n > before / n)
    }

    /// Whether a load that folded `folded` events should leave a snapshot behind.
    pub(crate) fn folded_enough(self, folded: usize) -> bool {
        self.interval().is_some_and(|n| folded as u64 >= n)
    }
}

/// Why a snapshot was not used (the stream is then folded from its first event).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("it was written under state schema {found}, not {current}")]
    OtherSchema { found: u32, current: u32 },
    #[error("its state does not decode: {0}")]
    Undecodable(serde_json::Error),
    #[error(
        "it is stale: the stream does not hold, at version {version}, the event {event_id} \
         it was taken after"
    )]
    Stale { version: u64, event_id: Uuid },
}

impl Unusable {
    /// Another schema is expected once after every change of a state's shape; the others
    /// say something is off (a restored store, a shape changed without its number).
    pub(crate) fn log(&self, aggregate_type: &str, aggregate_id: &str) {
        match self {
            Unusable::OtherSchema { .. } => tracing::info!(
                aggregate_type,
                aggregate_id,
                reason = %self,
                "snapshot ignored; folding the stream from its first event"
            ),
            _ => tracing::warn!(
                aggregate_type,
                aggregate_id,
                reason = %self,
                "snapshot ignored; folding the stream from its first event"
            ),
        }
    }
}

/// The snapshot's state, when this build can read it: of the aggregate's current state
/// schema, and decoding. Whether it is stale is for the events to say ([`tail_after`]).
pub(crate) fn state_of<A: Aggregate>(snapshot: &Snapshot) -> Result<A, Unusable> {
    if snapshot.state_schema != A::STATE_SCHEMA {
        return Err(Unusable::OtherSchema {
            found: snapshot.state_schema,
            current: A::STATE_SCHEMA,
        });
    }
    serde_json::from_str(&snapshot.state).map_err(Unusable::Undecodable)
}

/// The events after the snapshot, given the events read from the snapshot's own version
/// on: the first of them must be the event the snapshot was taken after, or the snapshot
/// is stale.
pub(crate) fn tail_after<'a>(
    snapshot: &Snapshot,
    from_its_version: &'a [StoredEvent],
) -> Result<&'a [StoredEvent], Unusable> {
    match from_its_version.split_first() {
        Some((at, tail))
            if at.envelope.version == snapshot.version
                && at.envelope.event_id == snapshot.event_id =>
        {
            Ok(tail)
        }
        _ => Err(Unusable::Stale {
            version: snapshot.version,
            event_id: snapshot.event_id,
        }),
    }
}

/// The business transaction a snapshot records.
pub(crate) fn origin_of(snapshot: &Snapshot) -> Origin {
    Origin {
        correlation_id: snapshot.origin_correlation_id.clone(),
        trace_id: snapshot.origin_trace_id.clone(),
    }
}

/// What a snapshot is taken of: the state after the event `version` (whose id is
/// `event_id`).
pub(crate) struct Taken<A> {
    pub(crate) aggregate_id: String,
    pub(crate) state: A,
    pub(crate) version: u64,
    pub(crate) event_id: Uuid,
    pub(crate) origin: Origin,
    pub(crate) at: DateTime<Utc>,
}

impl<A> Taken<A> {
    /// The state after `last`.
    pub(crate) fn after(
        aggregate_id: &str,
        state: A,
        last: &StoredEvent,
        origin: Origin,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            aggregate_id: aggregate_id.to_string(),
            state,
            version: last.envelope.version,
            event_id: last.envelope.event_id,
            origin,
            at,
        }
    }
}

/// Saves a snapshot of `taken` on a task of its own, best effort: the caller does not
/// wait, and a failure is logged. Nothing is saved when the state holds a personal value
/// in clear, or does not read back from its JSON as itself (a load from it would not give
/// the fold's state).
pub(crate) fn save_later<A: Aggregate>(store: Arc<dyn Snapshots>, taken: Taken<A>) {
    tokio::spawn(async move {
        let aggregate_id = taken.aggregate_id.clone();
        let Some(snapshot) = snapshot_of(taken) else {
            return;
        };
        match store.save_snapshot(&snapshot).await {
            Ok(()) => tracing::debug!(
                aggregate_type = A::TYPE.as_str(),
                aggregate_id,
                version = snapshot.version,
                "snapshot saved"
            ),
            Err(error) => tracing::warn!(
                aggregate_type = A::TYPE.as_str(),
                aggregate_id,
                version = snapshot.version,
                %error,
                "cannot save a snapshot; loads fold more events until one is saved"
            ),
        }
    });
}

/// The snapshot of `taken`, if the state can be kept as one (see [`save_later`]).
pub(crate) fn snapshot_of<A: Aggregate>(taken: Taken<A>) -> Option<Snapshot> {
    let Taken {
        aggregate_id,
        state,
        version,
        event_id,
        origin,
        at,
    } = taken;
    let refuse = |why: &str| {
        tracing::warn!(
            aggregate_type = A::TYPE.as_str(),
            aggregate_id = aggregate_id.as_str(),
            why,
            "no snapshot taken"
        );
        None
    };
    if state.holds_clear_personal_data() {
        // Expected of old orders (schema-1 events): not worth a warning.
        tracing::debug!(
            aggregate_type = A::TYPE.as_str(),
            aggregate_id = aggregate_id.as_str(),
            "no snapshot of a state holding personal data in clear"
        );
        return None;
    }
    let Ok(text) = serde_json::to_string(&state) else {
        return refuse("the state does not serialize");
    };
    // Equal, and writing the same text again: `Decimal`'s equality ignores the scale that
    // its text keeps.
    let reads_back = serde_json::from_str::<A>(&text).is_ok_and(|back| {
        back == state && serde_json::to_string(&back).is_ok_and(|again| again == text)
    });
    if !reads_back {
        return refuse("the state does not read back from its JSON as itself");
    }
    Some(Snapshot {
        aggregate_type: A::TYPE,
        aggregate_id,
        version,
        event_id,
        state_schema: A::STATE_SCHEMA,
        state: text,
        origin_correlation_id: origin.correlation_id,
        origin_trace_id: origin.trace_id,
        taken_at: at,
    })
}

#[cfg(test)]
mod tests {
    use cornershop_domain::{Order, OrderStatus, Personal, Sealed};

    use super::*;

    fn taken(state: Order) -> Taken<Order> {
        Taken {
            aggregate_id: "order-1".into(),
            state,
            version: 2,
            event_id: Uuid::new_v4(),
            origin: Origin {
                correlation_id: "corr-1".into(),
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            },
            at: Utc::now(),
        }
    }

    #[test]
    fn a_state_holding_personal_data_in_clear_is_never_kept() {
        let sealed = Order {
            order_id: "order-1".into(),
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
            status: OrderStatus::Validated,
            email: Personal::Sealed(Sealed {
                key_id: "dk_1".into(),
                sealed: "AAAA".into(),
            }),
            ..Order::default()
        };
        let snapshot = snapshot_of(taken(sealed.clone())).expect("a sealed state is kept");
        assert_eq!(snapshot.state_schema, Order::STATE_SCHEMA);
        assert_eq!(
            serde_json::from_str::<Order>(&snapshot.state).unwrap(),
            sealed
        );
        // As folded from a schema-1 event, written before sealing existed.
        let clear = Order {
            email: Personal::clear("ada@example.com"),
            ..sealed
        };
        assert_eq!(snapshot_of(taken(clear)), None);
    }

    #[test]
    fn a_state_that_does_not_read_back_as_itself_is_never_kept() {
        // No order has an empty id once it exists; the default state's reads back as none.
        assert_eq!(snapshot_of(taken(Order::default())), None);
    }

    #[test]
    fn an_append_takes_one_when_it_crosses_a_multiple() {
        let policy = SnapshotPolicy::every(500);
        assert!(!policy.crossed(0, 499));
        assert!(policy.crossed(499, 500));
        assert!(policy.crossed(498, 502));
        assert!(!policy.crossed(500, 501));
        assert!(policy.crossed(999, 1000));
        assert!(policy.crossed(0, 1500));
        let off = SnapshotPolicy::every(0);
        assert_eq!(off, SnapshotPolicy::default());
        assert!(!off.crossed(0, 1_000_000));
        assert!(!off.folded_enough(usize::MAX));
        assert!(policy.folded_enough(500));
        assert!(!policy.folded_enough(499));
    }
}
