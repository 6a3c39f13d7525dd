-- No query needs an index by timestamp any more: a query by time range reads in position
-- order from where event_blocks says its range starts (src/stats.rs), and an aggregate's
-- events are read by (aggregate_type, aggregate_id). The index cost every append a
-- B-tree insert, and planners chose it for a time range (sorting every event of the
-- range to return the first 100), a cost that grew with the log.
DROP INDEX events_by_time;
