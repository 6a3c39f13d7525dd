//! The reads the API serves from the read models: orders, inventory, the sales report
//! and the projections' state; and the decoding of an order row.

use cornershop_domain::LineItem;

use super::{from_micros, micros, opt_time, t, Arg, Cells, SqlReadModels};
use rust_decimal::Decimal;

use crate::{
    cents, lines_of, money, InventoryReadModel, OrderCursor, OrderPage, OrderQuery, OrderReadModel,
    ProjectionState, ReadModelError, SalesBucket, SalesFigures, SalesQuery, SalesReport,
    TopProduct, SOLD_STATUSES,
};

const ORDER_COLUMNS: &str = "order_id, cart_id, customer_id, status, order_version, \
    total_cents, currency, items, payment_id, payment_status, carrier, tracking_number, cancel_reason, \
    correlation_id, created_us, validated_us, confirmed_us, shipped_us, delivered_us, \
    cancelled_us";

fn decode_order(row: &dyn Cells) -> Result<OrderReadModel, ReadModelError> {
    let items: Vec<LineItem> = serde_json::from_str(&row.text_of("items")?)
        .map_err(|e| ReadModelError::Corrupt(format!("order items: {e}")))?;
    Ok(OrderReadModel {
        order_id: row.text_of("order_id")?,
        cart_id: row.text_of("cart_id")?,
        customer_id: row.text_of("customer_id")?,
        status: row.text_of("status")?,
        total_amount: money(row.int("total_cents")?.unwrap_or(0)),
        currency: row.text_of("currency")?,
        items: lines_of(&items),
        payment_id: row.text("payment_id")?,
        payment_status: row.text("payment_status")?,
        carrier: row.text("carrier")?,
        tracking_number: row.text("tracking_number")?,
        cancel_reason: row.text("cancel_reason")?,
        created_at: from_micros(row.int_of("created_us")?)?,
        validated_at: opt_time(row.int("validated_us")?)?,
        confirmed_at: opt_time(row.int("confirmed_us")?)?,
        shipped_at: opt_time(row.int("shipped_us")?)?,
        delivered_at: opt_time(row.int("delivered_us")?)?,
        cancelled_at: opt_time(row.int("cancelled_us")?)?,
        correlation_id: row.text_of("correlation_id")?,
        version: row.int_of("order_version")?.max(0) as u64,
    })
}

fn count(row: &dyn Cells, column: &str) -> Result<u64, ReadModelError> {
    Ok(row.int_of(column)?.max(0) as u64)
}

pub(super) async fn order(
    store: &SqlReadModels,
    order_id: &str,
) -> Result<Option<OrderReadModel>, ReadModelError> {
    let orders = store
        .engine
        .read(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM rm_orders \
                 WHERE order_id = ? AND created_us IS NOT NULL"
            ),
            vec![t(order_id)],
            decode_order,
        )
        .await?;
    Ok(orders.into_iter().next())
}

pub(super) async fn orders(
    store: &SqlReadModels,
    query: &OrderQuery,
) -> Result<OrderPage, ReadModelError> {
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
    let mut orders = store.engine.read(&sql, args, decode_order).await?;
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

pub(super) async fn order_ids(
    store: &SqlReadModels,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, ReadModelError> {
    store
        .engine
        .read(
            "SELECT order_id FROM rm_orders WHERE order_id > ? ORDER BY order_id LIMIT ?",
            vec![t(after.unwrap_or("")), Arg::I(i64::from(limit))],
            |row| row.text_of("order_id"),
        )
        .await
}

pub(super) async fn inventory(
    store: &SqlReadModels,
    low_stock_only: bool,
) -> Result<Vec<InventoryReadModel>, ReadModelError> {
    let mut sql = "SELECT sku, name, unit_price_cents, currency, available, reserved, \
                   low_stock_threshold FROM rm_inventory WHERE update_version > 0"
        .to_string();
    if low_stock_only {
        sql.push_str(" AND available <= low_stock_threshold");
    }
    sql.push_str(" ORDER BY sku");
    store
        .engine
        .read(&sql, vec![], |row| {
            let available = row.int_of("available")?;
            let threshold = row.int_of("low_stock_threshold")?;
            Ok(InventoryReadModel {
                sku: row.text_of("sku")?,
                name: row.text_of("name")?,
                unit_price: money(row.int_of("unit_price_cents")?),
                currency: row.text_of("currency")?,
                available,
                reserved: row.int_of("reserved")?,
                low_stock_threshold: threshold,
                low_stock: available <= threshold,
            })
        })
        .await
}

pub(super) async fn sales_report(
    store: &SqlReadModels,
    query: &SalesQuery,
) -> Result<SalesReport, ReadModelError> {
    let int = store.dialect.int();
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
    let how_many = |condition: &str| {
        format!("CAST(COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0) AS {int})")
    };
    let sql = format!(
        "SELECT (created_us / ?) * ? AS bucket, CAST(COUNT(*) AS {int}) AS orders, \
         {sold_orders} AS sold_orders, \
         CAST(COALESCE(SUM(CASE WHEN status IN ({sold}) THEN total_cents ELSE 0 END), 0) \
           AS {int}) AS revenue, \
         {cancelled} AS cancelled, {attempted} AS attempted, {failed} AS failed \
         FROM rm_orders WHERE {window} GROUP BY bucket ORDER BY bucket",
        sold_orders = how_many(&format!("status IN ({sold})")),
        cancelled = how_many("status = 'Cancelled'"),
        attempted = how_many("payment_status IS NOT NULL"),
        failed = how_many("payment_status = 'Failed'"),
    );
    let mut args = vec![Arg::I(width), Arg::I(width)];
    args.extend(window_args.iter().map(|v| Arg::I(*v)));
    let rows = store
        .engine
        .read(&sql, args, |row| {
            let figures = SalesFigures {
                orders: count(row, "orders")?,
                sold_orders: count(row, "sold_orders")?,
                revenue: money(row.int_of("revenue")?),
                cancelled_orders: count(row, "cancelled")?,
                payments_attempted: count(row, "attempted")?,
                payments_failed: count(row, "failed")?,
                ..SalesFigures::default()
            };
            Ok((from_micros(row.int_of("bucket")?)?, figures))
        })
        .await?;
    let mut totals = SalesFigures::default();
    let mut buckets = Vec::with_capacity(rows.len());
    for (start, figures) in rows {
        totals.add(&figures);
        buckets.push(SalesBucket {
            start,
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
    let top_products = store
        .engine
        .read(&sql, args, |row| {
            Ok(TopProduct {
                sku: row.text_of("sku")?,
                name: row.text_of("name")?,
                quantity: count(row, "quantity")?,
                revenue: money(row.int_of("revenue")?),
            })
        })
        .await?;
    Ok(SalesReport {
        from: query.from,
        to: query.to,
        group_by: query.group_by,
        totals: totals.finish(),
        buckets,
        top_products,
    })
}

pub(super) async fn order_status_counts(
    store: &SqlReadModels,
) -> Result<std::collections::BTreeMap<String, u64>, ReadModelError> {
    let counts = store
        .engine
        .read(
            "SELECT status, COUNT(*) AS n FROM rm_orders WHERE status IS NOT NULL GROUP BY status",
            vec![],
            |row| Ok((row.text_of("status")?, count(row, "n")?)),
        )
        .await?;
    Ok(counts.into_iter().collect())
}

pub(super) async fn projection_state(
    store: &SqlReadModels,
    name: &str,
) -> Result<Option<ProjectionState>, ReadModelError> {
    let states = store
        .engine
        .read(
            "SELECT name, position, events_applied, updated_us, generation, rebuilt_us, \
             rebuild_error FROM rm_projection_state WHERE name = ?",
            vec![t(name)],
            |row| {
                Ok(ProjectionState {
                    name: row.text_of("name")?,
                    position: count(row, "position")?,
                    events_applied: count(row, "events_applied")?,
                    updated_at: opt_time(row.int("updated_us")?)?,
                    generation: count(row, "generation")?,
                    rebuilt_at: opt_time(row.int("rebuilt_us")?)?,
                    rebuild_error: row.text("rebuild_error")?,
                })
            },
        )
        .await?;
    Ok(states.into_iter().next())
}
