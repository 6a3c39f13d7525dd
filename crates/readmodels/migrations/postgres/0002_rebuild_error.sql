-- Why the last rebuild of a projection failed (with when), shown by GET /api/projections;
-- cleared by the next rebuild that succeeds.
ALTER TABLE rm_projection_state ADD COLUMN rebuild_error TEXT;
