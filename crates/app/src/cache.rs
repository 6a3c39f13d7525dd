//! The bus's state cache: the latest state this process has seen of recently used
//! aggregates, with its version and business transaction.

use std::sync::Arc;

use cornershop_domain::{Aggregate, AggregateType};
use cornershop_store::StoredEvent;

/// The business transaction an aggregate belongs to: the correlation and trace ids of its
/// first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) correlation_id: String,
    pub(crate) trace_id: String,
}

impl Origin {
    pub(crate) fn of(first: &StoredEvent) -> Self {
        Self {
            correlation_id: first.envelope.metadata.correlation_id.clone(),
            trace_id: first.trace_id.clone(),
        }
    }
}

/// The latest state this process has seen of recently used aggregates, with its version.
/// A load reads only the events after the cached version (another process may have
/// appended since), so a hot aggregate (a popular SKU's stock) is not folded from its
/// first event for every command. Always a starting point, never the answer: the store
/// stays the source of truth.
#[derive(Default)]
pub(crate) struct StateCache {
    entries: std::sync::Mutex<std::collections::HashMap<CacheKey, CachedState>>,
}

type CacheKey = (AggregateType, String);

/// A state, its version and its business transaction, type-erased (each aggregate type
/// downcasts its own).
struct CachedState {
    version: u64,
    state: Arc<dyn std::any::Any + Send + Sync>,
    origin: Option<Origin>,
}

/// Aggregates kept in the [`StateCache`]; past this it starts again empty (cheap, and
/// the hot ones come back at once).
const STATE_CACHE_CAPACITY: usize = 10_000;

impl StateCache {
    pub(crate) fn get<A: Aggregate>(&self, id: &str) -> Option<(A, u64, Option<Origin>)> {
        let entries = self.entries.lock().expect("state cache lock");
        let cached = entries.get(&(A::TYPE, id.to_string()))?;
        cached
            .state
            .downcast_ref::<A>()
            .map(|s| (s.clone(), cached.version, cached.origin.clone()))
    }

    pub(crate) fn put<A: Aggregate>(
        &self,
        id: &str,
        state: &A,
        version: u64,
        origin: Option<Origin>,
    ) {
        let mut entries = self.entries.lock().expect("state cache lock");
        if entries.len() >= STATE_CACHE_CAPACITY {
            entries.clear();
        }
        let key = (A::TYPE, id.to_string());
        // Never replace a newer state with an older one (concurrent commands).
        if entries
            .get(&key)
            .is_some_and(|cached| cached.version > version)
        {
            return;
        }
        entries.insert(
            key,
            CachedState {
                version,
                state: Arc::new(state.clone()),
                origin,
            },
        );
    }
}
