-- Messages, the transactional outbox and the deliveries ledger (docs/reference-stack.md).
CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL,
    client_msg_id   text NOT NULL UNIQUE,
    ciphertext      bytea NOT NULL,
    size_bytes      int NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    message_id    uuid NOT NULL REFERENCES messages (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz,
    stream_id     text,
    attempts      int NOT NULL DEFAULT 0,
    parked_at     timestamptz,  -- set: in the outbox DLQ, replayed once Redis answers again
    last_error    text,
    dead_at       timestamptz   -- set: given up on after too many attempts (should never happen)
);

-- The dispatcher's work queue: small because dispatched rows leave it.
CREATE INDEX outbox_undispatched_idx ON outbox (id)
    WHERE dispatched_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_message_idx ON outbox (message_id);

CREATE TABLE deliveries (
    message_id   uuid PRIMARY KEY REFERENCES messages (id),
    stream_id    text NOT NULL,
    consumer     text NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    redeliveries int NOT NULL DEFAULT 0
);
