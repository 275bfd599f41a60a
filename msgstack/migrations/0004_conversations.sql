-- Conversations, participants and the row-level security that authorizes every service query
-- (docs/reference-stack.md, "Authorization by row-level security").
--
-- Three login roles, none the tables' owner (the migrator is) nor BYPASSRLS:
--   msgstack_api       the API. Each transaction names its acting user with
--                      set_config('app.user_id', <uuid>, true); the policies below show it only
--                      the conversations it participates in, their participants and messages.
--   msgstack_auth      the auth service: reads users (name -> id, password hash), nothing else.
--   msgstack_pipeline  the dispatcher and consumer, whose work crosses users by nature (every
--                      message goes through the outbox and the deliveries ledger). Their policies
--                      open messages/outbox/deliveries and nothing else: no grant at all on
--                      conversations or participants.
-- Roles are cluster-wide, so they are created once and re-used by every database of the cluster.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['msgstack_api', 'msgstack_auth', 'msgstack_pipeline'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format(
                    'CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- a concurrent migrator of another database created it first
            END;
        END IF;
    END LOOP;
END
$$;

CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    title      text NOT NULL DEFAULT '',
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    version    int NOT NULL DEFAULT 1,
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
-- "my conversations", and the policies' membership test
CREATE INDEX participants_user_idx ON participants (user_id, added_at, conversation_id);

-- The acting user of the current transaction (NULL when none was set: then nothing is visible).
CREATE FUNCTION msgstack_user() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

-- Membership and existence tests used by the policies. SECURITY DEFINER runs them as their owner
-- (the migrator), which RLS does not filter: a policy on participants that queried participants
-- under RLS would recurse. They answer yes/no only, never rows.
CREATE FUNCTION msgstack_is_participant(conv uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM participants
                         WHERE conversation_id = conv AND user_id = msgstack_user()) $$;

CREATE FUNCTION msgstack_created_by_me(conv uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM conversations
                         WHERE id = conv AND created_by = msgstack_user()) $$;

-- Lets the API tell "forbidden" (403) from "no such conversation" (404).
CREATE FUNCTION msgstack_conversation_exists(conv uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM conversations WHERE id = conv) $$;

REVOKE ALL ON FUNCTION msgstack_is_participant(uuid), msgstack_created_by_me(uuid),
    msgstack_conversation_exists(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION msgstack_is_participant(uuid), msgstack_created_by_me(uuid),
    msgstack_conversation_exists(uuid) TO msgstack_api;

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE participants ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;

-- API: conversations of which the acting user is a participant.
CREATE POLICY api_select ON conversations FOR SELECT TO msgstack_api
    USING (msgstack_is_participant(id));
CREATE POLICY api_insert ON conversations FOR INSERT TO msgstack_api
    WITH CHECK (created_by = msgstack_user());
CREATE POLICY api_update ON conversations FOR UPDATE TO msgstack_api
    USING (msgstack_is_participant(id)) WITH CHECK (msgstack_is_participant(id));
CREATE POLICY api_delete ON conversations FOR DELETE TO msgstack_api
    USING (msgstack_is_participant(id));

-- API: participants of my conversations; a participant adds and removes others; the creator adds
-- itself to its new conversation.
CREATE POLICY api_select ON participants FOR SELECT TO msgstack_api
    USING (msgstack_is_participant(conversation_id));
CREATE POLICY api_insert ON participants FOR INSERT TO msgstack_api
    WITH CHECK (msgstack_is_participant(conversation_id)
                OR (user_id = msgstack_user() AND msgstack_created_by_me(conversation_id)));
CREATE POLICY api_delete ON participants FOR DELETE TO msgstack_api
    USING (msgstack_is_participant(conversation_id));

-- API: messages of my conversations; the outbox row is written with the message, never read back;
-- delivery state of the messages I can see.
CREATE POLICY api_select ON messages FOR SELECT TO msgstack_api
    USING (msgstack_is_participant(conversation_id));
CREATE POLICY api_insert ON messages FOR INSERT TO msgstack_api
    WITH CHECK (msgstack_is_participant(conversation_id));
CREATE POLICY api_insert ON outbox FOR INSERT TO msgstack_api WITH CHECK (true);
CREATE POLICY api_select ON deliveries FOR SELECT TO msgstack_api
    USING (EXISTS (SELECT 1 FROM messages m WHERE m.id = message_id));

-- Pipeline: every message, outbox row and delivery (cross-user by nature), nothing else.
CREATE POLICY pipeline_all ON messages FOR ALL TO msgstack_pipeline USING (true) WITH CHECK (true);
CREATE POLICY pipeline_all ON outbox FOR ALL TO msgstack_pipeline USING (true) WITH CHECK (true);
CREATE POLICY pipeline_all ON deliveries FOR ALL TO msgstack_pipeline
    USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE, DELETE ON conversations, participants TO msgstack_api;
GRANT SELECT, INSERT ON messages TO msgstack_api;
GRANT INSERT ON outbox TO msgstack_api;
GRANT USAGE ON SEQUENCE outbox_id_seq TO msgstack_api;
GRANT SELECT ON deliveries TO msgstack_api;

GRANT SELECT ON messages TO msgstack_pipeline;
GRANT SELECT, INSERT, UPDATE ON outbox, deliveries TO msgstack_pipeline;

GRANT SELECT ON users TO msgstack_auth;
