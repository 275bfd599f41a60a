-- msgstack: no-transaction
-- Online migration for plan test 13, run UNDER LOAD by name (`python -m msgstack migrate --name
-- 0010_messages_retention_index`), never by a plain `migrate` (it lives in online/ for that).
-- Both steps keep writes flowing: a column with a constant default is a catalogue-only change
-- since PostgreSQL 11 (no table rewrite), and the index is built CONCURRENTLY. Re-runnable by
-- design: the index is dropped first (also removing an INVALID one an interrupted build left),
-- so every run really builds it on the whole table.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS retention_class text NOT NULL DEFAULT 'standard';
DROP INDEX CONCURRENTLY IF EXISTS messages_retention_size_idx;
CREATE INDEX CONCURRENTLY messages_retention_size_idx
    ON messages (conversation_id, size_bytes, client_msg_id);
