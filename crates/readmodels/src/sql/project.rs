//! The projection: what each event changes in the read models (every effect commutes with
//! the others), applied exactly once per event.

use chrono::Utc;
use cornershop_domain::DomainEvent;

use super::{insert, micros, push, t, Arg, SqlReadModels, Stmt};
use crate::{cents, ProjectedEvent, ReadModelError, PROJECTIONS};

fn bad(event: &ProjectedEvent, reason: &str) -> ReadModelError {
    ReadModelError::BadEvent {
        event_id: event.event_id,
        event_type: event.event.event_type().to_string(),
        reason: reason.to_string(),
    }
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
    /// What one event changes. Every effect commutes with the others (see the crate docs).
    pub(super) fn effect(
        &self,
        c: &mut Vec<Stmt>,
        p: &str,
        e: &ProjectedEvent,
    ) -> Result<(), ReadModelError> {
        let at = micros(e.timestamp);
        let version = e.version as i64;
        let correlation = || Arg::T(e.correlation_id.clone());
        match &e.event {
            DomainEvent::OrderCreated(o) => {
                let total = cents(o.total_amount).ok_or_else(|| {
                    bad(e, "totalAmount is not a whole number of cents an i64 holds")
                })?;
                let items = serde_json::to_string(&o.items).expect("line items serialize");
                insert(
                    c,
                    format!(
                        "INSERT INTO {p}orders (order_id, cart_id, customer_id, total_cents, \
                         currency, items, correlation_id, created_us, status, order_version) VALUES"
                    ),
                    "(?, ?, ?, ?, ?, ?, ?, ?, 'Created', ?)".into(),
                    format!(
                        "ON CONFLICT (order_id) DO UPDATE SET cart_id = excluded.cart_id, \
                         customer_id = excluded.customer_id, total_cents = excluded.total_cents, \
                         currency = excluded.currency, items = excluded.items, \
                         correlation_id = excluded.correlation_id, \
                         created_us = excluded.created_us, {}",
                        order_status_set(p)
                    ),
                    &o.order_id,
                    vec![
                        t(&o.order_id),
                        t(&o.cart_id),
                        t(&o.customer_id),
                        Arg::I(total),
                        t(o.currency.as_str()),
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
                    insert(
                        c,
                        format!(
                            "INSERT INTO {p}order_lines (order_id, line_no, sku, name, quantity, \
                             line_total_cents) VALUES"
                        ),
                        rows.join(", "),
                        "ON CONFLICT (order_id, line_no) DO NOTHING".into(),
                        &o.order_id,
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
                insert(
                    c,
                    format!(
                        "INSERT INTO {p}inventory (sku, name, unit_price_cents, currency, \
                         available, low_stock_threshold, update_version) VALUES"
                    ),
                    format!(
                        "(?, ?, ?, ?, CAST(? + (SELECT COALESCE(SUM(available_delta), 0) \
                         FROM {p}stock_moves WHERE sku = ? AND version > ?) AS {int}), ?, ?)",
                        int = self.dialect.int(),
                    ),
                    format!(
                        "ON CONFLICT (sku) DO UPDATE SET {}, {}, {}, {}, {}, {}",
                        newer("name"),
                        newer("unit_price_cents"),
                        newer("currency"),
                        newer("available"),
                        newer("low_stock_threshold"),
                        newer("update_version"),
                    ),
                    &s.sku,
                    vec![
                        t(&s.sku),
                        t(&s.name),
                        Arg::I(price),
                        t(s.currency.as_str()),
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
        insert(
            c,
            format!("INSERT INTO {p}orders ({columns}) VALUES"),
            format!("({values})"),
            format!("ON CONFLICT (order_id) DO UPDATE SET {}", sets.join(", ")),
            order_id,
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
        insert(
            c,
            format!(
                "INSERT INTO {p}orders (order_id, payment_id, payment_status, payment_version, \
                 correlation_id) VALUES"
            ),
            "(?, ?, ?, ?, ?)".into(),
            format!(
                "ON CONFLICT (order_id) DO UPDATE SET payment_id = excluded.payment_id, \
                 correlation_id = COALESCE({p}orders.correlation_id, excluded.correlation_id), \
                 payment_status = CASE WHEN excluded.payment_version > {p}orders.payment_version \
                   THEN excluded.payment_status ELSE {p}orders.payment_status END, \
                 payment_version = CASE WHEN excluded.payment_version > {p}orders.payment_version \
                   THEN excluded.payment_version ELSE {p}orders.payment_version END"
            ),
            order_id,
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
        insert(
            c,
            format!("INSERT INTO {p}stock_moves (sku, version, available_delta) VALUES"),
            "(?, ?, ?)".into(),
            "ON CONFLICT (sku, version) DO NOTHING".into(),
            &format!("{sku}\u{0}{version}"),
            vec![t(sku), Arg::I(version), Arg::I(available_delta)],
        );
        // Whether available moves is decided in the row, against the stock row as the
        // statement starts (no version in the conflict clause, so that a rebuild can send
        // many of these rows in one statement, one row per SKU; see batch.rs). Nothing
        // writes the row between the two: live updates are serialized by the projection's
        // state row, and a rebuild writes its shadow tables alone.
        let int = self.dialect.int();
        insert(
            c,
            format!("INSERT INTO {p}inventory (sku, available, reserved) VALUES"),
            format!(
                "(?, CASE WHEN ? > COALESCE((SELECT update_version FROM {p}inventory \
                 WHERE sku = ?), 0) THEN CAST(? AS {int}) ELSE 0 END, ?)"
            ),
            format!(
                "ON CONFLICT (sku) DO UPDATE SET reserved = {p}inventory.reserved + excluded.reserved, \
                 available = {p}inventory.available + excluded.available"
            ),
            sku,
            vec![
                t(sku),
                Arg::I(version),
                t(sku),
                Arg::I(available_delta),
                Arg::I(reserved_delta),
            ],
        );
        Ok(())
    }
}

pub(super) async fn apply(
    store: &SqlReadModels,
    projection: &str,
    event: &ProjectedEvent,
) -> Result<bool, ReadModelError> {
    let statements = statements_of(store, projection, event)?;
    // A repeat violates rm_applied's key: the whole transaction rolls back.
    store.engine.all_or_nothing(statements).await
}

/// [`apply`] for several events in one transaction, each as it would be alone (a repeat
/// undoes only its own statements); an error keeps nothing of any of them.
pub(super) async fn apply_all(
    store: &SqlReadModels,
    projection: &str,
    events: &[ProjectedEvent],
) -> Result<Vec<bool>, ReadModelError> {
    let groups = events
        .iter()
        .map(|event| statements_of(store, projection, event))
        .collect::<Result<Vec<_>, _>>()?;
    store.engine.each_all_or_nothing(groups).await
}

/// What applying `event` to `projection` writes, in order.
fn statements_of(
    store: &SqlReadModels,
    projection: &str,
    event: &ProjectedEvent,
) -> Result<Vec<Stmt>, ReadModelError> {
    if !PROJECTIONS.contains(&projection) {
        return Err(ReadModelError::UnknownProjection(projection.to_string()));
    }
    // First lock the projection's row (see the module documentation), then the effect,
    // and last the event id: a repeat fails there, and everything before rolls back.
    let mut statements = Vec::new();
    push(
        &mut statements,
        "UPDATE rm_projection_state SET events_applied = events_applied + 1, \
         position = CASE WHEN ? > position THEN ? ELSE position END, updated_us = ? \
         WHERE name = ?",
        vec![
            Arg::I(event.position as i64),
            Arg::I(event.position as i64),
            Arg::I(micros(Utc::now())),
            t(projection),
        ],
    );
    store.effect(&mut statements, "rm_", event)?;
    push(
        &mut statements,
        "INSERT INTO rm_applied (event_id) VALUES (?)",
        vec![Arg::T(event.event_id.to_string())],
    );
    Ok(statements)
}
