-- Appends without the global lock (see src/postgres/mod.rs for the whole argument).
--
-- Until now every append took one advisory lock and held it through COMMIT, so that
-- positions were drawn and committed one append after another. Now appends run in parallel
-- and draw positions from the identity as they insert (still CACHE 1: one sequence, values
-- handed out in time order). A position can therefore commit after a higher one; readers
-- must not pass it. They read up to the *settled head* instead: a position below which
-- every append has finished. `cornershop_settled_head()` computes it:
--
-- 1. Every append registers before it draws a position: it takes the transaction-scoped
--    advisory lock (1129529680, its backend pid), which PostgreSQL releases only once the
--    transaction's commit (or abort) is visible.
-- 2. The function reads the sequence's last drawn value D, then lists the registered
--    appends (pg_locks) and waits until each has finished, by taking and releasing that
--    append's lock in share mode.
--
-- Every position <= D was drawn before D was read, by an append registered before it drew,
-- so that append was in the list (or had finished) and has finished now: every position
-- <= D is committed (and visible) or aborted for good. D is the settled head.

CREATE FUNCTION cornershop_append(
    p_aggregate_type   TEXT,
    p_aggregate_id     TEXT,
    p_expected_version BIGINT,
    p_idempotency_key  TEXT,
    p_fingerprint      TEXT,
    p_status           INTEGER,
    p_body             TEXT,
    p_dedupe_key       TEXT,
    p_event_ids        UUID[],
    p_event_types      TEXT[],
    p_versions         BIGINT[],
    p_schema_versions  BIGINT[],
    p_occurred_at      TIMESTAMPTZ[],
    p_data             JSON[],
    p_metadata         JSON[],
    p_correlation_ids  TEXT[],
    p_causation_ids    TEXT[],
    p_trace_ids        TEXT[],
    OUT actual_version BIGINT,
    -- NULL when the expected version was stale (nothing was written); the positions of
    -- the events in version order otherwise.
    OUT positions      BIGINT[])
LANGUAGE plpgsql AS $$
BEGIN
    SELECT COALESCE(MAX(version), 0) INTO actual_version FROM events
     WHERE aggregate_type = p_aggregate_type AND aggregate_id = p_aggregate_id;
    IF actual_version <> p_expected_version THEN
        RETURN;
    END IF;
    -- A key taken already raises a unique violation, which rolls everything back; the
    -- caller tells them apart by the constraint's name.
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)
        VALUES (p_idempotency_key, p_fingerprint, p_status, p_body, now());
    END IF;
    IF p_dedupe_key IS NOT NULL THEN
        INSERT INTO applied_commands (dedupe_key, applied_at) VALUES (p_dedupe_key, now());
    END IF;
    IF cardinality(p_event_ids) = 0 THEN
        positions := '{}';
        RETURN;
    END IF;
    -- Registered before the first position is drawn, until the commit is visible.
    PERFORM pg_advisory_xact_lock(1129529680, pg_backend_pid());
    -- Two appends that both passed the check above insert the same version: the unique
    -- constraint makes the second wait for the first and refuses it if that one committed.
    WITH inserted AS (
        INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, version,
                            schema_version, occurred_at, data, metadata, correlation_id,
                            causation_id, trace_id)
        SELECT e.event_id, e.event_type, p_aggregate_type, p_aggregate_id, e.version,
               e.schema_version, e.occurred_at, e.data, e.metadata, e.correlation_id,
               e.causation_id, e.trace_id
          FROM unnest(p_event_ids, p_event_types, p_versions, p_schema_versions,
                      p_occurred_at, p_data, p_metadata, p_correlation_ids,
                      p_causation_ids, p_trace_ids)
               AS e(event_id, event_type, version, schema_version, occurred_at, data,
                    metadata, correlation_id, causation_id, trace_id)
         ORDER BY e.version
        RETURNING version, position)
    SELECT array_agg(position ORDER BY version) INTO positions FROM inserted;
END
$$;

CREATE FUNCTION cornershop_settled_head() RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    drawn  BIGINT;
    writer INTEGER;
BEGIN
    -- An append takes milliseconds; one still registered after this long is stuck (a
    -- transaction held open, a disk that does not answer). The call fails instead of
    -- waiting for ever, so that the caller can say which append the head waits for.
    PERFORM set_config('lock_timeout', '5s', true);
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO drawn
      FROM events_position_seq;
    FOR writer IN
        SELECT objid::integer FROM pg_locks
         WHERE locktype = 'advisory' AND classid = 1129529680 AND objsubid = 2 AND granted
           AND pid <> pg_backend_pid()
    LOOP
        PERFORM pg_advisory_lock_shared(1129529680, writer);
        PERFORM pg_advisory_unlock_shared(1129529680, writer);
    END LOOP;
    RETURN drawn;
END
$$;

-- Announces a settled head to the other processes (LISTEN cornershop_events). A
-- notification gives its transaction an id, so its commit would wait for a WAL flush and
-- take the disk's time from the appends: it commits asynchronously instead (a lost
-- notification costs a listener at most its one-second settle, and a crash loses it anyway).
CREATE FUNCTION cornershop_announce(p_position BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_notify('cornershop_events', p_position::text);
END
$$;
