-- msgstack: no-transaction
-- Online-safe: a nullable column without default is a catalogue-only change, and the index is
-- built CONCURRENTLY (which cannot run inside a transaction, hence the marker above). The DROP
-- first removes an INVALID index a previously interrupted run may have left behind.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS content_type text;
DROP INDEX CONCURRENTLY IF EXISTS messages_conversation_created_idx;
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_conversation_created_idx
    ON messages (conversation_id, created_at);
