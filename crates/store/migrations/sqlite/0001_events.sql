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
    -- Where the event was published (the seed's StoredEvent fields); set by the relay.
    topic           TEXT,
    kafka_partition INTEGER,
    kafka_offset    INTEGER,
    UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE INDEX events_by_time ON events (timestamp_us);
CREATE INDEX events_by_type_and_time ON events (event_type, timestamp_us);
CREATE INDEX events_by_aggregate_type ON events (aggregate_type, position);

-- Answers to requests that carried an Idempotency-Key, written in the same transaction
-- as the events the request appended.
CREATE TABLE idempotency_keys (
    key          TEXT    PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    created_us   INTEGER NOT NULL
);
