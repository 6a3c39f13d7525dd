//! The read models on SQL: one engine for SQLite and PostgreSQL.
//!
//! The tables hold only 64-bit integers and text (times in microseconds, money in cents),
//! so the statements are the same on both backends (`?` placeholders, numbered for
//! PostgreSQL); what differs is set apart: in `engine` how they run (rusqlite on SQLite,
//! sqlx on PostgreSQL), in [`Dialect`] the integer type of the DDL, and in `connect` the
//! connection settings and the migrations.
//!
//! - **SQLite** (embedded): `readmodels.db` next to the event store's `cornershop.db`, in WAL
//!   mode, written through one connection (as the event store is), read through read-only
//!   ones. `synchronous=NORMAL`: a commit survives a crash of the process; after a
//!   power loss the last commits may be gone (derived data: `projections verify` finds it,
//!   `projections rebuild` repairs it), and an fsync per projected event would cap the
//!   projection at a few hundred events a second.
//! - **PostgreSQL** (production): the schema `readmodels` of the event store's database;
//!   the connections' `search_path` is that schema, so the names are the same as on SQLite.
//!   `synchronous_commit=off` for the same reason as `synchronous=NORMAL` on SQLite: a
//!   crash of PostgreSQL itself may lose the last read-model commits, never corrupt them.
//!
//! **Exactly once.** A live update runs in one transaction: lock the projection's state
//! row (`UPDATE rm_projection_state`), apply the effect, insert the event id into
//! `rm_applied` (a unique violation means it was applied before: everything rolls back),
//! commit. On SQLite the whole transaction is one call on a blocking thread. A consumer that dies
//! after the commit and before its transport checkpoint gets the event again and changes
//! nothing. Locking the state row first also orders every live update against a rebuild's
//! swap, which locks the same row first (no deadlock, no update lost between them).
//!
//! **Rebuild.** Shadow tables (`rm_shadow_*`) are created and filled from the event store's
//! log in pages, one transaction per page, while the live projection keeps writing the live
//! tables and queries keep reading them. Then one transaction locks the state row (the live
//! projection waits), applies what the log gained meanwhile, drops the live tables, renames
//! the shadows in their place, indexes them, and records the new position and generation.
//! An event the live projection receives later and the rebuild already applied is in the
//! new `rm_applied`: it changes nothing.
//!
//! The files, one concern each: this one holds the type, the [`Dialect`], the helpers that
//! run statements, and the [`ReadModelStore`] implementation, which hands each method to
//! the file of its concern: `connect` (opening and migrating either backend), `engine`
//! (running statements and decoding rows on either backend), `project`
//! (what each event changes, applied exactly once), `batch` (an effect's statements, and
//! a rebuild's page of them as multi-row statements), `rebuild` (the shadow tables, the
//! lease and the swap) and `queries` (the reads the API serves).

mod batch;
mod connect;
mod engine;
mod project;
mod queries;
mod rebuild;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_store::EventLog;

use crate::{
    InventoryReadModel, OrderPage, OrderQuery, OrderReadModel, ProjectedEvent, ProjectionState,
    ReadModelError, ReadModelStore, RebuildProgress, RebuildReport, SalesQuery, SalesReport,
};

use batch::{insert, push, Stmt};
pub use connect::{connect_postgres, open_sqlite};
use engine::{Cells, Engine};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn int(self) -> &'static str {
        match self {
            Self::Sqlite => "INTEGER",
            Self::Postgres => "BIGINT",
        }
    }
}

/// The read models in a SQL database: see the module documentation.
pub struct SqlReadModels {
    dialect: Dialect,
    engine: Engine,
}

/// A bind parameter.
enum Arg {
    I(i64),
    T(String),
}

fn t(s: &str) -> Arg {
    Arg::T(s.to_string())
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, ReadModelError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| ReadModelError::Corrupt(format!("timestamp {us} is out of range")))
}

fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, ReadModelError> {
    us.map(from_micros).transpose()
}

#[async_trait]
impl ReadModelStore for SqlReadModels {
    async fn apply(
        &self,
        projection: &str,
        event: &ProjectedEvent,
    ) -> Result<bool, ReadModelError> {
        project::apply(self, projection, event).await
    }

    async fn apply_all(
        &self,
        projection: &str,
        events: &[ProjectedEvent],
    ) -> Result<Vec<bool>, ReadModelError> {
        project::apply_all(self, projection, events).await
    }

    async fn order(&self, order_id: &str) -> Result<Option<OrderReadModel>, ReadModelError> {
        queries::order(self, order_id).await
    }

    async fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ReadModelError> {
        queries::orders(self, query).await
    }

    async fn order_ids(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, ReadModelError> {
        queries::order_ids(self, after, limit).await
    }

    async fn order_status_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, ReadModelError> {
        queries::order_status_counts(self).await
    }

    async fn inventory(
        &self,
        low_stock_only: bool,
    ) -> Result<Vec<InventoryReadModel>, ReadModelError> {
        queries::inventory(self, low_stock_only).await
    }

    async fn sales_report(&self, query: &SalesQuery) -> Result<SalesReport, ReadModelError> {
        queries::sales_report(self, query).await
    }

    async fn projection_state(
        &self,
        name: &str,
    ) -> Result<Option<ProjectionState>, ReadModelError> {
        queries::projection_state(self, name).await
    }

    async fn rebuild(
        &self,
        name: &str,
        source: &dyn EventLog,
        progress: &(dyn Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, ReadModelError> {
        rebuild::rebuild(self, name, source, progress).await
    }

    async fn close(&self) {
        self.engine.close().await;
    }
}
