-- Statistics of the log without a scan per call (see src/stats.rs): a summary of the
-- events at positions up to counted_through, which a statistics call folds the newer
-- events into once there are enough of them.
--
-- Appends wait while this migration counts (SHARE conflicts with their ROW EXCLUSIVE),
-- so that no append still in flight commits below counted_through after it.
LOCK TABLE events IN SHARE MODE;
CREATE TABLE event_totals (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    counted_through BIGINT  NOT NULL,
    total           BIGINT  NOT NULL,
    aggregates      BIGINT  NOT NULL,
    first_at        TIMESTAMPTZ,
    last_at         TIMESTAMPTZ
);

-- How many events of each event type ('event_type', name) and aggregate type
-- ('aggregate_type', name) the summary counts.
CREATE TABLE event_counts (
    kind TEXT    NOT NULL,
    name TEXT    NOT NULL,
    n    BIGINT  NOT NULL,
    PRIMARY KEY (kind, name)
);

INSERT INTO event_totals (id, counted_through, total, aggregates, first_at, last_at)
SELECT 1, COALESCE(MAX(position), 0), COUNT(*),
       COALESCE(SUM(CASE WHEN version = 1 THEN 1 ELSE 0 END), 0),
       MIN(occurred_at), MAX(occurred_at)
  FROM events;
INSERT INTO event_counts (kind, name, n)
SELECT 'event_type', event_type, COUNT(*) FROM events GROUP BY event_type;
INSERT INTO event_counts (kind, name, n)
SELECT 'aggregate_type', aggregate_type, COUNT(*) FROM events GROUP BY aggregate_type;

-- The lowest and highest timestamp of each run of positions the summary counts (one run
-- per fold; here, one per 1,000 positions of the events there already are). Every event
-- up to counted_through is in one run, so a query by time range may skip every run that
-- does not overlap its range: it starts at the first that does (src/stats.rs).
CREATE TABLE event_blocks (
    first_position BIGINT  PRIMARY KEY,
    last_position  BIGINT  NOT NULL,
    min_time       TIMESTAMPTZ NOT NULL,
    max_time       TIMESTAMPTZ NOT NULL
);
INSERT INTO event_blocks (first_position, last_position, min_time, max_time)
SELECT MIN(position), MAX(position), MIN(occurred_at), MAX(occurred_at)
  FROM events GROUP BY (position - 1) / 1000;

-- A page of one event type is read in position order: (event_type, position) serves it
-- in O(limit + log n); the index by type and time did not (it sorted every event of the
-- type), and no query needs it.
DROP INDEX events_by_type_and_time;
CREATE INDEX events_by_type ON events (event_type, position);
