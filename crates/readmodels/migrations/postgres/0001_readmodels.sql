-- The read models of the reporting service (the CQRS read side). Derived data: every row
-- can be rebuilt from the event store (`cornershop projections rebuild`).
--
-- The data tables below are also written in crates/readmodels/src/schema.rs, from which a
-- rebuild creates its shadow copies (rm_shadow_*); a unit test keeps the two identical.
-- Times are microseconds since the epoch; money is in cents.
-- On PostgreSQL they live in the schema `readmodels` of the event store's database.

CREATE TABLE rm_orders (
    order_id         TEXT NOT NULL PRIMARY KEY,
    cart_id          TEXT,
    customer_id      TEXT,
    status           TEXT,
    order_version    BIGINT NOT NULL DEFAULT 0,
    total_cents      BIGINT,
    items            TEXT,
    payment_id       TEXT,
    payment_status   TEXT,
    payment_version  BIGINT NOT NULL DEFAULT 0,
    carrier          TEXT,
    tracking_number  TEXT,
    cancel_reason    TEXT,
    correlation_id   TEXT,
    created_us       BIGINT,
    validated_us     BIGINT,
    confirmed_us     BIGINT,
    shipped_us       BIGINT,
    delivered_us     BIGINT,
    cancelled_us     BIGINT
);
CREATE TABLE rm_order_lines (
    order_id          TEXT NOT NULL,
    line_no           BIGINT NOT NULL,
    sku               TEXT NOT NULL,
    name              TEXT NOT NULL,
    quantity          BIGINT NOT NULL,
    line_total_cents  BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE rm_inventory (
    sku                  TEXT NOT NULL PRIMARY KEY,
    name                 TEXT NOT NULL DEFAULT '',
    unit_price_cents     BIGINT NOT NULL DEFAULT 0,
    available            BIGINT NOT NULL DEFAULT 0,
    reserved             BIGINT NOT NULL DEFAULT 0,
    low_stock_threshold  BIGINT NOT NULL DEFAULT 0,
    update_version       BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE rm_stock_moves (
    sku              TEXT NOT NULL,
    version          BIGINT NOT NULL,
    available_delta  BIGINT NOT NULL,
    PRIMARY KEY (sku, version)
);
CREATE TABLE rm_applied (
    event_id  TEXT NOT NULL PRIMARY KEY
);
CREATE INDEX rm_orders_by_created ON rm_orders (created_us, order_id);
CREATE INDEX rm_orders_by_status ON rm_orders (status, created_us, order_id);
CREATE INDEX rm_orders_by_customer ON rm_orders (customer_id, created_us, order_id);

-- Per projection: the highest log position applied, how many events, when; the generation
-- that a rebuild swapped in; and the lease that keeps two rebuilds from running at once.
-- Every live update of a projection locks its row first, and so does a rebuild's swap.
CREATE TABLE rm_projection_state (
    name                  TEXT NOT NULL PRIMARY KEY,
    position              BIGINT NOT NULL DEFAULT 0,
    events_applied        BIGINT NOT NULL DEFAULT 0,
    updated_us            BIGINT,
    generation            BIGINT NOT NULL DEFAULT 1,
    rebuilt_us            BIGINT,
    rebuild_holder        TEXT,
    rebuild_heartbeat_us  BIGINT
);
INSERT INTO rm_projection_state (name) VALUES ('reporting-service');
