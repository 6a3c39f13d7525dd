-- Each customer's data key, wrapped (AES-256-GCM) by the master key, which is never
-- stored here. An erasure sets wrapped_key to NULL and keeps the row, so that no key is
-- made for that customer again. (The writing connection runs with secure_delete on, so
-- the destroyed bytes are overwritten in the file, not left in a free page.)
CREATE TABLE data_keys (
    key_id       TEXT    PRIMARY KEY,
    customer_id  TEXT    NOT NULL UNIQUE,
    wrapped_key  BLOB,
    created_us   INTEGER NOT NULL,
    erased_us    INTEGER
);

-- The id of the master key the data keys are wrapped with (a hash of it, not the key):
-- a start with another master key is refused.
CREATE TABLE master_key (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    master_key_id  TEXT    NOT NULL
);
