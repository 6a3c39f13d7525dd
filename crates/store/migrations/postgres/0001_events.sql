-- The event store on PostgreSQL: the same tables as the SQLite backend, with native types
-- (UUID, JSON, TIMESTAMPTZ). `position` is the global log order.
--
-- One global order without skipping: PostgreSQL runs writers concurrently, so a sequence
-- alone would let a transaction that drew a lower position commit after one that drew a
-- higher position, and a reader tailing the log would pass the lower one. Every append
-- therefore takes a transaction-scoped advisory lock right before inserting its events
-- (see src/postgres.rs): positions are drawn and committed by one append after another.
-- The identity keeps the default CACHE 1: a per-session cache would hand out positions
-- out of commit order even under the lock. An aborted append leaves a gap that never fills.
CREATE TABLE events (
    position        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        UUID        NOT NULL UNIQUE,
    event_type      TEXT        NOT NULL,
    aggregate_type  TEXT        NOT NULL,
    aggregate_id    TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    schema_version  BIGINT      NOT NULL,
    -- The event's timestamp; TIMESTAMPTZ keeps microseconds, as the store promises.
    occurred_at     TIMESTAMPTZ NOT NULL,
    -- JSON, not JSONB: the text is kept as written (key order included).
    data            JSON        NOT NULL,
    metadata        JSON        NOT NULL,
    -- Copied out of metadata so that a business transaction's events can be found fast.
    correlation_id  TEXT        NOT NULL,
    causation_id    TEXT        NOT NULL,
    -- Where the event was published (the seed's StoredEvent fields); set by the relay.
    topic           TEXT,
    kafka_partition INTEGER,
    kafka_offset    BIGINT,
    -- Optimistic concurrency: the append code maps a violation of this constraint (by its
    -- name) to a version conflict.
    CONSTRAINT events_aggregate_version_unique UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE INDEX events_by_time ON events (occurred_at);
CREATE INDEX events_by_type_and_time ON events (event_type, occurred_at);
CREATE INDEX events_by_aggregate_type ON events (aggregate_type, position);
CREATE INDEX events_by_correlation ON events (correlation_id, position);

-- Answers to requests that carried an Idempotency-Key, written in the same transaction
-- as the events the request appended.
CREATE TABLE idempotency_keys (
    key          TEXT        PRIMARY KEY,
    fingerprint  TEXT        NOT NULL,
    status       INTEGER     NOT NULL,
    body         TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

-- Commands that consumers sent, by a key derived from the event that caused them and the
-- step of the reaction. Written in the same transaction as the command's events, so a
-- redelivered event can never apply the same command twice.
CREATE TABLE applied_commands (
    dedupe_key   TEXT        PRIMARY KEY,
    applied_at   TIMESTAMPTZ NOT NULL
);

-- How far each consumer has processed the log.
CREATE TABLE checkpoints (
    consumer     TEXT        PRIMARY KEY,
    position     BIGINT      NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- Events a consumer gave up on after its retries.
CREATE TABLE dead_letters (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer         TEXT        NOT NULL,
    event_id         UUID        NOT NULL,
    position         BIGINT      NOT NULL,
    event_type       TEXT        NOT NULL,
    aggregate_id     TEXT        NOT NULL,
    error            TEXT        NOT NULL,
    attempts         BIGINT      NOT NULL,
    first_failed_at  TIMESTAMPTZ NOT NULL,
    last_failed_at   TIMESTAMPTZ NOT NULL,
    status           TEXT        NOT NULL,  -- pending | resolved
    UNIQUE (consumer, event_id)
);

-- Durable timers (cart expiry): survive restarts; fired once due.
CREATE TABLE timers (
    key          TEXT        PRIMARY KEY,
    kind         TEXT        NOT NULL,
    due_at       TIMESTAMPTZ NOT NULL,
    payload      JSON        NOT NULL
);
CREATE INDEX timers_by_due ON timers (due_at);

-- Named leases: one holder at a time (the active outbox relay), taken over once expired.
-- Expiry is computed and compared with the database's clock, so that processes on hosts
-- with skewed clocks agree on it.
CREATE TABLE leases (
    name         TEXT        PRIMARY KEY,
    holder       TEXT        NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
