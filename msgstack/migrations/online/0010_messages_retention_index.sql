-- msgstack: no-transaction
-- Online migration for plan test 13, run UNDER LOAD by name (`python -m msgstack migrate --name
-- 0010_messages_retention_index`), never by a plain `migrate` (it lives in online/ for that).
-- Both steps keep writes flowing:
-- 1. A column with a constant default is a catalogue-only change since PostgreSQL 11 (no table
--    rewrite), but ALTER TABLE still needs an ACCESS EXCLUSIVE lock, and while it waits for one
--    (behind an autovacuum, say, which it cancels only after deadlock_timeout) every write queues
--    behind it. So it tries with a 50 ms lock_timeout, backing off between tries, instead.
-- 2. The index is built CONCURRENTLY, by this session alone (no parallel maintenance workers:
--    they would take every core from the service the build must not slow down). It is dropped
--    first (also removing an INVALID one an interrupted build left), so every run really builds
--    it on the whole table.
DO $$
BEGIN
    FOR attempt IN 1..60 LOOP
        BEGIN
            SET LOCAL lock_timeout = '50ms';
            ALTER TABLE messages
                ADD COLUMN IF NOT EXISTS retention_class text NOT NULL DEFAULT 'standard';
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_sleep(least(0.05 * attempt, 0.5));
        END;
    END LOOP;
    RAISE EXCEPTION 'no ACCESS EXCLUSIVE lock on messages within 60 short tries';
END
$$;
SET max_parallel_maintenance_workers = 0;
DROP INDEX CONCURRENTLY IF EXISTS messages_retention_size_idx;
CREATE INDEX CONCURRENTLY messages_retention_size_idx
    ON messages (conversation_id, size_bytes, client_msg_id);
