-- The W3C trace id of each event's business transaction (see crates/store/src/trace.rs).
-- NULL for events stored before: readers derive it from the correlation id then.
ALTER TABLE events ADD COLUMN trace_id TEXT;

-- A notification's business transaction and trace (of the event that caused it), so that
-- the dispatcher's log lines about it carry them too. NULL for notifications recorded
-- before.
ALTER TABLE notifications ADD COLUMN correlation_id TEXT;
ALTER TABLE notifications ADD COLUMN trace_id TEXT;
