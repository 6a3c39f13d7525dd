-- The latest snapshot of each aggregate that has one: its state after event `version`,
-- as JSON of the shape `state_schema` names. Derived data: never written by an append,
-- never needed to load an aggregate (its events are), and not part of a backup; any row
-- may be deleted at any time. `event_id` is the event at `version` the state was taken
-- after; the origin columns are the correlation and trace ids of the aggregate's first
-- event.
CREATE TABLE snapshots (
    aggregate_type         TEXT    NOT NULL,
    aggregate_id           TEXT    NOT NULL,
    version                INTEGER NOT NULL,
    event_id               TEXT    NOT NULL,
    state_schema           INTEGER NOT NULL,
    state                  TEXT    NOT NULL,
    origin_correlation_id  TEXT    NOT NULL,
    origin_trace_id        TEXT    NOT NULL,
    taken_us               INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
