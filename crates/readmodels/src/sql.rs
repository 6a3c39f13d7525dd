//! The read models on SQL: one engine for SQLite and PostgreSQL.
//!
//! The tables hold only 64-bit integers and text (times in microseconds, money in cents),
//! so the statements are the same on both backends, and they run through `sqlx::Any`; what
//! differs is set apart in [`Dialect`]: placeholders (`?` or `$n`), the integer type of the
//! DDL, connection settings and the migrations.
//!
//! - **SQLite** (embedded): `readmodels.db` next to the event store's `cornershop.db`, in WAL
//!   mode, written through a pool of one connection (as the event store is), read through
//!   its own pool. `synchronous=NORMAL`: a commit survives a crash of the process; after a
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
//! commit. On SQLite these statements go in one multi-statement call. A consumer that dies
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

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::{DomainEvent, LineItem};
use cornershop_store::EventStore;
use futures::FutureExt;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::AnyConnection;
use sqlx::{Any, AnyPool, Connection, Executor, Row};

use crate::schema::{render, statements, INDEXES, SWAPPED, TABLES};
use crate::*;

/// The read models' file in the data directory (embedded).
pub const SQLITE_FILE: &str = "readmodels.db";
/// The read models' schema in the event store's database (production).
pub const PG_SCHEMA: &str = "readmodels";

/// Events per page (and per transaction) of a rebuild.
const PAGE: u32 = 2000;
/// A rebuild's lease is taken over when its holder has been silent this long.
const LEASE_STALE: Duration = Duration::from_secs(120);
/// An advisory lock key for creating the schema ("CSRDMDLS").
const SCHEMA_LOCK: i64 = 0x4353_5244_4D44_4C53;

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
    writer: AnyPool,
    reader: AnyPool,
}

/// A bind parameter.
enum Arg {
    I(i64),
    T(String),
}

fn bind<'q>(sql: &'q str, args: Vec<Arg>) -> Query<'q, Any, AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match arg {
            Arg::I(v) => query.bind(v),
            Arg::T(v) => query.bind(v),
        };
    }
    query
}

/// A statement and its arguments, run alone or in a batch.
type Stmt = (String, Vec<Arg>);

fn push(statements: &mut Vec<Stmt>, sql: &str, args: Vec<Arg>) {
    statements.push((sql.to_string(), args));
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
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

fn bad(event: &ProjectedEvent, reason: &str) -> ReadModelError {
    ReadModelError::BadEvent {
        event_id: event.event_id,
        event_type: event.event.event_type().to_string(),
        reason: reason.to_string(),
    }
}

fn io_error(what: &str, e: std::io::Error) -> ReadModelError {
    ReadModelError::Corrupt(format!("{what}: {e}"))
}

/// Opens (creating and migrating) the embedded read models: `readmodels.db` in `data_dir`.
pub async fn open_sqlite(data_dir: &Path) -> Result<SqlReadModels, ReadModelError> {
    sqlx::any::install_default_drivers();
    std::fs::create_dir_all(data_dir).map_err(|e| {
        io_error(
            &format!("cannot create data directory {}", data_dir.display()),
            e,
        )
    })?;
    let path = data_dir.join(SQLITE_FILE);
    let path = path
        .to_str()
        .ok_or_else(|| ReadModelError::Corrupt(format!("path {} is not UTF-8", path.display())))?
        .to_string();
    let writer = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(120))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 30000;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&format!("sqlite://{path}?mode=rwc"))
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
    let reader = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 30000;").await?;
                Ok(())
            })
        })
        .connect(&format!("sqlite://{path}?mode=ro"))
        .await?;
    Ok(SqlReadModels {
        dialect: Dialect::Sqlite,
        writer,
        reader,
    })
}

/// Connects to the production read models: the schema `readmodels` of the event store's
/// database at `database_url`, created and migrated when needed.
pub async fn connect_postgres(database_url: &str) -> Result<SqlReadModels, ReadModelError> {
    sqlx::any::install_default_drivers();
    {
        // Processes that start together must not race to create the schema.
        let options = sqlx::postgres::PgConnectOptions::from_str(database_url)?;
        let mut setup = sqlx::PgConnection::connect_with(&options).await?;
        let mut tx = setup.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        setup.close().await?;
    }
    let pool = AnyPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // synchronous_commit off: as on SQLite, a read-model commit does not wait
                // for its WAL flush (derived data; see the module documentation).
                conn.execute(
                    format!("SET search_path TO {PG_SCHEMA}; SET synchronous_commit TO off")
                        .as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect(database_url)
        .await?;
    // sqlx's migrations table lands in the schema too (first on the search path), apart
    // from the event store's.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(SqlReadModels {
        dialect: Dialect::Postgres,
        writer: pool.clone(),
        reader: pool,
    })
}

const ORDER_COLUMNS: &str = "order_id, cart_id, customer_id, status, order_version, \
    total_cents, items, payment_id, payment_status, carrier, tracking_number, cancel_reason, \
    correlation_id, created_us, validated_us, confirmed_us, shipped_us, delivered_us, \
    cancelled_us";

fn decode_order(row: &AnyRow) -> Result<OrderReadModel, ReadModelError> {
    let text = |name: &str| -> Result<String, ReadModelError> {
        let value: Option<String> = row.try_get(name)?;
        value.ok_or_else(|| ReadModelError::Corrupt(format!("order row without {name}")))
    };
    let items: Vec<LineItem> = serde_json::from_str(&text("items")?)
        .map_err(|e| ReadModelError::Corrupt(format!("order items: {e}")))?;
    let total: Option<i64> = row.try_get("total_cents")?;
    let created: Option<i64> = row.try_get("created_us")?;
    Ok(OrderReadModel {
        order_id: row.try_get("order_id")?,
        cart_id: text("cart_id")?,
        customer_id: text("customer_id")?,
        status: text("status")?,
        total_amount: money(total.unwrap_or(0)),
        items: lines_of(&items),
        payment_id: row.try_get("payment_id")?,
        payment_status: row.try_get("payment_status")?,
        carrier: row.try_get("carrier")?,
        tracking_number: row.try_get("tracking_number")?,
        cancel_reason: row.try_get("cancel_reason")?,
        created_at: from_micros(
            created
                .ok_or_else(|| ReadModelError::Corrupt("order row without created_us".into()))?,
        )?,
        validated_at: opt_time(row.try_get("validated_us")?)?,
        confirmed_at: opt_time(row.try_get("confirmed_us")?)?,
        shipped_at: opt_time(row.try_get("shipped_us")?)?,
        delivered_at: opt_time(row.try_get("delivered_us")?)?,
        cancelled_at: opt_time(row.try_get("cancelled_us")?)?,
        correlation_id: text("correlation_id")?,
        version: row.try_get::<i64, _>("order_version")? as u64,
    })
}

fn order_status_set(p: &str) -> String {
    format!(
        "status = CASE WHEN excluded.order_version > {p}orders.order_version \
           THEN excluded.status ELSE {p}orders.status END, \
         order_version = CASE WHEN excluded.order_version > {p}orders.order_version \
           THEN excluded.order_version ELSE {p}orders.order_version END"
    )
}

impl SqlReadModels {
    /// The statement for this backend: `?` placeholders become `$1, $2, ...` on PostgreSQL.
    fn sql(&self, text: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => text.to_string(),
            Dialect::Postgres => {
                let mut out = String::with_capacity(text.len() + 16);
                let mut n = 0;
                for c in text.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    async fn exec(
        &self,
        conn: &mut AnyConnection,
        text: &str,
        args: Vec<Arg>,
    ) -> Result<u64, ReadModelError> {
        let sql = self.sql(text);
        Ok(bind(&sql, args).execute(conn).await?.rows_affected())
    }

    async fn fetch_all(
        &self,
        conn: &mut AnyConnection,
        text: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<AnyRow>, ReadModelError> {
        let sql = self.sql(text);
        Ok(bind(&sql, args).fetch_all(conn).await?)
    }

    async fn read(&self, text: &str, args: Vec<Arg>) -> Result<Vec<AnyRow>, ReadModelError> {
        let mut conn = self.reader.acquire().await?;
        self.fetch_all(&mut conn, text, args).await
    }

    /// Runs statements in order: on SQLite as one multi-statement call (one trip to the
    /// connection's thread instead of one per statement; SQLite binds the `?` of each
    /// statement from the arguments in turn), on PostgreSQL one by one.
    async fn execute_all(
        &self,
        conn: &mut AnyConnection,
        statements: Vec<Stmt>,
        persistent: bool,
    ) -> Result<(), sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => {
                if statements.is_empty() {
                    return Ok(());
                }
                let mut sql = String::new();
                let mut args = Vec::new();
                for (text, more) in statements {
                    if !sql.is_empty() {
                        sql.push_str(";\n");
                    }
                    sql.push_str(&text);
                    args.extend(more);
                }
                bind(&sql, args)
                    .persistent(persistent)
                    .execute(conn)
                    .await?;
            }
            Dialect::Postgres => {
                for (text, args) in statements {
                    let sql = self.sql(&text);
                    bind(&sql, args).execute(&mut *conn).await?;
                }
            }
        }
        Ok(())
    }

    /// What one event changes. Every effect commutes with the others (see the crate docs).
    fn effect(&self, c: &mut Vec<Stmt>, p: &str, e: &ProjectedEvent) -> Result<(), ReadModelError> {
        let at = micros(e.timestamp);
        let version = e.version as i64;
        let correlation = || Arg::T(e.correlation_id.clone());
        match &e.event {
            DomainEvent::OrderCreated(o) => {
                let total = cents(o.total_amount).ok_or_else(|| {
                    bad(e, "totalAmount is not a whole number of cents an i64 holds")
                })?;
                let items = serde_json::to_string(&o.items).expect("line items serialize");
                push(
                    c,
                    &format!(
                        "INSERT INTO {p}orders (order_id, cart_id, customer_id, total_cents, items, \
                         correlation_id, created_us, status, order_version) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, 'Created', ?) \
                         ON CONFLICT (order_id) DO UPDATE SET cart_id = excluded.cart_id, \
                         customer_id = excluded.customer_id, total_cents = excluded.total_cents, \
                         items = excluded.items, correlation_id = excluded.correlation_id, \
                         created_us = excluded.created_us, {}",
                        order_status_set(p)
                    ),
                    vec![
                        t(&o.order_id),
                        t(&o.cart_id),
                        t(&o.customer_id),
                        Arg::I(total),
                        Arg::T(items),
                        correlation(),
                        Arg::I(at),
                        Arg::I(version),
                    ],
                );
                if !o.items.is_empty() {
                    let mut args = Vec::new();
                    let mut rows = Vec::new();
                    for (i, line) in o.items.iter().enumerate() {
                        let total = line.line_total().and_then(cents).ok_or_else(|| {
                            bad(
                                e,
                                "a line total is not a whole number of cents an i64 holds",
                            )
                        })?;
                        rows.push("(?, ?, ?, ?, ?, ?)");
                        args.extend([
                            t(&o.order_id),
                            Arg::I(i as i64),
                            t(&line.sku),
                            t(&line.name),
                            Arg::I(i64::from(line.quantity)),
                            Arg::I(total),
                        ]);
                    }
                    push(
                        c,
                        &format!(
                            "INSERT INTO {p}order_lines (order_id, line_no, sku, name, quantity, \
                             line_total_cents) VALUES {} ON CONFLICT (order_id, line_no) DO NOTHING",
                            rows.join(", ")
                        ),
                        args,
                    );
                }
            }
            DomainEvent::OrderValidated(o) => {
                self.order_milestone(c, p, e, &o.order_id, "Validated", "validated_us", vec![])?
            }
            DomainEvent::OrderConfirmed(o) => self.order_milestone(
                c,
                p,
                e,
                &o.order_id,
                "Confirmed",
                "confirmed_us",
                vec![("payment_id", t(&o.payment_id), true)],
            )?,
            DomainEvent::OrderShipped(o) => self.order_milestone(
                c,
                p,
                e,
                &o.order_id,
                "Shipped",
                "shipped_us",
                vec![
                    ("carrier", t(&o.carrier), false),
                    ("tracking_number", t(&o.tracking_number), false),
                ],
            )?,
            DomainEvent::OrderDelivered(o) => {
                self.order_milestone(c, p, e, &o.order_id, "Delivered", "delivered_us", vec![])?
            }
            DomainEvent::OrderCancelled(o) => self.order_milestone(
                c,
                p,
                e,
                &o.order_id,
                "Cancelled",
                "cancelled_us",
                vec![("cancel_reason", t(&o.reason), false)],
            )?,
            DomainEvent::PaymentInitiated(x) => {
                self.payment(c, p, e, &x.order_id, &x.payment_id, "Initiated")?
            }
            DomainEvent::PaymentAuthorized(x) => {
                self.payment(c, p, e, &x.order_id, &x.payment_id, "Authorized")?
            }
            DomainEvent::PaymentCompleted(x) => {
                self.payment(c, p, e, &x.order_id, &x.payment_id, "Completed")?
            }
            DomainEvent::PaymentFailed(x) => {
                self.payment(c, p, e, &x.order_id, &x.payment_id, "Failed")?
            }
            DomainEvent::PaymentRefunded(x) => {
                self.payment(c, p, e, &x.order_id, &x.payment_id, "Refunded")?
            }
            DomainEvent::StockUpdated(s) => {
                let price = cents(s.unit_price).ok_or_else(|| {
                    bad(e, "unitPrice is not a whole number of cents an i64 holds")
                })?;
                // The update sets the units available as of its version; moves with a
                // higher version that arrived before it still count.
                let newer = |column: &str| {
                    format!(
                        "{column} = CASE WHEN excluded.update_version > {p}inventory.update_version \
                         THEN excluded.{column} ELSE {p}inventory.{column} END"
                    )
                };
                push(
                    c,
                    &format!(
                        "INSERT INTO {p}inventory (sku, name, unit_price_cents, available, \
                         low_stock_threshold, update_version) \
                         VALUES (?, ?, ?, CAST(? + (SELECT COALESCE(SUM(available_delta), 0) \
                         FROM {p}stock_moves WHERE sku = ? AND version > ?) AS {int}), ?, ?) \
                         ON CONFLICT (sku) DO UPDATE SET {}, {}, {}, {}, {}",
                        newer("name"),
                        newer("unit_price_cents"),
                        newer("available"),
                        newer("low_stock_threshold"),
                        newer("update_version"),
                        int = self.dialect.int(),
                    ),
                    vec![
                        t(&s.sku),
                        t(&s.name),
                        Arg::I(price),
                        Arg::I(i64::from(s.quantity)),
                        t(&s.sku),
                        Arg::I(version),
                        Arg::I(i64::from(s.low_stock_threshold)),
                        Arg::I(version),
                    ],
                );
            }
            DomainEvent::StockReserved(s) => {
                let q = i64::from(s.quantity);
                self.stock_move(c, p, &s.sku, version, -q, q)?
            }
            DomainEvent::StockReleased(s) => {
                let q = i64::from(s.quantity);
                self.stock_move(c, p, &s.sku, version, q, -q)?
            }
            DomainEvent::StockShipped(s) => {
                self.stock_move(c, p, &s.sku, version, 0, -i64::from(s.quantity))?
            }
            _ => {}
        }
        Ok(())
    }

    /// An order event: its milestone, its extra fields (`coalesce`: keep the first value),
    /// and the status if it is the order's newest event so far.
    #[allow(clippy::too_many_arguments)]
    fn order_milestone(
        &self,
        c: &mut Vec<Stmt>,
        p: &str,
        e: &ProjectedEvent,
        order_id: &str,
        status: &str,
        at_column: &str,
        extra: Vec<(&str, Arg, bool)>,
    ) -> Result<(), ReadModelError> {
        let mut columns = format!("order_id, status, order_version, {at_column}, correlation_id");
        let mut values = "?, ?, ?, ?, ?".to_string();
        let mut sets = vec![
            format!("{at_column} = excluded.{at_column}"),
            format!("correlation_id = COALESCE({p}orders.correlation_id, excluded.correlation_id)"),
        ];
        let mut args = vec![
            t(order_id),
            t(status),
            Arg::I(e.version as i64),
            Arg::I(micros(e.timestamp)),
            Arg::T(e.correlation_id.clone()),
        ];
        for (column, value, coalesce) in extra {
            columns.push_str(", ");
            columns.push_str(column);
            values.push_str(", ?");
            sets.push(if coalesce {
                format!("{column} = COALESCE({p}orders.{column}, excluded.{column})")
            } else {
                format!("{column} = excluded.{column}")
            });
            args.push(value);
        }
        sets.push(order_status_set(p));
        push(
            c,
            &format!(
                "INSERT INTO {p}orders ({columns}) VALUES ({values}) \
                 ON CONFLICT (order_id) DO UPDATE SET {}",
                sets.join(", ")
            ),
            args,
        );
        Ok(())
    }

    /// A payment event: the payment's id, and its status if it is the newest so far.
    fn payment(
        &self,
        c: &mut Vec<Stmt>,
        p: &str,
        e: &ProjectedEvent,
        order_id: &str,
        payment_id: &str,
        status: &str,
    ) -> Result<(), ReadModelError> {
        push(
            c,
            &format!(
                "INSERT INTO {p}orders (order_id, payment_id, payment_status, payment_version, \
                 correlation_id) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (order_id) DO UPDATE SET payment_id = excluded.payment_id, \
                 correlation_id = COALESCE({p}orders.correlation_id, excluded.correlation_id), \
                 payment_status = CASE WHEN excluded.payment_version > {p}orders.payment_version \
                   THEN excluded.payment_status ELSE {p}orders.payment_status END, \
                 payment_version = CASE WHEN excluded.payment_version > {p}orders.payment_version \
                   THEN excluded.payment_version ELSE {p}orders.payment_version END"
            ),
            vec![
                t(order_id),
                t(payment_id),
                t(status),
                Arg::I(e.version as i64),
                Arg::T(e.correlation_id.clone()),
            ],
        );
        Ok(())
    }

    /// A reservation or a release: reserved moves always; available moves unless a stock
    /// update with a higher version (which already counted it) was applied before.
    fn stock_move(
        &self,
        c: &mut Vec<Stmt>,
        p: &str,
        sku: &str,
        version: i64,
        available_delta: i64,
        reserved_delta: i64,
    ) -> Result<(), ReadModelError> {
        push(
            c,
            &format!(
                "INSERT INTO {p}stock_moves (sku, version, available_delta) VALUES (?, ?, ?) \
                 ON CONFLICT (sku, version) DO NOTHING"
            ),
            vec![t(sku), Arg::I(version), Arg::I(available_delta)],
        );
        push(
            c,
            &format!(
                "INSERT INTO {p}inventory (sku, available, reserved) VALUES (?, ?, ?) \
                 ON CONFLICT (sku) DO UPDATE SET reserved = {p}inventory.reserved + excluded.reserved, \
                 available = CASE WHEN ? > {p}inventory.update_version \
                   THEN {p}inventory.available + excluded.available ELSE {p}inventory.available END"
            ),
            vec![
                t(sku),
                Arg::I(available_delta),
                Arg::I(reserved_delta),
                Arg::I(version),
            ],
        );
        Ok(())
    }

    async fn take_lease(&self, name: &str, holder: &str) -> Result<(), ReadModelError> {
        let now = micros(Utc::now());
        let stale = now - LEASE_STALE.as_micros() as i64;
        let mut conn = self.writer.acquire().await?;
        let taken = self
            .exec(
                &mut conn,
                "UPDATE rm_projection_state SET rebuild_holder = ?, rebuild_heartbeat_us = ? \
                 WHERE name = ? AND (rebuild_holder IS NULL OR rebuild_heartbeat_us < ?)",
                vec![t(holder), Arg::I(now), t(name), Arg::I(stale)],
            )
            .await?;
        if taken == 1 {
            return Ok(());
        }
        let rows = self
            .fetch_all(
                &mut conn,
                "SELECT rebuild_holder FROM rm_projection_state WHERE name = ?",
                vec![t(name)],
            )
            .await?;
        match rows.first() {
            None => Err(ReadModelError::UnknownProjection(name.to_string())),
            Some(row) => Err(ReadModelError::RebuildRunning {
                name: name.to_string(),
                holder: row
                    .try_get::<Option<String>, _>("rebuild_holder")?
                    .unwrap_or_default(),
            }),
        }
    }

    async fn heartbeat(
        &self,
        conn: &mut AnyConnection,
        name: &str,
        holder: &str,
    ) -> Result<(), ReadModelError> {
        let kept = self
            .exec(
                conn,
                "UPDATE rm_projection_state SET rebuild_heartbeat_us = ? \
                 WHERE name = ? AND rebuild_holder = ?",
                vec![Arg::I(micros(Utc::now())), t(name), t(holder)],
            )
            .await?;
        if kept == 1 {
            Ok(())
        } else {
            Err(ReadModelError::RebuildRunning {
                name: name.to_string(),
                holder: "another rebuild took the lease over".into(),
            })
        }
    }

    /// Applies a page of the log to the shadow tables; returns how many events it applied.
    /// (The shadows start empty and the log holds each event once: no event repeats.)
    /// One call per event, like a live update: its statements have few distinct shapes,
    /// so the connection's statement cache spares SQLite from parsing them again.
    async fn apply_page(
        &self,
        conn: &mut AnyConnection,
        page: &[cornershop_store::StoredEvent],
    ) -> Result<u64, ReadModelError> {
        let mut applied = 0;
        for stored in page {
            if !is_projected(&stored.envelope.event_type) {
                continue;
            }
            // An event the read models cannot take is left out, as the live projection
            // leaves it out (it dead-letters it): the rebuilt models match the live ones.
            let effect = ProjectedEvent::from_stored(stored).and_then(|event| {
                let mut statements = Vec::new();
                self.effect(&mut statements, "rm_shadow_", &event)?;
                Ok((event, statements))
            });
            let (event, mut statements) = match effect {
                Ok(effect) => effect,
                Err(e @ ReadModelError::BadEvent { .. }) => {
                    tracing::warn!(error = %e, position = stored.position, "the rebuild leaves out an event the read models cannot take");
                    continue;
                }
                Err(e) => return Err(e),
            };
            push(
                &mut statements,
                "INSERT INTO rm_shadow_applied (event_id) VALUES (?)",
                vec![Arg::T(event.event_id.to_string())],
            );
            self.execute_all(conn, statements, true).await?;
            applied += 1;
        }
        Ok(applied)
    }

    async fn rebuild_inner(
        &self,
        name: &str,
        holder: &str,
        source: &dyn EventStore,
        progress: &(dyn Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, ReadModelError> {
        let started = Instant::now();
        let head = source.head_position().await?;
        let int = self.dialect.int();
        {
            let mut conn = self.writer.acquire().await?;
            for table in SWAPPED {
                self.exec(
                    &mut conn,
                    &format!("DROP TABLE IF EXISTS rm_shadow_{table}"),
                    vec![],
                )
                .await?;
            }
            for statement in statements(&render(TABLES, "rm_shadow_", int)) {
                self.exec(&mut conn, statement, vec![]).await?;
            }
        }
        let (mut position, mut read, mut applied) = (0u64, 0u64, 0u64);
        progress(RebuildProgress {
            position,
            head,
            events: read,
        });
        // Fill the shadows, a page per transaction, while the live tables keep serving.
        loop {
            let page = source.read_log(position, PAGE).await?;
            let Some(last) = page.last() else { break };
            let mut tx = self.writer.begin().await?;
            applied += self.apply_page(&mut tx, &page).await?;
            tx.commit().await?;
            {
                let mut conn = self.writer.acquire().await?;
                self.heartbeat(&mut conn, name, holder).await?;
            }
            read += page.len() as u64;
            position = last.position;
            progress(RebuildProgress {
                position,
                head: head.max(position),
                events: read,
            });
            if page.len() < PAGE as usize {
                break;
            }
        }
        // The swap: the live projection waits on the state row from here to the commit.
        let mut tx = self.writer.begin().await?;
        self.heartbeat(&mut tx, name, holder).await?;
        loop {
            let page = source.read_log(position, PAGE).await?;
            let Some(last) = page.last() else { break };
            applied += self.apply_page(&mut tx, &page).await?;
            read += page.len() as u64;
            position = last.position;
        }
        for table in SWAPPED {
            self.exec(&mut tx, &format!("DROP TABLE IF EXISTS rm_{table}"), vec![])
                .await?;
        }
        for table in SWAPPED {
            self.exec(
                &mut tx,
                &format!("ALTER TABLE rm_shadow_{table} RENAME TO rm_{table}"),
                vec![],
            )
            .await?;
            if self.dialect == Dialect::Postgres {
                // The primary key's index keeps its name through a rename; give it the
                // live name, so that the next rebuild's shadow can have the shadow name.
                self.exec(
                    &mut tx,
                    &format!(
                        "ALTER INDEX IF EXISTS rm_shadow_{table}_pkey RENAME TO rm_{table}_pkey"
                    ),
                    vec![],
                )
                .await?;
            }
        }
        for statement in statements(&render(INDEXES, "rm_", int)) {
            self.exec(&mut tx, statement, vec![]).await?;
        }
        let now = micros(Utc::now());
        self.exec(
            &mut tx,
            "UPDATE rm_projection_state SET position = ?, events_applied = ?, updated_us = ?, \
             generation = generation + 1, rebuilt_us = ?, rebuild_holder = NULL, \
             rebuild_heartbeat_us = NULL, rebuild_error = NULL WHERE name = ?",
            vec![
                Arg::I(position as i64),
                Arg::I(applied as i64),
                Arg::I(now),
                Arg::I(now),
                t(name),
            ],
        )
        .await?;
        let rows = self
            .fetch_all(
                &mut tx,
                "SELECT generation FROM rm_projection_state WHERE name = ?",
                vec![t(name)],
            )
            .await?;
        tx.commit().await?;
        let generation = rows
            .first()
            .map(|r| r.try_get::<i64, _>("generation"))
            .transpose()?
            .unwrap_or(0) as u64;
        progress(RebuildProgress {
            position,
            head: head.max(position),
            events: read,
        });
        Ok(RebuildReport {
            name: name.to_string(),
            events_read: read,
            events_applied: applied,
            position,
            generation,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[async_trait]
impl ReadModelStore for SqlReadModels {
    async fn apply(
        &self,
        projection: &str,
        event: &ProjectedEvent,
    ) -> Result<bool, ReadModelError> {
        if !PROJECTIONS.contains(&projection) {
            return Err(ReadModelError::UnknownProjection(projection.to_string()));
        }
        // First lock the projection's row (see the module documentation), then the effect,
        // and last the event id: a repeat fails there, and everything before rolls back.
        let mut statements = vec![(
            "UPDATE rm_projection_state SET events_applied = events_applied + 1, \
             position = CASE WHEN ? > position THEN ? ELSE position END, updated_us = ? \
             WHERE name = ?"
                .to_string(),
            vec![
                Arg::I(event.position as i64),
                Arg::I(event.position as i64),
                Arg::I(micros(Utc::now())),
                t(projection),
            ],
        )];
        self.effect(&mut statements, "rm_", event)?;
        push(
            &mut statements,
            "INSERT INTO rm_applied (event_id) VALUES (?)",
            vec![Arg::T(event.event_id.to_string())],
        );
        let mut tx = self.writer.begin().await?;
        match self.execute_all(&mut tx, statements, true).await {
            Ok(()) => {
                tx.commit().await?;
                Ok(true)
            }
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn order(&self, order_id: &str) -> Result<Option<OrderReadModel>, ReadModelError> {
        let rows = self
            .read(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM rm_orders \
                     WHERE order_id = ? AND created_us IS NOT NULL"
                ),
                vec![t(order_id)],
            )
            .await?;
        rows.first().map(decode_order).transpose()
    }

    async fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ReadModelError> {
        let mut sql = format!("SELECT {ORDER_COLUMNS} FROM rm_orders WHERE created_us IS NOT NULL");
        let mut args = Vec::new();
        if !query.statuses.is_empty() {
            let marks = vec!["?"; query.statuses.len()].join(", ");
            sql.push_str(&format!(" AND status IN ({marks})"));
            args.extend(query.statuses.iter().map(|s| t(s)));
        }
        if let Some(customer) = &query.customer_id {
            sql.push_str(" AND customer_id = ?");
            args.push(t(customer));
        }
        if let Some(from) = query.from {
            sql.push_str(" AND created_us >= ?");
            args.push(Arg::I(micros(from)));
        }
        if let Some(to) = query.to {
            sql.push_str(" AND created_us <= ?");
            args.push(Arg::I(micros(to)));
        }
        if let Some(min) = query.min_total {
            // Amounts are whole cents: at least `min` is at least its cents rounded up.
            let min_cents = min
                .checked_mul(Decimal::ONE_HUNDRED)
                .and_then(|c| cents(c.ceil() / Decimal::ONE_HUNDRED))
                .unwrap_or(i64::MAX);
            sql.push_str(" AND total_cents >= ?");
            args.push(Arg::I(min_cents));
        }
        if let Some(after) = &query.after {
            sql.push_str(" AND (created_us < ? OR (created_us = ? AND order_id < ?))");
            args.extend([
                Arg::I(after.created_us),
                Arg::I(after.created_us),
                t(&after.order_id),
            ]);
        }
        let limit = query.limit.max(1);
        sql.push_str(" ORDER BY created_us DESC, order_id DESC LIMIT ?");
        args.push(Arg::I(i64::from(limit) + 1));
        let rows = self.read(&sql, args).await?;
        let mut orders = rows
            .iter()
            .map(decode_order)
            .collect::<Result<Vec<_>, _>>()?;
        let more = orders.len() > limit as usize;
        orders.truncate(limit as usize);
        let next_cursor = more.then(|| orders.last()).flatten().map(|last| {
            OrderCursor {
                created_us: micros(last.created_at),
                order_id: last.order_id.clone(),
            }
            .encode()
        });
        Ok(OrderPage {
            orders,
            next_cursor,
        })
    }

    async fn order_ids(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, ReadModelError> {
        let rows = self
            .read(
                "SELECT order_id FROM rm_orders WHERE order_id > ? ORDER BY order_id LIMIT ?",
                vec![t(after.unwrap_or("")), Arg::I(i64::from(limit))],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get("order_id").map_err(Into::into))
            .collect()
    }

    async fn inventory(
        &self,
        low_stock_only: bool,
    ) -> Result<Vec<InventoryReadModel>, ReadModelError> {
        let mut sql = "SELECT sku, name, unit_price_cents, available, reserved, \
                       low_stock_threshold FROM rm_inventory WHERE update_version > 0"
            .to_string();
        if low_stock_only {
            sql.push_str(" AND available <= low_stock_threshold");
        }
        sql.push_str(" ORDER BY sku");
        let rows = self.read(&sql, vec![]).await?;
        rows.iter()
            .map(|row| {
                let available: i64 = row.try_get("available")?;
                let threshold: i64 = row.try_get("low_stock_threshold")?;
                Ok(InventoryReadModel {
                    sku: row.try_get("sku")?,
                    name: row.try_get("name")?,
                    unit_price: money(row.try_get("unit_price_cents")?),
                    available,
                    reserved: row.try_get("reserved")?,
                    low_stock_threshold: threshold,
                    low_stock: available <= threshold,
                })
            })
            .collect()
    }

    async fn sales_report(&self, query: &SalesQuery) -> Result<SalesReport, ReadModelError> {
        let int = self.dialect.int();
        let sold = SOLD_STATUSES
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut window = String::from("created_us IS NOT NULL");
        let mut window_args = Vec::new();
        if let Some(from) = query.from {
            window.push_str(" AND created_us >= ?");
            window_args.push(micros(from));
        }
        if let Some(to) = query.to {
            window.push_str(" AND created_us <= ?");
            window_args.push(micros(to));
        }
        let width = query.group_by.micros();
        let count = |condition: &str| {
            format!("CAST(COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0) AS {int})")
        };
        let sql = format!(
            "SELECT (created_us / ?) * ? AS bucket, CAST(COUNT(*) AS {int}) AS orders, \
             {sold_orders} AS sold_orders, \
             CAST(COALESCE(SUM(CASE WHEN status IN ({sold}) THEN total_cents ELSE 0 END), 0) \
               AS {int}) AS revenue, \
             {cancelled} AS cancelled, {attempted} AS attempted, {failed} AS failed \
             FROM rm_orders WHERE {window} GROUP BY bucket ORDER BY bucket",
            sold_orders = count(&format!("status IN ({sold})")),
            cancelled = count("status = 'Cancelled'"),
            attempted = count("payment_status IS NOT NULL"),
            failed = count("payment_status = 'Failed'"),
        );
        let mut args = vec![Arg::I(width), Arg::I(width)];
        args.extend(window_args.iter().map(|v| Arg::I(*v)));
        let rows = self.read(&sql, args).await?;
        let mut totals = SalesFigures::default();
        let mut buckets = Vec::with_capacity(rows.len());
        for row in &rows {
            let n = |column: &str| -> Result<u64, ReadModelError> {
                Ok(row.try_get::<i64, _>(column)?.max(0) as u64)
            };
            let figures = SalesFigures {
                orders: n("orders")?,
                sold_orders: n("sold_orders")?,
                revenue: money(row.try_get("revenue")?),
                cancelled_orders: n("cancelled")?,
                payments_attempted: n("attempted")?,
                payments_failed: n("failed")?,
                ..SalesFigures::default()
            };
            totals.add(&figures);
            buckets.push(SalesBucket {
                start: from_micros(row.try_get("bucket")?)?,
                figures: figures.finish(),
            });
        }
        let window_on_o = window.replace("created_us", "o.created_us");
        let sql = format!(
            "SELECT l.sku AS sku, MAX(l.name) AS name, CAST(SUM(l.quantity) AS {int}) AS quantity, \
             CAST(SUM(l.line_total_cents) AS {int}) AS revenue \
             FROM rm_order_lines l JOIN rm_orders o ON o.order_id = l.order_id \
             WHERE {window_on_o} AND o.status IN ({sold}) \
             GROUP BY l.sku ORDER BY quantity DESC, revenue DESC, sku LIMIT ?"
        );
        let mut args: Vec<Arg> = window_args.iter().map(|v| Arg::I(*v)).collect();
        args.push(Arg::I(i64::from(query.top)));
        let rows = self.read(&sql, args).await?;
        let top_products = rows
            .iter()
            .map(|row| {
                Ok(TopProduct {
                    sku: row.try_get("sku")?,
                    name: row.try_get("name")?,
                    quantity: row.try_get::<i64, _>("quantity")?.max(0) as u64,
                    revenue: money(row.try_get("revenue")?),
                })
            })
            .collect::<Result<Vec<_>, ReadModelError>>()?;
        Ok(SalesReport {
            from: query.from,
            to: query.to,
            group_by: query.group_by,
            totals: totals.finish(),
            buckets,
            top_products,
        })
    }

    async fn projection_state(
        &self,
        name: &str,
    ) -> Result<Option<ProjectionState>, ReadModelError> {
        let rows = self
            .read(
                "SELECT name, position, events_applied, updated_us, generation, rebuilt_us, \
                 rebuild_error FROM rm_projection_state WHERE name = ?",
                vec![t(name)],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(ProjectionState {
                    name: row.try_get("name")?,
                    position: row.try_get::<i64, _>("position")?.max(0) as u64,
                    events_applied: row.try_get::<i64, _>("events_applied")?.max(0) as u64,
                    updated_at: opt_time(row.try_get("updated_us")?)?,
                    generation: row.try_get::<i64, _>("generation")?.max(0) as u64,
                    rebuilt_at: opt_time(row.try_get("rebuilt_us")?)?,
                    rebuild_error: row.try_get("rebuild_error")?,
                })
            })
            .transpose()
    }

    async fn rebuild(
        &self,
        name: &str,
        source: &dyn EventStore,
        progress: &(dyn Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, ReadModelError> {
        if !PROJECTIONS.contains(&name) {
            return Err(ReadModelError::UnknownProjection(name.to_string()));
        }
        let holder = format!("pid{}-{}", std::process::id(), Uuid::new_v4().simple());
        self.take_lease(name, &holder).await?;
        // Whatever ends the rebuild early (an error, a panic in the code it runs), its
        // lease is released and the failure recorded for `GET /api/projections`.
        let result =
            match std::panic::AssertUnwindSafe(self.rebuild_inner(name, &holder, source, progress))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(panic) => Err(ReadModelError::RebuildFailed(format!(
                    "the rebuild panicked: {}",
                    cornershop_messaging::panic_message(panic.as_ref())
                ))),
            };
        if let Err(e) = &result {
            tracing::error!(projection = name, error = %e, "the rebuild failed; its lease is released");
            let why = format!(
                "{}: {e}",
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            // Released in its own statement, retried a few times: a lease left behind
            // would refuse every rebuild until it went stale.
            for attempt in 0..3 {
                let released = match self.writer.acquire().await {
                    Ok(mut conn) => self
                        .exec(
                            &mut conn,
                            "UPDATE rm_projection_state SET rebuild_holder = NULL, \
                             rebuild_heartbeat_us = NULL, rebuild_error = ? \
                             WHERE name = ? AND rebuild_holder = ?",
                            vec![t(&why), t(name), t(&holder)],
                        )
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                if released {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
        result
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
