-- Each customer's data key, wrapped (AES-256-GCM) by the master key, which is never
-- stored here. An erasure sets wrapped_key to NULL and keeps the row, so that no key is
-- made for that customer again.
CREATE TABLE data_keys (
    key_id       TEXT        PRIMARY KEY,
    customer_id  TEXT        NOT NULL UNIQUE,
    wrapped_key  BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    erased_at    TIMESTAMPTZ
);

-- The id of the master key the data keys are wrapped with (a hash of it, not the key):
-- a start with another master key is refused.
CREATE TABLE master_key (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    master_key_id  TEXT    NOT NULL
);
