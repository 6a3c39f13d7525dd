//! The read models' tables, written once as templates: the migrations create them with the
//! prefix `rm_`, a rebuild creates the same tables with the prefix `rm_shadow_`, fills them
//! and swaps them in. A unit test checks that the migrations say exactly what these
//! templates say, so the two cannot drift.
//!
//! `{p}` is the table prefix and `{int}` the 64-bit integer type (`INTEGER` on SQLite,
//! `BIGINT` on PostgreSQL). Times are microseconds since the epoch (as the SQLite event
//! store keeps them) and money is in cents, so sums are exact and the SQL is the same on
//! both backends.

/// The tables a rebuild replaces, in creation order.
pub(crate) const SWAPPED: [&str; 5] = [
    "orders",
    "order_lines",
    "inventory",
    "stock_moves",
    "applied",
];

/// The tables (primary keys only: a rebuild loads them first and indexes them at the swap).
pub(crate) const TABLES: &str = "\
CREATE TABLE {p}orders (
    order_id         TEXT NOT NULL PRIMARY KEY,
    cart_id          TEXT,
    customer_id      TEXT,
    status           TEXT,
    order_version    {int} NOT NULL DEFAULT 0,
    total_cents      {int},
    items            TEXT,
    payment_id       TEXT,
    payment_status   TEXT,
    payment_version  {int} NOT NULL DEFAULT 0,
    carrier          TEXT,
    tracking_number  TEXT,
    cancel_reason    TEXT,
    correlation_id   TEXT,
    created_us       {int},
    validated_us     {int},
    confirmed_us     {int},
    shipped_us       {int},
    delivered_us     {int},
    cancelled_us     {int},
    currency         TEXT NOT NULL DEFAULT 'GBP'
);
CREATE TABLE {p}order_lines (
    order_id          TEXT NOT NULL,
    line_no           {int} NOT NULL,
    sku               TEXT NOT NULL,
    name              TEXT NOT NULL,
    quantity          {int} NOT NULL,
    line_total_cents  {int} NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE {p}inventory (
    sku                  TEXT NOT NULL PRIMARY KEY,
    name                 TEXT NOT NULL DEFAULT '',
    unit_price_cents     {int} NOT NULL DEFAULT 0,
    available            {int} NOT NULL DEFAULT 0,
    reserved             {int} NOT NULL DEFAULT 0,
    low_stock_threshold  {int} NOT NULL DEFAULT 0,
    update_version       {int} NOT NULL DEFAULT 0,
    currency             TEXT NOT NULL DEFAULT 'GBP'
);
CREATE TABLE {p}stock_moves (
    sku              TEXT NOT NULL,
    version          {int} NOT NULL,
    available_delta  {int} NOT NULL,
    PRIMARY KEY (sku, version)
);
CREATE TABLE {p}applied (
    event_id  TEXT NOT NULL PRIMARY KEY
);
";

/// The secondary indexes, for the queries: newest first overall, by status and by
/// customer (keyset pagination on (created_us, order_id)).
pub(crate) const INDEXES: &str = "\
CREATE INDEX {p}orders_by_created ON {p}orders (created_us, order_id);
CREATE INDEX {p}orders_by_status ON {p}orders (status, created_us, order_id);
CREATE INDEX {p}orders_by_customer ON {p}orders (customer_id, created_us, order_id);
";

pub(crate) fn render(template: &str, prefix: &str, int: &str) -> String {
    template.replace("{p}", prefix).replace("{int}", int)
}

/// The statements of a rendered template, one by one.
pub(crate) fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(sql: &str) -> Vec<String> {
        let without_comments: String = sql
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        statements(&without_comments)
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// The tables the migrations leave: the statements of the first, with the columns the
    /// later ones add (`ALTER TABLE rm_x ADD COLUMN ...`, which appends) written into the
    /// `CREATE TABLE` they alter.
    fn migrated(first: &str, later: &[&str]) -> Vec<String> {
        let mut statements = normalized(first);
        for alter in later.iter().flat_map(|m| normalized(m)) {
            let Some(rest) = alter.strip_prefix("ALTER TABLE ") else {
                panic!("a later migration does more than add columns: {alter}");
            };
            let (table, column) = rest.split_once(" ADD COLUMN ").expect("ADD COLUMN");
            if table == "rm_projection_state" {
                continue;
            }
            let create = statements
                .iter_mut()
                .find(|s| s.starts_with(&format!("CREATE TABLE {table} (")))
                .unwrap_or_else(|| panic!("no table {table}"));
            let end = create.rfind(" )").expect("a table's closing parenthesis");
            create.insert_str(end, &format!(", {column}"));
        }
        statements
    }

    #[test]
    fn the_migrations_create_exactly_the_templated_tables_and_indexes() {
        for (migration, later, int) in [
            (
                include_str!("../migrations/sqlite/0001_readmodels.sql"),
                [
                    include_str!("../migrations/sqlite/0002_rebuild_error.sql"),
                    include_str!("../migrations/sqlite/0003_currency.sql"),
                ],
                "INTEGER",
            ),
            (
                include_str!("../migrations/postgres/0001_readmodels.sql"),
                [
                    include_str!("../migrations/postgres/0002_rebuild_error.sql"),
                    include_str!("../migrations/postgres/0003_currency.sql"),
                ],
                "BIGINT",
            ),
        ] {
            let migration = migrated(migration, &later);
            let expected = normalized(&(render(TABLES, "rm_", int) + &render(INDEXES, "rm_", int)));
            for statement in &expected {
                assert!(
                    migration.contains(statement),
                    "the {int} migration lacks or changed: {statement}"
                );
            }
            let data_tables = migration
                .iter()
                .filter(|s| s.starts_with("CREATE TABLE") || s.starts_with("CREATE INDEX"))
                .filter(|s| !s.contains("rm_projection_state"))
                .count();
            assert_eq!(
                data_tables,
                expected.len(),
                "the {int} migration has extra tables"
            );
        }
    }
}
