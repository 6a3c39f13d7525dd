//! How each read and write of the event store costs as the log grows: the store is grown
//! to each of `--sizes` events, and at each size every operation is timed `--samples`
//! times (the median and p90 are reported). The figure that matters is the ratio between
//! sizes, measured in the same run: a cost that stays flat is within 2x from the smallest
//! size to the largest.
//!
//! The log grown: carts of 100 events each (one append per cart, a `CartCreated` and 99
//! `ItemAddedToCart`), so `CartCreated` is 1% of the log, timestamps in append order.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use cornershop_store::{
    AppendRequest, EventQuery, EventStore, PgEventStore, SqliteEventStore, TimeRange,
};
use serde_json::json;

use crate::cli::{Backend, ScalingArgs};
use crate::{emit, new_event, round3};

/// Events per grown cart (and per append while growing).
const CART: u64 = 100;

/// Events per page of the timed queries.
const PAGE: u64 = 100;

pub(crate) async fn scaling(args: &ScalingArgs) -> anyhow::Result<()> {
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    let temp = args.store.temp_dir()?;
    let store: Arc<dyn EventStore> = match args.store.backend {
        Backend::Sqlite => Arc::new(SqliteEventStore::open(temp.path()).await?),
        Backend::Postgres => {
            Arc::new(PgEventStore::connect(args.store.database_url("scaling")?).await?)
        }
    };
    let backend = args.store.backend.name();
    let planner = match args.store.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            Some(sqlx::PgPool::connect(args.store.database_url("scaling")?).await?)
        }
    };
    let mut log = Grown::default();
    for size in sizes {
        let started = Instant::now();
        log.grow(&*store, size).await?;
        if let Some(pool) = &planner {
            // The log grew tenfold in seconds, faster than autovacuum's next look (a
            // minute): without fresh statistics PostgreSQL plans the table as the size
            // before (a bitmap scan and a sort where a walk of the primary key returns
            // the first 100 rows, parallel workers for an empty range), which a store
            // that grew at a shop's pace never meets.
            sqlx::query("ANALYZE events").execute(pool).await?;
        }
        emit(json!({
            "kind": "scaling-grow", "backend": backend, "events": log.events,
            "seconds": round3(started.elapsed().as_secs_f64()),
        }));
        for operation in OPERATIONS {
            let mut took = Vec::with_capacity(args.samples);
            let mut fewest_rows = usize::MAX;
            for sample in 0..args.samples {
                let started = Instant::now();
                let rows = operation.run(&*store, &log, sample).await?;
                took.push(started.elapsed().as_secs_f64() * 1000.0);
                fewest_rows = fewest_rows.min(rows);
            }
            took.sort_by(f64::total_cmp);
            emit(json!({
                "kind": "scaling", "backend": backend, "events": log.events,
                "operation": operation.name(), "samples": args.samples,
                "fewestRows": fewest_rows,
                "medianMs": round3(took[took.len() / 2]),
                "p90Ms": round3(took[took.len() * 9 / 10]),
            }));
        }
        // What the timed appends added is part of the log from now on.
        log.events = store.stats().await?.total_events;
    }
    store.close().await;
    Ok(())
}

/// The log written so far: how many events, how many carts, and each cart's first
/// timestamp (to pick time ranges by).
#[derive(Default)]
struct Grown {
    events: u64,
    carts: u64,
    started_at: Vec<DateTime<Utc>>,
}

impl Grown {
    async fn grow(&mut self, store: &dyn EventStore, size: u64) -> anyhow::Result<()> {
        while self.events < size {
            let cart = format!("cart-{:08}", self.carts);
            let mut events: Vec<_> = (0..CART).map(|n| new_event(&cart, n)).collect();
            events[0].event_type = "CartCreated".to_string();
            self.started_at.push(events[0].timestamp);
            store
                .append(AppendRequest::new(AggregateType::Cart, &cart, 0, events))
                .await?;
            self.carts += 1;
            self.events += CART;
        }
        Ok(())
    }

    /// The cart `sample` steps into the log's middle (different samples, different carts).
    fn cart(&self, sample: usize) -> u64 {
        (self.carts / 2 + sample as u64 * 7) % self.carts
    }
}

#[derive(Clone, Copy)]
enum Operation {
    /// One event to a new aggregate (expected version 0).
    Append,
    /// A cart's 100 events, from the middle of the log.
    LoadAggregate,
    /// `events?after=` near the head, 100 events.
    ReadAfter,
    /// `events?eventType=CartCreated&after=<middle>&limit=100`: a 1% type, a full page
    /// at every size.
    QueryEventType,
    /// `events?from=&to=&limit=100`: the middle tenth of the log's time span.
    QueryTimeRange,
    /// `GET /api/eventstore/stats`.
    Stats,
}

const OPERATIONS: [Operation; 6] = [
    Operation::Append,
    Operation::LoadAggregate,
    Operation::ReadAfter,
    Operation::QueryEventType,
    Operation::QueryTimeRange,
    Operation::Stats,
];

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Append => "append",
            Operation::LoadAggregate => "load aggregate",
            Operation::ReadAfter => "events?after= (near the head)",
            Operation::QueryEventType => "events?eventType= (1% of the log)",
            Operation::QueryTimeRange => "events?from=&to= (middle tenth)",
            Operation::Stats => "stats",
        }
    }

    /// Runs the operation once; the rows it returned (1 for an append or the statistics).
    async fn run(
        self,
        store: &dyn EventStore,
        log: &Grown,
        sample: usize,
    ) -> anyhow::Result<usize> {
        let page = |query: EventQuery| EventQuery {
            limit: PAGE as u32,
            ..query
        };
        let returned = match self {
            Operation::Append => {
                let id = format!("appended-{}-{sample}", log.events);
                store
                    .append(AppendRequest::new(
                        AggregateType::Cart,
                        &id,
                        0,
                        vec![new_event(&id, 0)],
                    ))
                    .await?
                    .len()
            }
            Operation::LoadAggregate => store
                .load_aggregate(
                    AggregateType::Cart,
                    &format!("cart-{:08}", log.cart(sample)),
                    TimeRange::default(),
                )
                .await?
                .len(),
            Operation::ReadAfter => {
                let head = store.head_position().await?;
                store
                    .read_log(head.saturating_sub(1000 + sample as u64), 100)
                    .await?
                    .len()
            }
            Operation::QueryEventType => {
                // From the middle, but never so late that fewer than a page of the type
                // follow: a short page at the smallest size would time fewer rows there.
                let last_full_page = log.carts.saturating_sub(PAGE) * CART;
                let after = (log.cart(sample) * CART).min(last_full_page);
                store
                    .query(&page(EventQuery {
                        after,
                        event_type: Some("CartCreated".to_string()),
                        ..EventQuery::default()
                    }))
                    .await?
                    .len()
            }
            Operation::QueryTimeRange => {
                let carts = log.started_at.len();
                let from = log.started_at[carts * 45 / 100 + sample % (carts / 100).max(1)];
                let to = log.started_at[carts * 55 / 100];
                store
                    .query(&page(EventQuery {
                        range: TimeRange {
                            from: Some(from),
                            to: Some(to),
                        },
                        ..EventQuery::default()
                    }))
                    .await?
                    .len()
            }
            Operation::Stats => {
                store.stats().await?;
                1
            }
        };
        anyhow::ensure!(returned > 0, "{} returned nothing", self.name());
        Ok(returned)
    }
}
