-- Sabotage for plan test 13: the online migration's index built the blocking way (no
-- "concurrently"), so CREATE INDEX holds a SHARE lock on messages for the whole build and every
-- write waits for it. migration_under_load must fail with this file.
DROP INDEX IF EXISTS messages_blocking_idx;
CREATE INDEX messages_blocking_idx ON messages (conversation_id, size_bytes, client_msg_id);
