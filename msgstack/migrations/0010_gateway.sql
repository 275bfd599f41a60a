-- The WebSocket gateway's database role (msgstack/gateway.py): like the pipeline, its work crosses
-- users by nature (it pushes every message to every participant's sockets), so its policies open
-- messages and participants to it: read only, nothing else (no conversations, outbox, users).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'msgstack_gateway') THEN
        BEGIN
            CREATE ROLE msgstack_gateway LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- a concurrent migrator of another database created it first
        END;
    END IF;
END
$$;

CREATE POLICY gateway_select ON messages FOR SELECT TO msgstack_gateway USING (true);
CREATE POLICY gateway_select ON participants FOR SELECT TO msgstack_gateway USING (true);
GRANT SELECT ON messages, participants TO msgstack_gateway;
