-- The event store. `position` is the global log order. SQLite admits one write
-- transaction at a time, so positions are assigned and committed in the same order: a
-- reader that has seen position n can never later see an event appear below n.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    schema_version  INTEGER NOT NULL,
    timestamp_us    INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    -- Copied out of metadata so that a business transaction's events can be found fast.
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT    NOT NULL,
    -- Where the event was published (the seed's StoredEvent fields); set by the relay.
    topic           TEXT,
    kafka_partition INTEGER,
    kafka_offset    INTEGER,
    UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE INDEX events_by_time ON events (timestamp_us);
CREATE INDEX events_by_type_and_time ON events (event_type, timestamp_us);
CREATE INDEX events_by_aggregate_type ON events (aggregate_type, position);
CREATE INDEX events_by_correlation ON events (correlation_id, position);

-- Answers to requests that carried an Idempotency-Key, written in the same transaction
-- as the events the request appended.
CREATE TABLE idempotency_keys (
    key          TEXT    PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    created_us   INTEGER NOT NULL
);

-- Commands that consumers sent, by a key derived from the event that caused them and the
-- step of the reaction. Written in the same transaction as the command's events, so a
-- redelivered event can never apply the same command twice.
CREATE TABLE applied_commands (
    dedupe_key   TEXT    PRIMARY KEY,
    applied_us   INTEGER NOT NULL
);

-- How far each consumer has processed the log.
CREATE TABLE checkpoints (
    consumer     TEXT    PRIMARY KEY,
    position     INTEGER NOT NULL,
    updated_us   INTEGER NOT NULL
);

-- Events a consumer gave up on after its retries.
CREATE TABLE dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer         TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    position         INTEGER NOT NULL,
    event_type       TEXT    NOT NULL,
    aggregate_id     TEXT    NOT NULL,
    error            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    first_failed_us  INTEGER NOT NULL,
    last_failed_us   INTEGER NOT NULL,
    status           TEXT    NOT NULL,  -- pending | resolved
    UNIQUE (consumer, event_id)
);

-- Durable timers (cart expiry): survive restarts; fired once due.
CREATE TABLE timers (
    key          TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    due_us       INTEGER NOT NULL,
    payload      TEXT    NOT NULL
);
CREATE INDEX timers_by_due ON timers (due_us);

-- Named leases: one holder at a time (the active outbox relay), taken over once expired.
CREATE TABLE leases (
    name         TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    expires_us   INTEGER NOT NULL
);
